"""`fine_tune` and `build_classifier` with every kind of backbone a Keras user writes.

`keras.applications`: test_fine_tune.py::test_keras_applications_backbone_takes_the_same_path.
"""

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import random_images

SHAPE = (8, 8, 3)


def _layers():
    return [
        keras.layers.Conv2D(4, 3, padding="same", name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(name="relu"),
    ]


def _functional(list_form=False):
    inputs = keras.Input(SHAPE)
    x = inputs
    for layer in _layers():
        x = layer(x)
    if list_form:
        return keras.Model([inputs], [x], name="backbone")
    return keras.Model(inputs, x, name="backbone")


class Subclassed(keras.Model):
    def __init__(self, width=4, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(width, 3, padding="same")
        self.bn = keras.layers.BatchNormalization()

    def call(self, x, training=None):
        return keras.ops.relu(self.bn(self.conv(x), training=training))


class Unserializable(Subclassed):
    def __init__(self, options, **kwargs):
        super().__init__(**kwargs)
        self.options = options


def _called(model):
    model(np.zeros((1, *SHAPE), "float32"))
    return model


def _nested():
    inputs = keras.Input(SHAPE)
    outputs = keras.layers.Conv2D(4, 1, name="top")(_functional()(inputs))
    return keras.Model(inputs, outputs, name="nested")


def _loaded(make, tmp_path):
    path = tmp_path / "backbone.keras"
    make().save(path)
    return keras.saving.load_model(path)


KINDS = {
    "sequential_input": lambda: keras.Sequential([keras.Input(SHAPE), *_layers()]),
    "sequential_called": lambda: _called(keras.Sequential(_layers())),
    "functional": _functional,
    "functional_list": lambda: _functional(list_form=True),
    "nested": _nested,
    "subclassed_called": lambda: _called(Subclassed(name="sub")),
}


def _batch_norm(model):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            yield layer
        elif isinstance(layer, keras.Model):
            yield from _batch_norm(layer)


def _pretend_pretrained(base):
    """Moving statistics unlike a fresh layer's, so a copy without weights would show."""
    for index, layer in enumerate(_batch_norm(base)):
        layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.5 + index, "float32"))
    return [keras.ops.convert_to_numpy(w).copy() for w in base.weights]


def _check_fine_tune(base):
    x, y = random_images(16, shape=SHAPE)
    original = _pretend_pretrained(base)
    model, history = tfkd.transfer.fine_tune(
        base, 3, (x, y), head_epochs=1, fine_tune_epochs=1, input_shape=SHAPE, verbose=0
    )
    assert model.predict(x, verbose=0).shape == (16, 3)
    assert history.unfrozen_layers and len(history.history["loss"]) == 2
    for weight, before in zip(base.weights, original):  # the user's backbone is untouched
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight), before)
    tuned = [layer for layer in model.layers if layer.name == base.name][0]
    pairs = list(zip(_batch_norm(base), _batch_norm(tuned), strict=True))
    assert pairs
    for old, new in pairs:  # copied with its weights, then kept frozen
        for a, b in zip(old.weights, new.weights, strict=True):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(b), a)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_fine_tune_works_with_every_model_kind(kind):
    keras.utils.set_random_seed(0)
    _check_fine_tune(KINDS[kind]())


@pytest.mark.parametrize("kind", ["functional", "sequential_input"])
def test_fine_tune_works_with_a_loaded_backbone(kind, tmp_path):
    keras.utils.set_random_seed(0)
    _check_fine_tune(_loaded(KINDS[kind], tmp_path))


@pytest.mark.parametrize(
    "make", [lambda: keras.Sequential(_layers()), Subclassed], ids=["sequential", "subclassed"]
)
def test_a_backbone_without_input_shape_needs_one(make):
    x, y = random_images(16, shape=SHAPE)
    with pytest.raises(ValueError, match="records no input shape.*Pass `input_shape`"):
        tfkd.transfer.build_classifier(make(), 3)
    model, _ = tfkd.transfer.fine_tune(
        make(), 3, (x, y), head_epochs=1, fine_tune_epochs=1, input_shape=SHAPE, verbose=0
    )
    assert model.predict(x, verbose=0).shape == (16, 3)
    assert len(model.get_layer(index=1).weights) == 6  # built inside the classifier


def test_a_subclassed_backbone_that_cannot_be_copied_says_what_to_do():
    base = _called(Unserializable({"depth": 2}, name="custom"))
    x, y = random_images(16, shape=SHAPE)
    with pytest.raises(TypeError, match="cannot be copied.*Implement `get_config\\(\\)`"):
        tfkd.transfer.fine_tune(base, 3, (x, y), verbose=0)
    model = tfkd.transfer.build_classifier(base, 3, input_shape=SHAPE)  # no copy needed
    assert model.predict(x, verbose=0).shape == (16, 3)
