"""What `fine_tune` and `build_classifier` need to know about a backbone, for every model kind.

A backbone may be functional (also `keras.Model([inputs], [outputs])`), Sequential
(built with `keras.Input`, called once, or never called), subclassed, nested, a
`keras.applications` model or a loaded `.keras` file. Sequential models raise on
`.input`/`.output` in Keras 3, and subclassed ones have no `.inputs`, so this module
reads only what every kind has, and says what to pass when something is missing.
It also chooses the layers that `fine_tune`'s second phase trains.
"""

import difflib
import numbers
import re

import keras

from tfkd import _graph

# Layers that only reshape, regularise or squash what the classifier computed.
_PASSTHROUGH = (
    keras.layers.Activation,
    keras.layers.Dropout,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Softmax,
)
_CLASSIFIER_NAME = re.compile(r"predictions?|logits|classifier|probabilities|probs")
_CLASSIFIER_LAYERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)
_PROBABILITIES = ("softmax", "log_softmax", "softmax_v2")  # v2: tf.nn.softmax


def check_backbone(base):
    """Raises a TypeError for a non-model, a ValueError for a backbone with its classifier."""
    if not isinstance(base, keras.Model):
        raise TypeError(
            "`base` must be a Keras 3 model (a backbone without its classifier). "
            f"Received: base of type {type(base).__name__}."
        )
    found = classifier_layers(base)
    if found:
        top, feature_layer = found
        cut = (
            f"keras.Model(model.inputs, model.get_layer({feature_layer!r}).output)"
            if feature_layer
            else "keras.Model(model.inputs, model.get_layer(NAME).output)"
        )
        raise ValueError(
            f"`base` ends in a classifier: its last layer {top.name!r} "
            f"({type(top).__name__}) outputs class scores, and a head trained on them learns "
            f"from another task's classes instead of features. Received: base={base.name!r}. "
            "Pass the backbone without its classifier: `include_top=False` for "
            "keras.applications and tfkd.transfer models, or cut it at a feature layer, "
            f"e.g. {cut} (the same holds for `feature_extractor`)."
        )


def classifier_layers(base):
    """`(last layer, name of the feature layer below the classifier)`, or `None`.

    A backbone ends in a classifier when its tail (after dropout, flatten, reshape and
    activation layers) applies a softmax, or is a Dense/Conv layer named like a
    classifier (`predictions`, `logits`, `classifier`). Pooled features (`pooling="avg"`,
    a Dense embedding) are rank 2 too, and pass.
    """
    if not _graph.is_graph_model(base) or not base.layers:
        return None  # a subclassed model's tracked layers are not in call order
    layers = list(base.layers)
    if isinstance(layers[-1], keras.Model):
        return classifier_layers(layers[-1])
    last = layers[-1]
    tail = []
    while layers and isinstance(layers[-1], _PASSTHROUGH):
        tail.append(layers.pop())
    top = layers.pop() if layers else None
    named = isinstance(top, _CLASSIFIER_LAYERS) and _CLASSIFIER_NAME.search(top.name.lower())
    if not (named or any(_is_probability_layer(layer) for layer in (*tail, top))):
        return None
    while layers and isinstance(layers[-1], _PASSTHROUGH):
        layers.pop()  # e.g. the dropout before the classifier: cut below it
    return last, (layers[-1].name if layers else None)


def _is_probability_layer(layer):
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) in _PROBABILITIES


def input_shape(base):
    """The shape of one example as `base` takes it, or `None` when the model does not say.

    Subclassed models and Sequential models never called (or built without
    `keras.Input`) record no inputs; a Sequential called on data records the batch size.
    """
    try:
        inputs = base.inputs
    except AttributeError:
        return None
    if not inputs:
        return None
    if len(inputs) != 1:
        raise ValueError(
            f"`base` takes {len(inputs)} inputs; an image classifier feeds it one. "
            f"Received: base={base.name!r} with inputs "
            f"{[tuple(tensor.shape) for tensor in inputs]}. Pass a backbone with one input."
        )
    return tuple(inputs[0].shape[1:])


