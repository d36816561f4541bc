"""Bad inputs to `tfkd.distill` (issue 16.9): each is refused early, naming the argument
and the value received. Cases on `LogitsDistillation`, `Distiller` and the others also
cover `tfkd.LogitsDistillation`, `tfkd.Distiller`, ...: the same objects."""

import functools
import math

import keras
import numpy as np

from tests.bad_inputs._cases import Case, check, parametrize
from tfkd import distill
from tfkd.distill import mixing, schedules

LOGITS = np.zeros((2, 3), "float32")
IMAGES = np.zeros((2, 4, 4, 1), "float32")
PARTNERS = np.array([1, 0])
RATIO = np.array([0.5, 0.5], "float32")
BOX = np.array([[0.0, 0.0, 0.5, 0.5]] * 2, "float32")


@functools.cache
def _model(name, width=2):
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(width, name="logits")(inputs), name=name)


def _distiller(**kwargs):
    return distill.Distiller(_model("teacher"), _model("student"), **kwargs)


def _generator():
    return keras.random.SeedGenerator(0)


def _schedule_returning_text(step):
    return "hot"


CASES = [
    # Losses: constructors.
    Case(
        distill.DistillationLoss,
        lambda: distill.DistillationLoss(teacher_layer_name=3),
        TypeError,
        "teacher_layer_name",
        "3",
    ),
    Case(
        distill.DistillationLoss,
        lambda: distill.DistillationLoss(student_layer_name=["dense"]),
        TypeError,
        "student_layer_name",
        "['dense']",
    ),
    Case(
        distill.DistillationLoss,
        lambda: distill.DistillationLoss(teacher_layer_name=""),
        ValueError,
        "teacher_layer_name",
        "''",
    ),
    Case(
        distill.LogitsDistillation,
        lambda: distill.LogitsDistillation(temperature=[4.0]),
        TypeError,
        "temperature",
        "[4.0]",
    ),
    Case(
        distill.LogitsDistillation,
        lambda: distill.LogitsDistillation(from_logits="yes"),
        TypeError,
        "from_logits",
        "'yes'",
    ),
    Case(
        distill.LogitsDistillation,
        lambda: distill.LogitsDistillation(standardize=None),
        TypeError,
        "standardize",
        "None",
    ),
    Case(
        distill.FeatureDistillation,
        lambda: distill.FeatureDistillation(None, "s"),
        ValueError,
        "teacher_layer_name",
        "None",
    ),
    Case(
        distill.FeatureDistillation,
        lambda: distill.FeatureDistillation("t", 5),
        TypeError,
        "student_layer_name",
        "5",
    ),
    Case(
        distill.FeatureDistillation,
        lambda: distill.FeatureDistillation("t", "s", projection="sometimes"),
        ValueError,
        "projection",
        "'sometimes'",
    ),
    Case(
        distill.DecoupledDistillation,
        lambda: distill.DecoupledDistillation(temperature=math.nan),
        ValueError,
        "temperature",
        "nan",
    ),
    Case(
        distill.DecoupledDistillation,
        lambda: distill.DecoupledDistillation(target_weight=-1),
        ValueError,
        "target_weight",
        "-1",
    ),
    Case(
        distill.DecoupledDistillation,
        lambda: distill.DecoupledDistillation(non_target_weight=None),
        TypeError,
        "non_target_weight",
        "None",
    ),
    Case(
        distill.CorrelationDistillation,
        lambda: distill.CorrelationDistillation(temperature=-2.0),
        ValueError,
        "temperature",
        "-2.0",
    ),
    Case(
        distill.CorrelationDistillation,
        lambda: distill.CorrelationDistillation(inter_class_weight="1"),
        TypeError,
        "inter_class_weight",
        "'1'",
    ),
    Case(
        distill.CorrelationDistillation,
        lambda: distill.CorrelationDistillation(intra_class_weight=math.inf),
        ValueError,
        "intra_class_weight",
        "inf",
    ),
    Case(
        distill.AttentionTransfer,
        lambda: distill.AttentionTransfer("t", None),
        ValueError,
        "student_layer_name",
        "None",
    ),
    Case(
        distill.AttentionTransfer,
        lambda: distill.AttentionTransfer("t", "s", exponent="2"),
        TypeError,
        "exponent",
        "'2'",
    ),
    Case(
        distill.AttentionTransfer,
        lambda: distill.AttentionTransfer("t", "s", exponent=math.inf),
        ValueError,
        "exponent",
        "inf",
    ),
    Case(
        distill.RelationalDistillation,
        lambda: distill.RelationalDistillation(teacher_layer_name=0),
        TypeError,
        "teacher_layer_name",
        "0",
    ),
    Case(
        distill.RelationalDistillation,
        lambda: distill.RelationalDistillation(distance_weight=-0.5),
        ValueError,
        "distance_weight",
        "-0.5",
    ),
    Case(
        distill.RelationalDistillation,
        lambda: distill.RelationalDistillation(angle_weight=math.nan),
        ValueError,
        "angle_weight",
        "nan",
    ),
    # Before, accepted: a loss that is always 0.
    Case(
        distill.RelationalDistillation,
        lambda: distill.RelationalDistillation(distance_weight=0, angle_weight=0.0),
        ValueError,
        "distance_weight",
        "distance_weight=0, angle_weight=0.0",
    ),
    # Losses: pure functions.
    Case(
        distill.kl_divergence,
        lambda: distill.kl_divergence(None, LOGITS),
        TypeError,
        "teacher_outputs",
        "None",
    ),
    Case(
        distill.kl_divergence,
        lambda: distill.kl_divergence(LOGITS, LOGITS, temperature=0),
        ValueError,
        "temperature",
        "0",
    ),
    Case(
        distill.kl_divergence,
        lambda: distill.kl_divergence(LOGITS, LOGITS, from_logits="no"),
        TypeError,
        "from_logits",
        "'no'",
    ),
    Case(
        distill.mean_squared_error,
        lambda: distill.mean_squared_error(LOGITS, "features"),
        TypeError,
        "student_outputs",
        "'features'",
    ),
    Case(
        distill.mean_squared_error,
        lambda: distill.mean_squared_error(np.float32(1.0), np.float32(1.0)),
        ValueError,
        "teacher_outputs",
        "()",
    ),
    Case(
        distill.mean_squared_error,
        lambda: distill.mean_squared_error([[1.0, 2.0], [3.0]], LOGITS),
        TypeError,
        "teacher_outputs",
        "[[1.0, 2.0], [3.0]]",
    ),
    Case(
        distill.decoupled_kl_divergence,
        lambda: distill.decoupled_kl_divergence(LOGITS, LOGITS, temperature=-1.0),
        ValueError,
        "temperature",
        "-1.0",
    ),
    Case(
        distill.decoupled_kl_divergence,
        lambda: distill.decoupled_kl_divergence(LOGITS, LOGITS, target_weight="1"),
        TypeError,
        "target_weight",
        "'1'",
    ),
    Case(
        distill.decoupled_kl_divergence,
        lambda: distill.decoupled_kl_divergence(LOGITS, LOGITS, non_target_weight=-8.0),
        ValueError,
        "non_target_weight",
        "-8.0",
    ),
    Case(
        distill.correlation_distance,
        lambda: distill.correlation_distance(LOGITS, LOGITS, temperature=0.0),
        ValueError,
        "temperature",
        "0.0",
    ),
    Case(
        distill.correlation_distance,
        lambda: distill.correlation_distance(LOGITS, LOGITS, inter_class_weight=-1),
        ValueError,
        "inter_class_weight",
        "-1",
    ),
    Case(
        distill.correlation_distance,
        lambda: distill.correlation_distance(LOGITS, LOGITS, intra_class_weight=None),
        TypeError,
        "intra_class_weight",
        "None",
    ),
    Case(
        distill.attention_map_distance,
        lambda: distill.attention_map_distance(LOGITS, LOGITS),
        ValueError,
        "teacher_features",
        "(2, 3)",
    ),
    Case(
        distill.attention_map_distance,
        lambda: distill.attention_map_distance(IMAGES, np.zeros((2, 3, 3, 1))),
        ValueError,
        "student_features",
        "(2, 3, 3, 1)",
    ),
    Case(
        distill.attention_map_distance,
        lambda: distill.attention_map_distance(IMAGES, IMAGES, exponent=0.5),
        ValueError,
        "exponent",
        "0.5",
    ),
    Case(
        distill.relational_distance,
        lambda: distill.relational_distance(LOGITS, np.zeros((3, 3))),
        ValueError,
        "student_outputs",
        "(3, 3)",
    ),
    Case(
        distill.relational_distance,
        lambda: distill.relational_distance(LOGITS, LOGITS, distance_weight=-1.0),
        ValueError,
        "distance_weight",
        "-1.0",
    ),
    Case(
        distill.relational_distance,
        lambda: distill.relational_distance(LOGITS, LOGITS, angle_weight="2"),
        TypeError,
        "angle_weight",
        "'2'",
    ),
    Case(
        distill.standardize_logits,
        lambda: distill.standardize_logits("logits"),
        TypeError,
        "logits",
        "'logits'",
    ),
    Case(
        distill.standardize_logits,
        lambda: distill.standardize_logits(np.float32(2.0)),
        ValueError,
        "logits",
        "()",
    ),
    Case(
        distill.standardize_logits,
        lambda: distill.standardize_logits(np.zeros((2, 0))),
        ValueError,
        "logits",
        "(2, 0)",
    ),
    # Label propagation.
    Case(
        distill.propagate_labels,
        lambda: distill.propagate_labels(np.zeros(6), [0, 1, -1, -1, -1, -1], 2),
        ValueError,
        "features",
        "(6,)",
    ),
    Case(
        distill.propagate_labels,
        lambda: distill.propagate_labels(np.ones((6, 2)), [0, 1, 9, -1, -1, -1], 2),
        ValueError,
        "labels",
        "[9]",
    ),
    Case(
        distill.propagate_labels,
        lambda: distill.propagate_labels(
            np.ones((6, 2)), [0, 1, -1, -1, -1, -1], 2, neighbours=2, alpha=1.5
        ),
        ValueError,
        "alpha",
        "1.5",
    ),
    Case(
        distill.propagate_labels,
        lambda: distill.propagate_labels(np.ones((6, 2)), [0, 1, -1, -1, -1, -1], 2, neighbours=0),
        ValueError,
        "neighbours",
        "0",
    ),
    Case(
        distill.LabelGraph,
        lambda: distill.LabelGraph(np.full((6, 2), np.inf)),
        ValueError,
        "features",
        "12 NaN or infinite",
    ),
    Case(
        distill.LabelGraph,
        lambda: distill.LabelGraph(np.ones((6, 2)), neighbours=6),
        ValueError,
        "neighbours",
        "6",
    ),
    Case(
        distill.LabelGraph,
        lambda: distill.LabelGraph(np.ones((6, 2)), neighbours=2).held_out_labels(
            [0, 1, -1, -1, -1, -1], 2, folds=3
        ),
        ValueError,
        "folds",
        "3",
    ),
    Case(
        distill.LabelGraph,
        lambda: distill.LabelGraph(np.ones((6, 2)), neighbours=2).propagate(
            [0, 1, 5, -1, -1, -1], 2
        ),
        ValueError,
        "labels",
        "[5]",
    ),
    # Ensembles.
    Case(
        distill.softened_average,
        lambda: distill.softened_average(LOGITS, [1.0]),
        TypeError,
        "teacher_logits",
        "ndarray",
    ),
    Case(
        distill.softened_average,
        lambda: distill.softened_average([LOGITS, LOGITS], [1.0]),
        ValueError,
        "weights",
        "[1.0]",
    ),
    Case(
        distill.softened_average,
        lambda: distill.softened_average([LOGITS], [1.0], temperature=-1),
        ValueError,
        "temperature",
        "-1",
    ),
    Case(
        distill.softened_average,
        lambda: distill.softened_average([LOGITS, np.zeros((2, 4))], [0.5, 0.5]),
        ValueError,
        "teacher_logits",
        "(2, 4)",
    ),
    Case(
        distill.SoftenedAverage, lambda: distill.SoftenedAverage(None), TypeError, "weights", "None"
    ),
    Case(
        distill.SoftenedAverage,
        lambda: distill.SoftenedAverage([0.0, 0.0]),
        ValueError,
        "weights",
        "[0.0, 0.0]",
    ),
    Case(
        distill.SoftenedAverage,
        lambda: distill.SoftenedAverage([0.5, 0.5], temperature=0),
        ValueError,
        "temperature",
        "0",
    ),
    Case(
        distill.TeacherLogits,
        lambda: distill.TeacherLogits("yes"),
        TypeError,
        "from_probabilities",
        "'yes'",
    ),
    Case(
        distill.TeacherLogits,
        lambda: distill.TeacherLogits(None),
        TypeError,
        "from_probabilities",
        "None",
    ),
    Case(
        distill.TeacherLogits,
        lambda: distill.TeacherLogits(from_probabilities=1),
        TypeError,
        "from_probabilities",
        "1",
    ),
    Case(
        distill.teacher_ensemble,
        lambda: distill.teacher_ensemble("teachers.keras"),
        TypeError,
        "teachers",
        "'teachers.keras'",
    ),
    Case(
        distill.teacher_ensemble,
        lambda: distill.teacher_ensemble([_model("a"), "b.keras"]),
        TypeError,
        "teachers",
        "'b.keras'",
    ),
    Case(
        distill.teacher_ensemble,
        lambda: distill.teacher_ensemble([_model("a"), _model("b")], weights=[1.0]),
        ValueError,
        "weights",
        "[1.0]",
    ),
    Case(
        distill.teacher_ensemble,
        lambda: distill.teacher_ensemble([_model("a"), _model("b")], temperature=0),
        ValueError,
        "temperature",
        "0",
    ),
    # The Distiller.
    Case(
        distill.Distiller,
        lambda: distill.Distiller("teacher.keras", _model("student")),
        TypeError,
        "teacher",
        "str",
    ),
    Case(
        distill.Distiller,
        lambda: distill.Distiller(_model("teacher"), None),
        TypeError,
        "student",
        "NoneType",
    ),
    Case(
        distill.Distiller,
        lambda: _distiller(distillation_losses=["kl"]),
        TypeError,
        "distillation_losses",
        "'kl'",
    ),
    Case(
        distill.Distiller,
        lambda: _distiller(student_loss_weight=1.5),
        ValueError,
        "student_loss_weight",
        "1.5",
    ),
    Case(
        distill.Distiller, lambda: _distiller(augmentation="flip"), TypeError, "augmentation", "str"
    ),
    Case(distill.Distiller, lambda: _distiller(mixup=math.inf), ValueError, "mixup", "inf"),
    # Finite, but float32 turns them to infinity (the loss was NaN from the first step).
    Case(distill.Distiller, lambda: _distiller(mixup=1e300), ValueError, "mixup", "1e+300"),
    Case(
        distill.Distiller,
        lambda: _distiller(temperature=1e-300),
        ValueError,
        "temperature",
        "1e-300",
    ),
    Case(
        distill.Distiller, lambda: _distiller(temperature=1e20), ValueError, "temperature", "1e+20"
    ),
    Case(
        distill.Distiller, lambda: _distiller(cutmix=0.5, seed="zero"), TypeError, "seed", "'zero'"
    ),
    Case(
        distill.Distiller,
        lambda: _distiller().compile(optimizer="adam"),
        ValueError,
        "loss",
        "None",
    ),
    Case(
        distill.teacher_outputs,
        lambda: distill.teacher_outputs("teacher.keras", IMAGES),
        TypeError,
        "teacher",
        "str",
    ),
    Case(
        distill.teacher_outputs,
        lambda: distill.teacher_outputs(_model("teacher"), IMAGES, layers="logits"),
        TypeError,
        "layers",
        "'logits'",
    ),
    Case(
        distill.teacher_outputs,
        lambda: distill.teacher_outputs(_model("teacher"), IMAGES, layers=["nope"]),
        ValueError,
        "teacher_layer_name",
        "'nope'",
    ),
    Case(
        distill.teacher_outputs,
        lambda: distill.teacher_outputs(_model("teacher"), IMAGES, cache=3),
        TypeError,
        "cache",
        "3",
    ),
    Case(
        distill.teacher_outputs,
        lambda: distill.teacher_outputs(_model("teacher"), IMAGES, batch_size=0),
        ValueError,
        "batch_size",
        "0",
    ),
    Case(
        distill.teacher_outputs,
        lambda: distill.teacher_outputs(_model("teacher"), IMAGES, batch_size="64"),
        TypeError,
        "batch_size",
        "'64'",
    ),
    Case(
        distill.teacher_outputs,
        lambda: distill.teacher_outputs(_model("teacher"), None),
        TypeError,
        "x",
        "None",
    ),
    Case(
        distill.with_teacher_outputs,
        lambda: distill.with_teacher_outputs(LOGITS, [LOGITS]),
        TypeError,
        "teacher_outputs",
        "list",
    ),
    Case(
        distill.with_teacher_outputs,
        lambda: distill.with_teacher_outputs(LOGITS, {}),
        ValueError,
        "teacher_outputs",
        "{}",
    ),
    Case(
        distill.with_teacher_outputs,
        lambda: distill.with_teacher_outputs(LOGITS, {"output": np.zeros((3, 3))}),
        ValueError,
        "teacher_outputs",
        "(3, 3)",
    ),
    Case(
        distill.with_teacher_outputs,
        lambda: distill.with_teacher_outputs(None, {"output": LOGITS}),
        TypeError,
        "x",
        "None",
    ),
    # Callbacks.
    Case(
        distill.NonFiniteLossGuard,
        lambda: distill.NonFiniteLossGuard(None),
        TypeError,
        "loss_names",
        "None",
    ),
    Case(
        distill.NonFiniteLossGuard,
        lambda: distill.NonFiniteLossGuard([1, 2]),
        TypeError,
        "loss_names",
        "[1, 2]",
    ),
    Case(
        distill.NonFiniteLossGuard,
        lambda: distill.NonFiniteLossGuard([]),
        ValueError,
        "loss_names",
        "[]",
    ),
    Case(
        distill.StudentCheckpoint,
        lambda: distill.StudentCheckpoint(None),
        TypeError,
        "filepath",
        "None",
    ),
    Case(
        distill.StudentCheckpoint,
        lambda: distill.StudentCheckpoint("student.txt"),
        ValueError,
        "filepath",
        "student.txt",
    ),
    Case(
        distill.StudentCheckpoint,
        lambda: distill.StudentCheckpoint("student.keras", mode="best"),
        ValueError,
        "mode",
        "'best'",
    ),
    # Schedules.
    Case(schedules.at_step, lambda: schedules.at_step("ten"), TypeError, "step", "'ten'"),
    Case(schedules.at_step, lambda: schedules.at_step(-1), ValueError, "step", "-1"),
    Case(schedules.at_step, lambda: schedules.at_step(2.5), TypeError, "step", "2.5"),
    Case(
        schedules.at_step,
        lambda: schedules.at_step(np.zeros(2, "int32")),
        ValueError,
        "step",
        "(2,)",
    ),
    Case(
        schedules.value_at_current_step,
        lambda: schedules.value_at_current_step("hot"),
        TypeError,
        "value",
        "'hot'",
    ),
    Case(
        schedules.value_at_current_step,
        lambda: schedules.value_at_current_step(lambda: 2.0),
        TypeError,
        "value",
        "<function",
    ),
    Case(
        schedules.value_at_current_step,
        lambda: schedules.value_at_current_step(_schedule_returning_text),
        TypeError,
        "value",
        "'hot'",
    ),
    # Mixing.
    Case(
        mixing.mixup,
        lambda: mixing.mixup("images", PARTNERS, RATIO),
        TypeError,
        "images",
        "'images'",
    ),
    Case(
        mixing.mixup,
        lambda: mixing.mixup(IMAGES, np.array([0, 5]), RATIO),
        ValueError,
        "partner_index",
        "[0, 5]",
    ),
    Case(
        mixing.mixup,
        lambda: mixing.mixup(IMAGES, PARTNERS, np.array([1.5, 0.5])),
        ValueError,
        "mix_ratio",
        "[1.5, 0.5]",
    ),
    Case(
        mixing.mixup,
        lambda: mixing.mixup(IMAGES, np.array([0, 1, 0]), RATIO),
        ValueError,
        "partner_index",
        "(3,)",
    ),
    Case(
        mixing.cutmix, lambda: mixing.cutmix(LOGITS, PARTNERS, BOX), ValueError, "images", "(2, 3)"
    ),
    Case(
        mixing.cutmix,
        lambda: mixing.cutmix(IMAGES, np.array([1.0, 0.0]), BOX),
        TypeError,
        "partner_index",
        "float64",
    ),
    Case(
        mixing.cutmix,
        lambda: mixing.cutmix(IMAGES, PARTNERS, BOX[:, :3]),
        ValueError,
        "box",
        "(2, 3)",
    ),
    Case(
        mixing.sample_mixing,
        lambda: mixing.sample_mixing(IMAGES, _generator()),
        ValueError,
        "mixup_alpha",
        "None",
    ),
    Case(
        mixing.sample_mixing,
        lambda: mixing.sample_mixing(IMAGES, 0, mixup_alpha=0.2),
        TypeError,
        "seed_generator",
        "0",
    ),
    Case(
        mixing.sample_mixing,
        lambda: mixing.sample_mixing(IMAGES, _generator(), cutmix_alpha=-1.0),
        ValueError,
        "cutmix_alpha",
        "-1.0",
    ),
    Case(
        mixing.sample_mixing,
        lambda: mixing.sample_mixing(LOGITS, _generator(), cutmix_alpha=1.0),
        ValueError,
        "images",
        "(2, 3)",
    ),
]


@parametrize(CASES)
def test_bad_input_is_refused(case):
    check(case)


def test_numpy_scalars_are_accepted_where_numbers_are():
    assert _distiller(student_loss_weight=np.float32(0.5), mixup=np.float32(0.2)).augments
    values = distill.kl_divergence(LOGITS, LOGITS, temperature=np.float32(2.0))
    assert keras.ops.convert_to_numpy(values).tolist() == [0.0, 0.0]
    weights = np.array([0.25, 0.75])
    assert distill.SoftenedAverage(weights, np.int64(2)).teacher_weights == [0.25, 0.75]
    with schedules.at_step(np.int64(3)):
        assert float(schedules.value_at_current_step(lambda step: step * 2)) == 6.0
