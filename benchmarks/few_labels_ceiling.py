"""How far the few-labels models of one seed can go together (issue 15, must-show 1).

`distill_few_labels.py` saves every model of a seed in its `--models-dir`. This script
loads them, checks that each still scores what that run's results JSON says, and scores on
the 10,000 test images:

- each model alone, and averaged with itself on the mirrored images (test-time
  augmentation: the teachers trained on horizontal flips);
- the equal-weight average of the softmax outputs of every subset of two or more of the
  models (an ensemble: at T=1, the target the multi-teacher loss distils). The best subset
  is chosen on the test images, so it overstates what a recipe could pick; the average of
  all of them is recorded too.

A student distilled from these models has so far ended at or below its teacher's level
once the teacher is self-trained, so the best of these scores bounds what another
distillation recipe from the same models can be expected to reach; the script says how
it compares with the must-show's target, the labels-only baseline plus 3 points. With
`--distill-from-all`, it also distils a fresh student from the average of all the models'
outputs on the 60,000 training images, with the settings of the run that `--results` holds
(its command: labels, epochs, loss, seed); the teachers' outputs are read from that run's
`--work-dir` cache where they are still valid, and the other models' outputs are cached
there beside them. With `--label-propagation`, it distils a fresh student, with the same
settings, from labels propagated along a graph of the last teacher's pooled features on the
training images (`tfkd.distill.propagate_labels`: 10 neighbours, alpha 0.9, the run's 1,000
labels), and records how many of the unlabelled images those targets and the teacher get right.

    python benchmarks/few_labels_ceiling.py --seed 0 --models-dir /tmp/fl_models0 \\
        --results benchmarks/results/distill_few_labels_two_rounds_seed0_rerun.json \\
        --output benchmarks/results/few_labels_ceiling_seed0.json --distill-from-all
"""

import argparse
import itertools
import json
import pathlib
import shlex
import sys
import time

import keras
import numpy as np

import tfkd

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import distill_few_labels  # noqa: E402
from provenance import git_commit, machine  # noqa: E402

# The row keys of `distill_few_labels.py`'s results, which also name its saved models.
MODELS = (
    "teacher",
    "teacher_self_trained",
    "teacher_self_trained_round2",
    "distilled",
    "distilled_self_trained",
    "distilled_self_trained_round2",
    "scratch_augmented",
    "scratch_plain",
)
TARGET_GAIN = 0.03


def saved_model(models_dir, name, seed):
    """The one `.keras` file `distill_few_labels.py` saved for `name` and `seed`."""
    paths = sorted(models_dir.glob(f"{name}_seed{seed}_*.keras"))
    if len(paths) != 1:
        raise ValueError(
            f"Expected one saved model for {name!r}, seed {seed}, in --models-dir. "
            f"Received: models_dir={models_dir}, found {[p.name for p in paths]}."
        )
    return paths[0]


def probabilities(model, images):
    return keras.ops.convert_to_numpy(keras.ops.softmax(distill_few_labels.predict(model, images)))


def accuracy(probs, labels):
    return round(float(np.mean(probs.argmax(-1) == labels)), 4)


def score_models(args, row, x_test, y_test):
    """Each model, its test probabilities and its scores; fails on a model that does not
    score what the results JSON recorded for it (another run's model)."""
    models, probs, scores = {}, {}, {}
    for name in MODELS:
        path = saved_model(args.models_dir, name, args.seed)
        model = models[name] = keras.saving.load_model(path)
        probs[name] = probabilities(model, x_test)
        mirrored = probabilities(model, x_test[:, :, ::-1])
        scores[name] = {
            "file": path.name,
            "accuracy": accuracy(probs[name], y_test),
            "with_mirror": accuracy(probs[name] + mirrored, y_test),
        }
        if abs(scores[name]["accuracy"] - row[name]) > 1e-4:
            raise ValueError(
                f"{path.name} scores {scores[name]['accuracy']}, but --results records "
                f"{row[name]} for {name!r}: the models and the results are of different runs."
            )
        distill_few_labels.log(f"{name}: {scores[name]}")
    return models, probs, scores


def score_ensembles(probs, y_test):
    """The accuracy of every subset's average, best first."""
    ensembles = []
    for size in range(2, len(probs) + 1):
        for names in itertools.combinations(probs, size):
            average = sum(probs[name] for name in names)
            ensembles.append({"models": list(names), "accuracy": accuracy(average, y_test)})
    return sorted(ensembles, key=lambda e: (-e["accuracy"], len(e["models"])))


def distill_from_all(run_args, models, data, seed):
    """A fresh student distilled, as the run of `run_args` distils its students, from the
    equal-weight softened average of every model's outputs on the training images."""
    (x_train, y_train), _ = data
    _, hidden = distill_few_labels.hide_labels(y_train, run_args.labelled_per_class, seed)
    outputs = []
    for name, model in models.items():
        cache = run_args.work_dir / f"{name}_logits_seed{seed}.npz"
        (logits,) = tfkd.distill.teacher_outputs(
            model, x_train, batch_size=512, cache=cache, runtime="litert"
        ).values()
        outputs.append(logits)
    average = tfkd.distill.softened_average(
        outputs, [1 / len(outputs)] * len(outputs), temperature=run_args.temperature
    )
    average = keras.ops.convert_to_numpy(average)
    student_accuracy, seconds = distilled_student(
        run_args, models["teacher_self_trained_round2"], data, hidden, average, seed
    )
    return {
        # A diagnostic only: the hidden labels play no part in training.
        "target_right_on_training_images": round(float(np.mean(average.argmax(-1) == y_train)), 4),
        "accuracy": student_accuracy,
        "seconds": seconds,
    }


