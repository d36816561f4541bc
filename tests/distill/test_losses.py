"""Distillation losses against independent numpy computations."""

import doctest

import keras
import numpy as np
import pytest

from tests.helpers import assert_config_round_trip
from tfkd.distill import losses
from tfkd.distill.features import FeatureDistillation, mean_squared_error
from tfkd.distill.losses import DistillationLoss, LogitsDistillation, kl_divergence


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _numpy_kl(teacher, student, temperature):
    p_teacher = _softmax(teacher / temperature)
    p_student = _softmax(student / temperature)
    kl = np.sum(p_teacher * (np.log(p_teacher) - np.log(p_student)), axis=-1)
    return kl * temperature**2


def _logits(seed, shape=(16, 10), scale=3.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype("float32")


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 10.0])
def test_kl_matches_numpy(temperature):
    teacher, student = _logits(0), _logits(1)
    expected = _numpy_kl(teacher.astype("float64"), student.astype("float64"), temperature)
    actual = _numpy(kl_divergence(teacher, student, temperature=temperature))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_kl_golden_value():
    teacher = np.array([[3.0, 1.0, 0.0]], dtype="float32")
    student = np.array([[0.0, 1.0, 3.0]], dtype="float32")
    value = float(_numpy(kl_divergence(teacher, student, temperature=2.0))[0])
    assert value == pytest.approx(2.9297240, rel=1e-5)


def test_kl_is_non_negative_and_zero_for_identical_outputs():
    for seed in range(5):
        teacher, student = _logits(seed, scale=10.0), _logits(seed + 100, scale=10.0)
        assert (_numpy(kl_divergence(teacher, student, temperature=3.0)) >= 0).all()
        np.testing.assert_allclose(
            _numpy(kl_divergence(teacher, teacher, temperature=3.0)), 0.0, atol=1e-6
        )


def test_kl_ignores_a_constant_shift_of_the_logits():
    teacher, student = _logits(0), _logits(1)
    shifted = _numpy(kl_divergence(teacher + 7.0, student - 3.0, temperature=2.0))
    np.testing.assert_allclose(
        shifted, _numpy(kl_divergence(teacher, student, temperature=2.0)), rtol=1e-4, atol=1e-5
    )


def test_temperature_squared_scaling():
    # The T^2 factor keeps gradients comparable across temperatures: at high T,
    # KL * T^2 tends to the mean squared difference of centred logits / 2C.
    teacher, student = _logits(0, scale=0.5), _logits(1, scale=0.5)
    temperature = 20.0
    value = _numpy(kl_divergence(teacher, student, temperature=temperature))
    centred = (teacher - teacher.mean(-1, keepdims=True)) - (
        student - student.mean(-1, keepdims=True)
    )
    limit = (centred**2).mean(-1) / 2.0
    np.testing.assert_allclose(value, limit, rtol=0.1)
    raw = _numpy_kl(teacher.astype("float64"), student.astype("float64"), temperature)
    np.testing.assert_allclose(value, raw, rtol=1e-2)
    # Without the T^2 factor, doubling T would divide the loss by about 4.
    half = _numpy(kl_divergence(teacher, student, temperature=temperature / 2))
    np.testing.assert_allclose(half, value, rtol=0.1)


def test_probabilities_and_logits_agree():
    teacher, student = _logits(0), _logits(1)
    from_logits = _numpy(kl_divergence(teacher, student, temperature=2.0))
    from_probs = _numpy(
        kl_divergence(_softmax(teacher), _softmax(student), temperature=2.0, from_logits=False)
    )
    np.testing.assert_allclose(from_probs, from_logits, rtol=1e-3, atol=1e-4)


def test_probabilities_of_a_confident_teacher_read_as_its_logits_at_any_temperature():
    # A trained teacher's softmax puts 1e-9 on some classes. Before, probabilities were
    # clipped at 1e-7: every class below read as one value, with no gradient to a softmax
    # student there (at T=4: 16.16 for the softmax, 18.71 for its logits).
    teacher = np.array([[20.0, 5.0, 0.0, -5.0], [30.0, -10.0, 2.0, 0.0]], "float32")
    student = np.array([[1.0, 2.0, 0.5, -1.0], [0.0, 1.0, -2.0, 3.0]], "float32")
    for temperature in (1.0, 4.0):
        expected = _numpy_kl(teacher.astype("float64"), student.astype("float64"), temperature)
        from_probs = kl_divergence(
            _softmax(teacher), _softmax(student), temperature=temperature, from_logits=False
        )
        np.testing.assert_allclose(_numpy(from_probs), expected, rtol=1e-4)
    # float32 keeps probabilities down to 1e-38 (30 - (-10) is far from that).
    low = _numpy(losses.log_of_probabilities(_softmax(teacher.astype("float64")).astype("f4")))
    np.testing.assert_allclose(low[1, 1] - low[1, 0], -40.0, rtol=1e-5)


