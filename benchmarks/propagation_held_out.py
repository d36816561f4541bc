"""Label propagation's settings chosen on the labels a user has (issue 15, must-show 1's caveat).

Must-show 1's recipe propagates the 1,000 labels along a graph of round 2's teacher's pooled
features (10 neighbours, alpha 0.9). That choice came from a screen that scored each variant
on the hidden labels of the 59,000 unlabelled training images: an oracle a user does not have.
This script scores the same kind of variants (feature space, neighbours, alpha) on the models
that `distill_few_labels.py` saved, twice:

- `oracle`: the propagated labels' top class against the hidden labels of the unlabelled
  images;
- `held_out`: what a user can compute, `tfkd.distill.LabelGraph.held_out_labels` (5 folds
  over the 1,000 known labels, each class spread over them): the share of the known labels
  that propagation from the other folds gets right.

Per seed it records both figures for every variant, which variant each picks, the oracle
figure of the variant the held-out figure picks (against the best), and the rank correlation
of the two orders (tied variants are all reported as picked; the oracle figure of a tied
pick is its worst). The JSON is rewritten after each seed. Features are kept in `--work-dir`.

    python benchmarks/propagation_held_out.py --seeds 0 1 2 --models-dir /tmp/fl_models_all \\
        --work-dir /tmp/propagation_held_out \\
        --output benchmarks/results/propagation_held_out.json
"""

import argparse
import pathlib
import sys
import time

import keras
import numpy as np

import tfkd

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import distill_few_labels  # noqa: E402
from few_labels_ceiling import saved_model  # noqa: E402
from provenance import git_commit, machine  # noqa: E402

NUM_CLASSES = 10
LABELLED_PER_CLASS = 100
FOLDS = 5
ALPHAS = (0.9, 0.99)
# Feature spaces: the teachers of `distill_few_labels.py`'s rounds whose pooled features
# are read, side by side (each row scaled to unit length) when more than one.
SPACES = {
    "round 0": ("teacher",),
    "round 1": ("teacher_self_trained",),
    "round 2": ("teacher_self_trained_round2",),
    "rounds 1 and 2": ("teacher_self_trained", "teacher_self_trained_round2"),
}
# (space, neighbours): every space at 10 neighbours; the recipe's space also at 20.
GRAPHS = [(space, 10) for space in SPACES] + [("round 2", 20)]
RECIPE = ("round 2", 10, 0.9)


def features_of(args, name, seed, x_train):
    """The pooled features of the model `name` saved for `seed`, kept in `--work-dir`."""
    path = saved_model(args.models_dir, name, seed)
    kept = args.work_dir / f"features_{path.stem}{'_smoke' if args.smoke else ''}.npy"
    if kept.is_file():
        return np.load(kept, allow_pickle=False)
    start = time.perf_counter()
    features = distill_few_labels.pooled_features(keras.saving.load_model(path), x_train)
    partial = kept.with_suffix(".partial.npy")
    np.save(partial, features)
    partial.replace(kept)
    distill_few_labels.log(
        f"seed {seed}: features of {path.name}: {time.perf_counter() - start:.0f} s"
    )
    return features


def space_features(args, space, seed, x_train):
    parts = [features_of(args, name, seed, x_train) for name in SPACES[space]]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([part / np.linalg.norm(part, axis=1, keepdims=True) for part in parts], 1)


def rank_correlation(first, second):
    """Spearman's correlation of two lists of scores, tied scores sharing their mean rank."""

    def ranks(values):
        values = np.asarray(values)
        order = np.argsort(values, kind="stable").astype(float)
        ranked = np.empty(len(values))
        ranked[order.astype(int)] = np.arange(len(values))
        for value in np.unique(values):
            ranked[values == value] = ranked[values == value].mean()
        return ranked

    return float(np.corrcoef(ranks(first), ranks(second))[0, 1])


