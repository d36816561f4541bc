"""Channel pruning of the bundled MobileNetV2 teacher (96x96 inside): size, speed, accuracy.

For each fraction of channels, `tfkd.prune.prune_channels` on the teacher's weights
(`--importance`, PolynomialDecay from 0 to the fraction over 60% of the steps), fine-tuned
for `--epochs` epochs on the first `--train-size` training images as the student of
`tfkd.Distiller` with the unpruned teacher (its logits computed once), then
`tfkd.prune.shrink`. Parameters, multiply-adds, int8 `.tflite` bytes, Keras accuracy on
the 10,000 test images and int8 accuracy on the first `--tflite-test-size` of them, and
batch-1 latency (LiteRT, 1 thread) measured side by side with the unpruned file, rounds
interleaved. One seed: the teacher starts from ImageNet weights, so there is no model of
the same width "from scratch" to train here in comparable time (see BENCHMARKS.md).

    python benchmarks/prune_channels_mobilenet.py --sparsities 0.3 0.5 0.7
"""

import argparse
import json
import pathlib
import sys
import tempfile
import time

import keras
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import models  # noqa: E402
from prune_channels import latencies, multiply_adds  # noqa: E402

import tfkd  # noqa: E402

TEACHER = ROOT / "saved_models" / "fashion_mnist_mobilenet_v2_teacher" / "model.keras"
RESULTS = ROOT / "benchmarks" / "results" / "prune_channels_mobilenet.json"
BATCH_SIZE = 64


def fine_tune(teacher, teacher_logits, data, sparsity, arguments):
    (x_train, y_train), _ = data
    steps = int(np.ceil(len(x_train) / BATCH_SIZE)) * arguments.epochs
    schedule = tfkd.prune.PolynomialDecay(
        0.0, sparsity, begin_step=0, end_step=int(steps * 0.6), frequency=20
    )
    masked = tfkd.prune.prune_channels(teacher, schedule, importance=arguments.importance)
    distiller = tfkd.Distiller(teacher=teacher, student=masked)
    models.compile_classifier(distiller, arguments.learning_rate)
    inputs = tfkd.distill.with_teacher_outputs(x_train, teacher_logits)
    distiller.fit(inputs, y_train, batch_size=BATCH_SIZE, epochs=arguments.epochs, verbose=0)
    return tfkd.prune.shrink(masked)


def measure(model, data, directory, name, arguments):
    (x_train, _), (x_test, y_test) = data
    models.compile_classifier(model, arguments.learning_rate)
    path = pathlib.Path(directory) / f"{name}.tflite"
    tfkd.export_tflite(model, path, quantization="int8", representative_data=x_train[:200])
    lite = tfkd.TFLiteModel(path, num_threads=1)
    count = arguments.tflite_test_size
    row = {
        "accuracy": model.evaluate(x_test, y_test, batch_size=256, verbose=0)[1],
        "parameters": model.count_params(),
        "multiply_adds": multiply_adds(model),
        "int8_bytes": path.stat().st_size,
        "int8_accuracy": lite.evaluate(x_test[:count], y_test[:count])["accuracy"],
    }
    return lite, row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--importance", default="batch_norm")
    parser.add_argument("--tflite-test-size", type=int, default=2000)
    parser.add_argument("--latency-rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    start = time.perf_counter()
    keras.utils.set_random_seed(arguments.seed)
    (x_train, y_train), test = models.load_fashion_mnist()
    data = (x_train[: arguments.train_size], y_train[: arguments.train_size]), test
    teacher = keras.saving.load_model(TEACHER)
    teacher_logits = tfkd.distill.teacher_outputs(teacher, data[0][0], batch_size=256)
    rows, files = {}, {}
    with tempfile.TemporaryDirectory() as directory:
        files["unpruned"], rows["unpruned"] = measure(
            teacher, data, directory, "unpruned", arguments
        )
        for sparsity in arguments.sparsities:
            name = f"channels_{sparsity}"
            shrunk = fine_tune(teacher, teacher_logits, data, sparsity, arguments)
            files[name], rows[name] = measure(shrunk, data, directory, name, arguments)
            print(f"{name}: {rows[name]} ({time.perf_counter() - start:.0f} s)", flush=True)
        medians = latencies(files, test[0][:1], arguments.latency_rounds)
    for name, median in medians.items():
        rows[name]["latency_ms"] = round(median, 4)
        rows[name]["latency_ratio_to_unpruned"] = round(medians["unpruned"] / median, 3)
    result = {
        "command": "python benchmarks/prune_channels_mobilenet.py " + " ".join(sys.argv[1:]),
        "backend": keras.backend.backend(),
        "arguments": vars(arguments),
        "rows": rows,
        "seconds": round(time.perf_counter() - start, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(rows, indent=2))
    print(f"wrote {RESULTS} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