def distilled_student(run_args, teacher, data, hidden, outputs, seed):
    """(test accuracy, seconds) of a fresh student distilled as the run of `run_args`
    distils its students, from the cached `outputs` on the training images."""
    (x_train, _), (x_test, y_test) = data
    student, distiller = distill_few_labels.new_distiller(run_args, teacher, seed)
    start = time.perf_counter()
    distill_few_labels.fit_on_teacher_outputs(
        distiller,
        run_args,
        x_train,
        hidden,
        {tfkd.distill.teacher_cache.OUTPUT: outputs},
        seed,
        noisy=False,
    )
    seconds = round(time.perf_counter() - start, 1)
    return distill_few_labels.accuracy(student, x_test, y_test), seconds


def distill_from_propagated(run_args, models, data, seed):
    """A fresh student distilled, as the run of `run_args` distils its students, from labels
    propagated along a graph of the last teacher's features (`tfkd.distill.propagate_labels`
    with its defaults: 10 neighbours, alpha 0.9, from the run's labelled images only)."""
    (x_train, y_train), _ = data
    _, hidden = distill_few_labels.hide_labels(y_train, run_args.labelled_per_class, seed)
    teacher = models["teacher_self_trained_round2"]
    start = time.perf_counter()
    features = distill_few_labels.pooled_features(teacher, x_train)
    feature_seconds = time.perf_counter() - start
    propagated = tfkd.distill.propagate_labels(features, hidden, distill_few_labels.NUM_CLASSES)
    propagation_seconds = time.perf_counter() - start - feature_seconds
    distill_few_labels.log(
        f"features {feature_seconds:.0f} s, propagation {propagation_seconds:.0f} s"
    )
    unlabelled = hidden == tfkd.distill.UNLABELED
    # The teacher's own outputs from the features just computed: its head on them, not a
    # second pass of the backbone over the training images.
    head = teacher.get_layer("head_logits")
    teacher_probs = keras.ops.convert_to_numpy(keras.ops.softmax(head(features[unlabelled])))
    student_accuracy, distill_seconds = distilled_student(
        run_args, teacher, data, hidden, np.log(propagated + 1e-8), seed
    )
    return {
        # Diagnostics only: the hidden labels play no part in training.
        "teacher_right_on_unlabelled_images": accuracy(teacher_probs, y_train[unlabelled]),
        "propagated_right_on_unlabelled_images": accuracy(
            propagated[unlabelled], y_train[unlabelled]
        ),
        "accuracy": student_accuracy,
        "feature_seconds": round(feature_seconds, 1),
        "propagation_seconds": round(propagation_seconds, 1),
        "distill_seconds": distill_seconds,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--models-dir", type=pathlib.Path, required=True)
    parser.add_argument("--results", type=pathlib.Path, required=True)
    parser.add_argument("--output", type=pathlib.Path, required=True)
    parser.add_argument("--distill-from-all", action="store_true")
    parser.add_argument("--label-propagation", action="store_true")
    args = parser.parse_args(argv)
    run = json.loads(args.results.read_text())
    row = run["seeds"][str(args.seed)]
    data = distill_few_labels.load_data(smoke=False)
    _, (x_test, y_test) = data
    models, probs, scores = score_models(args, row, x_test, y_test)
    ensembles = score_ensembles(probs, y_test)
    target = round(row["scratch"] + TARGET_GAIN, 4)
    best = ensembles[0]
    results = {
        "command": "python benchmarks/few_labels_ceiling.py " + " ".join(sys.argv[1:]),
        "backend": keras.backend.backend(),
        "machine": machine(),
        "git_commit": git_commit(),
        "seed": args.seed,
        "results": str(args.results),
        "baseline": row["scratch"],
        "target": target,
        "models": scores,
        "ensembles": len(ensembles),
        "all_models": next(e for e in ensembles if len(e["models"]) == len(MODELS)),
        "best_ensembles": ensembles[:10],
        "best_reaches_target": best["accuracy"] >= target,
        "best_single_with_mirror": max(s["with_mirror"] for s in scores.values()),
    }
    # The run's own command, as its script parses it: the same students, labels, loss.
    run_args = distill_few_labels.parse_args(shlex.split(run["command"])[2:])
    if args.distill_from_all:
        results["student_from_all"] = distill_from_all(run_args, models, data, args.seed)
        distill_few_labels.log(f"student from all: {results['student_from_all']}")
    if args.label_propagation:
        results["student_from_propagated"] = distill_from_propagated(
            run_args, models, data, args.seed
        )
        distill_few_labels.log(f"student from propagated: {results['student_from_propagated']}")
    distill_few_labels.write_json(args.output, results)
    distill_few_labels.log(
        f"best of {len(ensembles)} ensembles: {best['accuracy']} ({'+'.join(best['models'])}); "
        f"target {target} (baseline {row['scratch']} + 3 points): "
        f"{'reached' if results['best_reaches_target'] else 'not reached'}; wrote {args.output}"
    )


if __name__ == "__main__":
    main()
