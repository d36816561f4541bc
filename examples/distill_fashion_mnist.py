"""Distil a Fashion-MNIST CNN teacher into a student 20x smaller, with tfkd.Distiller.

What it shows: the tfkd workflow on real data, offline. The teacher
(`saved_models/fashion_mnist_cnn_teacher`, 160k parameters) is frozen; its
outputs are computed once (offline distillation: the inputs are not augmented,
so caching is exact) and the 8k-parameter student trains on labels and
teacher outputs through `model.fit`. The same student trained on labels alone
is the baseline.

Expected result (8 epochs, TF backend, 2 CPU cores, about 3 minutes): teacher
0.93 test accuracy; student from scratch and distilled student both about
0.80 (seed 0: 0.7908 and 0.7907; BENCHMARKS.md has 3 seeds and why this tiny
student gains little from its teacher).
`--smoke` runs two epochs on 6,000 images in about 30 seconds.

    python examples/distill_fashion_mnist.py [--epochs 8] [--smoke]

Writes `saved_models/fashion_mnist_student_distilled/{model.keras,metadata.json}`.
"""

import argparse
import pathlib
import sys
import time

import keras

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tfkd  # noqa: E402

TEACHER = ROOT / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"


def student_cnn(seed=0):
    """The shared 8k-parameter student (benchmarks/models.py builds the same)."""
    return tfkd.models.cnn(
        (28, 28, 1), 10, filters=(12, 24, 24), batch_norm=False, seed=seed, name="student_cnn"
    )


def load_data(smoke):
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    x_train, x_test = x_train[..., None], x_test[..., None]
    if smoke:
        return (x_train[:6000], y_train[:6000]), (x_test[:1000], y_test[:1000])
    return (x_train, y_train), (x_test, y_test)


def compile_args():
    return {
        "optimizer": keras.optimizers.Adam(1e-3),
        "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "metrics": ["accuracy"],
    }


def train_from_scratch(data, epochs, seed):
    (x_train, y_train), _ = data
    student = student_cnn(seed=seed)
    student.compile(**compile_args())
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    student.fit(x_train, y_train, batch_size=128, epochs=epochs, verbose=2)
    return student, time.perf_counter() - start


def distill(teacher, data, epochs, seed):
    (x_train, y_train), _ = data
    distiller = tfkd.Distiller(teacher=teacher, student=student_cnn(seed=seed))
    distiller.compile(**compile_args())
    start = time.perf_counter()
    # No augmentation here, so the teacher's outputs can be computed once.
    cached = distiller.predict_teacher(x_train)
    keras.utils.set_random_seed(seed)
    distiller.fit(
        tfkd.distill.with_teacher_outputs(x_train, cached),
        y_train,
        batch_size=128,
        epochs=epochs,
        verbose=2,
    )
    return distiller.student, time.perf_counter() - start


def accuracy(model, data):
    _, (x_test, y_test) = data
    model.compile(loss=compile_args()["loss"], metrics=["accuracy"])
    return float(model.evaluate(x_test, y_test, batch_size=1024, verbose=0)[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="Two epochs on 6,000 images.")
    parser.add_argument("--output-dir", type=pathlib.Path, default=ROOT / "saved_models")
    args = parser.parse_args(argv)
    epochs = 2 if args.smoke else args.epochs
    data = load_data(args.smoke)
    teacher = keras.saving.load_model(TEACHER)
    scratch, scratch_seconds = train_from_scratch(data, epochs, args.seed)
    student, distill_seconds = distill(teacher, data, epochs, args.seed)
    rows = [
        ("teacher", teacher, accuracy(teacher, data), 0.0),
        ("student, labels only", scratch, accuracy(scratch, data), scratch_seconds),
        ("student, distilled", student, accuracy(student, data), distill_seconds),
    ]
    print(f"\nFashion-MNIST test set ({len(data[1][0])} images), {epochs} epoch(s)")
    print(f"{'model':22s} {'parameters':>10s} {'accuracy':>9s} {'train s':>8s}")
    for name, model, value, seconds in rows:
        print(f"{name:22s} {model.count_params():10d} {value:9.4f} {seconds:8.1f}")
    metadata = {
        "name": "fashion_mnist_student_distilled",
        "how": "tfkd.Distiller defaults (T=1, student_loss_weight=0.1), cached teacher outputs",
        "teacher": str(TEACHER.relative_to(ROOT)),
        "epochs": epochs,
        "seed": args.seed,
        "parameters": int(student.count_params()),
        "test_accuracy": rows[2][2],
        "scratch_test_accuracy": rows[1][2],
        "teacher_test_accuracy": rows[0][2],
        "command": "python examples/distill_fashion_mnist.py" + (" --smoke" if args.smoke else ""),
    }
    tfkd.models.save(
        student, args.output_dir / "fashion_mnist_student_distilled" / "model.keras", metadata
    )
    print(f"\nDistilled student written to {args.output_dir / 'fashion_mnist_student_distilled'}")


if __name__ == "__main__":
    main()
