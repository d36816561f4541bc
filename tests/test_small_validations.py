"""Issue 16.8: small entry points that took bad input silently, each now a clear error
naming the argument and the value received; numpy scalars pass where numbers do."""

import keras
import numpy as np
import pytest

import tfkd
from tfkd.pipeline import ConfigError, Data, load_config


def _data(y_train, y_test=(0, 1), **kwargs):
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    x_train = np.zeros((len(y_train), 4, 4, 1), "float32")
    x_test = np.zeros((len(y_test), 4, 4, 1), "float32")
    return Data(x_train, y_train, x_test, y_test, **kwargs)


def test_non_finite_loss_guard_takes_a_list_of_keys():
    with pytest.raises(TypeError, match=r"`loss_names` must be a list.*loss_names='loss'"):
        tfkd.distill.NonFiniteLossGuard("loss")
    assert tfkd.distill.NonFiniteLossGuard(["loss"]).loss_names == ["loss"]


@pytest.mark.parametrize("temperature", [0, -1.0, float("inf"), float("nan")])
def test_temperature_must_be_finite_and_positive(temperature):
    with pytest.raises(
        ValueError, match=f"`temperature` must be a finite number > 0.*{temperature}"
    ):
        tfkd.distill.LogitsDistillation(temperature=temperature)


def test_numpy_scalars_are_numbers():
    loss = tfkd.distill.LogitsDistillation(temperature=np.float32(2.0))
    assert loss.temperature == 2.0 and type(loss.temperature) is float
    dkd = tfkd.distill.DecoupledDistillation(target_weight=np.float64(2.0), temperature=np.int64(3))
    assert dkd.target_weight == 2.0 and dkd.temperature == 3.0
    with pytest.raises(TypeError, match="np.True_|True"):
        tfkd.distill.LogitsDistillation(temperature=np.bool_(True))


@pytest.mark.parametrize(
    "function",
    [
        tfkd.distill.kl_divergence,
        tfkd.distill.mean_squared_error,
        tfkd.distill.decoupled_kl_divergence,
        tfkd.distill.correlation_distance,
    ],
)
def test_losses_refuse_outputs_that_would_broadcast(function):
    teacher, student = np.ones((4, 3), "float32"), np.ones((4, 1), "float32")
    with pytest.raises(ValueError, match=r"same shape.*\(4, 3\).*\(4, 1\)"):
        function(teacher, student)


@pytest.mark.parametrize(
    "arguments, error, message",
    [
        ((1.0, 0.0), ValueError, r"`min_value` must be below `max_value`.*min_value=1.0"),
        ((0.0, 0.0), ValueError, r"`min_value` must be below `max_value`"),
        ((0.0, float("inf")), ValueError, r"both finite"),
        ((0.0, 1.0, 1), ValueError, r"`num_bits` must be in 2..16. Received: num_bits=1"),
        ((0.0, 1.0, 8.0), TypeError, r"`num_bits` must be an int. Received: num_bits=8.0"),
    ],
)
def test_fake_quant_ranges_and_bits(arguments, error, message):
    x = keras.ops.ones((2,))
    low, high, *bits = arguments
    with pytest.raises(error, match=message):
        tfkd.quantize.fake_quant(x, low, high, **({"num_bits": bits[0]} if bits else {}))


def test_fake_quant_takes_numbers():
    x = np.array([0.0, 0.26, 1.0], "float32")
    out = keras.ops.convert_to_numpy(tfkd.quantize.fake_quant(x, 0.0, 1.0, num_bits=2))
    np.testing.assert_allclose(out, [0.0, 1 / 3, 1.0], rtol=1e-6)


