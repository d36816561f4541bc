"""Builds, reproducibly, the pretrained teachers that tfkd's examples and benchmarks use.

Each teacher is written to `saved_models/<name>/model.keras` with a
`metadata.json` saying how it was made, on what data, its test accuracy, its
size and the command that built it.

    python saved_models/build_teachers.py                 # all teachers
    python saved_models/build_teachers.py --epochs 1      # quick check

Runs on any Keras backend; `KERAS_BACKEND=jax` on a GPU takes about a minute,
the TensorFlow backend on 2 CPU cores about 15 minutes.
"""

import argparse
import json
import os
import pathlib
import platform
import sys
import time

import keras
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT.parent), str(ROOT.parent / "benchmarks")]

import models  # noqa: E402

import tfkd  # noqa: E402


def _schedule(steps, learning_rate):
    return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)


def build_fashion_mnist_cnn_teacher(epochs, seed, output_dir):
    """Trains `benchmarks/models.py:teacher_cnn` on Fashion-MNIST's 60k training images."""
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    x_train, x_test = x_train[..., None], x_test[..., None]
    model = models.teacher_cnn(seed=seed)
    batch_size = 128
    steps = epochs * int(np.ceil(len(x_train) / batch_size))
    model.compile(
        optimizer=keras.optimizers.Adam(_schedule(steps, 2e-3)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=2)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=512, verbose=0)

    metadata = {
        "name": "fashion_mnist_cnn_teacher",
        "description": "VGG-style CNN teacher for the Distiller benchmark (logits output).",
        "architecture": "benchmarks/models.py:teacher_cnn",
        "data": "Fashion-MNIST, 60,000 training images (tfkd.datasets.load('fashion_mnist'))",
        "training": {
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": "Adam, cosine decay from 2e-3",
            "seed": seed,
            "seconds": round(seconds, 1),
            "backend": keras.backend.backend(),
            "machine": platform.machine(),
        },
        "test_accuracy": round(float(accuracy), 4),
        "parameters": int(model.count_params()),
        "input_shape": list(models.INPUT_SHAPE),
        "command": f"KERAS_BACKEND={keras.backend.backend()} python saved_models/build_teachers.py "
        f"--epochs {epochs} --seed {seed}",
    }
    _save(model, metadata, output_dir / "fashion_mnist_cnn_teacher")
    return metadata


def _save(model, metadata, directory):
    """Writes model and metadata atomically: a crash leaves the old files or none."""
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / "model.keras"
    temporary = directory / "model.tmp.keras"
    model.save(temporary)
    os.replace(temporary, model_path)
    metadata["bytes"] = model_path.stat().st_size
    temporary = directory / "metadata.json.tmp"
    temporary.write_text(json.dumps(metadata, indent=2) + "\n")
    os.replace(temporary, directory / "metadata.json")
    print(json.dumps(metadata, indent=2))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=pathlib.Path, default=ROOT)
    args = parser.parse_args(argv)
    build_fashion_mnist_cnn_teacher(args.epochs, args.seed, args.output_dir)


if __name__ == "__main__":
    main()
