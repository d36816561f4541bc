"""Distillation losses: pure functions of teacher and student outputs, and the
thin `keras.layers.Layer` classes that configure them for `tfkd.Distiller`.

The functions use `keras.ops` only and return one value per example, so they
run on every backend and compose with sample weights and distribution.
"""

import warnings

import keras
from keras import ops

from tfkd import _checks
from tfkd._checks import check_flag, shown
from tfkd.distill import schedules
from tfkd.distill._checks import (
    check_same_shape,
    check_temperature,
    check_temperature_value,
    tensor_shape,
)

_EPSILON = 1e-7
# float32's smallest normal number: probabilities below it (0 after underflow) read as it.
# A floor of 1e-7 gave every class below it one target and no gradient: at T=4, teacher
# logits [20, 5, 0, -5] read as [0.944, 0.022, 0.017, 0.017] against [0.969, 0.023,
# 0.007, 0.002], losing the small classes that high temperatures pass on.
_SMALLEST_PROBABILITY = 1.1754944e-38
# One default for `Distiller(temperature=None)` and `LogitsDistillation()`: on the
# Fashion-MNIST benchmark (BENCHMARKS.md) a student 20x smaller than its teacher did
# best at T=1 and lost 2.8 points at T=4.
DEFAULT_TEMPERATURE = 1.0


def log_of_probabilities(probabilities):
    """Log-probabilities of a softmax output: its logits up to a per-example constant.

    Args:
        probabilities: Outputs of a final softmax, shape `(batch, ..., classes)`.

    Returns:
        `log(probabilities)`, clipped away from `log(0)` at float32's smallest normal
        number; softmax and the distillation losses treat it exactly as the logits
        (down to probabilities of 1e-38, logits 87 below the largest).
    """
    probabilities = ops.cast(probabilities, "float32")
    return ops.log(ops.clip(probabilities, _SMALLEST_PROBABILITY, 1.0))


def logit_of_probability(probabilities):
    """The logit of a sigmoid output: `log(p) - log(1 - p)`, with `p` clipped away from 0
    and 1 (a binary classifier that ends in a sigmoid, read as its logit)."""
    probabilities = ops.clip(ops.cast(probabilities, "float32"), _EPSILON, 1.0 - _EPSILON)
    return ops.log(probabilities) - ops.log(1.0 - probabilities)


def standardize_logits(logits):
    """Z-scores each example's logits over the classes (last axis).

    Logit standardisation (Sun et al., CVPR 2024): `(z - mean(z)) / (std(z) + 1e-7)`,
    with the population standard deviation. The result ignores any shift and any
    positive scale of an example's logits, so a student is asked to match the
    teacher's ranking and relative gaps, not the size of its logits.

    Args:
        logits: Logits, shape `(batch, ..., classes)`.

    Returns:
        A float32 tensor of the same shape with mean 0 and standard deviation 1
        (up to the epsilon) over the last axis.

    Example:

    >>> import numpy as np
    >>> z = standardize_logits(np.array([[1.0, 2.0, 3.0]], dtype="float32"))
    >>> [round(v, 4) for v in keras.ops.convert_to_numpy(z)[0].tolist()]
    [-1.2247, 0.0, 1.2247]
    """
    shape = tensor_shape("logits", logits)
    if shape is not None and shape[-1] == 0:
        raise ValueError(
            "`logits` needs at least one class on its last axis. Received: logits of "
            f"shape {shape}."
        )
    logits = ops.cast(logits, "float32")
    centred = logits - ops.mean(logits, axis=-1, keepdims=True)
    variance = ops.mean(ops.square(centred), axis=-1, keepdims=True)
    # The floor keeps the square root's gradient finite for all-equal logits.
    deviation = ops.sqrt(ops.maximum(variance, 1e-24))
    return centred / (deviation + _EPSILON)


