import keras
import numpy as np
import pytest

from tests.helpers import assert_config_round_trip
from tfkd import _checks, prune
from tfkd.prune import masks


def test_constant_sparsity_value_and_update_steps():
    schedule = prune.ConstantSparsity(0.8, begin_step=10, end_step=30, frequency=7)
    assert float(schedule(0)) == pytest.approx(0.8)
    updates = [step for step in range(40) if bool(schedule.should_update(step))]
    assert updates == [10, 17, 24, 30]


def test_polynomial_decay_matches_the_formula():
    schedule = prune.PolynomialDecay(0.1, 0.9, begin_step=100, end_step=300, power=3)
    for step in (0, 100, 150, 200, 299, 300, 1000):
        progress = min(max((step - 100) / 200, 0.0), 1.0)
        expected = 0.9 + (0.1 - 0.9) * (1 - progress) ** 3
        assert float(schedule(step)) == pytest.approx(expected, abs=1e-6)


def test_schedules_serialize():
    for schedule in (
        prune.ConstantSparsity(0.5, begin_step=3, frequency=2),
        prune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=10, power=2, frequency=5),
    ):
        rebuilt = assert_config_round_trip(schedule)
        restored = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(schedule)
        )
        assert type(restored) is type(schedule)
        assert float(rebuilt(7)) == pytest.approx(float(schedule(7)))


@pytest.mark.parametrize("value", [1.0, -0.1, 1.5, "0.5", True])
def test_sparsity_outside_range_is_rejected(value):
    with pytest.raises(ValueError, match=r"target_sparsity.*\[0, 1\).*Received"):
        prune.ConstantSparsity(value)


def test_bad_steps_are_rejected():
    with pytest.raises(ValueError, match="end_step"):
        prune.PolynomialDecay(0.0, 0.5, begin_step=10, end_step=10)
    with pytest.raises(ValueError, match="frequency"):
        prune.ConstantSparsity(0.5, frequency=0)


def test_a_falling_polynomial_decay_is_refused():
    with pytest.raises(ValueError, match=r"initial_sparsity=0\.6, target_sparsity=0\.1"):
        prune.PolynomialDecay(0.6, 0.1, begin_step=0, end_step=4)
    assert prune.PolynomialDecay(0.3, 0.3, begin_step=0, end_step=4).target_sparsity == 0.3


def test_magnitude_mask_prunes_exactly_the_smallest():
    weights = np.random.default_rng(0).normal(size=(6, 7, 5)).astype("float32")
    mask = keras.ops.convert_to_numpy(masks.magnitude_mask(np.abs(weights), 0.6))
    count = int(np.floor(0.6 * weights.size))
    order = np.argsort(np.abs(weights).reshape(-1))
    expected = np.ones(weights.size, "float32")
    expected[order[:count]] = 0
    np.testing.assert_array_equal(mask.reshape(-1), expected)


def test_magnitude_mask_at_zero_sparsity_keeps_all():
    weights = np.abs(np.random.default_rng(1).normal(size=(4, 4))).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(masks.magnitude_mask(weights, 0.0)), 1)


def test_magnitude_mask_prunes_the_asked_count_when_magnitudes_tie():
    ones = keras.ops.convert_to_numpy(masks.magnitude_mask(np.ones((4, 6), "float32"), 0.5))
    np.testing.assert_array_equal(ones.reshape(-1), [0] * 12 + [1] * 12)  # earlier ones first
    levels = np.array([0.3, 0.2, 0.1, 0.2, 0.3, 0.2], "float32")
    mask = keras.ops.convert_to_numpy(masks.magnitude_mask(levels, 0.5))
    np.testing.assert_array_equal(mask, [1, 0, 0, 0, 1, 1])
    # What an earlier mask pruned goes first and stays pruned, even when fewer are asked.
    magnitudes = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], "float32")
    earlier = np.array([1, 1, 1, 1, 0, 0], "float32")
    for sparsity, expected in ((0.5, [0, 1, 1, 1, 0, 0]), (0.2, [1, 1, 1, 1, 0, 0])):
        mask = masks.magnitude_mask(magnitudes, sparsity, earlier)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(mask), expected)


def test_n_of_m_mask_keeps_the_largest_in_each_group_of_input_channels():
    weights = np.random.default_rng(2).normal(size=(3, 3, 8, 5)).astype("float32")
    mask = keras.ops.convert_to_numpy(masks.n_of_m_mask(np.abs(weights), 2, 4))
    for kh, kw, out in np.ndindex(3, 3, 5):
        for group in range(2):
            values = np.abs(weights[kh, kw, group * 4 : group * 4 + 4, out])
            kept = mask[kh, kw, group * 4 : group * 4 + 4, out]
            np.testing.assert_array_equal(kept, np.isin(np.arange(4), np.argsort(-values)[:2]))
    assert prune.follows_pattern(weights * mask, 2, 4)
    assert not prune.follows_pattern(weights, 2, 4)


@pytest.mark.parametrize("pattern", ["4:2", "2:2", "0:4", "2-4", 24, "two:four"])
def test_bad_patterns_are_rejected(pattern):
    with pytest.raises(ValueError, match="pattern"):
        _checks.parse_pattern(pattern)


def test_end_step_none_means_no_end_and_the_old_minus_one_still_reads():
    schedule = prune.ConstantSparsity(0.5, begin_step=0, frequency=10)
    assert schedule.end_step is None
    assert bool(schedule.should_update(10_000)) and not bool(schedule.should_update(10_001))
    with pytest.warns(DeprecationWarning, match="end_step=None"):
        old = prune.ConstantSparsity(0.5, end_step=-1)
    assert old.end_step is None
    saved = {"target_sparsity": 0.5, "begin_step": 0, "end_step": -1, "frequency": 10}
    assert prune.ConstantSparsity.from_config(saved).get_config() == dict(saved, end_step=None)
    with pytest.raises(ValueError, match="PolynomialDecay needs `end_step`"):
        prune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=None)