@pytest.mark.parametrize(
    "n, m, axis, error, message",
    [
        (2, 0, -2, ValueError, r"0 < n < m. Received: n=2, m=0"),
        (4, 4, -2, ValueError, r"0 < n < m. Received: n=4, m=4"),
        (2.0, 4, -2, TypeError, r"must be ints. Received: n=2.0"),
        (2, 4, 5, ValueError, r"`axis` must be an axis of `kernel`.*axis=5"),
    ],
)
def test_follows_pattern_checks_its_arguments(n, m, axis, error, message):
    with pytest.raises(error, match=message):
        tfkd.prune.follows_pattern(np.ones((3, 3, 8, 4)), n, m, axis=axis)


def test_benchmark_and_calibration_counts(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = tmp_path / "m.tflite"
    for value, error in ((0, ValueError), (-5, ValueError), (2.5, TypeError)):
        with pytest.raises(error, match=f"`calibration_samples` must be an int >= 1.*{value}"):
            tfkd.export_tflite(model, path, calibration_samples=value)
    assert not path.exists()
    tfkd.export_tflite(model, path)
    exported = tfkd.TFLiteModel(path)
    with pytest.raises(
        ValueError, match=r"`num_runs` must be a positive integer. Received: num_runs=0"
    ):
        exported.benchmark(num_runs=0)
    with pytest.raises(
        TypeError, match=r"`warmup_runs` must be a non-negative integer. Received: warmup_runs=1.5"
    ):
        exported.benchmark(warmup_runs=1.5)
    assert exported.benchmark(num_runs=3, warmup_runs=0)["num_runs"] == 3


@pytest.mark.parametrize("name", ["", "two words", "3d", None])
def test_register_stage_names(name):
    with pytest.raises(ValueError, match=f"`name` must be a stage name.*Received: name={name!r}"):
        tfkd.pipeline.register_stage(name)


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_config_seed_out_of_range_fails_before_any_stage(tmp_path, seed):
    path = tmp_path / "c.yaml"
    path.write_text(f"data: fashion_mnist\nseed: {seed}\nstages: [{{stage: train}}]\n")
    with pytest.raises(
        ConfigError, match=rf"c.yaml:2: seed: `seed` must be in 0..2\*\*32-1. Received: {seed}"
    ):
        load_config(path)


@pytest.mark.parametrize(
    "y_train, y_test, kwargs, error, message",
    [
        ([0, 1, -2], [0, 1], {}, ValueError, r"`y_train` holds negative labels \(\[-2\]\)"),
        ([0, 1], [0, -1], {}, ValueError, r"`y_test` holds negative labels \(\[-1\]\)"),
        ([0, 1, 5], [0, 1], {"num_classes": 3}, ValueError, r"num_classes=3 with labels up to 5"),
        ([0, 0], [0, 0], {}, ValueError, r"`num_classes` must be >= 2"),
        ([0, 1], [0, 1], {"num_classes": 2.0}, TypeError, r"num_classes.*Received: 2.0"),
        ([], [0, 1], {}, ValueError, r"`x_train` is empty"),
    ],
)
def test_data_labels_must_fit(y_train, y_test, kwargs, error, message):
    with pytest.raises(error, match=message):
        _data(np.asarray(y_train, "int64"), np.asarray(y_test, "int64"), **kwargs)


def test_data_keeps_unlabelled_training_examples():
    data = _data([0, 1, tfkd.distill.UNLABELED], [0, 1])
    assert data.num_classes == 2 and data.y_train.tolist() == [0, 1, -1]


def test_fine_tune_refuses_empty_or_non_integer_labels():
    base = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)], name="base")
    x = np.zeros((4, 8, 8, 3), "float32")
    with pytest.raises(ValueError, match=r"`train_data` needs as many inputs as labels.*0 inputs"):
        tfkd.transfer.fine_tune(base, 2, (x[:0], np.zeros(0, "int64")), head_epochs=1)
    with pytest.raises(TypeError, match=r"`train_data` labels must be integer.*float32"):
        tfkd.transfer.fine_tune(base, 2, (x, np.zeros(4, "float32")), head_epochs=1)
