"""Argument checks of `Distiller`: each fails early, naming the argument and value."""

import re

import keras

from tfkd.distill.losses import DistillationLoss, LogitsDistillation, validate_temperature


def validate_model(argument, model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`{argument}` must be a Keras 3 model (keras.Model). Received: {argument} of type "
            f"{type(model).__module__}.{type(model).__name__}. A tf_keras (Keras 2) model must be "
            "rebuilt or re-saved with Keras 3."
        )


def resolve_losses(distillation_losses, temperature):
    if distillation_losses is None:
        if temperature is not None:
            validate_temperature(temperature)
        return [LogitsDistillation(temperature=1.0 if temperature is None else temperature)]
    if temperature is not None:
        raise ValueError(
            "Pass either `temperature` (for the default logits loss) or `distillation_losses`. "
            f"Received: temperature={temperature} and distillation_losses="
            f"{distillation_losses!r}. Set the temperature on LogitsDistillation instead."
        )
    losses = (
        list(distillation_losses)
        if isinstance(distillation_losses, (list, tuple))
        else [distillation_losses]
    )
    for loss in losses:
        if not isinstance(loss, DistillationLoss):
            raise TypeError(
                "Each distillation loss must be a tfkd.DistillationLoss. Received: "
                f"{loss!r} of type {type(loss).__name__}. Subclass DistillationLoss to add one."
            )
    if not losses:
        raise ValueError("`distillation_losses` is empty. Received: []. Pass at least one loss.")
    return losses


def resolve_loss_weights(weights, losses):
    if weights is None:
        return [1.0] * len(losses)
    weights = list(weights) if isinstance(weights, (list, tuple)) else [weights]
    if len(weights) != len(losses):
        raise ValueError(
            f"`distillation_loss_weights` needs one weight per loss ({len(losses)}). "
            f"Received: distillation_loss_weights={weights}."
        )
    for weight in weights:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ValueError(
                "Each distillation loss weight must be a number >= 0. Received: "
                f"distillation_loss_weights={weights}."
            )
    return [float(weight) for weight in weights]


def validate_student_loss_weight(weight):
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        raise ValueError(
            "`student_loss_weight` must be a number in [0, 1]. Received: "
            f"student_loss_weight={weight!r}. 0 trains on the teacher alone, 1 on labels alone."
        )
    return float(weight)


def build_loss(loss, teacher_taps, student_taps):
    teacher_shape = teacher_taps.shape(loss.teacher_layer)
    student_shape = student_taps.shape(loss.student_layer)
    if isinstance(loss, LogitsDistillation):
        check_logits(loss, teacher_taps, student_taps, teacher_shape, student_shape)
    if not loss.built:  # A loss restored from a `.keras` file comes built.
        loss.build(teacher_shape, student_shape)


def check_logits(loss, teacher_taps, student_taps, teacher_shape, student_shape):
    if tuple(teacher_shape[1:]) != tuple(student_shape[1:]):
        raise ValueError(
            "LogitsDistillation compares outputs of the same shape, but the teacher's "
            f"{teacher_taps.describe(loss.teacher_layer)} has shape {teacher_shape} and the "
            f"student's {student_taps.describe(loss.student_layer)} has shape {student_shape}. "
            "Both must predict the same classes."
        )
    for taps, layer in ((teacher_taps, loss.teacher_layer), (student_taps, loss.student_layer)):
        if loss.from_logits and taps.ends_in_softmax(layer):
            raise ValueError(
                f"The {taps.role}'s {taps.describe(layer)} applies a softmax, but "
                "LogitsDistillation has from_logits=True. Pass "
                "LogitsDistillation(from_logits=False), or remove the final softmax."
            )


def unique_log_keys(losses):
    keys, counts = [], {}
    for loss in losses:
        base = _snake(loss)
        # Keep a name the user chose; replace Keras's auto-numbered ones.
        base = base if re.fullmatch(rf"{base}(_\d+)?", loss.name) else loss.name
        counts[base] = counts.get(base, 0) + 1
        suffix = "" if counts[base] == 1 else f"_{counts[base] - 1}"
        keys.append(f"{base}{suffix}_loss")
    return keys


def _snake(loss):
    name = type(loss).__name__
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))
