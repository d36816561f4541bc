"""Pruning schedules: callables `schedule(step) -> sparsity`, and when masks are updated."""

import math
import numbers
import warnings

import keras
from keras import ops

from tfkd import _checks


def _check_sparsity(name, value):
    if not _checks.is_number(value) or not 0 <= value < 1:
        raise ValueError(
            f"`{name}` must be a number in [0, 1): the fraction of weights set to zero. "
            f"Received: {name}={value!r}."
        )
    return float(value)


def _check_step(name, value, minimum):
    if not _checks.is_integer(value) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}.")
    return int(value)


@keras.saving.register_keras_serializable(package="tfkd")
class PruningSchedule:
    """Base class of pruning schedules.

    A schedule maps the training step to the target sparsity, and says at which steps
    the masks are recomputed: every `frequency` steps from `begin_step` to `end_step`
    (inclusive; `end_step=None` means for ever). Subclasses implement `__call__(step)`
    with `keras.ops`, returning the target sparsity as a float tensor.

    Args:
        begin_step: first step at which masks are computed. Defaults to `0`.
        end_step: last step at which masks are updated, or `None` for no end. `-1`, tfmot's
            "no end", is still read (saved configs hold it) but deprecated. Defaults to
            `None`.
        frequency: steps between mask updates. Defaults to `100`.

    Example:

    >>> class Step(tfkd.prune.PruningSchedule):
    ...     def __call__(self, step):
    ...         return keras.ops.where(step < 500, 0.5, 0.8)
    """

    def __init__(self, begin_step=0, end_step=None, frequency=100):
        self.begin_step = _check_step("begin_step", begin_step, 0)
        if _checks.is_integer(end_step) and end_step == -1:
            warnings.warn(
                "`end_step=-1` (tfmot's 'no end') is deprecated: pass `end_step=None`.",
                DeprecationWarning,
                stacklevel=3,
            )
            end_step = None
        self.end_step = None if end_step is None else _check_step("end_step", end_step, 0)
        self.frequency = _check_step("frequency", frequency, 1)
        if self.end_step is not None and self.end_step < self.begin_step:
            raise ValueError(
                "`end_step` must be None (no end) or >= `begin_step`. "
                f"Received: begin_step={begin_step}, end_step={end_step}."
            )

    def __call__(self, step):
        raise NotImplementedError(
            f"{type(self).__name__} must implement `__call__(step)` returning the sparsity."
        )

    def should_update(self, step):
        """Whether masks are recomputed at `step` (a boolean tensor)."""
        step = ops.convert_to_tensor(step, "int32")
        on_beat = ops.equal(ops.mod(step - self.begin_step, self.frequency), 0)
        started = ops.greater_equal(step, self.begin_step)
        if self.end_step is None:
            return ops.logical_and(started, on_beat)
        in_range = ops.logical_and(started, ops.less_equal(step, self.end_step))
        return ops.logical_and(in_range, ops.logical_or(on_beat, ops.equal(step, self.end_step)))

    def get_config(self):
        return {
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }

    @classmethod
    def from_config(cls, config):
        if config.get("end_step") == -1:  # written before `None` meant no end
            config = dict(config, end_step=None)
        return cls(**config)

    def __repr__(self):
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({arguments})"


@keras.saving.register_keras_serializable(package="tfkd")
class ConstantSparsity(PruningSchedule):
    """Prunes to `target_sparsity` at `begin_step` and keeps the masks up to date after.

    Args:
        target_sparsity: fraction of weights set to zero, in [0, 1).
        begin_step: first step at which masks are computed. Defaults to `0`.
        end_step: last step at which masks are updated, or `None` for no end.
            Defaults to `None`.
        frequency: steps between mask updates. Defaults to `100`.

    Example:

    >>> schedule = tfkd.prune.ConstantSparsity(0.8)
    >>> round(float(schedule(0)), 4)
    0.8
    """

    def __init__(self, target_sparsity, begin_step=0, end_step=None, frequency=100):
        super().__init__(begin_step=begin_step, end_step=end_step, frequency=frequency)
        self.target_sparsity = _check_sparsity("target_sparsity", target_sparsity)

    def __call__(self, step):
        return ops.convert_to_tensor(self.target_sparsity, "float32")

    def get_config(self):
        return {"target_sparsity": self.target_sparsity, **super().get_config()}


