"""Quantization benchmark on full Fashion-MNIST: every export mode, PTQ vs QAT vs tfmot, latency.

Starting point: the Distiller benchmark's student (`models.student_cnn`, 8,194
parameters), distilled from the bundled teacher for `--distill-epochs` (cached
teacher logits, the Distiller's defaults). Then:
- the float student exported in every mode (float32, dynamic, float16, int8 PTQ
  calibrated on 500 training images, int16x8), each file evaluated by
  `tfkd.TFLiteModel` on the full test set;
- QAT, `--qat-epochs` of fine-tuning from the float weights, with the same
  optimizer and batch order for:
  - `tfkd QAT`: `tfkd.quantize.quantize_aware` + `fit` on labels;
  - `tfkd QAT + distill`: the QAT model as a `tfkd.Distiller` student;
  - `tfmot QAT`: the same architecture rebuilt in `tf_keras` from the same weights,
    `tfmot.quantization.keras.quantize_model` + `fit` on labels;
  - `float, fine-tuned`: the float model trained the same way without quantization,
    a control that shows what the extra epochs alone are worth;
  each QAT model exported to int8 and evaluated as a `.tflite`;
- latency of the float32 and int8 files at batch 1, interleaved in one run, for
  1 and 2 interpreter threads.

    python benchmarks/quantize_fashion_mnist.py

tfmot needs `pip install 'tfkd[tfmot]'`; this script sets TF_USE_LEGACY_KERAS=1 for
its own process so that tfmot finds tf_keras (tfkd itself never does).
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # for tfmot only; tfkd uses Keras 3.

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import keras  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import models  # noqa: E402

import tfkd  # noqa: E402

TEACHER = ROOT / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
BATCH_SIZE = 128
CALIBRATION_SAMPLES = 500


def distill_student(data, teacher_logits, epochs, seed):
    (x_train, y_train), _ = data
    keras.utils.set_random_seed(seed)
    student = models.student_cnn(seed=seed)
    distiller = tfkd.Distiller(teacher=keras.saving.load_model(TEACHER), student=student)
    models.compile_classifier(distiller, 1e-3)
    inputs = tfkd.distill.with_teacher_outputs(x_train, teacher_logits)
    distiller.fit(inputs, y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)
    return student


def fine_tune(model, data, epochs, learning_rate, teacher_logits=None, shuffle=False):
    """Trains `model` (float or QAT) for `epochs`, on labels or as a Distiller student."""
    (x_train, y_train), _ = data
    trainer, inputs = models.compile_classifier(model, learning_rate), x_train
    if teacher_logits is not None:
        trainer = tfkd.Distiller(teacher=keras.saving.load_model(TEACHER), student=model)
        models.compile_classifier(trainer, learning_rate)
        inputs = tfkd.distill.with_teacher_outputs(x_train, teacher_logits)
    trainer.fit(inputs, y_train, batch_size=BATCH_SIZE, epochs=epochs, shuffle=shuffle, verbose=0)
    return model


def tfmot_qat(student, data, epochs, learning_rate, shuffle=False):
    """tfmot's QAT on the same architecture in tf_keras; returns the `.tflite` bytes."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    (x_train, y_train), _ = data
    quantized = tfmot.quantization.keras.quantize_model(models.tf_keras_student(student))
    quantized.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    quantized.fit(
        x_train / 255.0, y_train, batch_size=BATCH_SIZE, epochs=epochs, shuffle=shuffle, verbose=0
    )
    converter = tf.lite.TFLiteConverter.from_keras_model(quantized)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def _row(name, path, report, data, scale=1.0):
    _, (x_test, y_test) = data
    lite = tfkd.TFLiteModel(path)
    row = {
        "model": name,
        "bytes": pathlib.Path(path).stat().st_size,
        "accuracy": lite.evaluate(x_test * scale, y_test)["accuracy"],
    }
    if report is not None:
        row["float_ops"] = report.float_ops
        row["ops"] = report.ops
    print(_format(row), flush=True)
    return row


