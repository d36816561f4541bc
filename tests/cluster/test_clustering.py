"""Weight clustering: k-means, fine-tuning on the centroids, stripping and export."""

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import assert_keras_round_trip, random_images, small_cnn
from tfkd.cluster import _kmeans as kmeans
from tfkd.export._interpreter import integer_kernels

L = keras.layers


def _fit(model, x, y, epochs=2, batch_size=32):
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    return model


def _accuracy(model, x, y):
    return float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))


def _kernel(model, name):
    return np.asarray(model.get_layer(name).get_weights()[0])


def test_kmeans_finds_the_clusters_of_separated_values():
    values = np.array([-1.02, -0.98, -1.0, 0.01, -0.01, 0.0, 2.0, 2.1, 1.9])
    for init in kmeans.INITS:
        centroids, assignments = kmeans.kmeans(values, 3, init=init)
        np.testing.assert_allclose(centroids, [-1.0, 0.0, 2.0], atol=1e-6)
        np.testing.assert_array_equal(assignments, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    assert kmeans.kmeans(values.reshape(3, 3), 3)[1].shape == (3, 3)
    # One centroid held at zero, the others fitted to the rest (a pruned kernel's values).
    nonzero = values[np.abs(values) > 0.005]
    np.testing.assert_allclose(kmeans.kmeans(nonzero, 3, zero=True)[0], [-1.0, 0.0, 2.0])


def test_kmeans_on_fewer_distinct_values_than_clusters():
    centroids, assignments = kmeans.kmeans(np.array([0.5, 0.5, 0.5]), 4)
    assert np.all(centroids[assignments] == 0.5)


def test_clustered_model_trains_its_centroids_and_strips_to_k_values():
    model = small_cnn(8, "clustered")
    before = [np.array(w) for w in model.get_weights()]
    x, y = random_images()
    clustered = tfkd.cluster.cluster_weights(model, clusters=4)
    centroids = np.array(clustered.get_layer("conv").centroids)
    _fit(clustered, x, y)
    assert not np.allclose(np.array(clustered.get_layer("conv").centroids), centroids)
    stripped = tfkd.cluster.strip(clustered)
    for row in tfkd.cluster.summary(stripped):
        assert row["unique_values"] <= 4
    np.testing.assert_allclose(
        stripped.predict(x, verbose=0), clustered.predict(x, verbose=0), atol=1e-6
    )
    for old, new in zip(before, model.get_weights()):  # the caller's model is untouched
        np.testing.assert_array_equal(old, new)


def test_clusters_start_from_the_trained_weights():
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, name="dense")])
    kernel = np.array([[1.0, 1.1, -1.0], [-1.1, 3.0, 3.1], [1.0, -1.0, 3.0], [0.9, 1.0, -0.9]])
    model.get_layer("dense").set_weights([kernel, np.zeros(3)])
    clustered = tfkd.cluster.cluster_weights(model, clusters=3, init="linear")
    np.testing.assert_allclose(
        np.sort(np.array(clustered.get_layer("dense").centroids)), [-1.0, 1.0, 9.1 / 3], atol=1e-6
    )
    stripped = tfkd.cluster.strip(clustered)
    assert np.max(np.abs(_kernel(stripped, "dense") - kernel)) <= 0.11


def test_per_channel_clusters_each_output_channel():
    model = small_cnn(8, "per_channel")
    clustered = tfkd.cluster.cluster_weights(model, clusters=3, per_channel=True)
    rows = {row["name"]: row for row in tfkd.cluster.summary(tfkd.cluster.strip(clustered))}
    assert rows["conv"]["most_unique_per_channel"] == 3
    assert rows["conv"]["unique_values"] > 3


def test_clustering_a_pruned_model_keeps_its_zeros():
    x, y = random_images()
    pruned = _fit(
        tfkd.prune.prune(small_cnn(8, "pruned"), tfkd.prune.ConstantSparsity(0.5, frequency=1)),
        x,
        y,
    )
    stripped = tfkd.prune.strip(pruned)
    zeros = _kernel(stripped, "conv") == 0
    clustered = _fit(tfkd.cluster.cluster_weights(stripped, clusters=4), x, y)
    kernel = _kernel(tfkd.cluster.strip(clustered), "conv")
    assert np.all(kernel[zeros] == 0)
    # The zeros are one of the 4 values (before, 4 centroids and the zeros: 5).
    assert len(np.unique(kernel)) <= 4
    assert tfkd.prune.summary(tfkd.cluster.strip(clustered)).sparsity >= 0.49


