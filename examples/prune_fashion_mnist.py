"""Distil and prune a Fashion-MNIST student in one training loop, then ship it as .tflite.

What it shows: `tfkd.prune.prune` wraps the student, `tfkd.Distiller` trains it
from the frozen teacher's outputs, and the masks follow their schedule inside
`fit` with no callback. After training, `tfkd.prune.strip` gives a plain Keras
model, `tfkd.export_tflite` writes it as float32 (sparse format: the zeros do
not take space) and as int8, and `tfkd.TFLiteModel` evaluates the files on the
test set.

Steps: train the student densely for a third of the epochs (distilled), then prune
it to `--sparsity` (80% by default) with a polynomial schedule while distilling.
Expected result (9 epochs, TF backend, 2 CPU cores, about 2 minutes): the pruned
student within about 2 points of the dense one (BENCHMARKS.md has the figures),
the float file about 0.4x the dense model's. `--smoke` runs 3 epochs on 2,000
images in under a minute.

    python examples/prune_fashion_mnist.py [--epochs 9] [--sparsity 0.8] [--smoke]

Writes `{output-dir}/student_pruned.keras`, `student_pruned_float32.tflite` and
`student_pruned_int8.tflite`.
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

TEACHER = ROOT / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
BATCH_SIZE = 128


def student_cnn(seed=0):
    """The shared 8k-parameter student (benchmarks/models.py builds the same)."""
    return tfkd.models.cnn(
        (28, 28, 1), 10, filters=(12, 24, 24), batch_norm=False, seed=seed, name="student_cnn"
    )


def load_data(smoke):
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    x_train, x_test = x_train[..., None].astype("float32"), x_test[..., None].astype("float32")
    if smoke:
        return (x_train[:2000], y_train[:2000]), (x_test[:500], y_test[:500])
    return (x_train, y_train), (x_test, y_test)


def distill(teacher, student, data, cached, epochs):
    (x_train, y_train), _ = data
    distiller = tfkd.Distiller(teacher=teacher, student=student)
    distiller.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    inputs = tfkd.distill.with_teacher_outputs(x_train, cached)
    distiller.fit(inputs, y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=2)
    return distiller.student


def keras_accuracy(model, data):
    _, (x_test, y_test) = data
    return float(np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="3 epochs on 2,000 images.")
    parser.add_argument("--output-dir", type=pathlib.Path, default=ROOT / "examples" / "output")
    args = parser.parse_args(argv)
    epochs = 3 if args.smoke else args.epochs
    dense_epochs = max(1, epochs // 3)
    data = load_data(args.smoke)
    (x_train, _), (x_test, y_test) = data
    teacher = keras.saving.load_model(TEACHER)
    # No augmentation, so the teacher's outputs are computed once and reused.
    cached = tfkd.distill.teacher_outputs(teacher, x_train)

    keras.utils.set_random_seed(args.seed)
    print(f"== distil the dense student for {dense_epochs} epoch(s)")
    dense = distill(teacher, student_cnn(seed=args.seed), data, cached, dense_epochs)

    prune_epochs = epochs - dense_epochs
    steps = int(np.ceil(len(x_train) / BATCH_SIZE)) * prune_epochs
    schedule = tfkd.prune.PolynomialDecay(
        0.0, args.sparsity, begin_step=0, end_step=int(steps * 0.6), frequency=max(1, steps // 50)
    )
    print(f"== distil while pruning to {args.sparsity:.0%} for {prune_epochs} epoch(s)")
    pruned = distill(teacher, tfkd.prune.prune(dense, schedule), data, cached, prune_epochs)
    print(tfkd.prune.summary(pruned))

    stripped = tfkd.prune.strip(pruned)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stripped.save(args.output_dir / "student_pruned.keras")
    rows = [("teacher (Keras)", teacher.count_params(), None, keras_accuracy(teacher, data))]
    rows.append(("dense student (Keras)", dense.count_params(), None, keras_accuracy(dense, data)))
    rows.append(
        ("pruned student (Keras)", stripped.count_params(), None, keras_accuracy(stripped, data))
    )
    reports = {}
    for quantization in (None, "int8"):
        name = f"student_pruned_{quantization or 'float32'}.tflite"
        report = tfkd.export_tflite(
            stripped, args.output_dir / name, quantization, representative_data=x_train[:500]
        )
        lite = tfkd.TFLiteModel(report.path)
        reports[name] = report.to_dict()
        rows.append((name, None, report.bytes, lite.evaluate(x_test, y_test)["accuracy"]))
    dense_file = tfkd.export_tflite(dense, args.output_dir / "student_dense_float32.tflite")
    rows.append(("student_dense_float32.tflite", None, dense_file.bytes, None))

    print(f"\nFashion-MNIST test set ({len(x_test)} images)")
    print(f"{'model':32s} {'parameters':>10s} {'bytes':>8s} {'accuracy':>9s}")
    for name, parameters, size, accuracy in rows:
        print(
            f"{name:32s} {parameters or '':>10} {size or '':>8} "
            f"{'' if accuracy is None else f'{accuracy:.4f}':>9s}"
        )
    (args.output_dir / "prune_report.json").write_text(json.dumps(reports, indent=2) + "\n")
    print(f"\nFiles written to {args.output_dir}")


if __name__ == "__main__":
    main()
