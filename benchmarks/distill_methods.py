"""Distillation methods side by side: one setting, Fashion-MNIST, the 8k or the 165k student.

Every arm trains the same student (the same initial weights per seed) with the same
optimizer (Adam 1e-3), batch size and number of epochs, on the same training images,
and reports test accuracy on the full 10,000 test images and its epoch seconds.
`--student 8k` (the default) is `models.student_cnn` (8,194 parameters); `--student
165k` is the default pipeline's student, `tfkd.models.cnn((28, 28, 1),
10, filters=(24, 48, 96), dense_units=128, dropout=0.3)` (164,738 parameters; its
`pool2` is 7x7x48 and its `features` the Dense 128 before dropout). The teacher is the
bundled CNN (`saved_models/fashion_mnist_cnn_teacher`, 0.9332). Arms (issue 15):

- `labels`: the student trained on the labels alone, plain `model.fit`;
- `keras_distiller`: `keras.distillation.Distiller` with
  `LogitsDistillation(temperature=T, loss=keras.losses.KLDivergence())` (a loss
  instance, so its default loss's missing softmax does not count); teacher online;
- `kd`: `tfkd.Distiller`, `LogitsDistillation(T)`;
- `kd_standardized`: `LogitsDistillation(temperature=2, standardize=True)`;
- `decoupled`: `DecoupledDistillation()` (T=1, target_weight=1, non_target_weight=8);
- `dist`: `CorrelationDistillation()` (T=1, both weights 1);
- `feature`: KD + `FeatureDistillation("pool2", "pool2")` (7x7x64 teacher, 7x7x24
  or 7x7x48 student, learned projection), loss weights 1 and 1;
- `attention`: KD + `AttentionTransfer("pool2", "pool2")`, loss weights 1 and 500
  (the authors' beta/2);
- `relational`: KD + `RelationalDistillation("features", "features")` on the
  penultimate features (teacher 160 wide; student 24, or 128 for 165k), loss weights
  1 and 1;
- `two_teachers`: `tfkd.Distiller([cnn, mobilenet_v2], student, temperature=T)`
  with the bundled MobileNetV2 teacher (0.9283); its ensemble's outputs are
  computed once with `predict_teacher(cache=...)` into `--cache-dir`;
- `two_teachers_standardized`: the same two teachers, averaged at T=2, read by
  `LogitsDistillation(temperature=2, standardize=True)` (the `kd_standardized` loss);
- `consistent_mixup`: KD with in-step `RandomTranslation(2/28)` +
  `RandomFlip("horizontal")` and `mixup=0.2`; the teacher runs online.

Every tfkd arm uses `student_loss_weight=0.1` (its default), and so does Keras's
Distiller. Offline tfkd arms train on teacher outputs computed once per teacher and
set of layers (`Distiller.predict_teacher` + `tfkd.distill.with_teacher_outputs`).

    python benchmarks/distill_methods.py --seeds 0 1 2 --epochs 7 --train-size 60000
    python benchmarks/distill_methods.py --student 165k --seeds 0 1 2 --epochs 7 \
        --train-size 60000 --arms labels keras_distiller kd kd_standardized dist
    python benchmarks/distill_methods.py --smoke   # < 2 minutes, writes to the temp directory
    python benchmarks/distill_methods.py --student 165k --smoke

`--output` defaults to `benchmarks/results/distill_methods.json` for the 8k student and
`benchmarks/results/distill_methods_165k.json` for the 165k one; with `--smoke`, to the
temporary directory.

Prints elapsed time as it goes; writes the JSON to `--output` (atomically) after
every finished arm, with the command, settings, per-seed results, mean +- std and
epoch seconds.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time

import keras

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import models  # noqa: E402
from provenance import git_commit, machine  # noqa: E402

import tfkd  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CNN_TEACHER = ROOT / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
MOBILENET_TEACHER = ROOT / "saved_models" / "fashion_mnist_mobilenet_v2_teacher" / "model.keras"
TEMPERATURE = 1.0  # tfkd's default, the best on this student in the Distiller benchmark.
STANDARDIZED_TEMPERATURE = 2.0  # Sun et al.'s KD + logit standardisation setting.
STUDENT_LOSS_WEIGHT = 0.1
LEARNING_RATE = 1e-3
START = time.perf_counter()


def log(message):
    print(f"[{time.perf_counter() - START:7.1f} s] {message}", flush=True)


# The arms. Each builder returns the distillation losses and their weights for a
# tfkd.Distiller on the CNN teacher; the other arms are built in `build`.


def _kd():
    return tfkd.distill.LogitsDistillation(temperature=TEMPERATURE)


def standardized_kd():
    return tfkd.distill.LogitsDistillation(temperature=STANDARDIZED_TEMPERATURE, standardize=True)


TFKD_ARMS = {
    "kd": lambda: ([_kd()], None),
    "kd_standardized": lambda: ([standardized_kd()], None),
    "decoupled": lambda: ([tfkd.distill.DecoupledDistillation()], None),
    "dist": lambda: ([tfkd.distill.CorrelationDistillation()], None),
    "feature": lambda: (
        [
            _kd(),
            tfkd.distill.FeatureDistillation(
                teacher_layer_name="pool2", student_layer_name="pool2"
            ),
        ],
        [1.0, 1.0],
    ),
    "attention": lambda: (
        [
            _kd(),
            tfkd.distill.AttentionTransfer(teacher_layer_name="pool2", student_layer_name="pool2"),
        ],
        [1.0, 500.0],
    ),
    "relational": lambda: (
        [
            _kd(),
            tfkd.distill.RelationalDistillation(
                teacher_layer_name="features", student_layer_name="features"
            ),
        ],
        [1.0, 1.0],
    ),
}
# The loss of each arm that distils from the CNN and MobileNetV2 teachers at once.
TWO_TEACHER_ARMS = {"two_teachers": _kd, "two_teachers_standardized": standardized_kd}
ARMS = (
    "labels",
    "keras_distiller",
    *TFKD_ARMS,
    *TWO_TEACHER_ARMS,
    "consistent_mixup",
)
ONLINE_ARMS = ("keras_distiller", "consistent_mixup")


def _pipeline_student(seed=0):
    """The default pipeline's student (examples/pipeline_fashion_mnist*.yaml)."""
    return tfkd.models.cnn(
        models.INPUT_SHAPE,
        models.NUM_CLASSES,
        filters=(24, 48, 96),
        dense_units=128,
        dropout=0.3,
        seed=seed,
    )