def test_eight_clusters_of_a_pruned_model_are_eight_values_with_the_zeros_on_fashion_mnist():
    # As tfmot's sparsity-preserving clustering: the pruned zeros are one of the clusters.
    # Before, a pruned kernel clustered to 8 held 9 values: the zeros and 8 centroids.
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    x_train, y_train = x_train[:3000].reshape(-1, 784) / 255.0, y_train[:3000]
    x_test, y_test = x_test[:1000].reshape(-1, 784) / 255.0, y_test[:1000]
    model = keras.Sequential(
        [keras.Input((784,)), L.Dense(32, activation="relu", name="hidden"), L.Dense(10)]
    )
    schedule = tfkd.prune.ConstantSparsity(0.5, frequency=1)
    pruned = _fit(tfkd.prune.prune(model, schedule), x_train, y_train, 4, batch_size=128)
    pruned = tfkd.prune.strip(pruned)
    pruned_zeros = _kernel(pruned, "hidden") == 0
    clustered = tfkd.cluster.cluster_weights(pruned, clusters=8)
    clustered = _fit(clustered, x_train, y_train, 1, batch_size=128)
    stripped = tfkd.cluster.strip(clustered)
    for row in tfkd.cluster.summary(stripped):
        assert row["unique_values"] <= 8, row
    kernel = _kernel(stripped, "hidden")
    assert 0.0 in kernel and np.all(kernel[pruned_zeros] == 0)
    assert tfkd.prune.summary(stripped).sparsity >= 0.5
    pruned_accuracy, accuracy = (_accuracy(m, x_test, y_test) for m in (pruned, stripped))
    assert pruned_accuracy > 0.7 and accuracy >= pruned_accuracy - 0.05, (accuracy, pruned_accuracy)


