"""`ClusteredLayer` in models that build it where its kernel cannot be read in numpy."""

import keras
import numpy as np
import pytest

import tfkd
from tfkd.cluster import _kmeans as kmeans

L = keras.layers


class ClusteredNet(keras.Model):
    def __init__(self, width=32, num_classes=10):
        super().__init__()
        self.hidden = tfkd.cluster.ClusteredLayer(L.Dense(width, activation="relu"), 8)
        self.logits = tfkd.cluster.ClusteredLayer(L.Dense(num_classes), 8)

    def call(self, inputs, training=None):
        return self.logits(self.hidden(inputs, training=training), training=training)


def _fit(model, x, y, epochs, batch_size):
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    return model


@pytest.mark.parametrize("start", ["build", "fit"])
def test_a_subclassed_model_that_fit_builds_trains_clustered_kernels(start):
    # Before, its centroids stayed all zero: every weight 0, and the model learned nothing.
    # `fit` builds it symbolically (the weights' initializer clusters, in numpy); given
    # `build(input_shape)`, on TensorFlow `fit`'s traced step builds it (clustered in the
    # graph, once).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16)).astype("float32")
    model = ClusteredNet(width=16, num_classes=3)
    if start == "build":
        model.build((None, 16))
    _fit(model, x, np.arange(64) % 3, epochs=1, batch_size=32)
    for layer in (model.hidden, model.logits):
        kernel = keras.ops.convert_to_numpy(layer.masked_kernel())
        assert len(np.unique(kernel)) == 8 and np.all(kernel != 0), (layer.name, kernel)


def test_a_subclassed_model_given_build_predicts_with_clustered_kernels():
    # Before, on TensorFlow, `predict` (or `evaluate`) before any `fit` or call on data
    # computed with the centroids all zero: each Dense kernel 0, the same output for every
    # example. The traced step now clusters in the graph, as `fit`'s does.
    x = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
    model = ClusteredNet(width=16, num_classes=3)
    model.build((None, 16))
    predicted = model.predict(x, verbose=0)
    for layer in (model.hidden, model.logits):
        kernel = keras.ops.convert_to_numpy(layer.masked_kernel())
        assert len(np.unique(kernel)) == 8 and np.all(kernel != 0), (layer.name, kernel)
    assert np.all(predicted.std(axis=0) > 0.1), predicted.std(axis=0)
    np.testing.assert_allclose(predicted, keras.ops.convert_to_numpy(model(x)), atol=1e-5)


# Heavy: its time on JAX and PyTorch is the TensorFlow export subprocess's.
@pytest.mark.heavy
def test_a_subclassed_model_given_build_exports_what_it_predicts(tmp_path):
    # Before, once its traced steps had clustered in the graph, the export's trace kept
    # their assignments and the converter refused them ("AssignVariableOp ... incompatible
    # with expected resource"); `export_tflite` now settles the layers first.
    x = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
    model = ClusteredNet(width=16, num_classes=3)
    model.build((None, 16))
    _fit(model, x, np.arange(64) % 3, epochs=1, batch_size=32)
    _assert_exports_what_it_predicts(model, x, tmp_path)


def _assert_exports_what_it_predicts(model, x, tmp_path):
    predicted = model.predict(x, verbose=0)
    path = tmp_path / "clustered.tflite"
    if keras.backend.backend() != "tensorflow":
        # The conversion subprocess cannot import a class defined here.
        name = type(model).__name__
        with pytest.raises(ValueError, match=f"{name} .* is a class it cannot import"):
            tfkd.export_tflite(model, path)
        return
    tfkd.export_tflite(model, path)
    np.testing.assert_allclose(tfkd.TFLiteModel(path).predict(x), predicted, atol=1e-5)


