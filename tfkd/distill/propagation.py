"""Label propagation over a nearest-neighbour graph: targets for the unlabelled examples.

With few labels and many unlabelled examples, a teacher's outputs can be improved on before a
student is distilled from them: examples whose features are close tend to share a class, so
spreading the known labels along a graph of each example's nearest neighbours (Zhou et al.,
NeurIPS 2003; on a network's features, Iscen et al., CVPR 2019) corrects some of the teacher's
mistakes. On Fashion-MNIST with 100 labels a class, the graph of a fine-tuned MobileNetV2's pooled
features gives targets right on more of the unlabelled images than the network's own outputs
(BENCHMARKS.md, "Few labels").

Numpy only: it runs once, on features computed once, before `fit`.
"""

import numpy as np

from tfkd import _checks
from tfkd.distill._task import UNLABELED


def propagate_labels(
    features,
    labels,
    num_classes,
    *,
    neighbours=10,
    alpha=0.9,
    iterations=30,
    power=3,
    block_size=2048,
):
    """Class probabilities for every example, spread from the labelled ones along a kNN graph.

    Builds the graph of each example's `neighbours` nearest others by cosine similarity of
    `features`, weighted by the similarity to the power `power` (negative similarities count
    0) and made symmetric, normalises it as `S = D^-1/2 W D^-1/2`, and iterates
    `F <- alpha * S F + (1 - alpha) * Y` from `F = Y`, where `Y` holds the one-hot labels of
    the labelled examples and zeros elsewhere. The rows of `F` are returned normalised to sum
    to 1; an example no label reaches gets the uniform distribution. Building the graph is
    most of the time; to propagate several label sets or settings over one graph, or to
    check the propagation against the known labels, use `LabelGraph`.

    The result can be distilled from like a teacher's softmax: pass it as the cached teacher
    outputs (`with_teacher_outputs`) of a `Distiller` at temperature 1, in the form its
    teacher's output takes: the probabilities as they are for a teacher that ends in a
    softmax (the Distiller takes their log, as it does the teacher's), `numpy.log` of them
    (logits) for a teacher that outputs logits.

    Args:
        features: `(examples, dims)` array, e.g. a network's pooled features. Finite.
        labels: `(examples,)` integer labels in `[0, num_classes)`, or `UNLABELED` (-1) for
            the examples without one. At least one example must be labelled.
        num_classes: the number of classes, >= 2.
        neighbours: edges per example, in `[1, examples - 1]`. Defaults to `10`.
        alpha: how far labels spread, in `(0, 1)`: the weight of the neighbours against the
            example's own label. Defaults to `0.9`.
        iterations: iterations of the update, >= 1. Defaults to `30`.
        power: exponent of the similarity weights, > 0. Defaults to `3`.
        block_size: rows of the similarity matrix computed at once (memory:
            `block_size * examples` floats). Defaults to `2048`.

    Returns:
        A float32 `(examples, num_classes)` array of probabilities.

    Raises:
        ValueError: shapes that do not match, non-finite features, labels outside
            `[0, num_classes)` other than `UNLABELED`, no labelled example, or a setting
            out of range.
        TypeError: a setting that is not a number (or not an integer where one is needed).

    Example:

    ```python
    features = tfkd.transfer.extract_features(base, x_train, input_shape=(28, 28, 1))
    targets = tfkd.distill.propagate_labels(features, y_with_unlabeled, 10)
    # A teacher that outputs logits; for one that ends in a softmax, pass `targets`.
    packed = tfkd.distill.with_teacher_outputs(x_train, np.log(targets + 1e-8))
    ```
    """
    features = _check_features(features)
    labels = _check_labels(labels, len(features), num_classes)
    alpha, iterations = _check_spread(alpha, iterations)
    graph = LabelGraph(features, neighbours=neighbours, power=power, block_size=block_size)
    return graph._spread(labels, num_classes, alpha, iterations)