def test_a_subclassed_model_with_its_own_clustered_layers_exports_k_values(tmp_path):
    # Before, building the model traced its call on symbolic inputs, where the wrapper's
    # k-means (numpy) failed: Keras built it op by op instead, without recording the
    # input shape, and export could not tell the model's inputs.
    class Clustered(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = tfkd.cluster.ClusteredLayer(L.Dense(32, activation="relu"), 8)
            self.out = L.Dense(3)

        def call(self, inputs, training=None):
            return self.out(self.hidden(inputs, training=training))

    x = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
    model = Clustered()
    model(x[:2])
    assert model.get_build_config() == {"input_shape": (2, 16)}
    _fit(model, x, np.arange(64) % 3, epochs=1)
    assert tfkd.cluster.summary(model)[0]["unique_values"] <= 8
    path = tmp_path / "clustered.tflite"
    if keras.backend.backend() != "tensorflow":
        # As for pruning: the conversion subprocess cannot import a class defined here.
        with pytest.raises(ValueError, match="Clustered .* is a class it cannot import"):
            tfkd.export_tflite(model, path, "int8", x, per_channel=False)
        return
    report = tfkd.export_tflite(model, path, "int8", x, per_channel=False)  # checked too
    assert report.keras_agreement["top1_agreement"] >= 0.9
    (hidden,) = [values for values, _ in integer_kernels(path).values() if values.size == 512]
    assert len(np.unique(hidden)) <= 8


def test_clustered_student_of_a_distiller_and_int8_export(tmp_path):
    x, y = random_images()
    student = tfkd.cluster.cluster_weights(small_cnn(8, "student"), clusters=8)
    distiller = tfkd.Distiller(teacher=small_cnn(16, "teacher"), student=student)
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    path = tmp_path / "clustered.tflite"
    tfkd.export_tflite(student, path, "int8", representative_data=x)  # strips by itself
    expected = tfkd.cluster.strip(student).predict(x, verbose=0).argmax(-1)
    received = tfkd.TFLiteModel(path).predict(x).argmax(-1)
    assert np.mean(expected == received) >= 0.9


# Heavy: its time on JAX and PyTorch is the TensorFlow export subprocess's.
@pytest.mark.heavy
def test_per_tensor_int8_export_keeps_k_values_per_kernel(tmp_path):
    x, y = random_images()
    clustered = _fit(tfkd.cluster.cluster_weights(small_cnn(16, "per_tensor"), clusters=16), x, y)
    stripped = tfkd.cluster.strip(clustered)
    found = {}
    for per_channel in (True, False):
        path = tmp_path / f"per_channel_{per_channel}.tflite"
        tfkd.export_tflite(clustered, path, "int8", x, per_channel=per_channel)
        found[per_channel] = integer_kernels(path)
        received = tfkd.TFLiteModel(path).predict(x).argmax(-1)
        assert np.mean(received == stripped.predict(x, verbose=0).argmax(-1)) >= 0.9
    assert len(found[False]) == 2  # the convolution and the Dense kernel
    for values, scales in found[False].values():
        assert len(scales) == 1 and 2 <= len(np.unique(values)) <= 16
    # With a scale per channel, the same 16 centroids become more int8 values.
    assert max(len(np.unique(values)) for values, _ in found[True].values()) > 16
    assert all(len(scales) > 1 for _, scales in found[True].values())


# Heavy: its time on JAX and PyTorch is the TensorFlow export subprocess's.
@pytest.mark.heavy
def test_folded_batch_norm_clusters_the_kernel_the_file_holds(tmp_path):
    x, y = random_images()
    model = _fit(small_cnn(16, "folded", batch_norm=True), x, y)
    # The conv layer left unclustered: its folded kernel and bias give the same features.
    folded = tfkd.cluster.cluster_weights(model, 4, exclude=["conv"], fold_batch_norm=True)

    def features(network):
        return keras.Model(network.inputs, network.get_layer("features").output).predict(
            x, verbose=0
        )

    np.testing.assert_allclose(features(folded), features(model), rtol=1e-4, atol=1e-5)
    assert isinstance(folded.get_layer("conv_bn"), tfkd.quantize.FoldedBatchNormalization)
    assert model.get_layer("conv").bias is not None  # the input model is unchanged
    clustered = _fit(tfkd.cluster.cluster_weights(model, clusters=8, fold_batch_norm=True), x, y)
    unfolded = _fit(tfkd.cluster.cluster_weights(model, clusters=8), x, y)
    kernels = {}
    for fold_batch_norm, trained in [(False, unfolded), (True, clustered)]:
        path = tmp_path / f"folded_{fold_batch_norm}.tflite"
        tfkd.export_tflite(trained, path, "int8", x, per_channel=False)
        kernels[fold_batch_norm] = integer_kernels(path)
    assert all(len(np.unique(values)) <= 8 for values, _ in kernels[True].values())
    # Unfolded, the converter scales each channel of the conv kernel by its normalization.
    assert max(len(np.unique(values)) for values, _ in kernels[False].values()) > 8
    received = tfkd.TFLiteModel(path).predict(x).argmax(-1)
    expected = tfkd.cluster.strip(clustered).predict(x, verbose=0).argmax(-1)
    assert np.mean(received == expected) >= 0.9
    # QAT strips the folded placeholder: the ReLU after the conv still fuses into it.
    aware = tfkd.quantize.quantize_aware(clustered, preserve_clusters=True)
    assert aware.get_layer("conv").output_quantizer is None
    assert "conv_bn" not in [layer.name for layer in aware.layers]


# Heavy: its time on JAX and PyTorch is the TensorFlow export subprocess's.
@pytest.mark.heavy
def test_strip_leaves_out_the_batch_norms_folded_into_the_kernels(tmp_path):
    # Before, strip kept the FoldedBatchNormalization placeholders: the model held a tfkd
    # layer, which keras.saving.load_model cannot read without tfkd.
    x, _ = random_images(64)
    rng = np.random.default_rng(0)
    for model in [small_cnn(16, "functional", batch_norm=True), *_conv_block_models()]:
        for norm in tfkd._graph.batch_norm_layers(model):  # as if trained
            shape = norm.gamma.shape
            scale, shift = rng.uniform(0.5, 2, (2, *shape)), rng.normal(size=(2, *shape))
            norm.set_weights([scale[0], shift[0], shift[1], scale[1]])
        clustered = tfkd.cluster.cluster_weights(model, 4, fold_batch_norm=True)
        stripped = tfkd.cluster.strip(clustered)
        kinds = {type(layer) for layer in tfkd._graph.leaf_layers(stripped)}
        assert all(kind.__module__.startswith("keras.") for kind in kinds), kinds
        assert L.BatchNormalization not in kinds
        # Left out of a functional graph; a Sequential model, a list, holds an Identity.
        assert (L.Identity in kinds) == (model.name != "functional"), kinds
        np.testing.assert_allclose(
            stripped.predict(x, verbose=0), clustered.predict(x, verbose=0), atol=1e-5
        )
        if model.name == "functional":
            report = tfkd.export_tflite(clustered, tmp_path / "folded.tflite")  # strips too
            assert report.keras_agreement["top1_agreement"] == 1.0


def _conv_block_models():
    """The same conv + BatchNorm + ReLU block, nested in a functional model and as a
    Sequential model that was called."""
    inner = keras.Sequential(
        [keras.Input((8, 8, 1)), L.Conv2D(8, 3, use_bias=False, name="c1")]
        + [L.BatchNormalization(name="b1"), L.ReLU(name="r1")],
        name="inner",
    )
    inputs = keras.Input((8, 8, 1))
    features = L.GlobalAveragePooling2D()(inner(inputs))
    nested = keras.Model(inputs, L.Dense(3, name="d")(features), name="nested")
    sequential = keras.Sequential(
        [L.Conv2D(8, 3, name="c1"), L.BatchNormalization(name="b1"), L.ReLU()]
        + [L.GlobalAveragePooling2D(), L.Dense(3, name="d")],
        name="sequential",
    )
    sequential(np.zeros((1, 8, 8, 1), "float32"))
    return [nested, sequential]


@pytest.mark.parametrize("index", [0, 1], ids=["nested", "sequential_called"])
def test_fold_and_cluster_preserving_qat_on_nested_and_sequential_models(index):
    x, y = random_images()
    model = _fit(_conv_block_models()[index], x, y, epochs=1)
    clustered = tfkd.cluster.cluster_weights(model, 4, fold_batch_norm=True)
    kinds = [type(layer).__name__ for layer in tfkd._graph.leaf_layers(clustered)]
    assert kinds.count("ClusteredLayer") == 2 and "FoldedBatchNormalization" in kinds
    assert "BatchNormalization" not in kinds
    aware = _fit(
        tfkd.quantize.quantize_aware(_fit(clustered, x, y, 1), preserve_clusters=True), x, y, 1
    )
    assert _distinct(aware) == {"c1": 4, "d": 4}


def test_fold_leaves_a_layer_with_lora_and_its_batch_norm_alone():
    inputs = keras.Input((6,))
    hidden = L.Dense(8, name="hidden")
    x = L.BatchNormalization(name="norm")(hidden(inputs))
    model = keras.Model(inputs, L.Dense(24, name="out")(x))
    hidden.enable_lora(2)
    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    folded = tfkd.cluster.cluster_weights(model, 4, include=["out"], fold_batch_norm=True)
    assert isinstance(folded.get_layer("norm"), L.BatchNormalization)

    def normalized(network):
        return keras.Model(network.inputs, network.get_layer("norm").output).predict(x, verbose=0)

    np.testing.assert_allclose(normalized(folded), normalized(model), atol=1e-5)


def _distinct(model):
    return {row["name"]: row["unique_values"] for row in tfkd.cluster.summary(model)}


def test_cluster_preserving_qat_trains_the_centroids_and_exports_them(tmp_path):
    x, y = random_images()
    model = _fit(small_cnn(16, "cqat", batch_norm=True), x, y)
    clustered = _fit(tfkd.cluster.cluster_weights(model, clusters=8), x, y)
    before = _distinct(clustered)
    assert before == {"conv": 8, "logits": 8}
    trained = {}
    for preserve in (True, False):
        aware = tfkd.quantize.quantize_aware(clustered, preserve_clusters=preserve)
        trained[preserve] = _fit(aware, x, y, epochs=3)
    assert _distinct(trained[True]) == before  # QAT moved the shared values, not the weights
    assert max(_distinct(trained[False]).values()) > 100  # plain QAT spreads them
    wrapper = trained[True].get_layer("conv")
    centroids = keras.ops.convert_to_numpy(wrapper.cluster_centroids)
    start = np.unique(_kernel(tfkd.cluster.strip(clustered), "conv"))
    assert not np.allclose(np.sort(centroids), start)  # the centroids trained
    path = tmp_path / "cqat.tflite"
    tfkd.export_tflite(trained[True], path, "int8")
    kernels = integer_kernels(path)
    assert len(kernels) == 2
    for values, _ in kernels.values():
        channels = values.reshape(len(values), -1)  # output channels first
        assert max(len(np.unique(channel)) for channel in channels) <= 8
    loaded = assert_keras_round_trip(trained[True], x[:16], tmp_path)
    assert _distinct(loaded) == before
    assert not loaded.get_layer("conv").layer.kernel.trainable
    # Freezing and unfreezing the model trains the centroids again, never the kernel.
    for model in (trained[True], loaded):
        model.trainable = False
        model.trainable = True
        trainable = {id(variable) for variable in model.trainable_weights}
        assert id(model.get_layer("conv").cluster_centroids) in trainable
        assert id(model.get_layer("conv").layer.kernel) not in trainable


def test_cluster_preserving_qat_refuses_what_it_cannot_do():
    with pytest.raises(TypeError, match="preserve_clusters.*'yes'"):
        tfkd.quantize.quantize_aware(small_cnn(4, "flag"), preserve_clusters="yes")
    unbuilt = keras.Sequential([L.Dense(4)], name="unbuilt")
    with pytest.raises(ValueError, match="preserve_clusters.*'unbuilt', never called"):
        tfkd.quantize.quantize_aware(unbuilt, preserve_clusters=True)
    # A model no one clustered: it would silently train as plain QAT.
    plain = small_cnn(4, "plain")
    with pytest.raises(
        ValueError, match=r"no kernel of model 'plain' is clustered.*\{'conv': 36, 'logits': "
    ):
        tfkd.quantize.quantize_aware(plain, preserve_clusters=True)
    # Clustered per channel over many channels: more than 256 values per kernel, none kept.
    wide = tfkd.cluster.cluster_weights(
        small_cnn(64, "wide"), 8, per_channel=True, include=["conv"]
    )
    with pytest.raises(ValueError, match=r"'conv': 512"):
        tfkd.quantize.quantize_aware(wide, preserve_clusters=True)
    with pytest.raises(ValueError, match="clusters.*needs a layer with a kernel.*ReLU"):
        tfkd.quantize.QuantizeWrapper(L.ReLU(name="relu"), clusters=4)
    wrapper = tfkd.quantize.QuantizeWrapper(L.Dense(4), clusters=2)
    wrapper.build((None, 3))
    with pytest.raises(ValueError, match="holds 12 distinct values, more than clusters=2"):
        wrapper.keep_clusters()
    plain = tfkd.quantize.QuantizeWrapper(L.Dense(4, name="plain"))
    plain.build((None, 3))
    with pytest.raises(ValueError, match="keep_clusters.*clusters=None.*'plain'"):
        plain.keep_clusters()


def test_per_tensor_export_refuses_float_and_quantization_aware_models(tmp_path):
    x, y = random_images()
    path = tmp_path / "model.tflite"
    with pytest.raises(ValueError, match="quantization=None"):
        tfkd.export_tflite(small_cnn(4, "float"), path, per_channel=False)
    with pytest.raises(ValueError, match="per_channel=False with quantization='int16x8'"):
        tfkd.export_tflite(small_cnn(4, "wide"), path, "int16x8", x, per_channel=False)
    aware = tfkd.quantize.quantize_aware(small_cnn(4, "aware"))
    aware(x[:8], training=True)
    with pytest.raises(ValueError, match="quantization-aware model"):
        tfkd.export_tflite(aware, path, "int8", x, per_channel=False)
    assert not path.exists()


def test_saved_clustered_model_loads_and_trains_on(tmp_path):
    x, y = random_images()
    clustered = _fit(tfkd.cluster.cluster_weights(small_cnn(8, "saved"), clusters=4), x, y, 1)
    clustered.save(tmp_path / "clustered.keras")
    loaded = keras.saving.load_model(tmp_path / "clustered.keras")
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), clustered.predict(x, verbose=0), atol=1e-6
    )
    _fit(loaded, x, y, 1)
    assert all(row["unique_values"] <= 4 for row in tfkd.cluster.summary(loaded))


