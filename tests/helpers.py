"""Helpers shared by tfkd's tests."""

import contextlib
import struct

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


def assert_tflite_agrees(
    model,
    lite,
    inputs,
    tolerance=1e-3,
    *,
    atol=None,
    floor=1.0,
    top1=None,
    keras_inputs=None,
    batch_size=256,
):
    """The `.tflite` file `lite` computes what the Keras `model` computes on `inputs`.

    Every output is compared, in the Keras model's order.

    Args:
        model: the Keras model the file should agree with.
        lite: the file: its path, or a `tfkd.TFLiteModel` of it.
        inputs: the batch, as the file takes it. For a file with several inputs, a dict
            from input name to array: the file is fed by its inputs' names, the model in
            the order of `model.inputs`.
        tolerance: the largest absolute difference allowed, relative to the largest
            absolute Keras output or `floor`, whichever is larger (as `export_tflite`'s
            own check of float files), or `None` not to compare values (an int8 file
            checked by `top1` only). Defaults to `1e-3`.
        atol: an absolute bound on the difference, used instead of `tolerance`.
        floor: the least scale `tolerance` is relative to; `0.0` makes it relative to
            the largest output alone. Defaults to `1.0`.
        top1: the least fraction of samples on which the file and the model give the
            same top-1 class (argmax over the last axis), on every output; `None` not to
            check it.
        keras_inputs: what `model` is fed, where the file takes the same data in another
            form (uint8 images without a channel axis). Defaults to `inputs`.
        batch_size: samples per interpreter call. Defaults to `256`.

    Returns:
        The file's outputs: an array, or a list of arrays for several outputs.
    """
    import tfkd

    if tolerance is None and atol is None and top1 is None:
        raise ValueError("Nothing to check: pass `tolerance`, `atol` or `top1`.")
    if keras_inputs is None:
        keras_inputs = inputs
    if isinstance(keras_inputs, dict):
        keras_inputs = [keras_inputs[tensor.name] for tensor in model.inputs]
    outputs = model.predict(keras_inputs, verbose=0)
    expected = [np.asarray(keras.ops.convert_to_numpy(y)) for y in keras.tree.flatten(outputs)]
    if not isinstance(lite, tfkd.TFLiteModel):
        lite = tfkd.TFLiteModel(lite)
    returned = lite.predict(inputs, batch_size=batch_size)
    received = returned if isinstance(returned, list) else [returned]
    assert len(received) == len(expected), (len(received), len(expected))
    if atol is None and tolerance is not None:
        largest = max(float(np.max(np.abs(y))) for y in expected)
        atol = tolerance * max(floor, largest)
    for index, (got, want) in enumerate(zip(received, expected, strict=True)):
        got = np.asarray(got)
        if atol is not None:
            np.testing.assert_allclose(
                got, want, rtol=0, atol=atol, err_msg=f"output {index} of {len(expected)}"
            )
        if top1 is not None:
            assert got.shape == want.shape, (index, got.shape, want.shape)
            agreement = float(np.mean(got.argmax(-1) == want.argmax(-1)))
            assert agreement >= top1, (
                f"output {index}: top-1 agreement {agreement:.4f} < {top1} on {len(want)} samples"
            )
    return returned


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


class Batches(keras.utils.PyDataset):
    """`x`, `y` in batches of `size`: labels that `fit` cannot read ahead."""

    def __init__(self, x, y, size):
        super().__init__()
        self.x, self.y, self.size = x, y, size

    def __len__(self):
        return len(self.y) // self.size

    def __getitem__(self, index):
        rows = slice(index * self.size, (index + 1) * self.size)
        return self.x[rows], self.y[rows]


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


def string_op_model():
    """A model whose one layer computes with TensorFlow string ops, which have no builtin
    TFLite kernel: its conversion fails, naming them (TensorFlow backend only)."""
    import tensorflow as tf

    class Unsupported(keras.layers.Layer):
        def call(self, inputs):
            return tf.strings.to_number(tf.strings.as_string(inputs))

    inputs = keras.Input((3,))
    return keras.Model(inputs, Unsupported()(inputs))


@contextlib.contextmanager
def peak_memory_growth():
    """Yields a list that holds, once the block ends, how many bytes this process's peak
    resident memory grew by inside it. The peak is reset first (Linux's
    `/proc/self/clear_refs`): the all-time peak that `getrusage` gives hides any growth
    that stays under what an earlier test in the same process reached."""
    with open("/proc/self/clear_refs", "w") as file:
        file.write("5")  # the peak (VmHWM) becomes the resident memory now
    before = _peak_resident_bytes()
    grown = []
    yield grown
    grown.append(_peak_resident_bytes() - before)


def _peak_resident_bytes():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM"))


def forged_zip_sizes(path, member, compressed, inflated):
    """The file at `path` with `member`'s sizes in the zip's central directory changed."""
    content = bytearray(path.read_bytes())
    start = 0
    while (start := content.find(b"PK\x01\x02", start)) >= 0:
        length = struct.unpack_from("<H", content, start + 28)[0]
        if content[start + 46 : start + 46 + length] == member.encode():
            struct.pack_into("<II", content, start + 20, compressed, inflated)
        start += 4
    path.write_bytes(bytes(content))
    return path
