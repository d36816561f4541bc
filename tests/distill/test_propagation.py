"""`tfkd.distill.propagate_labels` and `LabelGraph`: label propagation over a kNN graph of
features, and its check against the known labels."""

import numpy as np
import pytest

import tfkd
from tfkd.distill import UNLABELED, LabelGraph, propagate_labels


def _dense_propagation(features, labels, classes, neighbours, alpha, iterations, power):
    """The same propagation written out with dense matrices, as the papers state it."""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    edges = np.zeros_like(similarity)
    for row in range(len(unit)):
        nearest = np.argsort(-similarity[row])[:neighbours]
        edges[row, nearest] = np.maximum(similarity[row, nearest], 0) ** power
    graph = edges + edges.T
    scale = 1 / np.sqrt(graph.sum(axis=1))
    normalized = scale[:, None] * graph * scale[None, :]
    seeds = np.zeros((len(unit), classes))
    labelled = labels != UNLABELED
    seeds[labelled, labels[labelled]] = 1
    spread = seeds
    for _ in range(iterations):
        spread = alpha * normalized @ spread + (1 - alpha) * seeds
    limit = (1 - alpha) * np.linalg.solve(np.eye(len(unit)) - alpha * normalized, seeds)
    totals = spread.sum(axis=1, keepdims=True)
    reached = np.divide(spread, totals, out=np.full_like(spread, 1 / classes), where=totals > 0)
    return reached, limit / limit.sum(axis=1, keepdims=True)


def test_matches_the_dense_formula_and_converges_to_its_fixed_point():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 6)) + 2.0  # mostly positive similarities
    labels = np.full(40, UNLABELED)
    labels[[0, 1, 2]] = [0, 1, 2]
    for iterations in (1, 5):
        ours = propagate_labels(features, labels, 3, neighbours=5, iterations=iterations)
        expected, _ = _dense_propagation(features, labels, 3, 5, 0.9, iterations, 3)
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    ours = propagate_labels(features, labels, 3, neighbours=5, alpha=0.5, iterations=200)
    _, limit = _dense_propagation(features, labels, 3, 5, 0.5, 1, 3)
    np.testing.assert_allclose(ours, limit, rtol=1e-5, atol=1e-6)
    assert ours.dtype == np.float32 and ours.shape == (40, 3)
    np.testing.assert_allclose(ours.sum(axis=1), 1.0, rtol=1e-6)


def test_each_cluster_takes_the_label_of_its_one_labelled_example():
    rng = np.random.default_rng(1)
    centres = np.eye(4)[:3] * 10
    classes = np.repeat(np.arange(3), 30)
    features = centres[classes] + rng.normal(scale=0.5, size=(90, 4))
    labels = np.full(90, UNLABELED)
    labels[[5, 40, 75]] = classes[[5, 40, 75]]
    probabilities = propagate_labels(features, labels, 3, neighbours=5)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), classes)


def test_an_example_no_label_reaches_gets_the_uniform_distribution():
    # Two groups pointing opposite ways: similarities across them are negative, weight 0.
    rng = np.random.default_rng(2)
    right = np.array([1.0, 0.0]) + rng.normal(scale=0.05, size=(10, 2))
    left = np.array([-1.0, 0.0]) + rng.normal(scale=0.05, size=(10, 2))
    features = np.concatenate([right, left])
    labels = np.full(20, UNLABELED)
    labels[0] = 1
    probabilities = propagate_labels(features, labels, 4, neighbours=3)
    np.testing.assert_array_equal(probabilities[:10].argmax(axis=1), 1)
    np.testing.assert_allclose(probabilities[10:], 0.25)


def test_labels_as_a_column_and_as_whole_floats_are_read():
    features = np.arange(12, dtype="float32").reshape(6, 2) + 1
    labels = np.array([0, UNLABELED, UNLABELED, UNLABELED, UNLABELED, 1])
    expected = propagate_labels(features, labels, 2, neighbours=2)
    np.testing.assert_array_equal(
        propagate_labels(features, labels[:, None].astype("float64"), 2, neighbours=2), expected
    )


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(features=np.zeros(6)), ValueError, "features of shape (6,)"),
        (dict(features=np.full((6, 2), np.nan)), ValueError, "12 NaN or infinite values"),
        (dict(features="abc"), ValueError, "features of type str"),
        (dict(labels=np.zeros(5, int)), ValueError, "labels of shape (5,)"),
        (dict(labels=np.full(6, 0.5)), ValueError, "dtype float64"),
        (
            dict(labels=np.array([0, 1, 7, -2, -1, -1])),
            ValueError,
            "Received: [-2, 7] (num_classes=2)",
        ),
        (dict(labels=np.full(6, UNLABELED)), ValueError, "all 6 labels UNLABELED"),
        (dict(num_classes=1), ValueError, "`num_classes` must be an integer >= 2"),
        (
            dict(neighbours=6),
            ValueError,
            "`neighbours` must be an integer in [1, 5]. Received: neighbours=6",
        ),
        (dict(neighbours=True), TypeError, "Received: neighbours=True of type bool"),
        (dict(alpha=1.0), ValueError, "`alpha` must be a number in (0, 1). Received: alpha=1.0"),
        (dict(alpha="high"), TypeError, "Received: alpha='high' of type str"),
        (dict(iterations=0), ValueError, "`iterations` must be a positive integer"),
        (dict(power=0), ValueError, "`power` must be a finite number > 0"),
    ],
)
def test_bad_arguments_are_named(change, error, message):
    arguments = dict(
        features=np.arange(12, dtype="float32").reshape(6, 2) + 1,
        labels=np.array([0, 1, -1, -1, -1, -1]),
        num_classes=2,
        neighbours=2,
    )
    arguments.update(change)
    options = {
        key: arguments.pop(key)
        for key in ("neighbours", "alpha", "iterations", "power")
        if key in arguments
    }
    with pytest.raises(error) as raised:
        propagate_labels(
            arguments["features"], arguments["labels"], arguments["num_classes"], **options
        )
    assert message in str(raised.value)


