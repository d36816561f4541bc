"""Distiller benchmark on full Fashion-MNIST: accuracy over seeds, and epoch-time ratios.

Compares, on the same teacher (`saved_models/fashion_mnist_cnn_teacher`) and
the same student initialisation per seed:
- `scratch`: the student trained on labels alone;
- `tfkd`: `tfkd.Distiller` (T=1, student_loss_weight=0.1: its defaults), teacher
  run online;
- `tfkd_cached`: the same with teacher outputs computed once (offline);
- `keras`: `keras.distillation.Distiller` with `LogitsDistillation(temperature=T)`
  at the same settings (its default `loss="kl_divergence"`);
- `keras_kl_fixed`: the same, passing a `keras.losses.KLDivergence()` instance,
  which makes Keras apply the softmax and T^2 it otherwise skips.

    python benchmarks/distill_fashion_mnist.py accuracy --seeds 0 1 2 --epochs 8
    python benchmarks/distill_fashion_mnist.py timing --repeats 5

`accuracy` prints mean and spread per variant and samples/s; `timing` measures
epoch times side by side, interleaved, and prints the ratios of issue 2.
Results are also written as JSON to `--output`.
"""

import argparse
import json
import pathlib
import statistics
import sys
import time

import keras

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import models  # noqa: E402

import tfkd  # noqa: E402

TEACHER = ROOT / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
# tfkd's defaults; the reference settings are T=4 (pass --temperature 4).
TEMPERATURE = 1.0
STUDENT_LOSS_WEIGHT = 0.1
VARIANTS = ("scratch", "tfkd", "tfkd_cached", "keras", "keras_kl_fixed")


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every epoch."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def load_data(train_size=None):
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    x_train, x_test = x_train[..., None], x_test[..., None]
    if train_size:
        x_train, y_train = x_train[:train_size], y_train[:train_size]
    return (x_train, y_train), (x_test, y_test)


def load_teacher(path=TEACHER):
    if not path.exists():
        sys.exit(f"{path} is missing: run `python saved_models/build_teachers.py` first.")
    return keras.saving.load_model(path)


def _task_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def build(variant, teacher, seed, temperature=TEMPERATURE, student_loss_weight=STUDENT_LOSS_WEIGHT):
    """Returns the model to `fit` for `variant`, compiled, with a seeded student."""
    student = models.student_cnn(seed=seed)
    if variant == "scratch":
        model = student
    elif variant in ("tfkd", "tfkd_cached"):
        model = tfkd.Distiller(
            teacher, student, temperature=temperature, student_loss_weight=student_loss_weight
        )
    else:
        loss = "kl_divergence" if variant == "keras" else keras.losses.KLDivergence()
        model = keras.distillation.Distiller(
            teacher,
            student,
            keras.distillation.LogitsDistillation(temperature=temperature, loss=loss),
            student_loss_weight=student_loss_weight,
        )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=_task_loss(), metrics=["accuracy"])
    return model, student


def train_inputs(variant, model, x_train):
    if variant != "tfkd_cached":
        return x_train, 0.0
    start = time.perf_counter()
    cached = model.predict_teacher(x_train, batch_size=512)
    return tfkd.distill.with_teacher_outputs(x_train, cached), time.perf_counter() - start


def run_accuracy(variant, teacher, seed, data, args):
    (x_train, y_train), (x_test, y_test) = data
    epochs, batch_size = args.epochs, args.batch_size
    model, student = build(variant, teacher, seed, args.temperature, args.student_loss_weight)
    inputs, cache_seconds = train_inputs(variant, model, x_train)
    keras.utils.set_random_seed(seed)
    timer = EpochTimer()
    model.fit(inputs, y_train, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[timer])
    student.compile(loss=_task_loss(), metrics=["accuracy"])
    _, accuracy = student.evaluate(x_test, y_test, batch_size=1024, verbose=0)
    steady = statistics.median(timer.seconds[1:] or timer.seconds)
    return {
        "variant": variant,
        "seed": seed,
        "test_accuracy": float(accuracy),
        "epoch_seconds": timer.seconds,
        "samples_per_second": len(x_train) / steady,
        "teacher_cache_seconds": cache_seconds,
    }