def test_a_teacher_log_probability_of_minus_infinity_counts_as_zero():
    # Cached log-probabilities of hard targets hold log(0) = -inf; 0 * log 0 is 0. Before,
    # 0 * -inf gave NaN and fit stopped on a NaN loss.
    teacher = np.log(np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]], "float32"))
    student = _logits(2, shape=(2, 3))
    expected = -np.log(_softmax(student.astype("float64")))
    expected = np.array([expected[0, 0], np.log(0.5) + (expected[1, 1] + expected[1, 2]) / 2])
    value = _numpy(kl_divergence(teacher, student))
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_kl_eager_and_compiled_agree():
    teacher, student = _logits(0), _logits(1)
    eager = _numpy(kl_divergence(teacher, student, temperature=4.0))
    inputs = [keras.Input((10,)), keras.Input((10,))]
    outputs = keras.layers.Lambda(lambda t: kl_divergence(t[0], t[1], temperature=4.0))(inputs)
    compiled = keras.Model(inputs, outputs).predict([teacher, student], verbose=0)
    np.testing.assert_allclose(compiled, eager, rtol=1e-5, atol=1e-6)


def test_mean_squared_error_matches_numpy():
    teacher = _logits(0, shape=(4, 3, 3, 5))
    student = _logits(1, shape=(4, 3, 3, 5))
    expected = ((teacher - student) ** 2).reshape(4, -1).mean(-1)
    np.testing.assert_allclose(_numpy(mean_squared_error(teacher, student)), expected, rtol=1e-5)


def test_logits_distillation_layer_matches_function():
    teacher, student = _logits(0), _logits(1)
    loss = LogitsDistillation(temperature=3.0)
    np.testing.assert_allclose(
        _numpy(loss(teacher, student)),
        _numpy(kl_divergence(teacher, student, temperature=3.0)),
        rtol=1e-6,
    )


def test_feature_distillation_learns_a_projection_when_widths_differ():
    loss = FeatureDistillation(teacher_layer_name="t", student_layer_name="s")
    loss.build((None, 4, 4, 16), (None, 4, 4, 8))
    assert loss.projection_layer is not None
    assert [tuple(w.shape) for w in loss.trainable_weights] == [(8, 16)]
    teacher, student = _logits(0, shape=(2, 4, 4, 16)), _logits(1, shape=(2, 4, 4, 8))
    kernel = keras.ops.convert_to_numpy(loss.projection_layer.kernel)
    expected = ((teacher - student @ kernel) ** 2).reshape(2, -1).mean(-1)
    np.testing.assert_allclose(_numpy(loss(teacher, student)), expected, rtol=1e-4)


def test_feature_distillation_without_projection_for_equal_widths():
    loss = FeatureDistillation(teacher_layer_name="t", student_layer_name="s")
    loss.build((None, 8), (None, 8))
    assert loss.projection_layer is None and not loss.trainable_weights


@pytest.mark.parametrize(
    "shapes, message",
    [
        (((None, 4, 4, 16), (None, 2, 2, 16)), "spatial size"),
        (((None, 16), (None, 4, 4, 16)), "same rank"),
    ],
)
def test_feature_distillation_rejects_unprojectable_shapes(shapes, message):
    with pytest.raises(ValueError, match=message):
        FeatureDistillation(teacher_layer_name="t", student_layer_name="s").build(*shapes)


def test_feature_distillation_projection_never():
    with pytest.raises(ValueError, match="projection='never'"):
        FeatureDistillation("t", "s", projection="never").build((None, 16), (None, 8))


@pytest.mark.parametrize(
    "temperature, error", [(0, ValueError), (-1.0, ValueError), ("4", TypeError), (True, TypeError)]
)
def test_bad_temperature(temperature, error):
    with pytest.raises(error, match="temperature"):
        LogitsDistillation(temperature=temperature)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Accepted: 'auto', 'always', 'never'"):
        FeatureDistillation("t", "s", projection="sometimes")
    with pytest.raises(ValueError, match="two named layers"):
        FeatureDistillation(None, "s")
    with pytest.raises(TypeError, match="teacher_layer_name"):
        LogitsDistillation(teacher_layer_name=3)


def test_config_round_trips():
    assert_config_round_trip(LogitsDistillation(temperature=2.5, from_logits=False))
    assert_config_round_trip(FeatureDistillation("conv", "conv_1", projection="always"))


def test_custom_loss_by_subclassing():
    class L1Distillation(DistillationLoss):
        def call(self, teacher_outputs, student_outputs):
            return keras.ops.mean(keras.ops.abs(teacher_outputs - student_outputs), axis=-1)

    teacher, student = _logits(0), _logits(1)
    np.testing.assert_allclose(
        _numpy(L1Distillation()(teacher, student)), np.abs(teacher - student).mean(-1), rtol=1e-6
    )
    with pytest.raises(NotImplementedError, match="must implement"):
        DistillationLoss()(teacher, student)


def test_docstring_examples():
    result = doctest.testmod(losses, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 4 and result.failed == 0
