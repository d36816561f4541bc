"""One-dimensional k-means of a layer's weights, in numpy: run once, when a layer is
clustered, so it needs no backend; and in `keras.ops`, for a layer built where its
kernel cannot be read (a traced function)."""

import numpy as np
from keras import ops

INITS = ("kmeans++", "linear")


def kmeans(values, clusters, init="kmeans++", iterations=50, seed=0, zero=False):
    """Clusters the numbers `values` into `clusters` centroids (Lloyd's algorithm).

    Args:
        values: an array of floats (any shape; read flat).
        clusters: how many centroids, >= 1.
        init: `"kmeans++"` (seeded D^2 sampling) or `"linear"` (evenly spaced between the
            smallest and the largest value, tfmot's `LINEAR`). Defaults to `"kmeans++"`.
        iterations: most Lloyd steps; it stops earlier when nothing moves. Defaults to `50`.
        seed: seeds `"kmeans++"`. Defaults to `0`.
        zero: hold one of the centroids at 0 (a pruned kernel's zeros are one of its
            clusters, as in tfmot's sparsity-preserving clustering); the other
            `clusters - 1` are fitted. Defaults to `False`.

    Returns:
        `(centroids, assignments)`: the sorted centroids (float32, `clusters` of them,
        some possibly equal when there are fewer distinct values), and the index of each
        value's nearest centroid, in the shape of `values` (int32).
    """
    flat = np.asarray(values, np.float64).reshape(-1)
    initial = _initial(flat, clusters - int(zero), init, np.random.default_rng(seed))
    centroids = np.sort(np.append(initial, 0.0) if zero else initial)
    for _ in range(iterations):
        assignments = nearest(flat, centroids)
        sums = np.bincount(assignments, weights=flat, minlength=clusters)
        counts = np.bincount(assignments, minlength=clusters)
        moved = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if zero:
            moved[np.argmin(np.abs(centroids))] = 0.0
        moved = np.sort(moved)
        if np.allclose(moved, centroids, rtol=0, atol=1e-12):
            break
        centroids = moved
    assignments = nearest(flat, centroids)
    return centroids.astype("float32"), assignments.reshape(np.shape(values)).astype("int32")


def nearest(flat, centroids):
    """The index of the nearest of the sorted `centroids` for each value of `flat`."""
    boundaries = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(boundaries, flat)


def _initial(flat, clusters, init, rng):
    if init == "linear" or len(flat) <= clusters:
        return np.linspace(flat.min(), flat.max(), clusters)
    centroids = [flat[rng.integers(len(flat))]]
    distances = (flat - centroids[0]) ** 2
    for _ in range(clusters - 1):
        total = distances.sum()
        index = (
            rng.integers(len(flat)) if total == 0 else rng.choice(len(flat), p=distances / total)
        )
        centroids.append(flat[index])
        distances = np.minimum(distances, (flat - flat[index]) ** 2)
    return np.asarray(centroids)


def traced_kmeans(values, kept, clusters, iterations=20):
    """`kmeans` with `init="linear"` in `keras.ops`, of each column of `values`
    `(weights, columns)` over its entries where `kept` (1, else 0) is 1, or all of them
    where none is; a column with entries not kept holds its last centroid at 0 (`zero`).

    Returns:
        The centroids, `(columns, clusters)`, unsorted.
    """
    # Tensors, not numpy arrays: on PyTorch, `array - tensor` is a TypeError.
    values = ops.convert_to_tensor(values)
    kept = ops.convert_to_tensor(kept, values.dtype)
    kept = ops.where(ops.max(kept, axis=0) > 0, kept, ops.ones_like(kept))
    zero = ops.cast(ops.min(kept, axis=0) < 1, values.dtype)[:, None]
    low = ops.min(ops.where(kept > 0, values, ops.max(values)), axis=0)[:, None]
    high = ops.max(ops.where(kept > 0, values, ops.min(values)), axis=0)[:, None]
    evenly = ops.linspace(0.0, 1.0, clusters)
    held_last = ops.concatenate([ops.linspace(0.0, 1.0, clusters - 1), ops.zeros((1,))])
    fractions = zero * held_last + (1 - zero) * evenly
    held = zero * ops.one_hot(clusters - 1, clusters)
    centroids = (low + fractions * (high - low)) * (1 - held)

    def step(_, centroids):
        nearest = ops.argmin(ops.abs(values[:, :, None] - centroids[None]), axis=-1)
        members = ops.one_hot(nearest, clusters) * kept[:, :, None]
        sums = ops.sum(members * values[:, :, None], axis=0)
        counts = ops.sum(members, axis=0)
        moved = ops.where(counts > 0, sums / ops.maximum(counts, 1), centroids)
        return moved * (1 - held)

    return ops.fori_loop(0, iterations, step, centroids)
