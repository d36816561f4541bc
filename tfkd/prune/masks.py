"""Pruning masks as pure functions of weight magnitudes (`keras.ops` only).

A mask is 1 where a weight is kept and 0 where it is pruned. Ties at the threshold
are pruned, so weights that are already zero never come back.
"""

from keras import ops


def magnitude_threshold(magnitudes, sparsity):
    """The magnitude at or under which a fraction `sparsity` of `magnitudes` lies.

    Returns -1 when nothing is to be pruned, so that `magnitudes > threshold` keeps all.
    """
    flat = ops.reshape(magnitudes, (-1,))
    size = flat.shape[0]
    count = ops.cast(ops.floor(ops.cast(sparsity, "float32") * size), "int32")
    ordered = ops.sort(flat)
    largest_pruned = ops.take(ordered, ops.maximum(count - 1, 0))
    return ops.where(count > 0, largest_pruned, ops.cast(-1.0, flat.dtype))


def magnitude_mask(magnitudes, sparsity):
    """Keeps the largest `1 - sparsity` fraction of `magnitudes`."""
    threshold = magnitude_threshold(magnitudes, sparsity)
    return ops.cast(ops.greater(magnitudes, threshold), magnitudes.dtype)


def n_of_m_mask(magnitudes, n, m, axis=-2):
    """Keeps the `n` largest of every `m` consecutive entries along `axis`.

    For Dense and convolution kernels `axis=-2` runs over input channels: each output
    channel keeps `n` of every `m` of its inputs, the layout TFLite/XNNPACK and sparse
    tensor cores expect for 2:4 sparsity. The axis length must be a multiple of `m`.
    """
    moved = ops.moveaxis(magnitudes, axis, -1)
    shape = moved.shape
    grouped = ops.reshape(moved, (*shape[:-1], shape[-1] // m, m))
    # Rank of each entry within its group, 0 for the largest.
    ranks = ops.argsort(ops.argsort(-grouped, axis=-1), axis=-1)
    keep = ops.cast(ops.less(ranks, n), magnitudes.dtype)
    return ops.moveaxis(ops.reshape(keep, shape), -1, axis)