@keras.saving.register_keras_serializable(package="tfkd")
class PolynomialDecay(PruningSchedule):
    """Raises sparsity from `initial_sparsity` to `target_sparsity` between two steps.

    Gradual magnitude pruning (Zhu & Gupta, 2017): the sparsity at step `t` is
    `target + (initial - target) * (1 - p) ** power` with `p` the fraction of
    `[begin_step, end_step]` elapsed, so most weights go early while the network
    can still recover, and few near the end.

    `target_sparsity` is what tfmot calls `final_sparsity`; that name is still read
    (saved configs hold it), with a `DeprecationWarning`.

    Args:
        initial_sparsity: sparsity at `begin_step`, in [0, 1); at most
            `target_sparsity` (pruned weights never come back).
        target_sparsity: sparsity at and after `end_step`, in [0, 1).
        begin_step: step at which pruning starts. Defaults to `0`.
        end_step: step at which `target_sparsity` is reached; must be > `begin_step`.
        power: exponent of the decay. Defaults to `3`.
        frequency: steps between mask updates. Defaults to `100`.

    Example:

    >>> schedule = tfkd.prune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000)
    >>> round(float(schedule(1000)), 3)
    0.8
    """

    def __init__(
        self,
        initial_sparsity,
        target_sparsity=None,
        begin_step=0,
        end_step=None,
        power=3,
        frequency=100,
        **kwargs,
    ):
        target_sparsity = _checks.renamed_arguments(
            "PolynomialDecay",
            {"target_sparsity": target_sparsity},
            kwargs,
            {"final_sparsity": "target_sparsity"},
            stacklevel=3,
        )["target_sparsity"]
        if kwargs:
            raise TypeError(f"PolynomialDecay got unexpected arguments. Received: {sorted(kwargs)}")
        if target_sparsity is None:
            raise TypeError("PolynomialDecay needs `target_sparsity`. Received: None.")
        super().__init__(begin_step=begin_step, end_step=end_step, frequency=frequency)
        if self.end_step is None or self.end_step <= self.begin_step:
            raise ValueError(
                "PolynomialDecay needs `end_step` > `begin_step`. "
                f"Received: begin_step={begin_step}, end_step={end_step}."
            )
        self.initial_sparsity = _check_sparsity("initial_sparsity", initial_sparsity)
        self.target_sparsity = _check_sparsity("target_sparsity", target_sparsity)
        if self.initial_sparsity > self.target_sparsity:
            raise ValueError(
                "PolynomialDecay needs `initial_sparsity` <= `target_sparsity`: pruned weights "
                "never come back, so a falling schedule would stay at its initial sparsity. "
                f"Received: initial_sparsity={initial_sparsity!r}, "
                f"target_sparsity={target_sparsity!r}. Swap them, or use "
                "ConstantSparsity(target_sparsity) for one sparsity."
            )
        if not _checks.is_number(power) or not math.isfinite(power) or power <= 0:
            raise ValueError(f"`power` must be a finite number > 0. Received: power={power!r}.")
        self.power = int(power) if isinstance(power, numbers.Integral) else float(power)

    def __call__(self, step):
        step = ops.cast(ops.convert_to_tensor(step), "float32")
        progress = (step - self.begin_step) / float(self.end_step - self.begin_step)
        remaining = 1.0 - ops.clip(progress, 0.0, 1.0)
        span = self.initial_sparsity - self.target_sparsity
        return self.target_sparsity + span * ops.power(remaining, self.power)

    @property
    def final_sparsity(self):
        """Deprecated: `target_sparsity`."""
        warnings.warn(
            "`final_sparsity` is deprecated and will be removed; read `target_sparsity`.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.target_sparsity

    def get_config(self):
        config = super().get_config()
        return {
            "initial_sparsity": self.initial_sparsity,
            "target_sparsity": self.target_sparsity,
            "begin_step": config["begin_step"],
            "end_step": config["end_step"],
            "power": self.power,
            "frequency": config["frequency"],
        }


def target_sparsity(schedule):
    """The sparsity `schedule` ends at: its `target_sparsity`, or else its value at its
    `end_step`; None when it says neither."""
    target = getattr(schedule, "target_sparsity", None)
    if _checks.is_number(target):
        return float(target)
    if schedule.end_step is not None:
        return float(ops.convert_to_numpy(schedule(schedule.end_step)))
    return None


def get(identifier):
    """A schedule from a schedule, its serialized config, or a sparsity number."""
    if isinstance(identifier, PruningSchedule):
        return identifier
    if isinstance(identifier, dict):
        return _deserialize(identifier)
    if _checks.is_number(identifier):
        try:
            return ConstantSparsity(identifier)
        except ValueError as error:
            raise ValueError(
                f"A number given as `schedule` is the target sparsity of ConstantSparsity: {error}"
            ) from error
    raise TypeError(
        "`schedule` must be a tfkd.prune.PruningSchedule (e.g. ConstantSparsity(0.8) or "
        "PolynomialDecay(...)) or a target sparsity in [0, 1). "
        f"Received: schedule={identifier!r} of type {type(identifier).__name__}."
    )


def _deserialize(config):
    """A schedule from its serialized config; a TypeError naming `schedule` otherwise."""
    try:
        schedule = keras.saving.deserialize_keras_object(config)
    except ValueError as error:
        raise ValueError(
            f"`schedule` is a schedule config with a bad value: {error} "
            f"Received: schedule={config!r:.200}."
        ) from error
    except (TypeError, KeyError) as error:
        raise _not_a_schedule_config(config) from error
    if not isinstance(schedule, PruningSchedule):
        raise _not_a_schedule_config(config)
    return schedule


def _not_a_schedule_config(config):
    return TypeError(
        "`schedule` given as a dict must be the serialized config of a "
        "tfkd.prune.PruningSchedule (keras.saving.serialize_keras_object(schedule)). "
        f"Received: schedule={config!r:.200}."
    )