def _format(row):
    text = f"{row['model']:<32} {row['bytes']:>7} B  accuracy {row['accuracy']:.4f}"
    if "float_ops" in row:
        text += f"  float ops {row['float_ops'] or 'none'}"
    return text


def export_modes(student, data, directory):
    (x_train, _), _ = data
    rows, paths = [], {}
    for quantization in (None, "dynamic", "float16", "int8", "int16x8"):
        name = quantization or "float32"
        path = pathlib.Path(directory) / f"student_{name}.tflite"
        report = tfkd.export_tflite(
            student,
            path,
            quantization=quantization,
            representative_data=x_train[:CALIBRATION_SAMPLES],
        )
        rows.append(_row(f"float student, {name}", path, report, data))
        paths[name] = path
    return rows, paths


def latency(paths, threads, repeats, num_runs):
    """Median batch-1 latency (ms) per file and thread count, runs interleaved."""
    timings = {(name, count): [] for name in paths for count in threads}
    lites = {
        (name, count): tfkd.TFLiteModel(path, count)
        for name, path in paths.items()
        for count in threads
    }
    for _ in range(repeats):
        for key, lite in lites.items():
            timings[key].append(lite.benchmark(num_runs=num_runs)["median_ms"])
    return [
        {"model": name, "num_threads": count, "median_ms": statistics.median(values)}
        for (name, count), values in timings.items()
    ]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--distill-epochs", type=int, default=10)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="QAT fine-tuning")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--latency-repeats", type=int, default=5)
    parser.add_argument("--latency-runs", type=int, default=300)
    parser.add_argument(
        "--output", default=str(ROOT / "benchmarks" / "results" / "quantize_fashion_mnist.json")
    )
    args = parser.parse_args()

    data = models.load_fashion_mnist()
    teacher = keras.saving.load_model(TEACHER)
    teacher_logits = tfkd.distill.teacher_outputs(teacher, data[0][0], batch_size=512)
    student = distill_student(data, teacher_logits, args.distill_epochs, args.seed)
    results = {"arguments": vars(args)}
    with tempfile.TemporaryDirectory() as directory:
        rows, paths = export_modes(student, data, directory)
        runs = {
            "tfkd QAT": (tfkd.quantize.quantize_aware(student), None),
            "tfkd QAT + distill": (tfkd.quantize.quantize_aware(student), teacher_logits),
            "float, fine-tuned": (keras.models.clone_model(student), None),
        }
        for name, (model, logits) in runs.items():
            if name == "float, fine-tuned":
                model.set_weights(student.get_weights())
            keras.utils.set_random_seed(args.seed)
            fine_tune(model, data, args.qat_epochs, args.learning_rate, logits, args.shuffle)
            quantization = None if name.startswith("float") else "int8"
            path = pathlib.Path(directory) / f"{name.replace(' ', '_')}.tflite"
            report = tfkd.export_tflite(
                model, path, quantization, representative_data=data[0][0][:CALIBRATION_SAMPLES]
            )
            rows.append(_row(f"{name}, {quantization or 'float32'}", path, report, data))
            paths[name] = path
        keras.utils.set_random_seed(args.seed)
        path = pathlib.Path(directory) / "tfmot_qat.tflite"
        path.write_bytes(
            tfmot_qat(student, data, args.qat_epochs, args.learning_rate, args.shuffle)
        )
        rows.append(_row("tfmot QAT, int8", path, None, data, scale=1.0 / 255.0))
        results["rows"] = rows
        latency_paths = {name: paths[name] for name in ("float32", "int8", "tfkd QAT")}
        results["latency"] = latency(
            latency_paths, args.threads, args.latency_repeats, args.latency_runs
        )
    for row in results["latency"]:
        print(f"latency {row}", flush=True)
    _write(results, args.output)


def _write(results, output):
    output = pathlib.Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
