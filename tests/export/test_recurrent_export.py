"""Models with recurrent layers export to `.tflite` and run there (TensorFlow backend)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tests.export.tflite_builder import build_file
from tests.helpers import assert_tflite_agrees
from tfkd.export._convert import freeze

_SEQUENCES = np.random.default_rng(0).normal(size=(37, 6, 3)).astype("float32")


def _sequence_model(layer, kind):
    if kind == "sequential":
        return keras.Sequential([keras.Input((6, 3)), layer, keras.layers.Dense(4)])
    inputs = keras.Input((6, 3))
    return keras.Model(inputs, keras.layers.Dense(4)(layer(inputs)))


def _stacked(first, second):
    return keras.Sequential([first(8, return_sequences=True), second(8)])


@pytest.mark.parametrize(
    "layer, kind",
    [
        (lambda: keras.layers.LSTM(8), "sequential"),
        (lambda: keras.layers.GRU(8), "functional"),
        (lambda: keras.layers.SimpleRNN(8), "sequential"),
        (lambda: keras.layers.Bidirectional(keras.layers.LSTM(4)), "functional"),
        # Stacked: the first loop's sequence feeds the second (the .tflite check refused
        # it: its sequence counted of unknown shape, multiplied past 1 GiB by the next).
        (lambda: _stacked(keras.layers.LSTM, keras.layers.GRU), "sequential"),
        (lambda: _stacked(keras.layers.SimpleRNN, keras.layers.SimpleRNN), "functional"),
        (
            lambda: keras.Sequential(
                [keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True))]
                + [keras.layers.GRU(8)]
            ),
            "functional",
        ),
    ],
    ids=[
        "lstm",
        "gru",
        "simple_rnn",
        "bidirectional_lstm",
        "lstm_then_gru",
        "simple_rnn_twice",
        "bidirectional_then_gru",
    ],
)
def test_a_recurrent_layer_exports_for_one_example_at_a_time(tmp_path, layer, kind):
    # Before: the converter refused the loop ('tf.TensorListReserve' op requires
    # element_shape to be static) for a batch left open.
    keras.utils.set_random_seed(0)
    model = _sequence_model(layer(), kind)
    path = tmp_path / "recurrent.tflite"
    tfkd.export_tflite(model, path)
    lite = tfkd.TFLiteModel(path)
    assert list(lite._runner.inputs[0]["shape_signature"]) == [1, 6, 3]
    # 37 examples in batches of 8: each batch runs one example at a time.
    assert_tflite_agrees(model, lite, _SEQUENCES, tolerance=1e-5, batch_size=8)


def test_int8_calibration_of_a_recurrent_loop_is_refused_with_the_ways_that_work(tmp_path):
    # TensorFlow's calibrator crashed the process (SIGSEGV) on the loop.
    keras.utils.set_random_seed(0)
    model = _sequence_model(keras.layers.LSTM(8), "sequential")
    with pytest.raises(ValueError, match="quantization='int8'.*'dynamic'.*unroll=True"):
        tfkd.export_tflite(model, tmp_path / "x.tflite", "int8", representative_data=_SEQUENCES)
    assert not (tmp_path / "x.tflite").exists()
    tfkd.export_tflite(model, tmp_path / "dynamic.tflite", "dynamic")
    assert_tflite_agrees(model, tmp_path / "dynamic.tflite", _SEQUENCES, tolerance=0.05)
    unrolled = _sequence_model(keras.layers.LSTM(8, unroll=True), "sequential")
    unrolled.set_weights(model.get_weights())
    tfkd.export_tflite(unrolled, tmp_path / "int8.tflite", "int8", representative_data=_SEQUENCES)
    assert_tflite_agrees(model, tmp_path / "int8.tflite", _SEQUENCES, tolerance=None, top1=0.85)


def test_a_file_with_a_fixed_batch_runs_any_number_of_examples(tmp_path):
    # A file made for batches of 2 (its RESHAPE holds the batch): LiteRT refused to
    # resize it ("num_input_elements != num_output_elements") for another batch.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 3)), keras.layers.Flatten(), keras.layers.Dense(4)])
    function = tf.function(lambda x: model(x)).get_concrete_function(
        tf.TensorSpec((2, 6, 3), tf.float32)
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions([freeze(function)])
    path = tmp_path / "batch2.tflite"
    path.write_bytes(converter.convert())
    lite = tfkd.TFLiteModel(path)
    assert list(lite._runner.inputs[0]["shape_signature"]) == [2, 6, 3]
    # 37 examples: the last part of 2 is filled up with a copy and cut back.
    predicted = lite.predict(_SEQUENCES, batch_size=5)
    assert predicted.shape == (37, 4)
    np.testing.assert_allclose(predicted, model.predict(_SEQUENCES, verbose=0), atol=1e-5)


def test_a_scalar_input_still_takes_the_batch_as_its_size(tmp_path):
    # No batch axis to fix: LiteRT resizes the input to the batch, as before parts.
    tensors = [("x", [], "float32", None), ("y", [], "float32", None)]
    path = build_file(tmp_path / "scalar.tflite", (tensors, [("EXP", [0], [1])], [0], [1]))
    x = np.array([0.0, 1.0, 2.0], np.float32)
    np.testing.assert_allclose(tfkd.TFLiteModel(path).predict(x), np.exp(x), rtol=1e-6)