def _log_probabilities(outputs, temperature, from_logits, standardize=False):
    outputs = ops.cast(outputs, "float32")
    if outputs.shape[-1] == 1:
        outputs, from_logits = _two_classes(outputs, from_logits), True
    if not from_logits:
        # log(p) differs from the logits by a per-example constant, which the
        # softmax below removes, so temperature scaling still applies.
        outputs = log_of_probabilities(outputs)
    if standardize:
        outputs = standardize_logits(outputs)
    return ops.log_softmax(outputs / temperature, axis=-1)


def _two_classes(outputs, from_logits):
    """The two-class logits of a binary task's single output (the positive class's):
    `[0, z]` for a logit `z`, whose softmax is `[1 - sigmoid(z), sigmoid(z)]`, and
    `log([1 - p, p])` for a probability `p`."""
    if from_logits:
        return ops.concatenate([ops.zeros_like(outputs), outputs], axis=-1)
    return log_of_probabilities(ops.concatenate([1.0 - outputs, outputs], axis=-1))


def kl_divergence(
    teacher_outputs, student_outputs, *, temperature=1.0, from_logits=True, standardize=False
):
    """Per-example KL(teacher || student) of temperature-softened distributions.

    Computes `T^2 * sum(p_t * (log p_t - log p_s))` with
    `p = softmax(logits / T)` over the last axis. The `T^2` factor keeps the
    gradient scale independent of the temperature (Hinton et al., 2015).
    With `standardize=True` each side's logits are z-scored first
    (`standardize_logits`), as in logit standardisation (Sun et al., 2024).
    A last axis of size 1 is a binary task's logit `z` of the positive class (a
    sigmoid classifier's, or its probability with `from_logits=False`): the
    distributions are `[1 - sigmoid(z / T), sigmoid(z / T)]`.

    Args:
        teacher_outputs: Teacher logits (or probabilities if
            `from_logits=False`), shape `(batch, ..., classes)`.
        student_outputs: Student logits or probabilities, same shape.
        temperature: Softmax temperature, > 0. Defaults to `1.0`.
        from_logits: Whether the outputs are logits. Defaults to `True`.
        standardize: Whether to z-score each example's logits (teacher and
            student separately) before dividing by the temperature. Defaults
            to `False`.

    Returns:
        A tensor of shape `(batch, ...)`: the divergence of each example,
        always >= 0 and 0 where the two outputs agree.

    Example:

    >>> import numpy as np
    >>> logits = np.array([[2.0, 0.5, -1.0]], dtype="float32")
    >>> float(kl_divergence(logits, logits, temperature=4.0)[0])
    0.0
    """
    check_same_shape(teacher_outputs, student_outputs, "kl_divergence")
    check_temperature(temperature)
    check_flag("from_logits", from_logits)
    check_flag("standardize", standardize)
    if standardize:
        check_standardizable(tensor_shape("teacher_outputs", teacher_outputs))
    teacher_log_probs = _log_probabilities(teacher_outputs, temperature, from_logits, standardize)
    student_log_probs = _log_probabilities(student_outputs, temperature, from_logits, standardize)
    teacher_probs = ops.exp(teacher_log_probs)
    # 0 * log 0 is 0: a teacher logit of -inf (cached log-probabilities of hard targets)
    # gave 0 * -inf = NaN. A NaN teacher stays NaN (stopping `fit` by name).
    terms = teacher_probs * (teacher_log_probs - student_log_probs)
    terms = ops.where(teacher_probs == 0, 0.0, terms)
    divergence = ops.sum(terms, axis=-1)
    # Rounding can make identical distributions give -1e-9; KL is never negative.
    return ops.maximum(divergence, 0.0) * (temperature**2)


# The layer arguments' names before they followed keras.distillation: {old: current}.
RENAMED = {"teacher_layer": "teacher_layer_name", "student_layer": "student_layer_name"}
_RENAMED_ATTRIBUTE = "`{0}` is deprecated and will be removed; read `{0}_name`."


