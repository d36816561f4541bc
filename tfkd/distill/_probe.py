"""Reads, on a few examples, whether an output that a loss reads as logits holds
probabilities: a softmax the graph does not show (a subclassed model's, a `Lambda`'s, a
`Reshape` after a `Softmax`) is invisible to `_graph.output_activation`, and its
probabilities read as logits give a finite, wrong loss."""

import warnings

import keras
import numpy as np

from tfkd import _stand_ins
from tfkd.distill import _taps, teacher_cache

EXAMPLES = 64


def sample(x, models):
    """Up to `EXAMPLES` examples of the student inputs in `x`: arrays (or a list, tuple or
    dict of them), or the first batch of a `tf.data.Dataset` or a `PyDataset`, with the
    cached teacher outputs they carry (or None). For other data (a generator, which is not
    read ahead of training), stand-ins from `stand_ins(*models)`: a softmax gives
    probabilities on any input. `(None, None)` where neither is at hand."""
    if isinstance(x, keras.utils.PyDataset):
        x = _features(x[0])
    elif hasattr(x, "element_spec"):
        x = _features(next(iter(x.take(1))))
    inputs, cached = teacher_cache.split_teacher_outputs(x)
    arrays = keras.tree.flatten(inputs) if isinstance(inputs, list | tuple | dict) else [inputs]
    if not arrays or not all(isinstance(array, np.ndarray) for array in arrays):
        return stand_ins(*models), None
    first = keras.tree.map_structure(lambda array: array[:EXAMPLES], inputs)
    if cached is not None:
        cached = {key: np.asarray(value)[:EXAMPLES] for key, value in cached.items()}
    return first, cached


def _features(batch):
    """The inputs of a batch `(x, y, ...)` or `x`, as numpy arrays."""
    x = batch[0] if isinstance(batch, tuple) else batch
    return keras.tree.map_structure(np.asarray, x)


def stand_ins(*models):
    """`EXAMPLES` stand-in inputs (`_stand_ins.stand_in`) for the first of `models` whose
    input shapes are known, a list for several inputs; None if none is known. Token ids
    stay below the fewest that an `Embedding` of any of them takes."""
    ids = [count for count in map(_stand_ins.fewest_ids, models) if count is not None]
    for model in models:
        shapes = _taps.input_shapes(model)
        if shapes is None:
            continue
        try:
            dtypes = [tensor.dtype for tensor in model.inputs]
        except (AttributeError, ValueError, TypeError):  # a subclassed model's
            dtypes = [keras.backend.floatx()] * len(shapes)
        if not all(keras.backend.is_float_dtype(d) or "int" in d for d in map(str, dtypes)):
            return None  # strings (a TextVectorization's): no stand-in to make
        arrays = [
            _stand_ins.stand_in(keras.KerasTensor(shape, dtype), min(ids, default=None), EXAMPLES)
            for shape, dtype in zip(shapes, dtypes)
        ]
        return _taps.single(arrays)
    return None


def hidden_probabilities(model):
    """Whether `model`'s single output, which its graph does not show to be logits or a
    softmax (a subclassed model's, a `Lambda`'s), holds probabilities on stand-in inputs;
    False where it cannot be called on them."""
    inputs = stand_ins(model)
    if inputs is None:
        return False
    try:
        values = _taps.single(model(inputs, training=False))
    except Exception:  # stand-ins a model cannot take (a lookup, a mask) say nothing of it
        return False
    return _is_probabilities(values)


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
            if computed[taps.role] is None:
                continue
            values = computed[taps.role][name]
        if _is_probabilities(values):
            warnings.warn(
                f"The {taps.role} {taps.model.name!r} gives probabilities at its "
                f"{taps.describe(layer)} (each of {len(values)} rows read is >= 0 and sums "
                "to 1), though its graph shows no final softmax; tfkd distils the log of "
                "them, as for a softmax it sees.",
                stacklevel=5,
            )
            found.append((taps, layer))
    return found


def _is_probabilities(values):
    """Whether every row of `values` (two columns or more) is >= 0 and sums to 1."""
    if not hasattr(values, "shape"):
        return False
    values = np.asarray(keras.ops.convert_to_numpy(values), "float64")
    if values.ndim < 2 or values.shape[-1] < 2 or not values.size:
        return False
    return bool(np.all(values >= 0) and np.allclose(values.sum(axis=-1), 1.0, atol=1e-3))


def _as_the_step_reads(taps, inputs):
    """The outputs the training step reads: the teacher's at inference, the student's in
    training (a model may give logits in training and a softmax at inference), its
    non-trainable variables (BatchNormalization's statistics, seeds) restored after. None
    where the model cannot take `inputs` (stand-ins for a lookup layer, say): the training
    step calls it next and raises its own error."""
    student = taps.role == "student"  # the teacher is frozen: its variables stay
    variables = taps.model.non_trainable_variables if student else []
    kept = [(v, keras.ops.convert_to_numpy(v)) for v in variables]
    try:  # called, not `predict`: no function to compile
        return taps(inputs, training=student)
    except Exception:  # stand-ins a model cannot take say nothing of it
        return None
    finally:
        for variable, value in kept:
            variable.assign(value)
