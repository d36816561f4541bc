"""Channel pruning benchmark on full Fashion-MNIST: smaller int8 files that run faster.

The model is the default pipeline's 165k-parameter student (`tfkd.models.cnn` with filters
(24, 48, 96), a Dense layer of 128 and dropout 0.3), trained on the first `--train-size`
training images (all 10,000 test images score it). For each seed:
- `unpruned`: trained on labels for `--epochs` epochs;
- for each fraction of channels: `tfkd.prune.prune_channels` on the unpruned weights
  (`--importance`, PolynomialDecay from 0 to the fraction over 60% of the steps, masks
  updated every 50 steps), fine-tuned for `--fine-tune-epochs` epochs as the student of
  `tfkd.Distiller` with the bundled CNN teacher (its logits computed once), then
  `tfkd.prune.shrink`;
- `scratch`: a model of the shrunk widths, trained on labels from a fresh initialisation
  for `--epochs` + `--fine-tune-epochs` epochs, the same number of passes.
Parameters, multiply-adds, int8 `.tflite` bytes and accuracy come from seed 0's files;
batch-1 latency (LiteRT, 1 thread) is measured side by side, rounds interleaved, and
reported as a ratio to the unpruned file.

    python benchmarks/prune_channels.py --seeds 0 1 2 --sparsities 0.3 0.5 0.7
"""

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

import keras
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import models  # noqa: E402

import tfkd  # noqa: E402

TEACHER = ROOT / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
RESULTS = ROOT / "benchmarks" / "results" / "prune_channels.json"
BATCH_SIZE = 128
LEARNING_RATE = 1e-3


def student(seed, filters=(24, 48, 96), dense_units=128):
    return tfkd.models.cnn(
        (28, 28, 1), 10, filters=tuple(filters), dense_units=dense_units, dropout=0.3, seed=seed
    )


def train(model, data, epochs):
    (x_train, y_train), (x_test, y_test) = data
    models.compile_classifier(model, LEARNING_RATE)
    model.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)
    return model.evaluate(x_test, y_test, batch_size=1024, verbose=0)[1]


def fine_tune(unpruned, teacher_logits, data, sparsity, epochs, importance):
    (x_train, y_train), (x_test, y_test) = data
    steps = int(np.ceil(len(x_train) / BATCH_SIZE)) * epochs
    schedule = tfkd.prune.PolynomialDecay(
        initial_sparsity=0.0,
        target_sparsity=sparsity,
        begin_step=0,
        end_step=int(steps * 0.6),
        frequency=50,
    )
    masked = tfkd.prune.prune_channels(unpruned, schedule, importance=importance)
    distiller = tfkd.Distiller(teacher=keras.saving.load_model(TEACHER), student=masked)
    models.compile_classifier(distiller, LEARNING_RATE)
    inputs = tfkd.distill.with_teacher_outputs(x_train, teacher_logits)
    distiller.fit(inputs, y_train, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)
    shrunk = tfkd.prune.shrink(masked)
    models.compile_classifier(shrunk, LEARNING_RATE)
    return shrunk, shrunk.evaluate(x_test, y_test, batch_size=1024, verbose=0)[1]


def widths(model):
    """The filters of conv1..3 and the units of `features`, as the shrunk model has them."""
    filters = [model.get_layer(f"conv{index}").filters for index in (1, 2, 3)]
    return filters, model.get_layer("features").units