class LabelGraph:
    """The kNN graph of `propagate_labels`, built once: propagate over it, or check it.

    Building the graph (every example's cosine similarity to every other) is most of the
    time; spreading labels along it takes seconds even for 60,000 examples. A `LabelGraph`
    keeps it, so that several label sets and `alpha`s propagate over one graph, and
    `held_out_labels` says from the known labels alone how often the propagation is right:
    each labelled example gets the class propagated from the labels of the other folds.
    That is how to choose between feature spaces or settings without labels a user does
    not have. The estimate is optimistic when the features come from a network trained
    on those very labelled examples (they sit closer to their classes than unseen ones).

    Args:
        features: `(examples, dims)` array, e.g. a network's pooled features. Finite.
        neighbours: edges per example, in `[1, examples - 1]`. Defaults to `10`.
        power: exponent of the similarity weights, > 0. Defaults to `3`.
        block_size: rows of the similarity matrix computed at once (memory:
            `block_size * examples` floats). Defaults to `2048`.

    Raises:
        ValueError: features that are not a finite 2-D array of 2 or more rows, or a
            setting out of range.
        TypeError: a setting that is not a number (or not an integer where one is needed).

    Example:

    ```python
    graph = tfkd.distill.LabelGraph(features, neighbours=10)
    held_out = graph.held_out_labels(y_with_unlabeled, 10, folds=5)
    known = y_with_unlabeled != tfkd.distill.UNLABELED
    print("right on held-out labels:", np.mean(held_out[known] == y_with_unlabeled[known]))
    targets = graph.propagate(y_with_unlabeled, 10, alpha=0.9)
    ```
    """

    def __init__(self, features, *, neighbours=10, power=3, block_size=2048):
        features = _check_features(features)
        check = _checks.check_number
        self.neighbours = check(
            "neighbours", neighbours, low=1, high=len(features) - 1, integer=True
        )
        check("power", power, low=0, low_open=True)
        block_size = check("block_size", block_size, low=1, integer=True)
        self.count = len(features)
        self._index, weight = _nearest(features, self.neighbours, block_size)
        self._weight = np.maximum(weight, 0.0) ** power
        # W = A + A^T, A holding each example's edges to its neighbours.
        degree = self._weight.sum(axis=1) + np.bincount(
            self._index.ravel(), weights=self._weight.ravel(), minlength=self.count
        )
        self._scale = np.zeros(self.count)
        np.divide(1.0, np.sqrt(degree), out=self._scale, where=degree > 0)

    def propagate(self, labels, num_classes, *, alpha=0.9, iterations=30):
        """Class probabilities for every example, as `propagate_labels` computes them.

        Args:
            labels: `(examples,)` integer labels in `[0, num_classes)`, or `UNLABELED`
                (-1). At least one example must be labelled.
            num_classes: the number of classes, >= 2.
            alpha: how far labels spread, in `(0, 1)`. Defaults to `0.9`.
            iterations: iterations of the update, >= 1. Defaults to `30`.

        Returns:
            A float32 `(examples, num_classes)` array of probabilities.
        """
        labels = _check_labels(labels, self.count, num_classes)
        alpha, iterations = _check_spread(alpha, iterations)
        return self._spread(labels, num_classes, alpha, iterations)

    def held_out_labels(self, labels, num_classes, *, folds=5, seed=0, alpha=0.9, iterations=30):
        """For each labelled example, the class propagated to it from the other folds' labels.

        The labelled examples are split into `folds` folds, each class spread evenly over
        them in a seeded order; each fold's labels are hidden in turn and propagated to
        from the rest. Comparing the result with `labels` on the labelled examples
        estimates how often `propagate` is right on the unlabelled ones.

        Args:
            labels: `(examples,)` integer labels in `[0, num_classes)`, or `UNLABELED`
                (-1); at least `folds` examples labelled.
            num_classes: the number of classes, >= 2.
            folds: how many folds, in `[2, labelled examples]`. Defaults to `5`.
            seed: the integer seed of the folds' order. Defaults to `0`.
            alpha: how far labels spread, in `(0, 1)`. Defaults to `0.9`.
            iterations: iterations of the update, >= 1. Defaults to `30`.

        Returns:
            An int64 `(examples,)` array: the held-out class of each labelled example,
            `UNLABELED` for the others.
        """
        labels = _check_labels(labels, self.count, num_classes)
        alpha, iterations = _check_spread(alpha, iterations)
        labelled = np.flatnonzero(labels != UNLABELED)
        folds = _checks.check_number("folds", folds, low=2, high=len(labelled), integer=True)
        seed = _checks.check_number("seed", seed, low=0, integer=True)
        order = np.random.default_rng(seed).permutation(labelled)
        # Stable by class: each class's examples in the seeded order, dealt to the folds.
        order = order[np.argsort(labels[order], kind="stable")]
        fold_of = np.empty(self.count, np.int64)
        fold_of[order] = np.arange(len(order)) % folds
        held_out = np.full(self.count, UNLABELED, np.int64)
        for fold in range(folds):
            hidden = labelled[fold_of[labelled] == fold]
            rest = labels.copy()
            rest[hidden] = UNLABELED
            spread = self._spread(rest, num_classes, alpha, iterations)
            held_out[hidden] = spread[hidden].argmax(axis=1)
        return held_out

    def _spread(self, labels, num_classes, alpha, iterations):
        index, weight, scale = self._index, self._weight, self._scale
        seeds = np.zeros((self.count, num_classes))
        labelled = labels != UNLABELED
        seeds[np.flatnonzero(labelled), labels[labelled]] = 1.0
        spread = seeds
        for _ in range(iterations):
            scaled = spread * scale[:, None]
            forward = np.einsum("nk,nkc->nc", weight, scaled[index])
            backward = np.stack(
                [
                    np.bincount(
                        index.ravel(),
                        weights=(weight * scaled[:, c : c + 1]).ravel(),
                        minlength=self.count,
                    )
                    for c in range(num_classes)
                ],
                axis=1,
            )
            spread = alpha * scale[:, None] * (forward + backward) + (1.0 - alpha) * seeds
        totals = spread.sum(axis=1, keepdims=True)
        uniform = np.full_like(spread, 1.0 / num_classes)
        probabilities = np.divide(spread, totals, out=uniform, where=totals > 0)
        return probabilities.astype(np.float32)


