"""Helpers shared by tfkd's tests."""

import keras
import numpy as np


def assert_config_round_trip(obj):
    """`from_config(get_config())` rebuilds an object with the same config."""
    config = obj.get_config()
    rebuilt = type(obj).from_config(config)
    assert rebuilt.get_config() == config
    return rebuilt


def assert_keras_round_trip(model, inputs, directory, atol=1e-6):
    """A `.keras` save and load gives a model with the same predictions."""
    path = directory / f"{model.name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded.predict(inputs, verbose=0)),
        keras.ops.convert_to_numpy(model.predict(inputs, verbose=0)),
        atol=atol,
    )
    return loaded


def assert_tflite_agrees(model, path, inputs, tolerance=1e-3):
    """The `.tflite` file at `path` computes what the Keras `model` computes on `inputs`.

    The tolerance is relative to the largest output (at least 1), as in `export_tflite`'s
    own check of float files.
    """
    import tfkd

    expected = np.asarray(keras.ops.convert_to_numpy(model.predict(inputs, verbose=0)))
    received = np.asarray(tfkd.TFLiteModel(path).predict(inputs))
    atol = tolerance * max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(received, expected, rtol=0, atol=atol)


def small_cnn(width, name, num_classes=3, input_shape=(8, 8, 1), batch_norm=False, softmax=False):
    """A functional CNN with named layers `conv`, `features` and `logits`."""
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(width, 3, padding="same", name="conv")(inputs)
    if batch_norm:
        x = keras.layers.BatchNormalization(name="conv_bn")(x)
    x = keras.layers.ReLU(name="conv_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    if batch_norm:
        x = keras.layers.Dropout(0.5, name="dropout")(x)
    activation = "softmax" if softmax else None
    outputs = keras.layers.Dense(num_classes, activation=activation, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def random_images(count=256, shape=(8, 8, 1), num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, *shape)).astype("float32")
    y = rng.integers(0, num_classes, size=count)
    return x, y