def multiply_adds(model):
    """Multiply-adds of one inference: convolutions and Dense layers, nested models too."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += multiply_adds(layer)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            height, width = layer.output.shape[1:3]
            total += height * width * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return int(total)


def export_int8(model, data, directory, name):
    (x_train, _), (x_test, y_test) = data
    path = pathlib.Path(directory) / f"{name}.tflite"
    tfkd.export_tflite(model, path, quantization="int8", representative_data=x_train[:500])
    lite = tfkd.TFLiteModel(path, num_threads=1)
    return lite, {
        "int8_bytes": path.stat().st_size,
        "int8_accuracy": lite.evaluate(x_test, y_test)["accuracy"],
    }


def latencies(files, sample, rounds):
    """Median batch-1 latency of each file over `rounds` interleaved rounds of 100 runs."""
    timings = {name: [] for name in files}
    for _ in range(rounds):
        for name, lite in files.items():
            timings[name].append(
                lite.benchmark(num_runs=100, warmup_runs=10, sample=sample)["median_ms"]
            )
    return {name: statistics.median(values) for name, values in timings.items()}


def run_seed(seed, data, teacher_logits, arguments, directory):
    start = time.perf_counter()
    unpruned = student(seed)
    rows = {"unpruned": {"accuracy": train(unpruned, data, arguments.epochs)}}
    models_by_name = {"unpruned": unpruned}
    for sparsity in arguments.sparsities:
        keras.utils.set_random_seed(seed)
        shrunk, accuracy = fine_tune(
            unpruned,
            teacher_logits,
            data,
            sparsity,
            arguments.fine_tune_epochs,
            arguments.importance,
        )
        filters, units = widths(shrunk)
        scratch = student(seed, filters, units)
        scratch_accuracy = train(scratch, data, arguments.epochs + arguments.fine_tune_epochs)
        rows[f"channels_{sparsity}"] = {
            "accuracy": accuracy,
            "scratch_accuracy": scratch_accuracy,
            "filters": filters,
            "dense_units": units,
        }
        models_by_name[f"channels_{sparsity}"] = shrunk
        print(
            f"seed {seed} sparsity {sparsity}: pruned+distilled {accuracy:.4f}, "
            f"scratch {scratch_accuracy:.4f} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    return rows, models_by_name


def files_table(models_by_name, rows, data, directory, rounds):
    files = {}
    for name, model in models_by_name.items():
        lite, measured = export_int8(model, data, directory, name)
        files[name] = lite
        rows[name].update(
            measured, parameters=model.count_params(), multiply_adds=multiply_adds(model)
        )
    medians = latencies(files, data[1][0][:1], rounds)
    for name, median in medians.items():
        rows[name]["latency_ms"] = round(median, 4)
        rows[name]["latency_ratio_to_unpruned"] = round(medians["unpruned"] / median, 3)
    return rows


def summarise(per_seed):
    summary = {}
    for name in per_seed[0]:
        for key in ("accuracy", "scratch_accuracy"):
            values = [rows[name][key] for rows in per_seed if key in rows[name]]
            if values:
                summary.setdefault(name, {})[key] = {
                    "mean": statistics.fmean(values),
                    "std": statistics.pstdev(values),
                    "values": values,
                }
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fine-tune-epochs", type=int, default=2)
    parser.add_argument("--importance", default="batch_norm")
    parser.add_argument("--latency-rounds", type=int, default=5)
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS)
    arguments = parser.parse_args()
    start = time.perf_counter()
    (x_train, y_train), test = models.load_fashion_mnist()
    data = (x_train[: arguments.train_size], y_train[: arguments.train_size]), test
    teacher = keras.saving.load_model(TEACHER)
    teacher_logits = tfkd.distill.teacher_outputs(teacher, data[0][0], batch_size=512)
    per_seed = []
    with tempfile.TemporaryDirectory() as directory:
        for seed in arguments.seeds:
            rows, models_by_name = run_seed(seed, data, teacher_logits, arguments, directory)
            if seed == arguments.seeds[0]:
                rows = files_table(models_by_name, rows, data, directory, arguments.latency_rounds)
            per_seed.append(rows)
    result = {
        "command": "python benchmarks/prune_channels.py " + " ".join(sys.argv[1:]),
        "backend": keras.backend.backend(),
        "arguments": {k: v for k, v in vars(arguments).items() if k != "output"},
        "files_from_seed": arguments.seeds[0],
        "per_seed": per_seed,
        "summary": summarise(per_seed),
        "seconds": round(time.perf_counter() - start, 1),
    }
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {arguments.output} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