class DistillationLoss(keras.layers.Layer):
    """Base class of the losses a `tfkd.Distiller` adds to the student's loss.

    Subclass it and implement `call(teacher_outputs, student_outputs)`,
    returning one loss value per example. Set `teacher_layer_name` and
    `student_layer_name` to the names of the layers whose outputs the loss compares;
    `None` means the model's final output. A loss with weights (a projection,
    say) creates them in `build(teacher_outputs_shape, student_outputs_shape)`;
    they train with the student and are dropped with the Distiller.

    The layer names follow `keras.distillation` (`teacher_layer_name`,
    `student_layer_name`); the old names `teacher_layer` and `student_layer` still work,
    with a `DeprecationWarning`, and saved configs that hold them load. Unlike
    `keras.distillation.FeatureDistillation`, a name of `None` reads the model's final
    output, and a loss may compare layers of different widths (`FeatureDistillation`
    projects them).

    Args:
        teacher_layer_name: Name of the teacher layer to read, or `None` for the
            teacher's output. Defaults to `None`.
        student_layer_name: Name of the student layer to read, or `None` for the
            student's output. Defaults to `None`.
        **kwargs: Base layer arguments, e.g. `name`.

    Example:

    >>> from keras import ops
    >>> class CosineDistillation(DistillationLoss):
    ...     def call(self, teacher_outputs, student_outputs):
    ...         similarity = ops.sum(
    ...             ops.normalize(teacher_outputs) * ops.normalize(student_outputs),
    ...             axis=-1,
    ...         )
    ...         return 1.0 - similarity
    """

    # Whether the loss compares two named layers (no default to the final outputs).
    requires_layer_names = False

    def __init__(self, teacher_layer_name=None, student_layer_name=None, **kwargs):
        names = _checks.renamed_arguments(
            type(self).__name__,
            {"teacher_layer_name": teacher_layer_name, "student_layer_name": student_layer_name},
            kwargs,
            RENAMED,
        )
        super().__init__(**kwargs)
        for argument, value in names.items():
            if value is not None and not isinstance(value, str):
                raise TypeError(
                    f"`{argument}` must be a layer name (str) or None. "
                    f"Received: {argument}={shown(value)} of type {type(value).__name__}."
                )
            if value == "":
                raise ValueError(
                    f"`{argument}` must be a layer name or None (the model's output). "
                    f"Received: {argument}=''."
                )
        if self.requires_layer_names and None in names.values():
            raise ValueError(
                f"{type(self).__name__} compares two named layers. Received: "
                + ", ".join(f"{argument}={value!r}" for argument, value in names.items())
                + ". Pass the names of a teacher layer and a student layer."
            )
        self.teacher_layer_name = names["teacher_layer_name"]
        self.student_layer_name = names["student_layer_name"]

    def __getattr__(self, name):
        # The deprecated `teacher_layer` and `student_layer`, read through here rather than
        # as properties, which `dir` lists: Keras's saving reads every attribute `dir`
        # lists, and each save and load of a Distiller warned of both.
        # On PyTorch, the layer is a torch Module, whose own `__getattr__` finds sublayers
        # (a FeatureDistillation's projection): every other name goes on to it.
        if name in ("teacher_layer", "student_layer"):
            warnings.warn(_RENAMED_ATTRIBUTE.format(name), DeprecationWarning, stacklevel=2)
            return getattr(self, f"{name}_name")
        parent = getattr(super(), "__getattr__", None)
        if parent is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return parent(name)

    @property
    def reads_logits(self):
        """Whether the loss expects logits; the Distiller then gives it the log of a
        softmax model's probabilities. Defaults to `False`."""
        return False

    def build(self, teacher_outputs_shape, student_outputs_shape):
        self.built = True

    def call(self, teacher_outputs, student_outputs):
        raise NotImplementedError(
            f"{type(self).__name__} must implement "
            "`call(teacher_outputs, student_outputs)` returning per-example losses."
        )

    def compute_output_shape(self, teacher_outputs_shape, student_outputs_shape):
        return tuple(teacher_outputs_shape[:1])

    def get_config(self):
        config = super().get_config()
        config.update(
            teacher_layer_name=self.teacher_layer_name, student_layer_name=self.student_layer_name
        )
        return config


