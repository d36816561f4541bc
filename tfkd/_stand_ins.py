"""Stand-in inputs for a model when no data is at hand: to check an exported file against
Keras, and to read whether an output holds probabilities (a softmax gives them on any
input)."""

import keras
import numpy as np

from tfkd import _graph

# The size an input leaves open (a sequence's length, an image's height and width) takes.
OPEN_SIZE = 32


def stand_in(model_input, ids=None, count=32):
    """`count` stand-in values for `model_input` (anything with a `dtype` and the `shape`
    of one example): normal floats; for a model with an `Embedding` (`ids`: the
    fewest ids one takes, from `fewest_ids`), whole numbers in `[0, ids)` in a float input,
    which may be its ids (Keras's default `Input` dtype is float32: given normal floats, a
    negative id made LiteRT's GATHER fail, and tfkd refused to export such a text model)."""
    shape = (count, *(OPEN_SIZE if n is None else n for n in model_input.shape))
    random = np.random.default_rng(0)
    if np.dtype(model_input.dtype).kind in "iub":
        # Integer inputs (token ids) have no random stand-in that is always valid; an
        # Embedding's ids past 0 are. All 0 (padding) made an Embedding(mask_zero=True)
        # -> pooling model compute 0/0 and the export refuse it as overflowing.
        if ids is None or ids < 2 or np.dtype(model_input.dtype).kind == "b":
            return np.zeros(shape, model_input.dtype)
        return random.integers(1, ids, shape).astype(model_input.dtype)
    values = random.normal(size=shape) if ids is None else random.integers(0, ids, shape)
    return values.astype(model_input.dtype)


def fewest_ids(model):
    """The fewest ids an `Embedding` of `model` takes; None without one."""
    # Not inside a user's block: its Embedding may read what the block makes (a position
    # embedding of `arange`), not the model's input.
    embeddings = [
        layer
        for layer in _graph.leaf_layers(model, subclassed=True, blocks=False)
        if isinstance(layer, keras.layers.Embedding)
    ]
    return min((layer.input_dim for layer in embeddings), default=None)
