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

`--shrunk-epochs N` then fine-tunes each shrunk model N more epochs on all 60,000
training images, again as a Distiller student of the unpruned teacher (cached logits,
Adam with cosine decay from `--learning-rate`): the smaller model trains about twice as
fast a step as the masked one. `--preprocessing-first` builds every model with the
teacher's grayscale-to-RGB and normalization before its resize, the order
`tfkd.transfer.build_classifier` now uses (the same outputs to float rounding, computed
on the 28x28 image instead of the 96x96 one); the saved teacher's file, in its own
order, is then timed too (`unpruned_saved_order`).

    python benchmarks/prune_channels_mobilenet.py --sparsities 0.3 0.5 0.7
    python benchmarks/prune_channels_mobilenet.py --sparsities 0.5 0.6 0.7 --shrunk-epochs 3 \
        --preprocessing-first --output benchmarks/results/prune_channels_mobilenet_long.json
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
# The teacher's layers that `preprocessing_first` moves before its resize, in order.
PREPROCESSING_FIRST = ("grayscale_to_rgb", "torchvision_normalization", "resize")


def preprocessing_first(model):
    """The teacher with grayscale-to-RGB and normalization on the 28x28 image, then the
    resize: the same layers and weights, rewired."""
    inputs = keras.Input(model.input_shape[1:], name="inputs")
    x = inputs
    for name in PREPROCESSING_FIRST:
        x = model.get_layer(name)(x)
    for layer in model.layers[1 + len(PREPROCESSING_FIRST) :]:
        x = layer(x)
    return keras.Model(inputs, x, name=model.name)


def distill(teacher, student, x, y, logits, epochs, learning_rate):
    """`epochs` of `student` as the Distiller student of `teacher`, from cached logits."""
    distiller = tfkd.Distiller(teacher=teacher, student=student)
    models.compile_classifier(distiller, learning_rate)
    inputs = tfkd.distill.with_teacher_outputs(x, logits)
    return distiller.fit(inputs, y, batch_size=BATCH_SIZE, epochs=epochs, verbose=0)


def fine_tune(teacher, teacher_logits, data, sparsity, arguments):
    (x_train, y_train), _ = data
    size = arguments.train_size
    steps = int(np.ceil(size / BATCH_SIZE)) * arguments.epochs
    schedule = tfkd.prune.PolynomialDecay(
        0.0, sparsity, begin_step=0, end_step=int(steps * 0.6), frequency=20
    )
    masked = tfkd.prune.prune_channels(teacher, schedule, importance=arguments.importance)
    logits = {key: value[:size] for key, value in teacher_logits.items()}
    distill(
        teacher,
        masked,
        x_train[:size],
        y_train[:size],
        logits,
        arguments.epochs,
        arguments.learning_rate,
    )
    shrunk = tfkd.prune.shrink(masked)
    if arguments.shrunk_epochs:
        steps = int(np.ceil(len(x_train) / BATCH_SIZE)) * arguments.shrunk_epochs
        rate = keras.optimizers.schedules.CosineDecay(arguments.learning_rate, steps)
        history = distill(
            teacher, shrunk, x_train, y_train, teacher_logits, arguments.shrunk_epochs, rate
        )
        epochs = {key: [round(v, 4) for v in values] for key, values in history.history.items()}
        print(f"  {sparsity}: the shrunk model's fine-tuning, per epoch: {epochs}", flush=True)
    return shrunk


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
    parser.add_argument("--shrunk-epochs", type=int, default=0)
    parser.add_argument("--shrunk-train-size", type=int, default=60000)
    parser.add_argument("--preprocessing-first", action="store_true")
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS)
    arguments = parser.parse_args()
    start = time.perf_counter()
    keras.utils.set_random_seed(arguments.seed)
    (x_train, y_train), test = models.load_fashion_mnist()
    size = arguments.shrunk_train_size if arguments.shrunk_epochs else arguments.train_size
    data = (x_train[:size], y_train[:size]), test
    saved = keras.saving.load_model(TEACHER)
    teacher = saved
    if arguments.preprocessing_first:
        teacher = preprocessing_first(saved)
        sample = test[0][:256]
        np.testing.assert_allclose(teacher.predict(sample), saved.predict(sample), atol=1e-3)
    teacher_logits = tfkd.distill.teacher_outputs(teacher, data[0][0], batch_size=256)
    rows, files = {}, {}
    with tempfile.TemporaryDirectory() as directory:
        if arguments.preprocessing_first:
            files["unpruned_saved_order"], rows["unpruned_saved_order"] = measure(
                saved, data, directory, "unpruned_saved_order", arguments
            )
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
        "arguments": {**vars(arguments), "output": str(arguments.output)},
        "rows": rows,
        "seconds": round(time.perf_counter() - start, 1),
    }
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(rows, indent=2))
    print(f"wrote {arguments.output} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
