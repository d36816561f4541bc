"""`fake_quant` against TensorFlow's FakeQuantWithMinMaxVars, and `ActivationQuantizer`."""

import re
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfkd
from tests.helpers import assert_config_round_trip


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("narrow_range", [False, True])
def test_matches_tensorflow_per_tensor(narrow_range):
    x = np.random.default_rng(0).normal(scale=2.0, size=(64, 33)).astype("float32")
    # An asymmetric range whose zero point must be nudged onto the grid.
    expected = tf.quantization.fake_quant_with_min_max_vars(
        x, -1.3, 2.9, num_bits=8, narrow_range=narrow_range
    )
    received = tfkd.quantize.fake_quant(
        x, np.float32(-1.3), np.float32(2.9), narrow_range=narrow_range
    )
    np.testing.assert_allclose(_numpy(received), expected.numpy(), atol=1e-6)


def test_matches_tensorflow_per_channel():
    x = np.random.default_rng(1).normal(size=(3, 3, 4, 5)).astype("float32")
    largest = np.abs(x).max(axis=(0, 1, 2))
    expected = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        x, -largest, largest, narrow_range=True
    )
    received = tfkd.quantize.fake_quant(x, -largest, largest, narrow_range=True)
    np.testing.assert_allclose(_numpy(received), expected.numpy(), atol=1e-6)
    # Symmetric narrow range: exactly the int8 grid [-127, 127] * largest / 127.
    steps = _numpy(received) / (largest / 127.0)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)
    assert np.abs(np.round(steps)).max() == 127


def test_zero_is_exact_and_values_outside_are_clipped():
    x = np.array([-5.0, 0.0, 0.3, 9.0], dtype="float32")
    received = _numpy(tfkd.quantize.fake_quant(x, np.float32(-1.0), np.float32(2.0)))
    assert received[1] == 0.0
    assert received[0] == pytest.approx(-1.0, abs=0.02)
    assert received[3] == pytest.approx(2.0, abs=0.02)


def _gradient(function, x):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = keras.ops.sum(function(x))
        return tape.gradient(y, x).numpy()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: keras.ops.sum(function(v)))(x))
    import torch

    x = torch.tensor(x, requires_grad=True)
    keras.ops.sum(function(x)).backward()
    return x.grad.numpy()


def test_gradient_is_straight_through_inside_and_zero_outside():
    x = np.array([-3.0, -0.5, 0.1, 0.77, 4.0], dtype="float32")
    gradient = _gradient(
        lambda v: tfkd.quantize.fake_quant(v, np.float32(-1.0), np.float32(1.0)), x
    )
    np.testing.assert_array_equal(gradient, [0.0, 1.0, 1.0, 1.0, 0.0])


def test_activation_quantizer_tracks_a_moving_range():
    quantizer = tfkd.quantize.ActivationQuantizer(decay=0.5)
    quantizer(np.array([[0.0, 4.0]], "float32"), training=True)
    assert float(_numpy(quantizer.max_value)) == pytest.approx(4.0)
    quantizer(np.array([[-2.0, 2.0]], "float32"), training=True)
    assert float(_numpy(quantizer.max_value)) == pytest.approx(3.0)
    assert float(_numpy(quantizer.min_value)) == pytest.approx(-1.0)
    # Inference reads the range and leaves it alone.
    outputs = quantizer(np.array([[10.0, -10.0]], "float32"), training=False)
    assert float(_numpy(quantizer.max_value)) == pytest.approx(3.0)
    np.testing.assert_allclose(_numpy(outputs), [[3.0, -1.0]], atol=0.02)
    assert int(_numpy(quantizer.tracked_steps)) == 2


def test_activation_quantizer_validates_and_round_trips():
    with pytest.raises(ValueError, match="decay=1.5"):
        tfkd.quantize.ActivationQuantizer(decay=1.5)
    assert_config_round_trip(tfkd.quantize.ActivationQuantizer(decay=0.9))


@pytest.mark.parametrize("as_tensor", [False, True])
def test_per_channel_ranges_must_have_one_entry_per_channel(as_tensor):
    # Before: each backend's broadcasting error ("Incompatible shapes: [2,5,4] vs. [3]"),
    # or, for a length-1 vector, a range that trained but failed at export.
    x = np.random.default_rng(2).normal(size=(2, 5, 4)).astype("float32")

    def convert(value):
        return keras.ops.convert_to_tensor(value) if as_tensor else value

    for low, high in [(-np.ones(3), np.ones(3)), (-np.ones(1), np.ones(1)), (-1.0, np.ones(4))]:
        with pytest.raises(
            ValueError,
            match=rf"Received: min_value of shape {re.escape(str(np.shape(low)))} and max_value "
            rf"of shape {re.escape(str(np.shape(high)))} for x of shape \(2, 5, 4\)\. Pass both "
            r"of shape \(\) or \(4,\)",
        ):
            tfkd.quantize.fake_quant(x, convert(np.float32(low)), convert(np.float32(high)))
    ranges = np.float32([1.0, 2.0, 3.0, 4.0])
    per_channel = tfkd.quantize.fake_quant(x, convert(-ranges), convert(ranges))
    assert np.abs(_numpy(per_channel)).max(axis=(0, 1)) == pytest.approx(
        np.minimum(np.abs(x).max(axis=(0, 1)), ranges), abs=0.02
    )


def test_export_mode_holds_for_the_thread_that_exports_only():
    # Before, one flag for the process: a thread training a quantization-aware model while
    # another exported ran export's TensorFlow fake-quant ops in its training step.
    from tfkd.quantize import _fake_quant

    seen = []
    with _fake_quant.export_mode():
        other = threading.Thread(target=lambda: seen.append(_fake_quant.exporting()))
        other.start()
        other.join()
        assert _fake_quant.exporting()
    assert seen == [False] and not _fake_quant.exporting()
