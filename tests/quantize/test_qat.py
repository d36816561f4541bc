"""`quantize_aware`: training with int8 in the loop, and the int8 file it exports."""

import pathlib

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import assert_keras_round_trip, assert_tflite_agrees, random_images, small_cnn

REPO = pathlib.Path(__file__).resolve().parents[2]
TEACHER = REPO / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def _mobile_block_model():
    """Conv+BN+ReLU6, a depthwise block with BN, a residual Add, and a softmax head."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False)(x)
    y = keras.layers.BatchNormalization(name="depthwise_bn")(y)
    y = keras.layers.ReLU(name="depthwise_relu")(y)
    y = keras.layers.Conv2D(8, 1, name="project")(y)
    x = keras.layers.Add(name="residual")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mobile_block")


def _fit(model, x, y, epochs=1, loss="sparse_categorical_crossentropy"):
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    return model


@pytest.fixture(scope="module")
def trained_mobile_block():
    x, y = random_images(192, shape=(12, 12, 3))
    return _fit(_mobile_block_model(), x, y, epochs=2), x, y


# Heavy: its time on JAX and PyTorch is the TensorFlow export subprocess's.
@pytest.mark.heavy
def test_export_is_fully_int8_and_computes_what_keras_computed(tmp_path, trained_mobile_block):
    model, x, y = trained_mobile_block
    qat_model = _fit(tfkd.quantize.quantize_aware(model), x, y)
    report = tfkd.export_tflite(qat_model, tmp_path / "qat.tflite", "int8", io_dtype="int8")
    assert report.float_ops == []
    for op in ("CONV_2D[int8]", "DEPTHWISE_CONV_2D[int8]", "FULLY_CONNECTED[int8]"):
        assert report.ops[op] >= 1, report.ops
    assert report.ops["SOFTMAX[int8]"] == 1
    # Same integer arithmetic on both sides: at most one step of the 1/256 output grid.
    assert_tflite_agrees(qat_model, report.path, x[:64], atol=1 / 256 + 1e-6, top1=0.98)


def test_batch_norm_is_folded_with_frozen_statistics(trained_mobile_block):
    model, x, y = trained_mobile_block
    qat_model = tfkd.quantize.quantize_aware(model)
    wrapped = qat_model.get_layer("stem")
    assert wrapped.batch_norm is not None
    assert isinstance(qat_model.get_layer("stem_bn"), tfkd.quantize.FoldedBatchNormalization)
    moving_mean = _numpy(wrapped.batch_norm.moving_mean).copy()
    # Before any training, the quantized model already computes the float model's outputs
    # up to int8 rounding (ranges come from this first training-mode batch).
    qat_outputs = _numpy(qat_model(x[:64], training=True))
    float_outputs = _numpy(model(x[:64], training=False))
    assert np.abs(qat_outputs - float_outputs).max() < 0.05
    _fit(qat_model, x, y)
    np.testing.assert_array_equal(_numpy(wrapped.batch_norm.moving_mean), moving_mean)


def test_input_model_is_not_modified(trained_mobile_block):
    model, x, y = trained_mobile_block
    before = [w.copy() for w in model.get_weights()]
    _fit(tfkd.quantize.quantize_aware(model), x, y)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_save_and_load_keeps_ranges_and_folding(tmp_path, trained_mobile_block):
    model, x, y = trained_mobile_block
    qat_model = _fit(tfkd.quantize.quantize_aware(model), x, y)
    loaded = assert_keras_round_trip(qat_model, x[:32], tmp_path)
    assert loaded.get_layer("stem").batch_norm is not None
    assert tfkd.quantize.is_quantized(loaded)


@pytest.fixture(scope="module")
def distilled_qat_student():
    x, y = random_images(192)
    teacher = _fit(small_cnn(16, "teacher"), x, y, loss=_logits_loss())
    student = tfkd.quantize.quantize_aware(_fit(small_cnn(4, "student"), x, y, loss=_logits_loss()))
    distiller = tfkd.Distiller(teacher=teacher, student=student)
    distiller.compile(optimizer="adam", loss=_logits_loss())
    history = distiller.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    return student


def test_qat_student_in_a_distiller_tracks_its_ranges_every_step(distilled_qat_student):
    tracked = _numpy(distilled_qat_student.get_layer("logits").output_quantizer.tracked_steps)
    assert int(tracked) == 2 * 6


# On TensorFlow only: an export subprocess, 24 s on JAX; the int8 export of a QAT model
# stays on every backend through test_export_is_fully_int8_and_computes_what_keras_computed.
@pytest.mark.heavy
def test_qat_student_in_a_distiller_exports_int8(distilled_qat_student, tmp_path):
    report = tfkd.export_tflite(distilled_qat_student, tmp_path / "student.tflite", "int8")
    assert report.float_ops == []
    assert report.keras_agreement["top1_agreement"] >= 0.9


@pytest.mark.heavy  # on TensorFlow only: its cost off TensorFlow is the export subprocess
def test_pruned_model_keeps_its_sparsity(tmp_path):
    x, y = random_images(192)
    model = small_cnn(16, "pruned", num_classes=3)
    pruned = tfkd.prune.prune(model, tfkd.prune.ConstantSparsity(0.75, frequency=1))
    _fit(pruned, x, y, loss=_logits_loss())
    qat_model = _fit(tfkd.quantize.quantize_aware(pruned), x, y, loss=_logits_loss())
    for name in ("conv", "logits"):
        kernel, _ = qat_model.get_layer(name).quantized_kernel_and_bias()
        assert np.mean(_numpy(kernel) == 0) >= 0.75
    report = tfkd.export_tflite(qat_model, tmp_path / "pruned.tflite", "int8")
    assert report.float_ops == []


@pytest.mark.heavy
def test_int8_of_the_fashion_mnist_teacher_keeps_its_accuracy(tmp_path):
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    x_train, y_train = x_train[:2048, ..., None].astype("float32"), y_train[:2048]
    x_test, y_test = x_test[:1000, ..., None].astype("float32"), y_test[:1000]
    teacher = keras.saving.load_model(TEACHER)
    float_accuracy = np.mean(teacher.predict(x_test, verbose=0).argmax(-1) == y_test)
    qat_model = tfkd.quantize.quantize_aware(teacher)
    qat_model.compile(optimizer=keras.optimizers.Adam(1e-5), loss=_logits_loss())
    qat_model.fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
    keras_accuracy = np.mean(qat_model.predict(x_test, verbose=0).argmax(-1) == y_test)
    report = tfkd.export_tflite(qat_model, tmp_path / "teacher.tflite", "int8")
    assert report.float_ops == []
    assert report.ops["CONV_2D[int8]"] == 5
    lite_accuracy = tfkd.TFLiteModel(report.path).evaluate(x_test, y_test)["accuracy"]
    assert lite_accuracy == pytest.approx(keras_accuracy, abs=0.003)
    assert lite_accuracy >= float_accuracy - 0.01


def _logits_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_a_batch_norm_naming_a_dense_s_last_axis_by_number_is_folded():
    # BatchNormalization(axis=1) after a Dense is over its features, as axis=-1 is.
    # Before, QAT refused it ("must normalize the channels-last axis") and
    # cluster_weights(fold_batch_norm=True) left it unfolded without a word.
    def model(axis, shape=(6,)):
        keras.utils.set_random_seed(0)
        layers = [keras.layers.Dense(8, name="fc"), keras.layers.BatchNormalization(axis=axis)]
        built = keras.Sequential([keras.Input(shape), *layers, keras.layers.Dense(3)])
        norm = built.layers[1]
        norm.set_weights([w + np.linspace(0.5, 1.5, len(w)) for w in norm.get_weights()])
        return built

    x = np.random.default_rng(0).normal(size=(16, 6)).astype("float32")
    expected = _numpy(tfkd.quantize.quantize_aware(model(-1))(x))
    for folded in (
        tfkd.quantize.quantize_aware(model(1)),
        tfkd.cluster.cluster_weights(model(1), 4, fold_batch_norm=True),
    ):
        assert any(
            isinstance(layer, tfkd.quantize.FoldedBatchNormalization) for layer in folded.layers
        )
    np.testing.assert_allclose(
        _numpy(tfkd.quantize.quantize_aware(model(1))(x)), expected, atol=1e-6
    )
    # On a sequence, axis 1 is its positions, not the Dense's features: still refused.
    with pytest.raises(TypeError, match="must normalize the channels-last axis"):
        tfkd.quantize.quantize_aware(model(1, shape=(5, 6)))


def test_unfreezing_keeps_the_kernels_cluster_preserving_qat_replaces_frozen():
    # The centroids train instead of a clustered kernel. Before, the pipeline's unfreezing
    # of each inner layer set its kernel trainable again off TensorFlow (where Keras sets
    # `trainable` to the value it has): unused in the forward pass, it took optimizer slots.
    from tfkd.pipeline import _fit

    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, name="d1"), keras.layers.Dense(4, name="out")]
    )
    clustered = tfkd.cluster.strip(tfkd.cluster.cluster_weights(model, clusters=4))
    clustered.get_layer("d1").trainable = False
    qat = tfkd.quantize.quantize_aware(clustered, preserve_clusters=True)
    qat(np.zeros((2, 8), "float32"))
    assert _fit.train_every_layer(qat) == 1
    trained = sorted(weight.path.split("/", 1)[1] for weight in qat.trainable_weights)
    assert trained == [
        "d1/cluster_centroids",
        "d1/d1/bias",
        "out/cluster_centroids",
        "out/out/bias",
    ]


def test_rejects_models_it_cannot_quantize():
    class Subclassed(keras.Model):
        def call(self, inputs):
            return inputs

    with pytest.raises(TypeError, match="subclassed"):
        tfkd.quantize.quantize_aware(Subclassed())
    recurrent = keras.Sequential(
        [keras.Input((5, 4)), keras.layers.LSTM(3, name="lstm"), keras.layers.Dense(2)]
    )
    with pytest.raises(TypeError, match="'lstm'.*LSTM"):
        tfkd.quantize.quantize_aware(recurrent)
    separable = keras.Sequential(
        [keras.Input((8, 8, 3)), keras.layers.SeparableConv2D(4, 3, name="separable")]
    )
    with pytest.raises(TypeError, match="'separable'.*DepthwiseConv2D"):
        tfkd.quantize.quantize_aware(separable)
    with pytest.raises(ValueError, match="decay=2"):
        tfkd.quantize.quantize_aware(small_cnn(4, "m"), decay=2)
    qat_model = tfkd.quantize.quantize_aware(small_cnn(4, "m"))
    with pytest.raises(ValueError, match="already quantization-aware"):
        tfkd.quantize.quantize_aware(qat_model)


_LAYERS_THAT_STAY_FLOAT = {
    "normalization": (
        lambda: keras.layers.Normalization(mean=127.5, variance=127.5**2, name="norm"),
        r"'norm' \(Normalization\) normalizes with a float SUB and MUL",
    ),
    "rescaling_offset": (
        lambda: keras.layers.Rescaling(1 / 127.5, offset=-1, name="norm"),
        r"'norm' \(Rescaling\) adds an offset \(-1\)",
    ),
    "elu_activation": (
        lambda: keras.layers.Activation("elu", name="norm"),
        r"'norm' \(Activation\) applies activation 'elu'",
    ),
    "softplus_activation": (
        lambda: keras.layers.Activation("softplus", name="norm"),
        r"'norm' \(Activation\) applies activation 'softplus'",
    ),
    "dilated_convolution": (
        lambda: keras.layers.Conv2D(3, 3, padding="same", dilation_rate=2, name="norm"),
        r"'norm' \(Conv2D\) has dilation_rate=\(2, 2\)",
    ),
}


@pytest.mark.parametrize("kind", sorted(_LAYERS_THAT_STAY_FLOAT))
def test_layers_the_int8_file_computes_in_float_are_refused(kind):
    # Before, each trained and exported with float ops (e.g. ['ADD', 'MUL'] for the
    # Rescaling, ['ADD', 'BATCH_TO_SPACE_ND', 'CONV_2D'] for the dilated convolution)
    # between a DEQUANTIZE and a QUANTIZE, seen only in `float_ops`.
    make, message = _LAYERS_THAT_STAY_FLOAT[kind]
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), make(), keras.layers.Conv2D(4, 3), keras.layers.ReLU()]
        + [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)]
    )
    with pytest.raises(TypeError, match=message):
        tfkd.quantize.quantize_aware(model)
    # The activations the int8 file computes stay accepted.
    for activation in ("gelu", "silu", "tanh", "sigmoid", "leaky_relu", "hard_silu"):
        layers = [keras.layers.Dense(4), keras.layers.Activation(activation), keras.layers.Dense(2)]
        tfkd.quantize.quantize_aware(keras.Sequential([keras.Input((4,)), *layers]))


def test_a_masked_embedding_is_named_as_the_cause_of_its_mask_operation():
    # Before: "Operations ['not_equal'] are keras.ops calls ... write them as layers", an
    # operation Keras makes for mask_zero=True, which the user never wrote.
    inputs = keras.Input((12,), dtype="int32")
    embedded = keras.layers.Embedding(50, 8, mask_zero=True, name="tokens")(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(embedded))
    with pytest.raises(TypeError) as info:
        tfkd.quantize.quantize_aware(keras.Model(inputs, outputs))
    message = str(info.value)
    assert "Embedding ['tokens'] has mask_zero=True" in message and "write them" not in message


def test_export_refuses_float_modes_and_untrained_ranges(tmp_path):
    qat_model = tfkd.quantize.quantize_aware(small_cnn(4, "m"))
    with pytest.raises(ValueError, match="set yet.*'conv_relu'"):
        tfkd.export_tflite(qat_model, tmp_path / "m.tflite", "int8")
    with pytest.raises(ValueError, match="int8 only.*quantization='float16'"):
        tfkd.export_tflite(qat_model, tmp_path / "m.tflite", "float16")
    # Before, these said "Received: quantization=None", which neither takes.
    x, y = random_images(8)
    with pytest.raises(ValueError, match="int8 only.*`source`, with recipe='int8_weight_only'"):
        tfkd.export.litert_quantize(qat_model, tmp_path / "q.tflite", "int8_weight_only", x)
    with pytest.raises(ValueError, match="int8 only.*`model`, for auto_quantize"):
        tfkd.export.auto_quantize(qat_model, tmp_path / "a.tflite", x, y, x)
    assert not any(tmp_path.iterdir())


# On TensorFlow only: its checks read the weights as numpy, on every backend alike.
@pytest.mark.heavy
def test_export_refuses_nan_weights_and_ranges_before_converting(tmp_path):
    # Before: one NaN in a training batch made the kernels NaN (the loss stayed finite),
    # and checking the converted file against Keras killed the process (SIGSEGV). A
    # first call on such a batch set NaN ranges, which export took for ranges never set.
    x, y = random_images(32)
    x[3, 2, 2, 0] = np.nan
    trained = _fit(tfkd.quantize.quantize_aware(small_cnn(4, "m")), x, y, loss=_logits_loss())
    with pytest.raises(
        ValueError, match=r"NaN or infinite weights in layer\(s\) \[.*'conv'.*conv/kernel"
    ):
        tfkd.export_tflite(trained, tmp_path / "m.tflite", "int8")
    called = tfkd.quantize.quantize_aware(small_cnn(4, "m"))
    called(x)
    with pytest.raises(ValueError, match="NaN or infinite weights.*_quantizer.*/min_value"):
        tfkd.export_tflite(called, tmp_path / "m.tflite", "int8")
    assert not (tmp_path / "m.tflite").exists()


def test_graph_corner_cases():
    # A BatchNorm whose input is also a model output is not folded (that output would
    # change), so it would stay float: refused.
    inputs = keras.Input((8,))
    dense = keras.layers.Dense(3, name="dense")(inputs)
    both = keras.Model(inputs, [dense, keras.layers.BatchNormalization()(dense)])
    with pytest.raises(TypeError, match="output of 'dense' also goes elsewhere"):
        tfkd.quantize.quantize_aware(both)
    # Token ids reaching an Embedding are never fake-quantized, even from a float input.
    ids = keras.Sequential(
        [keras.Input((5,)), keras.layers.Embedding(1000, 4), keras.layers.GlobalAveragePooling1D()]
    )
    qat_ids = tfkd.quantize.quantize_aware(ids)
    tokens = np.array([[1, 500, 999, 301, 2]], "float32")
    np.testing.assert_allclose(
        _numpy(qat_ids(tokens, training=True)), _numpy(ids(tokens)), atol=0.05
    )
    # A merge layer reading two model inputs quantizes each.
    a, b = keras.Input((4,)), keras.Input((4,))
    merged = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])))
    outputs = tfkd.quantize.quantize_aware(merged)(
        [np.ones((2, 4)), np.ones((2, 4))], training=True
    )
    assert outputs.shape == (2, 2)


@pytest.mark.heavy  # on TensorFlow only: its cost off TensorFlow is the export subprocess
def test_conv1d_exports_fully_int8(tmp_path):
    x = np.random.default_rng(0).normal(size=(64, 10, 4)).astype("float32")
    inputs = keras.Input((10, 4))
    hidden = keras.layers.GlobalAveragePooling1D()(keras.layers.Conv1D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    qat_model = _fit(tfkd.quantize.quantize_aware(model), x, np.arange(64) % 2, loss=_logits_loss())
    report = tfkd.export_tflite(qat_model, tmp_path / "conv1d.tflite", "int8")
    assert report.float_ops == []
    assert report.keras_agreement["top1_agreement"] >= 0.9


def test_layers_the_int8_file_would_run_in_float_are_refused():
    inputs = keras.Input((8,))
    tanh = keras.Model(inputs, keras.layers.Dense(2, activation="tanh", name="squash")(inputs))
    with pytest.raises(TypeError, match="'squash'.*'tanh'.*Activation layer"):
        tfkd.quantize.quantize_aware(tanh)
    sequence = keras.Input((None, 8))
    per_step = keras.Model(sequence, keras.layers.Dense(2, name="per_step")(sequence))
    with pytest.raises(TypeError, match=r"'per_step'.*input of shape \(None, None, 8\), whose"):
        tfkd.quantize.quantize_aware(per_step)
    # A shared Dense: its second call reads the open length (`layer.input` is the first's).
    known, open_length = keras.Input((5, 8)), keras.Input((None, 8))
    shared = keras.layers.Dense(2, name="shared")
    pooled = [keras.layers.GlobalAveragePooling1D()(shared(x)) for x in (known, open_length)]
    both = keras.Model([known, open_length], keras.layers.Concatenate()(pooled))
    with pytest.raises(TypeError, match=r"'shared'.*input of shape \(None, None, 8\)"):
        tfkd.quantize.quantize_aware(both)
    # A BatchNormalization with no Dense or convolution right before it to fold into (a
    # common conv -> ReLU -> BatchNormalization, or first in the model): before, QAT took it
    # and the int8 file held float MUL and ADD ops (`float_ops`), with no word.
    layers = keras.layers
    for called in (True, False):
        cases = {
            "applies an activation before": [
                layers.Conv2D(4, 3, activation="relu"),
                layers.BatchNormalization(name="norm"),
            ],
            "reads the model's input": [
                layers.BatchNormalization(name="norm"),
                layers.Conv2D(4, 3),
            ],
            r"follows 'pool' \(MaxPooling2D\)": [
                layers.MaxPooling2D(name="pool"),
                layers.BatchNormalization(name="norm"),
            ],
        }
        for reason, body in cases.items():
            model = keras.Sequential(
                [*([keras.Input((8, 8, 3))] if called else []), *body, layers.Flatten()]
            )
            with pytest.raises(TypeError, match=f"'norm' does not fold.*{reason}.*float MUL"):
                tfkd.quantize.quantize_aware(model)
    # One BatchNormalization called after a convolution and after a pool: it was folded
    # into the convolution and left out of the pool's path (outputs off by 4 of 7).
    images = keras.Input((8, 8, 3))
    shared = layers.BatchNormalization(name="shared")
    paths = [shared(layers.Conv2D(3, 1, name="c")(images)), shared(layers.MaxPooling2D(1)(images))]
    both = keras.Model(images, [layers.Flatten()(path) for path in paths])
    with pytest.raises(TypeError, match=r"'shared' does not fold.*called on the outputs of \['c'"):
        tfkd.quantize.quantize_aware(both)
    unfolded = small_cnn(4, "m", batch_norm=True)
    with pytest.raises(TypeError, match=r"'conv_bn'.*\(fold_batch_norm=False\).*Pass fold_"):
        tfkd.quantize.quantize_aware(unfolded, fold_batch_norm=False)
    assert tfkd.quantize.is_quantized(tfkd.quantize.quantize_aware(unfolded))


# Heavy: its time on JAX and PyTorch is the TensorFlow export subprocess's.
@pytest.mark.heavy
def test_a_dense_on_a_sequence_of_known_length_exports_fully_int8(tmp_path):
    # Before: refused ("reads a rank-3 input, which TFLite runs as a float
    # FULLY_CONNECTED"); its kernel now multiplies a 2D view of the sequence.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5, 6)).astype("float32")
    inputs = keras.Input((5, 6))
    steps = keras.layers.Dense(4)(keras.layers.Dense(8, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(steps)))
    qat_model = _fit(tfkd.quantize.quantize_aware(model), x, np.arange(64) % 3, loss=_logits_loss())
    report = tfkd.export_tflite(qat_model, tmp_path / "steps.tflite", "int8")
    assert report.float_ops == [] and report.ops["FULLY_CONNECTED[int8]"] == 3, report.ops
    assert not [name for name in report.ops if name.split("[")[0] in ("SHAPE", "PACK")]
    assert_tflite_agrees(qat_model, report.path, x, tolerance=0.02, top1=0.95)  # 1 to 2 steps


@pytest.mark.heavy
def test_untrained_qat_model_computes_what_the_float_model_computes_on_fashion_mnist():
    # Issue 14, item 9: the ranges started at [0, 0], so before its first training step a
    # QAT model predicted one class for every image (top-1 agreement 0.1 with its float model).
    _, (x_test, _) = tfkd.datasets.load("fashion_mnist")
    x = x_test[:256, ..., None].astype("float32")
    teacher = keras.saving.load_model(TEACHER)
    qat_model = tfkd.quantize.quantize_aware(teacher)
    float_top1 = teacher.predict(x, verbose=0).argmax(-1)
    qat_top1 = qat_model.predict(x, batch_size=64, verbose=0).argmax(-1)
    assert np.mean(qat_top1 == float_top1) >= 0.95
    assert tfkd.quantize.qat.untrained_quantizers(qat_model) == []


def test_first_call_sets_the_range_and_training_continues_from_it():
    quantizer = tfkd.quantize.ActivationQuantizer(decay=0.5)
    first = np.array([[-1.0, 3.0]], "float32")
    quantizer(first)  # inference: sets the range, once
    quantizer(np.array([[-8.0, 8.0]], "float32"))
    assert (float(_numpy(quantizer.min_value)), float(_numpy(quantizer.max_value))) == (-1.0, 3.0)
    assert int(_numpy(quantizer.tracked_steps)) == 0
    # Training moves from the set range: halfway (decay 0.5) towards [-3, 1] gives [-2, 2].
    quantizer(np.array([[-3.0, 1.0]], "float32"), training=True)
    assert (float(_numpy(quantizer.min_value)), float(_numpy(quantizer.max_value))) == (-2.0, 2.0)
    assert int(_numpy(quantizer.tracked_steps)) == 1


def test_a_frozen_quantizer_keeps_its_range_in_training():
    # As Keras's BatchNormalization keeps its statistics when frozen. Before, a frozen
    # QAT layer's ranges moved on with every training batch.
    quantizer = tfkd.quantize.ActivationQuantizer(decay=0.5)
    quantizer(np.array([[-1.0, 3.0]], "float32"), training=True)
    quantizer.trainable = False
    quantizer(np.array([[-3.0, 1.0]], "float32"), training=True)
    assert (float(_numpy(quantizer.min_value)), float(_numpy(quantizer.max_value))) == (-1.0, 3.0)
    assert int(_numpy(quantizer.tracked_steps)) == 1
    # A fresh frozen quantizer still takes its first batch's range, as inference does.
    fresh = tfkd.quantize.ActivationQuantizer(decay=0.5)
    fresh.trainable = False
    fresh(np.array([[0.5, 4.0]], "float32"), training=True)
    assert (float(_numpy(fresh.min_value)), float(_numpy(fresh.max_value))) == (0.0, 4.0)


@pytest.mark.parametrize("frozen", ["before_qat", "after_qat"])
def test_fit_leaves_a_frozen_layer_s_ranges_alone(frozen):
    x, _ = random_images(64)
    model = small_cnn(8, "student")
    if frozen == "before_qat":
        model.get_layer("conv").trainable = False
    model = tfkd.quantize.quantize_aware(model)
    model.predict(x[:8], verbose=0)  # sets the ranges
    conv = model.get_layer("conv")
    if frozen == "after_qat":
        conv.trainable = False
    ranges = [q for q in conv._flatten_layers() if hasattr(q, "tracked_steps")]
    before = [_numpy(v).copy() for q in ranges for v in q.variables]
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, np.zeros((64, 3), "float32"), epochs=1, batch_size=16, verbose=0)
    after = [_numpy(v) for q in ranges for v in q.variables]
    assert ranges and len(before) == 3 * len(ranges)
    for old, new in zip(before, after):
        np.testing.assert_array_equal(old, new)
    trained = [
        q for q in model.get_layer("logits")._flatten_layers() if hasattr(q, "tracked_steps")
    ]
    assert trained and all(int(_numpy(q.tracked_steps)) == 4 for q in trained)


def test_first_training_batch_of_a_fresh_quantizer_sets_the_range():
    quantizer = tfkd.quantize.ActivationQuantizer(decay=0.5)
    quantizer(np.array([[0.5, 4.0]], "float32"), training=True)
    assert (float(_numpy(quantizer.min_value)), float(_numpy(quantizer.max_value))) == (0.0, 4.0)


@pytest.mark.heavy  # on TensorFlow only: its cost off TensorFlow is the export subprocess
def test_compiled_predict_sets_the_ranges_once_and_the_model_exports(tmp_path):
    keras.utils.set_random_seed(0)
    x, _ = random_images(64)
    model = small_cnn(4, "m")
    expected = _numpy(model.predict(x, verbose=0))
    qat_model = tfkd.quantize.quantize_aware(model)
    # `predict` runs compiled (tf.function or jax.jit): the first batch sets the ranges
    # (here the only one; later batches are clipped to them). Unset ranges gave outputs of
    # about 0, an error of 100% of the largest output.
    received = _numpy(qat_model.predict(x, batch_size=64, verbose=0))
    assert np.abs(received - expected).max() <= 0.1 * np.abs(expected).max()
    ranges = [_numpy(v).copy() for v in qat_model.non_trainable_weights]
    qat_model.predict(3.0 * x, batch_size=32, verbose=0)
    for old, new in zip(ranges, qat_model.non_trainable_weights, strict=True):
        np.testing.assert_array_equal(old, _numpy(new))
    # A QAT model that has seen data exports without training; its ranges make the file.
    report = tfkd.export_tflite(qat_model, tmp_path / "called.tflite", "int8")
    assert report.float_ops == []
    assert report.keras_agreement["top1_agreement"] >= 0.95


def test_report_counts_parameters_not_masks_or_ranges(tmp_path):
    # Issue 14, item 10: a QAT row counted its sparsity masks and activation ranges, so it
    # reported more nonzero parameters than the pruned model it came from.
    from tfkd.pipeline import _measure

    x, y = random_images(64)
    pruned = tfkd.prune.prune(
        small_cnn(4, "m", batch_norm=True), tfkd.prune.ConstantSparsity(0.5, frequency=1)
    )
    _fit(pruned, x, y, loss=_logits_loss())
    qat_model = _fit(tfkd.quantize.quantize_aware(pruned), x, y, loss=_logits_loss())
    data = tfkd.pipeline.Data(x, y, x[:8], y[:8])
    path = tmp_path / "model.keras"
    path.write_bytes(b"")
    rows = {
        name: _measure.measure(model, data, path)
        for name, model in (
            ("pruned", pruned),
            ("stripped", tfkd.prune.strip(pruned)),
            ("qat", qat_model),
        )
    }
    # conv 3*3*1*4 + 4, its BatchNorm 4 * 4, logits 4*3 + 3; half of each kernel is zero.
    for row in rows.values():
        assert (row["parameters"], row["nonzero_parameters"]) == (71, 71 - 18 - 6)


@pytest.mark.heavy  # on TensorFlow only: its cost off TensorFlow is the export subprocess
def test_sequential_model_never_called_is_quantized_when_first_called(tmp_path):
    # It has no inputs yet (`model.inputs` raised AttributeError); its layers build on the
    # QAT model's first call, as the float model's would have.
    x, y = random_images(64)
    model = keras.Sequential(
        [
            keras.layers.Conv2D(4, 3, use_bias=False, name="conv"),
            keras.layers.BatchNormalization(name="conv_bn"),
            keras.layers.ReLU(name="conv_relu"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(3, name="logits"),
        ]
    )
    qat_model = tfkd.quantize.quantize_aware(model)
    with pytest.raises(ValueError, match=r"set yet, in layers \['conv', 'conv_relu', 'logits'\]"):
        tfkd.export_tflite(qat_model, tmp_path / "unbuilt.tflite", "int8")
    _fit(qat_model, x, y, loss=_logits_loss())
    assert qat_model.get_layer("conv").batch_norm is not None
    report = tfkd.export_tflite(qat_model, tmp_path / "sequential.tflite", "int8")
    assert report.float_ops == []
    assert report.keras_agreement["top1_agreement"] >= 0.95


def test_keras_ops_calls_in_a_functional_model_are_named_in_the_refusal():
    # They are not layers; reading the graph raised `KeyError: 'add'` on MobileNetV3Small.
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    with pytest.raises(TypeError, match=r"Received:\n.*\['add', 'multiply'\].*keras.ops calls"):
        tfkd.quantize.quantize_aware(model)
