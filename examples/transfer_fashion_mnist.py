"""Fine-tune ImageNet MobileNetV2 to Fashion-MNIST, then distil it into a tiny student.

What it shows:
- `tfkd.transfer.pretrained_mobilenet_v2` loads torchvision's ImageNet weights
  offline, from a pip package, without torch.
- `tfkd.transfer.fine_tune` puts the 28x28 grey images into the backbone (resize to
  96x96 and repeat to RGB inside the model, then torchvision's normalization),
  trains a new head on the frozen backbone, and then unfreezes the top blocks.
- The bundled teacher 2 (`saved_models/fashion_mnist_mobilenet_v2_teacher`, the same
  recipe on all 60,000 images on a GPU) is distilled into the 8k-parameter student
  with `tfkd.Distiller`, and the student is exported to int8 `.tflite`.

Fine-tuning MobileNetV2 is slow on a CPU, so this script uses `--train-size` images
(5,000 by default) and unfreezes only the blocks from `--unfreeze` on. Expected
result (TF backend, 2 CPU cores, about 7 minutes, estimated from the smoke run):
- the frozen backbone reaches about 0.8 test accuracy, and fine-tuning adds a few
  points;
- the distilled student is about 300x smaller than teacher 2's file.
BENCHMARKS.md has the full-data figures. `--smoke` uses 512 images and 1 + 1 epochs
(about a minute).

    python examples/transfer_fashion_mnist.py [--train-size 5000] [--smoke]

Writes `{output-dir}/mobilenet_v2_fashion_mnist.keras`, `student_distilled_int8.tflite`
and `transfer_report.json`.
"""

import argparse
import json
import pathlib
import sys

import keras
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tfkd  # noqa: E402

TEACHER = ROOT / "saved_models" / "fashion_mnist_mobilenet_v2_teacher" / "model.keras"


def student_cnn(seed=0):
    """The shared 8k-parameter student (benchmarks/models.py builds the same)."""
    return tfkd.models.cnn(
        (28, 28, 1), 10, filters=(12, 24, 24), batch_norm=False, seed=seed, name="student_cnn"
    )


def accuracy(model, x, y):
    return float(np.mean(model.predict(x, batch_size=256, verbose=0).argmax(-1) == y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--head-epochs", type=int, default=2)
    parser.add_argument("--fine-tune-epochs", type=int, default=2)
    parser.add_argument("--unfreeze", default="block_13_expand", help="first layer to train")
    parser.add_argument("--student-epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="512 images, 1 + 1 epochs.")
    parser.add_argument("--output-dir", type=pathlib.Path, default=ROOT / "examples" / "output")
    args = parser.parse_args(argv)
    if args.smoke:
        args.train_size, args.test_size = 512, 500
        args.head_epochs, args.fine_tune_epochs, args.student_epochs = 1, 1, 1
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    x_train, x_test = x_train[..., None].astype("float32"), x_test[..., None].astype("float32")
    x_train, y_train = x_train[: args.train_size], y_train[: args.train_size]
    x_test, y_test = x_test[: args.test_size], y_test[: args.test_size]
    keras.utils.set_random_seed(args.seed)

    print(f"== fine-tune ImageNet MobileNetV2 on {len(x_train)} images")
    backbone = tfkd.transfer.pretrained_mobilenet_v2((96, 96, 3), include_top=False)
    model, history = tfkd.transfer.fine_tune(
        backbone,
        10,
        (x_train, y_train),
        validation_data=(x_test, y_test),
        head_epochs=args.head_epochs,
        fine_tune_epochs=args.fine_tune_epochs,
        unfreeze=args.unfreeze,
        fine_tune_learning_rate=1e-4,
        input_shape=(28, 28, 1),
        preprocessing=tfkd.transfer.torchvision_normalization(),
        verbose=2,
    )
    frozen_accuracy = history.history["val_accuracy"][args.head_epochs - 1]
    tuned_accuracy = accuracy(model, x_test, y_test)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    model.save(args.output_dir / "mobilenet_v2_fashion_mnist.keras")

    print("== distil teacher 2 (bundled, fine-tuned on all 60,000 images) into the student")
    teacher = keras.saving.load_model(TEACHER)
    distiller = tfkd.Distiller(teacher=teacher, student=student_cnn(seed=args.seed))
    distiller.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    cached = distiller.predict_teacher(x_train, batch_size=256)
    inputs = tfkd.distill.with_teacher_outputs(x_train, cached)
    distiller.fit(inputs, y_train, batch_size=128, epochs=args.student_epochs, verbose=2)
    student = distiller.student
    report = tfkd.export_tflite(
        student,
        args.output_dir / "student_distilled_int8.tflite",
        "int8",
        representative_data=x_train[:500],
    )
    lite_accuracy = tfkd.TFLiteModel(report.path).evaluate(x_test, y_test)["accuracy"]

    rows = {
        "MobileNetV2, frozen ImageNet backbone": (model.count_params(), None, frozen_accuracy),
        "MobileNetV2, fine-tuned (this run)": (model.count_params(), None, tuned_accuracy),
        "teacher 2 (bundled)": (
            teacher.count_params(),
            TEACHER.stat().st_size,
            accuracy(teacher, x_test, y_test),
        ),
        "student, distilled (Keras)": (
            student.count_params(),
            None,
            accuracy(student, x_test, y_test),
        ),
        "student, distilled, int8 .tflite": (student.count_params(), report.bytes, lite_accuracy),
    }
    print(f"\nFashion-MNIST test images: {len(x_test)}")
    print(f"{'model':40s} {'parameters':>10s} {'bytes':>9s} {'accuracy':>9s}")
    for name, (parameters, size, value) in rows.items():
        print(f"{name:40s} {parameters:>10} {size or '':>9} {value:>9.4f}")
    summary = {
        name: {"parameters": parameters, "bytes": size, "accuracy": value}
        for name, (parameters, size, value) in rows.items()
    }
    summary["unfrozen_layers"] = len(history.unfrozen_layers)
    (args.output_dir / "transfer_report.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nFiles written to {args.output_dir}")


if __name__ == "__main__":
    main()
