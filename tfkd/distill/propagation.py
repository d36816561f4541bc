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
    to 1; an example no label reaches gets the uniform distribution.

    The result can be distilled from like a teacher's softmax: pass `numpy.log` of it as the
    cached teacher outputs (`with_teacher_outputs`) of a `Distiller` at temperature 1.

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
    packed = tfkd.distill.with_teacher_outputs(x_train, np.log(targets + 1e-8))
    ```
    """
    features = _check_features(features)
    count = len(features)
    labels = _check_labels(labels, count, num_classes)
    check = _checks.check_number
    neighbours = check("neighbours", neighbours, low=1, high=count - 1, integer=True)
    iterations = check("iterations", iterations, low=1, integer=True)
    block_size = check("block_size", block_size, low=1, integer=True)
    check("alpha", alpha, low=0, high=1, low_open=True, high_open=True)
    check("power", power, low=0, low_open=True)

    index, weight = _nearest(features, neighbours, block_size)
    weight = np.maximum(weight, 0.0) ** power
    # W = A + A^T, A holding each example's edges to its neighbours.
    degree = weight.sum(axis=1) + np.bincount(
        index.ravel(), weights=weight.ravel(), minlength=count
    )
    scale = np.zeros(count)
    np.divide(1.0, np.sqrt(degree), out=scale, where=degree > 0)

    seeds = np.zeros((count, num_classes))
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
                    minlength=count,
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
