"""Bad inputs to `tfkd.prune` and `tfkd.quantize` fail early, naming the argument and value."""

import keras
import numpy as np

from tests.bad_inputs._cases import Case, check, parametrize
from tfkd import prune, quantize

EXEMPT = {
    "tfkd.prune.PruningSummary": (
        "a result type: tfkd.prune.summary returns it, users never build it"
    ),
    "tfkd.quantize.FoldedBatchNormalization": (
        "a placeholder that quantize_aware puts where it folded a BatchNormalization; users "
        "never build it, and it takes no arguments of its own"
    ),
}


def _model():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")], name="tiny")


def _subclassed():
    class Subclassed(keras.Model):
        def call(self, inputs):
            return inputs

    return Subclassed(name="sub")


CASES = [
    # prune.ConstantSparsity
    Case(
        prune.ConstantSparsity,
        lambda: prune.ConstantSparsity(1.5),
        ValueError,
        "target_sparsity",
        "1.5",
    ),
    Case(
        prune.ConstantSparsity,
        lambda: prune.ConstantSparsity(float("nan")),
        ValueError,
        "target_sparsity",
        "nan",
    ),
    Case(
        prune.ConstantSparsity,
        lambda: prune.ConstantSparsity(0.5, frequency=-3),
        ValueError,
        "frequency",
        "-3",
    ),
    Case(
        prune.ConstantSparsity,
        lambda: prune.ConstantSparsity(0.5, begin_step="5"),
        ValueError,
        "begin_step",
        "'5'",
    ),
    # prune.PolynomialDecay
    Case(
        prune.PolynomialDecay,
        lambda: prune.PolynomialDecay(0.0, 0.5, 0, 10, power=float("nan")),
        ValueError,
        "power",
        "nan",
    ),
    Case(
        prune.PolynomialDecay,
        lambda: prune.PolynomialDecay(0.0, 0.5, 0, 10, power=-2),
        ValueError,
        "power",
        "-2",
    ),
    Case(
        prune.PolynomialDecay,
        lambda: prune.PolynomialDecay(0.0, 0.5, 10, 5),
        ValueError,
        "end_step",
        "end_step=5",
    ),
    Case(
        prune.PolynomialDecay,
        lambda: prune.PolynomialDecay(0.0, -0.25, 0, 10),
        ValueError,
        "target_sparsity",
        "-0.25",
    ),
    # prune.PruningSchedule
    Case(
        prune.PruningSchedule,
        lambda: prune.PruningSchedule(begin_step=-1),
        ValueError,
        "begin_step",
        "-1",
    ),
    Case(
        prune.PruningSchedule,
        lambda: prune.PruningSchedule(end_step=2.5),
        ValueError,
        "end_step",
        "2.5",
    ),
    Case(
        prune.PruningSchedule,
        lambda: prune.PruningSchedule(frequency=True),
        ValueError,
        "frequency",
        "True",
    ),
    # prune.PrunedLayer
    Case(prune.PrunedLayer, lambda: prune.PrunedLayer("dense", 0.5), TypeError, "layer", "'dense'"),
    Case(
        prune.PrunedLayer,
        lambda: prune.PrunedLayer(keras.layers.ReLU(name="act"), 0.5),
        TypeError,
        "layer",
        "ReLU",
    ),
    Case(
        prune.PrunedLayer,
        lambda: prune.PrunedLayer(keras.layers.Dense(2), "half"),
        TypeError,
        "schedule",
        "'half'",
    ),
    Case(
        prune.PrunedLayer,
        lambda: prune.PrunedLayer(keras.layers.Dense(2), {"a": 1}),
        TypeError,
        "schedule",
        "{'a': 1}",
    ),
    Case(
        prune.PrunedLayer,
        lambda: prune.PrunedLayer(keras.layers.Dense(2), 0.5, pattern="4:2"),
        ValueError,
        "pattern",
        "'4:2'",
    ),
    Case(
        prune.PrunedLayer,
        lambda: prune.PrunedLayer(keras.layers.Dense(2), 0.5, group="g"),
        TypeError,
        "group",
        "'g'",
    ),
    # prune.PruningGroup
    Case(prune.PruningGroup, lambda: prune.PruningGroup(name=3), TypeError, "name", "3"),
    Case(prune.PruningGroup, lambda: prune.PruningGroup(name=""), TypeError, "name", "''"),
    Case(prune.PruningGroup, lambda: prune.PruningGroup(size=0), ValueError, "size", "0"),
    Case(prune.PruningGroup, lambda: prune.PruningGroup(size=2.5), ValueError, "size", "2.5"),
    # prune.prune
    Case(prune.prune, lambda: prune.prune("tiny", 0.5), TypeError, "model", "str"),
    Case(prune.prune, lambda: prune.prune(_model(), 2.0), ValueError, "schedule", "2.0"),
    Case(
        prune.prune,
        lambda: prune.prune(_model(), 0.5, scope="local"),
        ValueError,
        "scope",
        "'local'",
    ),
    Case(
        prune.prune,
        lambda: prune.prune(_model(), 0.5, pattern="2-4"),
        ValueError,
        "pattern",
        "'2-4'",
    ),
    Case(prune.prune, lambda: prune.prune(_model(), 0.5, include=3), TypeError, "include", "3"),
    Case(
        prune.prune,
        lambda: prune.prune(_model(), 0.5, exclude=["nope"]),
        ValueError,
        "exclude",
        "'nope'",
    ),
    # prune.strip
    Case(prune.strip, lambda: prune.strip("tiny"), TypeError, "model", "str"),
    Case(prune.strip, lambda: prune.strip(None), TypeError, "model", "NoneType"),
    Case(prune.strip, lambda: prune.strip(keras.layers.Dense(2)), TypeError, "model", "Dense"),
    Case(prune.strip, lambda: prune.strip(_subclassed()), TypeError, "model", "'sub'"),
    # prune.summary
    Case(prune.summary, lambda: prune.summary("tiny"), TypeError, "model", "str"),
    Case(prune.summary, lambda: prune.summary(keras.layers.Dense(2)), TypeError, "model", "Dense"),
    Case(prune.summary, lambda: prune.summary(_model(), pattern=5), ValueError, "pattern", "5"),
    Case(prune.summary, lambda: prune.summary(_model(), pattern=""), ValueError, "pattern", "''"),
    # prune.follows_pattern
    Case(
        prune.follows_pattern,
        lambda: prune.follows_pattern(None, 2, 4),
        TypeError,
        "kernel",
        "None",
    ),
    Case(
        prune.follows_pattern,
        lambda: prune.follows_pattern(np.ones((8, 4)), "2", 4),
        TypeError,
        "n",
        "'2'",
    ),
    Case(
        prune.follows_pattern,
        lambda: prune.follows_pattern(np.ones((8, 4)), 4, 2),
        ValueError,
        "m",
        "m=2",
    ),
    Case(
        prune.follows_pattern,
        lambda: prune.follows_pattern(np.ones((8, 4)), 2, 4, axis=1.5),
        TypeError,
        "axis",
        "1.5",
    ),
    Case(
        prune.follows_pattern,
        lambda: prune.follows_pattern(np.ones((8, 4)), 2, 4, axis=5),
        ValueError,
        "axis",
        "5",
    ),
    # quantize.ActivationQuantizer
    Case(
        quantize.ActivationQuantizer,
        lambda: quantize.ActivationQuantizer(decay=1.0),
        ValueError,
        "decay",
        "1.0",
    ),
    Case(
        quantize.ActivationQuantizer,
        lambda: quantize.ActivationQuantizer(decay="0.9"),
        TypeError,
        "decay",
        "'0.9'",
    ),
    Case(
        quantize.ActivationQuantizer,
        lambda: quantize.ActivationQuantizer(decay=float("nan")),
        ValueError,
        "decay",
        "nan",
    ),
    Case(
        quantize.ActivationQuantizer,
        lambda: quantize.ActivationQuantizer(decay=None),
        TypeError,
        "decay",
        "None",
    ),
    # quantize.QuantizeWrapper
    Case(
        quantize.QuantizeWrapper,
        lambda: quantize.QuantizeWrapper("dense"),
        TypeError,
        "layer",
        "'dense'",
    ),
    Case(
        quantize.QuantizeWrapper,
        lambda: quantize.QuantizeWrapper(keras.layers.Dense(2), batch_norm=keras.layers.Dense(2)),
        TypeError,
        "batch_norm",
        "Dense",
    ),
    Case(
        quantize.QuantizeWrapper,
        lambda: quantize.QuantizeWrapper(
            keras.layers.ReLU(name="act"), batch_norm=keras.layers.BatchNormalization()
        ),
        ValueError,
        "layer",
        "'act'",
    ),
    Case(
        quantize.QuantizeWrapper,
        lambda: quantize.QuantizeWrapper(keras.layers.Dense(2), quantize_inputs="yes"),
        TypeError,
        "quantize_inputs",
        "'yes'",
    ),
    Case(
        quantize.QuantizeWrapper,
        lambda: quantize.QuantizeWrapper(keras.layers.Dense(2), preserve_sparsity=1),
        TypeError,
        "preserve_sparsity",
        "1",
    ),
    Case(
        quantize.QuantizeWrapper,
        lambda: quantize.QuantizeWrapper(keras.layers.Dense(2), quantize_outputs=False, decay=2.0),
        ValueError,
        "decay",
        "2.0",
    ),
    # quantize.fake_quant
    Case(
        quantize.fake_quant, lambda: quantize.fake_quant("abc", 0.0, 1.0), TypeError, "x", "'abc'"
    ),
    Case(
        quantize.fake_quant,
        lambda: quantize.fake_quant(np.ones(2), "0", 1.0),
        TypeError,
        "min_value",
        "'0'",
    ),
    Case(
        quantize.fake_quant,
        lambda: quantize.fake_quant(np.ones(2), 0.0, [1.0, "b"]),
        TypeError,
        "max_value",
        "'b'",
    ),
    Case(
        quantize.fake_quant,
        lambda: quantize.fake_quant(np.ones(2), 1.0, 0.0),
        ValueError,
        "min_value",
        "min_value=1.0",
    ),
    Case(
        quantize.fake_quant,
        lambda: quantize.fake_quant(np.ones((2, 4)), -np.ones(3), np.ones(3)),
        ValueError,
        "min_value",
        "shape (3,)",
    ),
    Case(
        quantize.fake_quant,
        lambda: quantize.fake_quant(np.ones(2), 0.0, 1.0, num_bits=1),
        ValueError,
        "num_bits",
        "1",
    ),
    Case(
        quantize.fake_quant,
        lambda: quantize.fake_quant(np.ones(2), 0.0, 1.0, narrow_range="yes"),
        TypeError,
        "narrow_range",
        "'yes'",
    ),
    # quantize.is_quantized
    Case(quantize.is_quantized, lambda: quantize.is_quantized("tiny"), TypeError, "model", "str"),
    Case(
        quantize.is_quantized, lambda: quantize.is_quantized(None), TypeError, "model", "NoneType"
    ),
    Case(
        quantize.is_quantized,
        lambda: quantize.is_quantized(keras.layers.Dense(2)),
        TypeError,
        "model",
        "Dense",
    ),
    Case(
        quantize.QuantizeWrapper,
        lambda: quantize.QuantizeWrapper(keras.layers.Dense(2), clusters=1),
        ValueError,
        "clusters",
        "clusters=1",
    ),
    Case(
        quantize.QuantizeWrapper,
        lambda: quantize.QuantizeWrapper(keras.layers.ReLU(name="act"), clusters=4),
        ValueError,
        "clusters",
        "'act'",
    ),
    # quantize.quantize_aware
    Case(
        quantize.quantize_aware, lambda: quantize.quantize_aware("tiny"), TypeError, "model", "str"
    ),
    Case(
        quantize.quantize_aware,
        lambda: quantize.quantize_aware(_model(), preserve_clusters="yes"),
        TypeError,
        "preserve_clusters",
        "'yes'",
    ),
    Case(
        quantize.quantize_aware,
        lambda: quantize.quantize_aware(_subclassed()),
        TypeError,
        "model",
        "'sub'",
    ),
    Case(
        quantize.quantize_aware,
        lambda: quantize.quantize_aware(_model(), decay="0.9"),
        TypeError,
        "decay",
        "'0.9'",
    ),
    Case(
        quantize.quantize_aware,
        lambda: quantize.quantize_aware(_model(), decay=1.0),
        ValueError,
        "decay",
        "1.0",
    ),
    Case(
        quantize.quantize_aware,
        lambda: quantize.quantize_aware(_model(), fold_batch_norm="yes"),
        TypeError,
        "fold_batch_norm",
        "'yes'",
    ),
]