def test_exported_from_tfkd_distill():
    assert tfkd.distill.propagate_labels is propagate_labels
    assert tfkd.distill.LabelGraph is LabelGraph


def _clusters(per_cluster, seed, scale=0.5):
    rng = np.random.default_rng(seed)
    classes = np.repeat(np.arange(3), per_cluster)
    features = np.eye(4)[:3][classes] * 10 + rng.normal(scale=scale, size=(len(classes), 4))
    return features, classes


def test_one_graph_propagates_what_propagate_labels_computes():
    features, _ = _clusters(20, seed=3, scale=3.0)
    labels = np.full(60, UNLABELED)
    labels[[0, 5, 20, 33, 41, 59]] = [0, 0, 1, 1, 2, 2]
    graph = LabelGraph(features, neighbours=4, power=2)
    for alpha, iterations in ((0.9, 30), (0.5, 7)):
        expected = propagate_labels(
            features, labels, 3, neighbours=4, power=2, alpha=alpha, iterations=iterations
        )
        ours = graph.propagate(labels, 3, alpha=alpha, iterations=iterations)
        np.testing.assert_array_equal(ours, expected)


def test_held_out_one_at_a_time_is_each_example_propagated_from_the_others():
    # With as many folds as labelled examples, each fold holds one of them.
    features, _ = _clusters(20, seed=4, scale=4.0)
    labels = np.full(60, UNLABELED)
    known = [1, 2, 7, 21, 25, 30, 44, 50, 58]
    labels[known] = [0, 0, 1, 1, 1, 2, 2, 2, 0]  # 58 labelled against its cluster
    held_out = LabelGraph(features, neighbours=5).held_out_labels(
        labels, 3, folds=len(known), alpha=0.8
    )
    for example in known:
        rest = labels.copy()
        rest[example] = UNLABELED
        spread = propagate_labels(features, rest, 3, neighbours=5, alpha=0.8)
        assert held_out[example] == spread[example].argmax()
    assert held_out.dtype == np.int64
    np.testing.assert_array_equal(np.delete(held_out, known), UNLABELED)
    assert held_out[58] == 2  # its neighbours' label, not the one it was given


@pytest.mark.parametrize("seed", range(5))
def test_each_fold_keeps_labels_of_every_class(seed):
    # Two labels a class and two folds: a split that hid both of a class's labels at once
    # would leave that class nothing to spread, and get both wrong.
    features, classes = _clusters(30, seed=seed)
    labels = np.full(90, UNLABELED)
    known = np.random.default_rng(seed).permutation(90)[:30]
    known = np.concatenate([known[classes[known] == c][:2] for c in range(3)])
    labels[known] = classes[known]
    graph = LabelGraph(features, neighbours=5)
    held_out = graph.held_out_labels(labels, 3, folds=2, seed=seed)
    np.testing.assert_array_equal(held_out[known], classes[known])
    again = graph.held_out_labels(labels, 3, folds=2, seed=seed)
    np.testing.assert_array_equal(again, held_out)


def test_held_out_labels_are_near_chance_on_features_that_say_nothing():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(600, 8))
    labels = np.full(600, UNLABELED)
    labels[:300] = rng.integers(0, 3, 300)
    held_out = LabelGraph(features, neighbours=10).held_out_labels(labels, 3)
    right = np.mean(held_out[:300] == labels[:300])
    assert 0.2 < right < 0.47, right


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(folds=1), ValueError, "`folds` must be an integer in [2, 2]. Received: folds=1"),
        (dict(folds=3), ValueError, "Received: folds=3"),
        (dict(folds=2.5), TypeError, "Received: folds=2.5 of type float"),
        (dict(seed=-1), ValueError, "Received: seed=-1"),
        (dict(alpha=0), ValueError, "Received: alpha=0"),
        (dict(iterations=0), ValueError, "Received: iterations=0"),
    ],
)
def test_bad_held_out_arguments_are_named(change, error, message):
    graph = LabelGraph(np.arange(12, dtype="float32").reshape(6, 2) + 1, neighbours=2)
    labels = np.array([0, 1, -1, -1, -1, -1])
    with pytest.raises(error) as raised:
        graph.held_out_labels(labels, 2, **{"folds": 2, **change})
    assert message in str(raised.value)


def test_bad_graph_arguments_are_named():
    with pytest.raises(ValueError, match=r"Received: neighbours=6"):
        LabelGraph(np.ones((6, 2)), neighbours=6)
    with pytest.raises(ValueError, match=r"features of shape \(6,\)"):
        LabelGraph(np.ones(6))
    graph = LabelGraph(np.arange(12, dtype="float32").reshape(6, 2) + 1, neighbours=2)
    with pytest.raises(ValueError, match=r"labels of shape \(5,\)"):
        graph.propagate(np.zeros(5, int), 2)