STUDENTS = {
    "8k": (models.student_cnn, "benchmarks/models.py student_cnn"),
    "165k": (
        _pipeline_student,
        "tfkd.models.cnn((28, 28, 1), 10, filters=(24, 48, 96), "
        "dense_units=128, dropout=0.3): the default pipeline's student",
    ),
}
RESULT_NAMES = {"8k": "distill_methods.json", "165k": "distill_methods_165k.json"}


def student_layers(arm):
    """The student layers `arm` reads besides the output (none for the logits-only arms)."""
    if arm not in TFKD_ARMS:
        return []
    losses, _ = TFKD_ARMS[arm]()
    return [loss.student_layer_name for loss in losses if loss.student_layer_name is not None]


def settings(args, student):
    return {
        "data": "Fashion-MNIST",
        "train_size": args.train_size,
        "test_size": args.test_size,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": f"Adam({LEARNING_RATE})",
        "student": f"{STUDENTS[args.student][1]} ({student.count_params():,} parameters)",
        "student_option": args.student,
        "student_parameters": student.count_params(),
        "teacher": str(CNN_TEACHER.relative_to(ROOT)),
        "second_teacher": str(MOBILENET_TEACHER.relative_to(ROOT)),
        "temperature": TEMPERATURE,
        "standardized_temperature": STANDARDIZED_TEMPERATURE,
        "student_loss_weight": STUDENT_LOSS_WEIGHT,
        "arm_settings": {
            "labels": "student.fit on the labels",
            "keras_distiller": "keras.distillation.Distiller, LogitsDistillation(temperature=1, "
            "loss=keras.losses.KLDivergence()), student_loss_weight=0.1, teacher online",
            "kd": "LogitsDistillation(temperature=1)",
            "kd_standardized": "LogitsDistillation(temperature=2, standardize=True)",
            "decoupled": "DecoupledDistillation(temperature=1, target_weight=1, "
            "non_target_weight=8)",
            "dist": "CorrelationDistillation(temperature=1, inter_class_weight=1, "
            "intra_class_weight=1)",
            "feature": "KD(T=1) + FeatureDistillation('pool2', 'pool2'), learned "
            "projection, weights [1, 1]",
            "attention": "KD(T=1) + AttentionTransfer('pool2', 'pool2'), weights [1, 500]",
            "relational": "KD(T=1) + RelationalDistillation('features', 'features'), "
            "weights [1, 1]",
            "two_teachers": "Distiller([cnn, mobilenet_v2], temperature=1): equal-weight "
            "softened average, cached",
            "two_teachers_standardized": "Distiller([cnn, mobilenet_v2], "
            "LogitsDistillation(temperature=2, standardize=True)): equal-weight softened "
            "average at T=2, cached",
            "consistent_mixup": "KD(T=1), augmentation RandomTranslation(2/28, 2/28, "
            "fill_mode='constant') + RandomFlip('horizontal'), mixup=0.2, teacher online",
        },
        "arms": args.arms,
        "smoke": args.smoke,
    }