def test_kernels_a_users_block_holds_are_named_not_left_unclustered_silently():
    from tests.prune.test_pruning import _block_models

    model = _block_models()[0]
    with pytest.warns(
        UserWarning, match=r"not clustered: 'block/inner_dense' \(made by _DenseBlock\)\. "
    ) as record:
        clustered = tfkd.cluster.cluster_weights(model, clusters=4)
    assert [w.filename for w in record if "keeps whole" in str(w.message)] == [__file__]
    assert [type(layer).__name__ for layer in clustered.layers[1:]] == [
        "_DenseBlock",
        "ClusteredLayer",
    ]


def test_clustering_refuses_what_it_cannot_do():
    model = small_cnn(8, "refused")
    with pytest.raises(ValueError, match="QuantizeWrapper.*Cluster the float model"):
        tfkd.cluster.cluster_weights(tfkd.quantize.quantize_aware(model), 4)
    with pytest.raises(ValueError, match="larger than the number of weights.*'conv'"):
        tfkd.cluster.cluster_weights(model, 1000)
    with pytest.raises(ValueError, match="clusters.*>= 2.*Received: clusters=1"):
        tfkd.cluster.cluster_weights(model, 1)
    with pytest.raises(ValueError, match="Nothing to cluster"):
        tfkd.cluster.cluster_weights(model, 4, exclude=["conv", "logits"])
    with pytest.raises(TypeError, match="'features'.*cannot be clustered"):
        tfkd.cluster.cluster_weights(model, 4, include=["features"])
    with pytest.raises(TypeError, match="fold_batch_norm.*'yes'"):
        tfkd.cluster.cluster_weights(model, 4, fold_batch_norm="yes")
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[0, 0, 0, 0] = np.nan
    model.get_layer("conv").set_weights([kernel, bias])
    with pytest.raises(ValueError, match=r"NaN or infinite weights in layer\(s\) \['conv'\]"):
        tfkd.cluster.cluster_weights(model, 4)  # before: "Probabilities contain NaN"