def single_output(outputs, base):
    """The one tensor `base(x)` returned (`keras.Model([i], [o])` returns a list)."""
    if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
        return outputs[0]
    if isinstance(outputs, (list, tuple, dict)):
        raise ValueError(
            f"`base` returns {len(outputs)} outputs; a head needs one tensor of features. "
            f"Received: base={base.name!r}. Cut it at a feature layer, e.g. "
            "keras.Model(model.inputs, model.get_layer(NAME).output)."
        )
    return outputs


def batch_norm_layers(model):
    """The BatchNormalization layers of `model`, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            yield layer
        elif isinstance(layer, keras.Model):
            yield from batch_norm_layers(layer)


def copy(base):
    """A copy of `base` with its weights, so that fine-tuning leaves the user's model alone."""
    try:
        return _graph.copy_model(base)
    except NotImplementedError as error:
        raise TypeError(
            f"`fine_tune` trains a copy of `base` so that yours stays untouched, and "
            f"{type(base).__name__!r} cannot be copied: it is a subclassed model whose "
            f"`__init__` takes arguments it does not serialize. Received: base={base.name!r}. "
            "Implement `get_config()` (and `from_config` for non-basic arguments), or build "
            "the classifier with `build_classifier(base, ...)` and train it yourself."
        ) from error


def unfreeze_names(base, unfreeze):
    """The names of the top-level backbone layers that `unfreeze` selects for phase 2."""
    names = [layer.name for layer in base.layers if not isinstance(layer, keras.layers.InputLayer)]
    if unfreeze == "all":
        return set(names)
    if isinstance(unfreeze, bool):
        raise TypeError(f"`unfreeze` cannot be a bool. Received: unfreeze={unfreeze!r}.")
    if isinstance(unfreeze, numbers.Integral):
        if not 0 < unfreeze <= len(names):
            raise ValueError(
                f"`unfreeze` as a number of top layers must be in [1, {len(names)}] for "
                f"backbone {base.name!r}. Received: unfreeze={unfreeze!r}."
            )
        return set(names[-unfreeze:])
    if isinstance(unfreeze, float):
        if not 0.0 < unfreeze <= 1.0:
            raise ValueError(
                f"`unfreeze` as a fraction must be in (0, 1]. Received: unfreeze={unfreeze!r}."
            )
        return set(names[-max(1, round(unfreeze * len(names))) :])
    if isinstance(unfreeze, str):
        if unfreeze not in names:
            close = difflib.get_close_matches(unfreeze, names, n=8, cutoff=0.4)
            candidates = close or [layer.name for layer in base.layers if layer.weights][-8:]
            raise ValueError(
                f"`unfreeze` names no layer of backbone {base.name!r}. Received: "
                f"unfreeze={unfreeze!r}. Candidates: {candidates}."
            )
        return set(names[names.index(unfreeze) :])
    raise TypeError(
        "`unfreeze` must be 'all', an int, a float or a layer name. "
        f"Received: unfreeze={unfreeze!r}."
    )


def unfreeze(base, names, frozen_batch_norm):
    """Makes the layers in `names` trainable, the rest frozen; returns the trained names.

    BatchNormalization layers stay frozen under `frozen_batch_norm`: `fit`'s
    `training=True` overrides the `training=False` the backbone was called with
    (keras-team/keras#20285), and only a non-trainable BatchNormalization layer keeps
    to its moving statistics then.
    """
    base.trainable = True
    for layer in base.layers:
        layer.trainable = layer.name in names
    if frozen_batch_norm:
        for layer in batch_norm_layers(base):
            layer.trainable = False
        names = names - {layer.name for layer in base.layers if _frozen_batch_norm(layer)}
    return names


def _frozen_batch_norm(layer):
    return isinstance(layer, keras.layers.BatchNormalization) and not layer.trainable