def run_seed(args, x_train, y_train, seed):
    _, hidden = distill_few_labels.hide_labels(y_train, LABELLED_PER_CLASS, seed)
    known = hidden != tfkd.distill.UNLABELED
    variants = []
    for space, neighbours in GRAPHS:
        features = space_features(args, space, seed, x_train)
        start = time.perf_counter()
        graph = tfkd.distill.LabelGraph(features, neighbours=neighbours)
        graph_seconds = time.perf_counter() - start
        for alpha in ALPHAS:
            start = time.perf_counter()
            held_out = graph.held_out_labels(
                hidden, NUM_CLASSES, folds=FOLDS, seed=seed, alpha=alpha
            )
            held_out_seconds = time.perf_counter() - start
            propagated = graph.propagate(hidden, NUM_CLASSES, alpha=alpha)
            variant = {
                "space": space,
                "neighbours": neighbours,
                "alpha": alpha,
                "held_out": round(float(np.mean(held_out[known] == hidden[known])), 4),
                "oracle": round(
                    float(np.mean(propagated[~known].argmax(-1) == y_train[~known])), 4
                ),
                "graph_seconds": round(graph_seconds, 1),
                "held_out_seconds": round(held_out_seconds, 1),
            }
            distill_few_labels.log(f"seed {seed}: {variant}")
            variants.append(variant)
    return summarise(variants)


def summarise(variants):
    def name(variant):
        return f"{variant['space']}, {variant['neighbours']} neighbours, alpha {variant['alpha']}"

    def best(key):  # every variant at the top score: ties are reported, not broken
        top = max(v[key] for v in variants)
        return [v for v in variants if v[key] == top]

    by_held_out, by_oracle = best("held_out"), best("oracle")
    recipe = next(v for v in variants if (v["space"], v["neighbours"], v["alpha"]) == RECIPE)
    worst_pick = min(v["oracle"] for v in by_held_out)
    return {
        "variants": variants,
        "picked_by_held_out": [name(v) for v in by_held_out],
        "picked_by_oracle": [name(v) for v in by_oracle],
        "same_pick": any(v in by_oracle for v in by_held_out),
        "oracle_of_held_out_pick": worst_pick,
        "oracle_lost_by_held_out_pick": round(by_oracle[0]["oracle"] - worst_pick, 4),
        "recipe": name(recipe),
        "recipe_held_out_rank": 1 + sum(v["held_out"] > recipe["held_out"] for v in variants),
        "rank_correlation": round(
            rank_correlation([v["held_out"] for v in variants], [v["oracle"] for v in variants]), 3
        ),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models-dir", type=pathlib.Path, required=True)
    parser.add_argument("--work-dir", type=pathlib.Path, required=True)
    parser.add_argument("--output", type=pathlib.Path, required=True)
    parser.add_argument(
        "--smoke", action="store_true", help="the first 3,000 training images only: a check"
    )
    args = parser.parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    (x_train, y_train), _ = distill_few_labels.load_data(smoke=args.smoke)
    results = {
        "command": "python benchmarks/propagation_held_out.py " + " ".join(sys.argv[1:]),
        "backend": keras.backend.backend(),
        "machine": machine(),
        "git_commit": git_commit(),
        "smoke": args.smoke,
        "folds": FOLDS,
        "labelled_per_class": LABELLED_PER_CLASS,
        "spaces": {space: list(names) for space, names in SPACES.items()},
        "seeds": {},
    }
    for seed in args.seeds:
        start = time.perf_counter()
        results["seeds"][str(seed)] = run_seed(args, x_train, y_train, seed)
        results["seeds"][str(seed)]["seconds"] = round(time.perf_counter() - start, 1)
        distill_few_labels.write_json(args.output, results)
        summary = {k: v for k, v in results["seeds"][str(seed)].items() if k != "variants"}
        distill_few_labels.log(f"seed {seed}: {summary}; wrote {args.output}")


if __name__ == "__main__":
    main()