def load_data(args):
    (x_train, y_train), (x_test, y_test) = models.load_fashion_mnist()
    return (x_train[: args.train_size], y_train[: args.train_size]), (
        x_test[: args.test_size],
        y_test[: args.test_size],
    )


def load_teacher(path, name):
    if not path.exists():
        sys.exit(f"{path} is missing: run `python saved_models/build_teachers.py` first.")
    teacher = keras.saving.load_model(path)
    teacher.name = name  # The ensemble reads each teacher by name; they must differ.
    return teacher


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every epoch and logs it."""

    def __init__(self, label):
        super().__init__()
        self.label = label
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        log(f"  {self.label} epoch {epoch + 1}: {self.seconds[-1]:.1f} s, loss {logs['loss']:.4f}")


def build(arm, teachers, student, seed):
    """The model to `fit` for `arm` (not yet compiled)."""
    if arm == "labels":
        return student
    cnn = teachers["cnn"]
    if arm == "keras_distiller":
        loss = keras.distillation.LogitsDistillation(
            temperature=TEMPERATURE, loss=keras.losses.KLDivergence()
        )
        return keras.distillation.Distiller(
            cnn, student, loss, student_loss_weight=STUDENT_LOSS_WEIGHT
        )
    if arm in TWO_TEACHER_ARMS:  # The ensemble averages at its loss's temperature.
        return tfkd.Distiller(
            [cnn, teachers["mobilenet_v2"]],
            student,
            distillation_losses=[TWO_TEACHER_ARMS[arm]()],
            student_loss_weight=STUDENT_LOSS_WEIGHT,
        )
    if arm == "consistent_mixup":
        augmentation = keras.Sequential(
            [
                keras.layers.RandomTranslation(2 / 28, 2 / 28, fill_mode="constant", seed=seed),
                keras.layers.RandomFlip("horizontal", seed=seed),
            ],
            name="augmentation",
        )
        return tfkd.Distiller(
            cnn,
            student,
            temperature=TEMPERATURE,
            student_loss_weight=STUDENT_LOSS_WEIGHT,
            augmentation=augmentation,
            mixup=0.2,
            seed=seed,
        )
    losses, weights = TFKD_ARMS[arm]()
    return tfkd.Distiller(
        cnn,
        student,
        distillation_losses=losses,
        distillation_loss_weights=weights,
        student_loss_weight=STUDENT_LOSS_WEIGHT,
    )


class TeacherOutputs:
    """Teacher outputs computed once per teacher and set of read layers, for every seed."""

    def __init__(self, x_train, cache_dir):
        self.x_train = x_train
        self.cache_dir = cache_dir
        self.stored = {}
        self.seconds = {}

    def inputs_for(self, arm, distiller):
        layers = sorted(str(loss.teacher_layer_name) for loss in distiller.distillation_losses)
        key = f"{distiller.teacher.name}:{','.join(layers)}"
        two_teachers = arm in TWO_TEACHER_ARMS
        if two_teachers:  # Each arm's ensemble averages at its own temperature.
            key = f"{arm}:{key}"
        if key not in self.stored:
            start = time.perf_counter()
            cache = None
            if two_teachers:  # MobileNetV2 at 96x96 is slow on CPU: keep it on disk.
                cache = self.cache_dir / f"{arm}_{len(self.x_train)}.npz"
            self.stored[key] = distiller.predict_teacher(self.x_train, batch_size=512, cache=cache)
            self.seconds[key] = time.perf_counter() - start
            log(f"  teacher outputs {key}: {self.seconds[key]:.1f} s (once, all seeds)")
        return tfkd.distill.with_teacher_outputs(self.x_train, self.stored[key])


def run_arm(arm, seed, teachers, data, cached, args):
    (x_train, y_train), (x_test, y_test) = data
    student = STUDENTS[args.student][0](seed=seed)
    model = build(arm, teachers, student, seed)
    models.compile_classifier(model, LEARNING_RATE)
    offline = isinstance(model, tfkd.Distiller) and not model.augments
    inputs = cached.inputs_for(arm, model) if offline else x_train
    keras.utils.set_random_seed(seed)  # The same shuffling for every arm.
    timer = EpochTimer(f"{arm} seed {seed}")
    start = time.perf_counter()
    model.fit(
        inputs,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=0,
        callbacks=[timer],
    )
    train_seconds = time.perf_counter() - start
    models.compile_classifier(student, LEARNING_RATE)
    _, accuracy = student.evaluate(x_test, y_test, batch_size=1024, verbose=0)
    return {
        "arm": arm,
        "seed": seed,
        "test_accuracy": float(accuracy),
        "epoch_seconds": [round(s, 2) for s in timer.seconds],
        "median_epoch_seconds": round(statistics.median(timer.seconds), 2),
        "train_seconds": round(train_seconds, 1),
        "teacher": "online" if arm in ONLINE_ARMS else ("none" if arm == "labels" else "cached"),
    }


def summarize(runs, arms):
    summary = {}
    for arm in arms:
        rows = [run for run in runs if run["arm"] == arm]
        if not rows:
            continue
        accuracies = [run["test_accuracy"] for run in rows]
        summary[arm] = {
            "mean": statistics.mean(accuracies),
            "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "per_seed": {str(run["seed"]): run["test_accuracy"] for run in rows},
            "median_epoch_seconds": statistics.median(
                s for run in rows for s in run["epoch_seconds"]
            ),
        }
    return summary


def targets(summary):
    """Issue 15, must-show 2 (either student): the best tfkd arm against labels and Keras."""
    tfkd_arms = [arm for arm in summary if arm not in ("labels", "keras_distiller")]
    if not tfkd_arms or "labels" not in summary:
        return {}
    best = max(tfkd_arms, key=lambda arm: summary[arm]["mean"])
    labels = summary["labels"]
    seeds = labels["per_seed"]
    result = {
        "best_tfkd_arm": best,
        "gain_over_labels_points": 100 * (summary[best]["mean"] - labels["mean"]),
        "beats_labels_on_every_seed": all(
            summary[best]["per_seed"].get(seed, 0.0) > accuracy for seed, accuracy in seeds.items()
        ),
    }
    result["gain_at_least_0.5_points"] = result["gain_over_labels_points"] >= 0.5
    if "keras_distiller" in summary:
        keras_mean = summary["keras_distiller"]["mean"]
        result["gain_over_keras_distiller_points"] = 100 * (summary[best]["mean"] - keras_mean)
        result["beats_keras_distiller"] = summary[best]["mean"] > keras_mean
    return result


def write_json(path, results):
    """Atomic: a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(handle, "w") as file:
        file.write(json.dumps(results, indent=2) + "\n")
    os.replace(temporary, path)


