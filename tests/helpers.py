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


# The kinds of model users write, for tests that every entry point handles them all.
MODEL_KINDS = (
    "sequential_with_input",
    "sequential_never_called",
    "sequential_called",
    "functional",
    "functional_lists",
    "nested",
    "subclassed",
    "applications",
    "loaded_keras_file",
)


def cnn_layers(width, num_classes=3, head=True):
    """Conv, BatchNorm-free ReLU, global pooling and (with `head`) a logits Dense."""
    layers = [
        keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="conv"),
        keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.GlobalAveragePooling2D(name="features"),
    ]
    return layers + [keras.layers.Dense(num_classes, name="logits")] if head else layers


class SubclassedCNN(keras.Model):
    """A subclassed model: its layers are attributes and `call` wires them."""

    def __init__(self, width=4, num_classes=3, head=True, **kwargs):
        super().__init__(**kwargs)
        self.blocks = cnn_layers(width, num_classes, head)

    def call(self, inputs, training=None):
        for layer in self.blocks:
            inputs = layer(inputs)
        return inputs


def model_of_kind(kind, directory, width=4, input_shape=(8, 8, 1), num_classes=3, head=True):
    """A small CNN written the way `kind` says; see `MODEL_KINDS`.

    `"applications"` is `keras.applications.MobileNetV3Small` (minimalistic, no
    weights), which needs 3 channels and at least 32x32 pixels: see `kind_input_shape`.
    """
    if kind == "applications":
        return keras.applications.MobileNetV3Small(
            input_shape=input_shape,
            alpha=0.75,
            minimalistic=True,
            include_top=head,
            weights=None,
            classes=num_classes,
            pooling=None if head else "avg",
            classifier_activation=None,
            include_preprocessing=False,
        )
    if kind == "subclassed":
        return SubclassedCNN(width, num_classes, head)
    if kind == "sequential_never_called":
        return keras.Sequential(cnn_layers(width, num_classes, head))
    if kind == "sequential_called":
        model = keras.Sequential(cnn_layers(width, num_classes, head))
        model(np.zeros((2, *input_shape), "float32"))
        return model
    if kind == "sequential_with_input":
        return keras.Sequential([keras.Input(input_shape), *cnn_layers(width, num_classes, head)])
    inputs = keras.Input(input_shape)
    if kind == "nested":
        inner = keras.Sequential(cnn_layers(width, num_classes, head), name="inner")
        return keras.Model(inputs, inner(inputs), name="nested")
    x = inputs
    for layer in cnn_layers(width, num_classes, head):
        x = layer(x)
    if kind == "functional":
        return keras.Model(inputs, x, name="functional")
    if kind == "functional_lists":
        return keras.Model([inputs], [x], name="functional_lists")
    if kind == "loaded_keras_file":
        path = directory / f"saved_{width}_{head}.keras"
        keras.Model(inputs, x, name="saved").save(path)
        return keras.saving.load_model(path)
    raise ValueError(f"Unknown model kind {kind!r}; known: {MODEL_KINDS}")


def kind_input_shape(kind, input_shape=(8, 8, 1)):
    """The input shape a test uses for `kind`: MobileNetV3 needs RGB and 32x32 at least."""
    return (32, 32, 3) if kind == "applications" else input_shape
