"""Pruning masks as pure functions of weight magnitudes (`keras.ops` only).

A mask is 1 where a weight is kept and 0 where it is pruned. Exactly the asked number
of weights is pruned, however many magnitudes tie: ties go in order of position, the
earlier first. Weights an earlier mask pruned go before all others and never come back.
"""

from keras import ops


def smallest(values, count):
    """Whether each entry of the 1-D `values` is among its `count` smallest (a boolean
    tensor with exactly `count` True), ties taken in order of position.

    One sort and a cumulative sum, so it stays cheap inside a training step; `count`
    may be a tensor (a schedule's sparsity makes it).
    """
    largest = ops.take(ops.sort(values), ops.maximum(count - 1, 0))
    below = ops.less(values, largest)
    ties = ops.equal(values, largest)
    room = count - ops.sum(ops.cast(below, "int32"))
    first_ties = ops.less_equal(ops.cumsum(ops.cast(ties, "int32")), room)
    return ops.logical_or(below, ops.logical_and(ties, first_ties))


def magnitude_mask(magnitudes, sparsity, mask=None):
    """Prunes the `floor(sparsity * size)` smallest `magnitudes`, ties in order of position.

    Entries where `mask` (the previous mask, or None) is 0 are pruned first and stay
    pruned, even where `sparsity` asks for fewer.
    """
    flat = ops.reshape(magnitudes, (-1,))
    count = ops.cast(ops.floor(ops.cast(sparsity, "float32") * flat.shape[0]), "int32")
    if mask is not None:
        kept = ops.greater(ops.reshape(mask, (-1,)), 0)
        flat = ops.where(kept, flat, ops.cast(-1.0, flat.dtype))
    keep = ops.logical_not(smallest(flat, count))
    if mask is not None:
        keep = ops.logical_and(keep, kept)
    return ops.reshape(ops.cast(keep, magnitudes.dtype), ops.shape(magnitudes))


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