def print_table(summary, seeds):
    print("\n| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | std | epoch s |")
    print("|---|" + "---|" * (len(seeds) + 3))
    for arm, row in summary.items():
        cells = " | ".join(f"{row['per_seed'].get(str(s), float('nan')):.4f}" for s in seeds)
        print(
            f"| {arm} | {cells} | {row['mean']:.4f} | {row['std']:.4f} | "
            f"{row['median_epoch_seconds']:.1f} |"
        )


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--train-size", type=int, default=60000, help="First N training images.")
    parser.add_argument("--test-size", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=None)
    parser.add_argument(
        "--student",
        choices=sorted(STUDENTS),
        default="8k",
        help="8k: benchmarks/models.py student_cnn; 165k: the default pipeline's student.",
    )
    parser.add_argument(
        "--output",
        type=pathlib.Path,
        default=None,
        help="Defaults to benchmarks/results/distill_methods.json, or distill_methods_165k.json "
        "with --student 165k (with --smoke, a temporary file, never the committed results).",
    )
    parser.add_argument(
        "--cache-dir",
        type=pathlib.Path,
        default=pathlib.Path(tempfile.gettempdir()) / "tfkd_distill_methods",
        help="Where the two-teacher outputs are kept between runs.",
    )
    parser.add_argument("--smoke", action="store_true", help="1 epoch, 1,000 images, seed 0.")
    args = parser.parse_args(argv)
    if args.arms is None:
        args.arms = list(ARMS)
    layers = {layer.name for layer in STUDENTS[args.student][0]().layers}
    missing = {
        arm: sorted(set(student_layers(arm)) - layers)
        for arm in args.arms
        if set(student_layers(arm)) - layers
    }
    if missing:
        parser.error(
            f"--student {args.student} has no layer "
            + "; ".join(f"{', '.join(names)} (arm {arm})" for arm, names in missing.items())
        )
    if args.smoke:
        args.seeds, args.epochs, args.train_size, args.test_size = [0], 1, 1000, 1000
    if args.output is None:
        results = pathlib.Path(tempfile.gettempdir()) if args.smoke else RESULTS
        args.output = results / RESULT_NAMES[args.student]
    return args