def test_a_negative_moving_variance_is_refused_before_folding():
    model = small_cnn(8, "variance", batch_norm=True)
    norm = model.get_layer("conv_bn")
    variance = np.array(keras.ops.convert_to_numpy(norm.moving_variance))
    variance[[2, 5]] = -1.0  # finite, so the NaN check of the weights lets it through
    norm.moving_variance.assign(variance)
    # Before: the folded kernel was NaN, and k-means failed ("Probabilities contain NaN").
    message = r"'conv_bn' has moving_variance \+ epsilon <= 0 at 2 channel\(s\), e.g. \[2, 5\]"
    with pytest.raises(ValueError, match=message):
        tfkd.cluster.cluster_weights(model, 4, fold_batch_norm=True)
    with pytest.raises(ValueError, match=message):
        tfkd.quantize.quantize_aware(model, fold_batch_norm=True)


def test_per_channel_clusters_of_a_depthwise_kernel():
    model = keras.Sequential([keras.Input((6, 6, 4)), L.DepthwiseConv2D(3, name="depthwise")])
    clustered = tfkd.cluster.cluster_weights(model, clusters=2, per_channel=True)
    kernel = _kernel(tfkd.cluster.strip(clustered), "depthwise")  # (3, 3, 4, 1)
    per_channel = [len(np.unique(kernel[:, :, channel, 0])) for channel in range(4)]
    assert per_channel == [2, 2, 2, 2] and len(np.unique(kernel)) == 8
    assert tfkd.cluster.summary(clustered)[0]["most_unique_per_channel"] == 2
