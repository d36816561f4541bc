"""MobileNetV2 (ImageNet) on Fashion-MNIST: frozen vs fine-tuned vs random weights; then distil it.

Two parts:
- `backbone` (GPU advised): MobileNetV2 at 96x96 (28x28x1 inputs resized and
  repeated to RGB inside the model), the same head as the teacher, trained on the
  60,000 training images:
  - `frozen`: torchvision's ImageNet weights, frozen; the head alone for
    `--head-epochs` at 1e-3 (`fine_tune(..., fine_tune_epochs=0)`);
  - `random`: the same network from random weights, every layer trained with
    BatchNormalization in training mode for head + fine-tune epochs at 1e-3;
  - the fine-tuned figure is teacher 2 itself (`saved_models/build_teachers.py
    --teachers mobilenet_v2`, same head epochs, then all layers at 1e-4).
  `--teacher-logits FILE` also writes teacher 2's logits on the training images.
- `distill` (CPU is fine): teacher 2 distilled into the Distiller benchmark's
  student (`models.student_cnn`, 8,194 parameters) with the cached teacher
  logits and the Distiller's defaults, against the same student trained on labels
  alone, for each seed.

    KERAS_BACKEND=jax python benchmarks/transfer_mobilenet_fashion_mnist.py backbone
    python benchmarks/transfer_mobilenet_fashion_mnist.py distill --seeds 0 1 2
"""

import argparse
import json
import pathlib
import statistics
import sys
import time

import keras
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import models  # noqa: E402

import tfkd  # noqa: E402

TEACHER = ROOT / "saved_models" / "fashion_mnist_mobilenet_v2_teacher" / "model.keras"
BATCH_SIZE = 128


def _classifier_options(image_size):
    return dict(
        input_shape=(28, 28, 1),
        image_size=(image_size, image_size),
        preprocessing=tfkd.transfer.torchvision_normalization(),
    )


def _accuracy(model, data):
    _, (x_test, y_test) = data
    return float(np.mean(model.predict(x_test, batch_size=512, verbose=0).argmax(-1) == y_test))


def backbone_part(args, data):
    (x_train, y_train), _ = data
    shape = (args.image_size, args.image_size, 3)
    results = {}
    keras.utils.set_random_seed(args.seed)
    start = time.perf_counter()
    frozen, _ = tfkd.transfer.fine_tune(
        tfkd.transfer.pretrained_mobilenet_v2(shape, include_top=False),
        10,
        (x_train, y_train),
        head_epochs=args.head_epochs,
        fine_tune_epochs=0,
        batch_size=BATCH_SIZE,
        verbose=2,
        **_classifier_options(args.image_size),
    )
    results["frozen"] = {
        "accuracy": _accuracy(frozen, data),
        "seconds": time.perf_counter() - start,
    }
    print(f"frozen ImageNet backbone: {results['frozen']}", flush=True)

    keras.utils.set_random_seed(args.seed)
    start = time.perf_counter()
    random = tfkd.transfer.build_classifier(
        tfkd.transfer.mobilenet_v2(shape, include_top=False),
        10,
        frozen_batch_norm=False,
        **_classifier_options(args.image_size),
    )
    random.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    epochs = args.head_epochs + args.fine_tune_epochs
    random.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=2)
    results["random"] = {
        "accuracy": _accuracy(random, data),
        "seconds": time.perf_counter() - start,
    }
    print(f"random weights, all layers trained: {results['random']}", flush=True)

    if args.teacher_logits:
        teacher = keras.saving.load_model(args.teacher_model or TEACHER)
        logits = teacher.predict(x_train, batch_size=512, verbose=0)
        np.save(args.teacher_logits, logits.astype("float32"))
        results["teacher_accuracy"] = _accuracy(teacher, data)
        print(f"teacher logits written to {args.teacher_logits}", flush=True)
    return results


def distill_part(args, data):
    (x_train, y_train), _ = data
    teacher = keras.saving.load_model(TEACHER)
    distiller = tfkd.Distiller(teacher=teacher, student=models.student_cnn())
    if args.teacher_logits and pathlib.Path(args.teacher_logits).exists():
        # The saved array is the teacher's only output: put it where predict_teacher would.
        (key,) = distiller.predict_teacher(x_train[:1])
        logits = {key: np.load(args.teacher_logits)}
    else:
        logits = distiller.predict_teacher(x_train, batch_size=512)
    results = {"teacher_accuracy": _accuracy(teacher, data), "seeds": {}}
    for seed in args.seeds:
        row = {}
        for name in ("scratch", "distilled"):
            keras.utils.set_random_seed(seed)
            student = models.student_cnn(seed=seed)
            trainer, inputs = student, x_train
            if name == "distilled":
                trainer = tfkd.Distiller(
                    teacher=teacher,
                    student=student,
                    temperature=args.temperature,
                    student_loss_weight=args.student_loss_weight,
                )
                inputs = tfkd.distill.with_teacher_outputs(x_train, logits)
            trainer.compile(
                optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
            trainer.fit(inputs, y_train, batch_size=BATCH_SIZE, epochs=args.epochs, verbose=0)
            row[name] = _accuracy(student, data)
        results["seeds"][seed] = row
        print(f"seed {seed}: {row}", flush=True)
    for name in ("scratch", "distilled"):
        values = [row[name] for row in results["seeds"].values()]
        results[name] = {"mean": statistics.fmean(values), "values": values}
    print(
        f"teacher {results['teacher_accuracy']:.4f}; scratch {results['scratch']['mean']:.4f}; "
        f"distilled {results['distilled']['mean']:.4f}",
        flush=True,
    )
    return results


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("part", choices=("backbone", "distill"))
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--head-epochs", type=int, default=2)
    parser.add_argument("--fine-tune-epochs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=8, help="student epochs (distill part)")
    parser.add_argument("--temperature", type=float, default=1.0, help="distill part")
    parser.add_argument("--student-loss-weight", type=float, default=0.1, help="distill part")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher-logits", help=".npy of teacher 2's logits on the train set")
    parser.add_argument("--teacher-model", help="teacher 2's .keras file, if not the saved one")
    parser.add_argument("--output")
    args = parser.parse_args()
    data = models.load_fashion_mnist()
    part = backbone_part if args.part == "backbone" else distill_part
    results = {"arguments": vars(args), "backend": keras.backend.backend(), **part(args, data)}
    output = pathlib.Path(
        args.output or ROOT / "benchmarks" / "results" / f"transfer_mobilenet_{args.part}.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