@parametrize(CASES)
def test_bad_input_is_refused(case):
    check(case)


def test_numpy_scalars_pass_where_numbers_do():
    schedule = prune.ConstantSparsity(
        np.float32(0.5), begin_step=np.int64(2), frequency=np.int32(3)
    )
    assert schedule.get_config() == {
        "target_sparsity": 0.5,
        "begin_step": 2,
        "end_step": None,
        "frequency": 3,
    }
    assert type(schedule.begin_step) is int and type(schedule.frequency) is int
    decay = prune.PolynomialDecay(np.float64(0.0), 0.5, 0, np.int64(10), power=np.int64(2))
    assert decay.power == 2 and type(decay.power) is int
    assert prune.PruningGroup(size=np.int64(2)).size == 2
    pruned = prune.prune(_model(), np.float32(0.5))
    assert prune.summary(pruned, pattern=None).layers[0]["name"] == "dense"
    assert prune.follows_pattern(np.zeros((8, 2)), 2, 4, axis=np.int64(0))
    assert quantize.ActivationQuantizer(decay=np.float32(0.5)).decay == 0.5
    wrapper = quantize.QuantizeWrapper(keras.layers.Dense(2), quantize_inputs=np.bool_(True))
    assert wrapper.quantize_inputs is True
    qat_model = quantize.quantize_aware(_model(), decay=np.float64(0.9), fold_batch_norm=False)
    assert quantize.is_quantized(qat_model)