class Block(L.Layer):
    """A user's block that builds its layers in its own `build`."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.dense = tfkd.cluster.ClusteredLayer(L.Dense(width, activation="relu"), 8)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, inputs, training=None):
        return self.dense(inputs, training=training)

    def compute_output_shape(self, input_shape):  # for TimeDistributed
        return self.dense.compute_output_shape(input_shape)


class BlockNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.block = Block(16)
        self.logits = tfkd.cluster.ClusteredLayer(L.Dense(3), 8)

    def call(self, inputs, training=None):
        return self.logits(self.block(inputs, training=training), training=training)


# Heavy: its time on JAX and PyTorch is the TensorFlow export subprocess's.
@pytest.mark.heavy
def test_a_clustered_layer_inside_a_users_block_is_summarised_and_exported(tmp_path):
    # Before, tfkd did not look inside a layer of the user's own class: the summary left
    # the block's clustered Dense out, and on TensorFlow, after `build(input_shape)` and
    # `fit`, its clustering left pending in the graph was not settled before the export's
    # trace, which the converter refused ("AssignVariableOp ... incompatible with expected
    # resource").
    x = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
    model = BlockNet()
    model.build((None, 16))
    _fit(model, x, np.arange(64) % 3, epochs=1, batch_size=32)
    rows = tfkd.cluster.summary(model)
    assert [(row["parameters"], row["unique_values"]) for row in rows] == [(256, 8), (48, 8)]
    _assert_exports_what_it_predicts(model, x, tmp_path)


def test_a_clustered_layer_inside_a_block_that_time_distributed_wraps_is_summarised(tmp_path):
    # Before, tfkd did not look inside Keras's TimeDistributed: the summaries left out
    # the clustered Dense of the block it wraps, and off TensorFlow the export's hint did
    # not name the block the conversion subprocess cannot load.
    x = np.random.default_rng(0).normal(size=(64, 5, 16)).astype("float32")
    inputs = keras.Input((5, 16))
    frames = L.TimeDistributed(Block(16, name="block"), name="frames")(inputs)
    model = keras.Model(inputs, L.Dense(3, name="head")(L.Flatten()(frames)))
    _fit(model, x, np.arange(64) % 3, epochs=1, batch_size=32)
    rows = tfkd.cluster.summary(model)
    assert [(row["path"], row["unique_values"]) for row in rows] == [
        ("frames/block/dense", 8),
        ("head", 240),
    ]
    assert [row["path"] for row in tfkd.prune.summary(model).layers] == [
        "frames/block/dense",
        "head",
    ]
    if keras.backend.backend() != "tensorflow":  # the subprocess cannot import Block
        with pytest.raises(ValueError, match=r"may not load layers \['block'\]"):
            tfkd.export_tflite(model, tmp_path / "frames.tflite")
        return
    _assert_exports_what_it_predicts(model, x, tmp_path)


def _fashion_mnist(count):
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    x_train, x_test = (x[:count].reshape(-1, 784) / 255.0 for x in (x_train, x_test))
    return (x_train, y_train[:count]), (x_test, y_test[:count])


@pytest.mark.heavy
def test_a_subclassed_model_that_fit_builds_learns_as_one_called_on_data():
    # Before, a subclassed model given `build(input_shape)`, or fit without a call on
    # data, trained with its centroids all zero: every weight 0, accuracy 0.105 (chance)
    # on TensorFlow and JAX, against 0.77 for the model called once on data.
    (x, y), (x_test, y_test) = _fashion_mnist(2000)
    accuracies = {}
    for start in ("call", "build", "fit"):
        keras.utils.set_random_seed(0)
        model = ClusteredNet()
        if start == "call":
            model(x[:2])
        elif start == "build":
            model.build((None, 784))
        _fit(model, x, y, epochs=2, batch_size=128)
        accuracies[start] = np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test)
        for layer in (model.hidden, model.logits):
            centroids = keras.ops.convert_to_numpy(layer.centroids)
            assert len(np.unique(centroids)) == 8, (start, layer.name, centroids)
    assert accuracies["call"] > 0.6, accuracies  # chance: 0.1; PyTorch 0.63, TF 0.77
    assert min(accuracies.values()) > accuracies["call"] - 0.05, accuracies


def test_traced_kmeans_agrees_with_numpy_kmeans():
    values = np.array([-1.02, -0.98, -1.0, 0.01, -0.01, 0.0, 2.0, 2.1, 1.9], "float32")
    columns = np.stack([values, values * 3], axis=1)
    received = keras.ops.convert_to_numpy(kmeans.traced_kmeans(columns, np.ones_like(columns), 3))
    np.testing.assert_allclose(np.sort(received), [[-1, 0, 2], [-3, 0, 6]], atol=1e-6)
    # A column with weights not kept (pruned zeros) holds one centroid at 0, as `zero`.
    rng = np.random.default_rng(0)
    pruned = rng.normal(size=(200, 2)).astype("float32") * (rng.random((200, 2)) > 0.5)
    kept = (pruned != 0).astype("float32")
    kept[:, 1] = 1  # the second column keeps all: no centroid held
    received = np.sort(keras.ops.convert_to_numpy(kmeans.traced_kmeans(pruned, kept, 4)))
    first, _ = kmeans.kmeans(pruned[kept[:, 0] > 0, 0], 4, "linear", zero=True)
    second, _ = kmeans.kmeans(pruned[:, 1], 4, "linear")
    assert 0.0 in received[0] and 0.0 not in received[1]
    np.testing.assert_allclose(received, [first, second], atol=1e-4)
