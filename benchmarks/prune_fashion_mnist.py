"""Pruning benchmark on full Fashion-MNIST: tfkd vs tfmot, distill-while-pruning, export sizes.

Starting point: the Distiller benchmark's student (`models.student_cnn`, 8,194
parameters), trained densely on labels for `--dense-epochs`. From those weights,
for each target sparsity, the same schedule (PolynomialDecay from 0, power 3,
reaching the target after 60% of the fine-tuning steps, masks updated every 100
steps) and the same optimizer:
- `tfkd`: `tfkd.prune.prune` + `fit`, labels only;
- `tfkd_distill`: the pruned student inside `tfkd.Distiller` with the bundled
  teacher (cached teacher logits, the Distiller's defaults);
- `tfmot`: the same architecture rebuilt in `tf_keras` with the same weights,
  `tfmot.sparsity.keras.prune_low_magnitude` + `UpdatePruningStep`.
Then a 2:4 run (pattern checked on every kernel), the exported `.tflite` sizes at
80% (float/int8, dense and sparse format, gzip) measured by `tfkd.TFLiteModel`,
and training-step time ratios pruned/dense for tfkd and tfmot, interleaved.

    python benchmarks/prune_fashion_mnist.py --sparsities 0.5 0.8 0.9

tfmot needs `pip install 'tfkd[tfmot]'`; this script sets TF_USE_LEGACY_KERAS=1 for
its own process so that tfmot finds tf_keras (tfkd itself never does).
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # for tfmot only; tfkd uses Keras 3.

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import models  # noqa: E402

import tfkd  # noqa: E402

TEACHER = ROOT / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
BATCH_SIZE = 128
# Fine-tuning shuffles the training set with each library's own generator unless
# `--no-shuffle`; without shuffling both see batches in the same order, so the
# comparison isolates the implementations.
FIT_OPTIONS = {"shuffle": True}


def train_dense(data, epochs, seed):
    (x_train, y_train), (x_test, y_test) = data
    model = models.compile_classifier(models.student_cnn(seed=seed), 1e-3)
    model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)
    return model, model.evaluate(x_test, y_test, batch_size=1024, verbose=0)[1]


def _steps(x_train, epochs):
    return int(np.ceil(len(x_train) / BATCH_SIZE)) * epochs


def schedule_arguments(target, total_steps, target_name="target_sparsity"):
    """The same schedule for both; tfmot calls the target `final_sparsity`."""
    return dict(
        initial_sparsity=0.0,
        **{target_name: target},
        begin_step=0,
        end_step=int(total_steps * 0.6),
        frequency=100,
    )


def run_tfkd(
    dense, data, target, epochs, learning_rate, teacher_logits=None, pattern="unstructured"
):
    (x_train, y_train), (x_test, y_test) = data
    schedule = tfkd.prune.PolynomialDecay(**schedule_arguments(target, _steps(x_train, epochs)))
    if pattern != "unstructured":
        schedule = tfkd.prune.ConstantSparsity(0.5, begin_step=0, frequency=100)
    exclude = ["conv1"] if pattern != "unstructured" else None  # 1 input channel
    student = tfkd.prune.prune(dense, schedule, pattern=pattern, exclude=exclude)
    if teacher_logits is None:
        model, inputs = models.compile_classifier(student, learning_rate), x_train
    else:
        model = tfkd.Distiller(teacher=keras.saving.load_model(TEACHER), student=student)
        models.compile_classifier(model, learning_rate)
        inputs = tfkd.distill.with_teacher_outputs(x_train, teacher_logits)
    model.fit(inputs, y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0, **FIT_OPTIONS)
    stripped = tfkd.prune.strip(student)
    models.compile_classifier(stripped, learning_rate)
    accuracy = stripped.evaluate(x_test, y_test, batch_size=1024, verbose=0)[1]
    return stripped, accuracy


def _compile_tf_keras(model, learning_rate):
    import tf_keras

    model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def run_tfmot(dense, data, target, epochs, learning_rate):
    import tensorflow_model_optimization as tfmot

    (x_train, y_train), (x_test, y_test) = data
    x_train, x_test = x_train / 255.0, x_test / 255.0
    reference = models.tf_keras_student(dense)
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        **schedule_arguments(target, _steps(x_train, epochs), "final_sparsity")
    )
    pruned = tfmot.sparsity.keras.prune_low_magnitude(reference, pruning_schedule=schedule)
    _compile_tf_keras(pruned, learning_rate)
    pruned.fit(
        x_train,
        y_train,
        batch_size=BATCH_SIZE,
        epochs=epochs,
        verbose=0,
        **FIT_OPTIONS,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
    )
    stripped = _compile_tf_keras(tfmot.sparsity.keras.strip_pruning(pruned), learning_rate)
    accuracy = stripped.evaluate(x_test, y_test, batch_size=1024, verbose=0)[1]
    kernels = [w.numpy() for w in stripped.weights if "kernel" in w.name]
    sparsity = sum(int(np.sum(k == 0)) for k in kernels) / sum(k.size for k in kernels)
    return accuracy, sparsity


def export_sizes(dense, pruned, data, directory):
    (x_train, _), (x_test, y_test) = data
    calibration = x_train[:500]
    rows = []
    for name, model, sparsity in (
        ("dense", dense, False),
        ("pruned 80%, dense format", pruned, False),
        ("pruned 80%, sparse format", pruned, True),
    ):
        for quantization in (None, "int8"):
            path = (
                pathlib.Path(directory)
                / f"{name.split(',')[0].replace(' ', '_')}_{sparsity}_{quantization}.tflite"
            )
            report = tfkd.export_tflite(
                model,
                path,
                quantization=quantization,
                representative_data=calibration,
                sparsity=sparsity,
            )
            lite = tfkd.TFLiteModel(path)
            rows.append(
                {
                    "model": name,
                    "quantization": quantization or "float32",
                    "bytes": report.bytes,
                    "gzip_bytes": len(gzip.compress(path.read_bytes(), 9)),
                    "accuracy": lite.evaluate(x_test, y_test)["accuracy"],
                    "xnnpack": lite.xnnpack,
                }
            )
    return rows


def step_time_ratios(dense, data, repeats, learning_rate):
    """Seconds per training step, pruned / dense, for tfkd and tfmot, interleaved."""
    import tensorflow_model_optimization as tfmot

    (x_train, y_train), _ = data
    x, y = x_train[: BATCH_SIZE * 100], y_train[: BATCH_SIZE * 100]
    inputs = {"tfkd": x, "tfmot": x / 255.0}
    schedule = dict(target_sparsity=0.8, begin_step=0, frequency=100)
    candidates = {
        "tfkd_dense": models.compile_classifier(
            tfkd.prune.strip(tfkd.prune.prune(dense, 0.0)), learning_rate
        ),
        "tfkd_pruned": models.compile_classifier(
            tfkd.prune.prune(dense, tfkd.prune.ConstantSparsity(**schedule)), learning_rate
        ),
        "tfmot_dense": _compile_tf_keras(models.tf_keras_student(dense), learning_rate),
        "tfmot_pruned": _compile_tf_keras(
            tfmot.sparsity.keras.prune_low_magnitude(
                models.tf_keras_student(dense),
                pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(**schedule),
            ),
            learning_rate,
        ),
    }
    seconds = {name: [] for name in candidates}
    for round_index in range(repeats + 1):
        for name, model in candidates.items():
            callbacks = [tfmot.sparsity.keras.UpdatePruningStep()] if name == "tfmot_pruned" else []
            start = time.perf_counter()
            model.fit(
                inputs[name.split("_")[0]],
                y,
                batch_size=BATCH_SIZE,
                epochs=1,
                verbose=0,
                callbacks=callbacks,
            )
            if round_index:  # round 0 compiles the train functions
                seconds[name].append((time.perf_counter() - start) / 100)
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "seconds_per_step": medians,
        "tfkd_pruned_over_dense": medians["tfkd_pruned"] / medians["tfkd_dense"],
        "tfmot_pruned_over_dense": medians["tfmot_pruned"] / medians["tfmot_dense"],
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.8, 0.9])
    parser.add_argument("--dense-epochs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4, help="pruning fine-tuning epochs")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing-repeats", type=int, default=5)
    parser.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--accuracy-only", action="store_true", help="skip the 2:4, export and timing parts"
    )
    parser.add_argument("--timing-only", action="store_true", help="only the step-time ratios")
    parser.add_argument(
        "--output", default=str(ROOT / "benchmarks" / "results" / "prune_fashion_mnist.json")
    )
    args = parser.parse_args()
    FIT_OPTIONS["shuffle"] = args.shuffle

    data = models.load_fashion_mnist()
    dense, dense_accuracy = train_dense(data, args.dense_epochs, args.seed)
    print(f"dense student: test accuracy {dense_accuracy:.4f}", flush=True)
    if args.timing_only:
        timing = step_time_ratios(dense, data, args.timing_repeats, args.learning_rate)
        print(f"step time: {timing}", flush=True)
        _write({"arguments": vars(args), "step_time": timing}, args.output)
        return
    teacher = keras.saving.load_model(TEACHER)
    teacher_logits = tfkd.distill.teacher_outputs(teacher, data[0][0], batch_size=512)
    results = {"dense_accuracy": dense_accuracy, "arguments": vars(args), "sparsity": {}}
    pruned_80 = None
    for target in args.sparsities:
        keras.utils.set_random_seed(args.seed)
        plain, plain_accuracy = run_tfkd(dense, data, target, args.epochs, args.learning_rate)
        keras.utils.set_random_seed(args.seed)
        _, distill_accuracy = run_tfkd(
            dense, data, target, args.epochs, args.learning_rate, teacher_logits=teacher_logits
        )
        keras.utils.set_random_seed(args.seed)
        tfmot_accuracy, tfmot_sparsity = run_tfmot(
            dense, data, target, args.epochs, args.learning_rate
        )
        row = {
            "tfkd": plain_accuracy,
            "tfkd_distill": distill_accuracy,
            "tfmot": tfmot_accuracy,
            "tfkd_sparsity": tfkd.prune.summary(plain).sparsity,
            "tfmot_sparsity": tfmot_sparsity,
        }
        results["sparsity"][str(target)] = row
        print(
            f"sparsity {target}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True
        )
        if target == 0.8:
            pruned_80 = plain
    if args.accuracy_only:
        _write(results, args.output)
        return
    keras.utils.set_random_seed(args.seed)
    structured, structured_accuracy = run_tfkd(
        dense, data, 0.5, args.epochs, args.learning_rate, pattern="2:4"
    )
    summary = tfkd.prune.summary(structured, pattern="2:4")
    results["two_of_four"] = {
        "accuracy": structured_accuracy,
        "sparsity": summary.sparsity,
        "pattern_ok": {row["name"]: row.get("pattern_ok") for row in summary.layers},
    }
    print(f"2:4: {results['two_of_four']}", flush=True)
    if pruned_80 is not None:
        with tempfile.TemporaryDirectory() as directory:
            results["export"] = export_sizes(dense, pruned_80, data, directory)
        for row in results["export"]:
            print(row, flush=True)
    results["step_time"] = step_time_ratios(dense, data, args.timing_repeats, args.learning_rate)
    print(f"step time: {results['step_time']}", flush=True)
    _write(results, args.output)


def _write(results, output):
    output = pathlib.Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