@keras.saving.register_keras_serializable(package="tfkd")
class LogitsDistillation(DistillationLoss):
    """Matches the student's softened class distribution to the teacher's.

    The classic knowledge-distillation loss (Hinton et al., 2015): the KL
    divergence between `softmax(teacher_logits / T)` and
    `softmax(student_logits / T)`, multiplied by `T^2`. Unlike
    `keras.distillation.LogitsDistillation` in Keras 3.15, the softmax and the
    `T^2` factor are always applied, so the loss is never negative.

    Args:
        temperature: Softmax temperature, > 0, or a schedule of the step
            (`tfkd.distill.schedules`). Higher values expose more of the
            teacher's "dark knowledge" about similar classes; small students often
            prefer low ones. Defaults to `1.0`, as `Distiller(temperature=None)`.
        from_logits: Whether the loss receives logits. With `True`, a
            `tfkd.Distiller` gives it the log-probabilities of a teacher or student
            that ends in a softmax (each side on its own), so models of either
            kind distil correctly. `False` reads both outputs as probabilities and
            is refused for a model that outputs logits. Defaults to `True`.
        teacher_layer_name: Teacher layer to read, `None` for its output.
            Defaults to `None`.
        student_layer_name: Student layer to read, `None` for its output.
            Defaults to `None`.
        standardize: Whether to z-score each example's logits, on each side,
            before the temperature (logit standardisation, Sun et al., CVPR
            2024). The student then matches the shape of the teacher's logits
            and not their size, which a small student may not reach; every
            example gets the same softness, set by the temperature alone.
            Defaults to `False`.
        **kwargs: Base layer arguments, e.g. `name`.

    Example:

    >>> import numpy as np
    >>> loss = LogitsDistillation(temperature=2.0)
    >>> teacher = np.array([[3.0, 1.0, 0.0]], dtype="float32")
    >>> student = np.array([[0.0, 1.0, 3.0]], dtype="float32")
    >>> round(float(loss(teacher, student)[0]), 4)
    2.9297
    """

    def __init__(
        self,
        temperature=DEFAULT_TEMPERATURE,
        from_logits=True,
        teacher_layer_name=None,
        student_layer_name=None,
        standardize=False,
        **kwargs,
    ):
        super().__init__(
            teacher_layer_name=teacher_layer_name, student_layer_name=student_layer_name, **kwargs
        )
        check_flag("from_logits", from_logits)
        check_flag("standardize", standardize)
        self.temperature = scheduled_temperature(temperature)
        self.from_logits = from_logits
        self.standardize = standardize

    @property
    def reads_logits(self):
        return self.from_logits

    def build(self, teacher_outputs_shape, student_outputs_shape):
        if self.standardize:
            check_standardizable(teacher_outputs_shape)
        self.built = True

    def call(self, teacher_outputs, student_outputs):
        return kl_divergence(
            teacher_outputs,
            student_outputs,
            temperature=schedules.value_at_current_step(self.temperature),
            from_logits=self.from_logits,
            standardize=self.standardize,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            temperature=schedules.serialize(self.temperature),
            from_logits=self.from_logits,
            standardize=self.standardize,
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "temperature": schedules.deserialize(config["temperature"])})


def check_standardizable(shape):
    """Refuses logit standardisation of a single logit: z-scored, any logit is 0."""
    if shape is not None and shape[-1] == 1:
        raise ValueError(
            "Logit standardisation z-scores each example's logits over the classes, and a "
            "single logit (a binary classifier's) z-scores to 0, leaving nothing to distil. "
            f"Received: standardize=True and outputs of shape {tuple(shape)}. Use "
            "standardize=False, or two logits (Dense(2)) for the two classes."
        )


def scheduled_temperature(temperature):
    """A checked temperature: a float, or a schedule whose value at step 0 is > 0."""
    temperature = schedules.validate("temperature", temperature, check_temperature_value)
    return temperature if callable(temperature) else float(temperature)


# Names that moved to other modules of tfkd.distill: still importable from here, with a
# DeprecationWarning (the public path, `tfkd.distill.<name>`, never changed).
_MOVED = {"FeatureDistillation": "features", "mean_squared_error": "features"}


def __getattr__(name):
    return _checks.moved_name(__name__, name, _MOVED)
