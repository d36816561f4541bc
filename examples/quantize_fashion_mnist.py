"""Quantize a distilled Fashion-MNIST student to int8, after training (PTQ) and during it (QAT).

What it shows: a student distilled with `tfkd.Distiller` becomes an int8 `.tflite`
in two ways.
- PTQ: `tfkd.export_tflite(..., quantization="int8", representative_data=...)`
  calibrates the activation ranges on a few hundred training images.
- QAT: `tfkd.quantize.quantize_aware` gives a Keras model that trains with the
  int8 rounding in the loop (here as the student of the same Distiller), and
  exports to a fully int8 file from the ranges it learned, with no calibration.
`tfkd.TFLiteModel` then evaluates each file on the test set and times it, and the
script prints a table: accuracy, bytes and batch-1 latency for the float32, PTQ
int8 and QAT int8 files.

Expected result (8 + 2 epochs, TF backend, 2 CPU cores, about 3 minutes): both
int8 files about 0.4x the float file (this 8k-parameter model is dominated by the
format's fixed overhead), PTQ within about 0.5 points of float, QAT at or above
PTQ (BENCHMARKS.md has the measured figures). `--smoke` trains 2 + 1 epochs on
6,000 images in about a minute.

    python examples/quantize_fashion_mnist.py [--epochs 8] [--qat-epochs 2] [--smoke]

Writes `{output-dir}/student_float32.tflite`, `student_ptq_int8.tflite`,
`student_qat_int8.tflite`, `student_qat.keras` and `quantize_report.json`.
"""

import argparse
import json
import pathlib
import sys

import keras

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
        return (x_train[:6000], y_train[:6000]), (x_test[:1000], y_test[:1000])
    return (x_train, y_train), (x_test, y_test)


def distill(teacher, student, data, cached, epochs, learning_rate):
    (x_train, y_train), _ = data
    distiller = tfkd.Distiller(teacher=teacher, student=student)
    distiller.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    inputs = tfkd.distill.with_teacher_outputs(x_train, cached)
    distiller.fit(inputs, y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=2)
    return student


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="float distillation epochs")
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads")
    parser.add_argument("--smoke", action="store_true", help="2 + 1 epochs on 6,000 images.")
    parser.add_argument("--output-dir", type=pathlib.Path, default=ROOT / "examples" / "output")
    args = parser.parse_args(argv)
    epochs, qat_epochs = (2, 1) if args.smoke else (args.epochs, args.qat_epochs)
    data = load_data(args.smoke)
    (x_train, _), (x_test, y_test) = data
    teacher = keras.saving.load_model(TEACHER)
    # No augmentation, so the teacher's outputs are computed once and reused.
    cached = tfkd.distill.teacher_outputs(teacher, x_train)

    keras.utils.set_random_seed(args.seed)
    print(f"== distil the float student for {epochs} epoch(s)")
    student = distill(teacher, student_cnn(seed=args.seed), data, cached, epochs, 1e-3)

    print(f"== quantization-aware training, distilled, for {qat_epochs} epoch(s)")
    qat_student = tfkd.quantize.quantize_aware(student)
    distill(teacher, qat_student, data, cached, qat_epochs, 1e-4)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    qat_student.save(args.output_dir / "student_qat.keras")
    exports = {
        "student_float32.tflite": (student, None),
        "student_ptq_int8.tflite": (student, "int8"),
        "student_qat_int8.tflite": (qat_student, "int8"),
    }
    rows, reports = [], {}
    for name, (model, quantization) in exports.items():
        report = tfkd.export_tflite(
            model, args.output_dir / name, quantization, representative_data=x_train[:500]
        )
        lite = tfkd.TFLiteModel(report.path, num_threads=args.threads)
        accuracy = lite.evaluate(x_test, y_test)["accuracy"]
        milliseconds = lite.benchmark(num_runs=200)["median_ms"]
        reports[name] = {**report.to_dict(), "accuracy": accuracy, "median_ms": milliseconds}
        rows.append((name, report.bytes, accuracy, milliseconds, report.float_ops))

    print(f"\nFashion-MNIST test set ({len(x_test)} images), latency at batch 1, ", end="")
    print(f"{args.threads} thread(s)")
    print(f"{'file':26s} {'bytes':>7s} {'accuracy':>9s} {'ms':>7s}  float ops")
    for name, size, accuracy, milliseconds, float_ops in rows:
        print(f"{name:26s} {size:>7} {accuracy:>9.4f} {milliseconds:>7.3f}  {float_ops or 'none'}")
    (args.output_dir / "quantize_report.json").write_text(json.dumps(reports, indent=2) + "\n")
    print(f"\nFiles written to {args.output_dir}")


if __name__ == "__main__":
    main()
