"""The private TensorFlow, LiteRT and Keras APIs tfkd uses, each reached in one place: these
tests fail loudly when a new release moves them, before any export silently breaks."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tfkd.export import _convert, _interpreter, _tracing


def _dense():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))


def test_freeze_turns_variables_into_constants_that_compute_the_same():
    model = _dense()
    function = tf.function(lambda x: model(x)).get_concrete_function(
        tf.TensorSpec((None, 3), tf.float32)
    )
    frozen = _convert.freeze(function)
    assert not frozen.variables
    x = np.random.RandomState(0).rand(4, 3).astype("float32")
    np.testing.assert_allclose(frozen(tf.constant(x))[0], model(x), atol=1e-6)


def test_ops_details_lists_the_ops_of_a_file_in_order():
    content = _convert.convert(
        _dense(),
        None,
        quantization=None,
        io_dtype="float32",
        sparsity=False,
        select_tf_ops=False,
    )
    interpreter = _interpreter.make_interpreter(content, delegates=False)
    ops = _interpreter.ops_details(interpreter)
    assert [op["op_name"] for op in ops] == ["FULLY_CONNECTED", "SOFTMAX"]
    assert {"inputs", "outputs"} <= set(ops[0])
    assert _interpreter.softmax_outputs(content) == [True]


def test_keras_tensorflow_backend_argmax_is_where_export_replaces_it():
    # `_tracing._builtin_arg_reductions` replaces these while tracing (a model ending in
    # argmax exports with LiteRT's ARG_MAX); moved, export would trace Keras's own (Flex).
    from keras.src.backend.tensorflow import numpy as backend_numpy

    keras_own = backend_numpy.argmax, backend_numpy.argmin
    with _tracing._builtin_arg_reductions():
        assert (backend_numpy.argmax, backend_numpy.argmin) != keras_own
        x = tf.constant([[0.0, 2.0, -1.0]])
        assert backend_numpy.argmax(x, -1).numpy().tolist() == [1]
        assert backend_numpy.argmin(x, -1).numpy().tolist() == [2]
    assert (backend_numpy.argmax, backend_numpy.argmin) == keras_own


def test_where_keras_moved_its_argmax_export_traces_keras_own(monkeypatch, tmp_path):
    # A release that moves the private module must not fail every model's tracing: models
    # without argmax export as before, and one with it is refused only for its Flex op.
    from keras.src.backend import tensorflow as backend

    monkeypatch.delattr(backend, "numpy")
    monkeypatch.setitem(sys.modules, "keras.src.backend.tensorflow.numpy", None)
    report = tfkd.export_tflite(_dense(), tmp_path / "dense.tflite")
    assert report.keras_agreement["top1_agreement"] == 1.0
    dense = _dense()
    ids = keras.Model(dense.inputs, keras.ops.argmax(dense.outputs[0], axis=-1))
    with pytest.raises(ValueError, match=r"tf\.BitwiseAnd.*select_tf_ops=True"):
        tfkd.export_tflite(ids, tmp_path / "ids.tflite")


def test_every_call_of_a_shared_layer_is_read_from_its_inbound_nodes():
    # `_graph.call_input_shapes` (quantize_aware's check of a shared Dense) reads Keras's
    # private `_inbound_nodes`; moved, it would read none and check nothing.
    from tfkd import _graph

    known, open_length = keras.Input((5, 6)), keras.Input((None, 6))
    shared = keras.layers.Dense(4)
    keras.Model([known, open_length], [shared(known), shared(open_length)])
    assert _graph.call_input_shapes(shared) == [(None, 5, 6), (None, None, 6)]


def test_modelcheckpoint_reads_the_metric_direction_in_set_monitor_op():
    # `tfkd.distill.StudentCheckpoint` overrides Keras's private `_set_monitor_op` to read
    # the direction of a metric from the Distiller's compiled metrics (it saves the
    # student, which has none); renamed, "auto" would raise "pass mode='max'" again
    # (tests/distill/test_model_kinds.py checks the behaviour).
    import inspect

    source = inspect.getsource(keras.callbacks.ModelCheckpoint)
    assert "self._set_monitor_op()" in source
    assert "self.model.metrics" in inspect.getsource(
        keras.callbacks.ModelCheckpoint._set_monitor_op
    )