def accuracy_command(args):
    data = load_data(args.train_size)
    teacher = load_teacher(args.teacher)
    runs = []
    for seed in args.seeds:
        for variant in args.variants:
            run = run_accuracy(variant, teacher, seed, data, args)
            print(json.dumps({k: v for k, v in run.items() if k != "epoch_seconds"}), flush=True)
            runs.append(run)
    summary = summarize(runs)
    print_accuracy_table(summary, args)
    return {"runs": runs, "summary": summary}


def summarize(runs):
    summary = {}
    for variant in dict.fromkeys(run["variant"] for run in runs):
        accuracies = [run["test_accuracy"] for run in runs if run["variant"] == variant]
        speeds = [run["samples_per_second"] for run in runs if run["variant"] == variant]
        summary[variant] = {
            "mean": statistics.mean(accuracies),
            "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "min": min(accuracies),
            "max": max(accuracies),
            "samples_per_second": statistics.median(speeds),
            "seeds": len(accuracies),
        }
    return summary


def print_accuracy_table(summary, args):
    print(
        f"\nFashion-MNIST test accuracy, {args.epochs} epochs, batch {args.batch_size}, "
        f"backend {keras.backend.backend()}, seeds {args.seeds}, T={args.temperature}, "
        f"student_loss_weight={args.student_loss_weight}"
    )
    print("| variant | mean | std | min | max | samples/s (median epoch) |")
    print("|---|---|---|---|---|---|")
    for variant, row in summary.items():
        print(
            f"| {variant} | {row['mean']:.4f} | {row['std']:.4f} | {row['min']:.4f} | "
            f"{row['max']:.4f} | {row['samples_per_second']:.0f} |"
        )


def timing_command(args):
    (x_train, y_train), _ = load_data(args.train_size)
    teacher = load_teacher(args.teacher)
    fits = {}
    for variant in ("scratch", "tfkd", "tfkd_cached", "keras"):
        model, _ = build(variant, teacher, 0, args.temperature, args.student_loss_weight)
        inputs, _ = train_inputs(variant, model, x_train)
        fits[variant] = _epoch(model, inputs, y_train, args.batch_size)
    fits["teacher_predict"] = lambda: teacher.predict(
        x_train, batch_size=args.batch_size, verbose=0
    )
    for run in fits.values():  # Warm-up: tracing and compilation are not timed.
        run()
    seconds = {name: [] for name in fits}
    for _ in range(args.repeats):  # Interleaved, so machine noise hits every variant alike.
        for name, run in fits.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    online = median["scratch"] + median["teacher_predict"]
    ratios = {
        "tfkd / (student + teacher predict)": median["tfkd"] / online,
        "tfkd cached / student": median["tfkd_cached"] / median["scratch"],
        "keras / (student + teacher predict)": median["keras"] / online,
        "keras / tfkd": median["keras"] / median["tfkd"],
    }
    print(
        f"\nEpoch seconds (median of {args.repeats}), backend {keras.backend.backend()}, "
        f"{len(x_train)} images, batch {args.batch_size}"
    )
    for name, value in median.items():
        print(f"  {name:16s} {value:7.2f} s   all: {[round(v, 2) for v in seconds[name]]}")
    for name, value in ratios.items():
        print(f"  {name:38s} {value:.3f}")
    return {"seconds": seconds, "median": median, "ratios": ratios}


def _epoch(model, inputs, labels, batch_size):
    return lambda: model.fit(inputs, labels, batch_size=batch_size, epochs=1, verbose=0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("accuracy", "timing"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=None, help="First N images only.")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--output", type=pathlib.Path, default=None)
    parser.add_argument("--teacher", type=pathlib.Path, default=TEACHER)
    parser.add_argument("--temperature", type=float, default=TEMPERATURE)
    parser.add_argument("--student-loss-weight", type=float, default=STUDENT_LOSS_WEIGHT)
    args = parser.parse_args(argv)
    result = accuracy_command(args) if args.command == "accuracy" else timing_command(args)
    if args.output:
        result["arguments"] = {k: str(v) for k, v in vars(args).items()}
        result["backend"] = keras.backend.backend()
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
