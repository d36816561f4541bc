"""Reads, on a few examples, whether an output that a loss reads as logits holds
probabilities: a softmax the graph does not show (a subclassed model's, a `Lambda`'s, a
`Reshape` after a `Softmax`) is invisible to `_graph.output_activation`, and its
probabilities read as logits give a finite, wrong loss."""

import warnings

import keras
import numpy as np

from tfkd.distill import _taps, teacher_cache

EXAMPLES = 64


def sample(x):
    """Up to `EXAMPLES` examples of the student inputs in `x`: arrays (or a list, tuple
    or dict of them), or the first batch of a `tf.data.Dataset`; None for other data
    (generators, `PyDataset`s), which is not read ahead of training."""
    if hasattr(x, "element_spec"):
        batch = next(iter(x.take(1)))
        x = batch[0] if isinstance(batch, tuple) else batch
        x = keras.tree.map_structure(np.asarray, x)
    inputs, cached = teacher_cache.split_teacher_outputs(x)
    arrays = keras.tree.flatten(inputs) if isinstance(inputs, list | tuple | dict) else [inputs]
    if not arrays or not all(isinstance(array, np.ndarray) for array in arrays):
        return None, None
    first = keras.tree.map_structure(lambda array: array[:EXAMPLES], inputs)
    if cached is not None:
        cached = {key: np.asarray(value)[:EXAMPLES] for key, value in cached.items()}
    return first, cached


def probabilities_read_as_logits(sides, inputs, cached):
    """The `(taps, layer name)` of `sides` whose outputs on `inputs` (cached teacher
    outputs from `cached` where given) are probability distributions, each with a
    warning. `sides`: `(taps, layer name)` read as logits."""
    found, computed = [], {}
    for taps, layer in sides:
        name = _taps.key(layer)
        if cached is not None and taps.role == "teacher" and name in cached:
            values = cached[name]
        else:
            if taps.role not in computed:
                computed[taps.role] = _as_the_step_reads(taps, inputs)
            values = computed[taps.role][name]
        values = np.asarray(keras.ops.convert_to_numpy(values), "float64")
        if values.ndim < 2 or values.shape[-1] < 2 or not values.size:
            continue
        if np.all(values >= 0) and np.allclose(values.sum(axis=-1), 1.0, atol=1e-3):
            warnings.warn(
                f"The {taps.role} {taps.model.name!r} gives probabilities at its "
                f"{taps.describe(layer)} (each of {len(values)} rows read is >= 0 and sums "
                "to 1), though its graph shows no final softmax; tfkd distils the log of "
                "them, as for a softmax it sees.",
                stacklevel=5,
            )
            found.append((taps, layer))
    return found


def _as_the_step_reads(taps, inputs):
    """The outputs the training step reads: the teacher's at inference, the student's in
    training (a model may give logits in training and a softmax at inference), its
    non-trainable variables (BatchNormalization's statistics, seeds) restored after."""
    if taps.role == "teacher":  # called, not `predict`: no function to compile
        return taps(inputs, training=False)
    kept = [(v, keras.ops.convert_to_numpy(v)) for v in taps.model.non_trainable_variables]
    try:
        return taps(inputs, training=True)
    finally:
        for variable, value in kept:
            variable.assign(value)