def _check_spread(alpha, iterations):
    check = _checks.check_number
    check("alpha", alpha, low=0, high=1, low_open=True, high_open=True)
    return alpha, check("iterations", iterations, low=1, integer=True)


def _nearest(features, neighbours, block_size):
    """Indices and cosine similarities of each row's `neighbours` most similar other rows."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = np.divide(features, norms, out=np.zeros_like(features), where=norms > 0)
    count = len(unit)
    index = np.empty((count, neighbours), np.int64)
    similarity = np.empty((count, neighbours), np.float32)
    for start in range(0, count, block_size):
        block = unit[start : start + block_size] @ unit.T
        rows = np.arange(len(block))
        block[rows, start + rows] = -np.inf  # Not its own neighbour.
        nearest = np.argpartition(-block, neighbours - 1, axis=1)[:, :neighbours]
        index[start : start + len(block)] = nearest
        similarity[start : start + len(block)] = np.take_along_axis(block, nearest, axis=1)
    return index, similarity.astype(np.float64)


def _check_features(features):
    try:
        array = np.asarray(features, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(
            "`features` must be a numeric (examples, dims) array. Received: features of type "
            f"{type(features).__name__}."
        ) from error
    if array.ndim != 2 or len(array) < 2 or array.shape[1] < 1:
        raise ValueError(
            "`features` must be an (examples, dims) array with at least 2 examples. "
            f"Received: features of shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(
            "`features` must be finite. Received: features with "
            f"{int(np.sum(~np.isfinite(array)))} NaN or infinite values."
        )
    return array


def _check_labels(labels, count, num_classes):
    _checks.check_number("num_classes", num_classes, low=2, integer=True)
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.shape != (count,) or not (
        np.issubdtype(array.dtype, np.integer)
        or (np.issubdtype(array.dtype, np.floating) and np.all(array == np.round(array)))
    ):
        raise ValueError(
            f"`labels` must be {count} integer labels, one per row of `features`. Received: "
            f"labels of shape {array.shape} and dtype {array.dtype}."
        )
    array = array.astype(np.int64)
    bad = (array != UNLABELED) & ((array < 0) | (array >= num_classes))
    if bad.any():
        raise ValueError(
            f"`labels` must be in [0, {num_classes}) or UNLABELED ({UNLABELED}). Received: "
            f"{sorted(set(array[bad].tolist()))[:5]} (num_classes={num_classes})."
        )
    if not (array != UNLABELED).any():
        raise ValueError(
            "`labels` must label at least one example: there is nothing to propagate. "
            f"Received: all {count} labels UNLABELED."
        )
    return array
