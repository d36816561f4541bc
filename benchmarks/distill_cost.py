"""What consistent teaching costs: the online Distiller with in-step augmentation and mixup,
against the least it could cost (a student epoch plus the teacher's forward passes).

Measured side by side in one process, interleaved over `--repeats` rounds (these machines
are shared and noisy), on the same batches:
- `distiller`: one epoch of `tfkd.Distiller(teacher, student, augmentation=..., mixup=0.2)`,
  the teacher run online at every step;
- `student`: one epoch of the same student trained on labels with `fit`, no augmentation;
- `teacher`: the teacher's forward passes on the same batches (`predict`).

The issue-15 target: median distiller epoch / (median student epoch + median teacher
pass) <= 1.1. Student: the default pipeline's 165k CNN; teacher: the bundled CNN teacher.

    python benchmarks/distill_cost.py --repeats 7 --output benchmarks/results/distill_cost.json
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import keras

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import models  # noqa: E402
from provenance import machine  # noqa: E402

import tfkd  # noqa: E402
from tfkd import _atomic  # noqa: E402

TEACHER = ROOT / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"


def student():
    return tfkd.models.cnn(
        (28, 28, 1), 10, filters=(24, 48, 96), dense_units=128, dropout=0.3, seed=0
    )


def augmentation():
    return keras.Sequential(
        [
            keras.layers.RandomTranslation(2 / 28, 2 / 28, fill_mode="constant", seed=0),
            keras.layers.RandomFlip("horizontal", seed=1),
        ],
        name="augmentation",
    )


def time_epoch(model, x, y, batch_size):
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - start


def time_teacher(teacher, x, batch_size):
    start = time.perf_counter()
    teacher.predict(x, batch_size=batch_size, verbose=0)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=pathlib.Path)
    args = parser.parse_args()
    began = time.perf_counter()
    (x, y), _ = models.load_fashion_mnist()
    x, y = x[: args.train_size], y[: args.train_size]
    teacher = keras.saving.load_model(TEACHER)
    distiller = tfkd.Distiller(teacher, student(), augmentation=augmentation(), mixup=0.2, seed=0)
    plain = student()
    for model in (distiller, plain):
        models.compile_classifier(model, 1e-3)
    # Warm-up: trace every function once (not timed).
    time_epoch(distiller, x[:512], y[:512], args.batch_size)
    time_epoch(plain, x[:512], y[:512], args.batch_size)
    time_teacher(teacher, x[:512], args.batch_size)
    seconds = {"distiller": [], "student": [], "teacher": []}
    for repeat in range(args.repeats):
        seconds["distiller"].append(time_epoch(distiller, x, y, args.batch_size))
        seconds["student"].append(time_epoch(plain, x, y, args.batch_size))
        seconds["teacher"].append(time_teacher(teacher, x, args.batch_size))
        medians = {key: statistics.median(values) for key, values in seconds.items()}
        ratio = medians["distiller"] / (medians["student"] + medians["teacher"])
        print(
            f"round {repeat + 1}: "
            + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in seconds.items())
            + f"; ratio so far {ratio:.3f} ({time.perf_counter() - began:.0f} s elapsed)",
            flush=True,
        )
    result = {
        "command": "python " + " ".join(sys.argv),
        "backend": keras.backend.backend(),
        "settings": {
            "train_size": len(x),
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "augmentation": "RandomTranslation(2/28) + RandomFlip(horizontal)",
            "mixup": 0.2,
            "teacher": str(TEACHER.relative_to(ROOT)),
            "student_parameters": plain.count_params(),
        },
        "epoch_seconds": seconds,
        "median_seconds": medians,
        "ratio": ratio,
        "target": 1.1,
        "met": ratio <= 1.1,
        "cpu_count": os.cpu_count(),
        "machine": machine(),
    }
    print(json.dumps({key: result[key] for key in ("median_seconds", "ratio", "met")}))
    if args.output:
        _atomic.write_bytes(args.output, (json.dumps(result, indent=2) + "\n").encode())
    print(f"elapsed {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