def main(argv=None):
    args = parse_args(argv)
    data = load_data(args)
    teachers = {"cnn": load_teacher(CNN_TEACHER, "cnn_teacher")}
    if set(TWO_TEACHER_ARMS) & set(args.arms):
        teachers["mobilenet_v2"] = load_teacher(MOBILENET_TEACHER, "mobilenet_v2_teacher")
    cached = TeacherOutputs(data[0][0], args.cache_dir)
    results = {
        "command": "python benchmarks/distill_methods.py " + " ".join(sys.argv[1:]),
        "backend": keras.backend.backend(),
        "machine": machine(),
        "git_commit": git_commit(),
        "settings": settings(args, STUDENTS[args.student][0]()),
        "runs": [],
    }
    log(
        f"{len(data[0][0])} training images, {len(data[1][0])} test images, student "
        f"{args.student}, arms {args.arms}"
    )
    for seed in args.seeds:
        for arm in args.arms:
            run = run_arm(arm, seed, teachers, data, cached, args)
            results["runs"].append(run)
            results["summary"] = summarize(results["runs"], args.arms)
            results["targets"] = targets(results["summary"])
            results["teacher_output_seconds"] = {k: round(v, 1) for k, v in cached.seconds.items()}
            results["seconds"] = round(time.perf_counter() - START, 1)
            write_json(args.output, results)
            log(f"{arm} seed {seed}: {run['test_accuracy']:.4f} ({run['train_seconds']:.0f} s)")
    print_table(results["summary"], args.seeds)
    for name, value in results["targets"].items():
        print(f"{name}: {value}")
    log(f"done, wrote {args.output}")


if __name__ == "__main__":
    main()
