"""Argument checks of `Distiller`: each fails early, naming the argument and value."""

import re
import warnings

import keras
import numpy as np

from tfkd._checks import is_number, shown
from tfkd.distill import schedules
from tfkd.distill._checks import tensor_shape, validate_weight
from tfkd.distill.losses import (
    DistillationLoss,
    LogitsDistillation,
    log_of_probabilities,
    logit_of_probability,
)


def validate_model(argument, model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`{argument}` must be a Keras 3 model (keras.Model). Received: {argument} of type "
            f"{type(model).__module__}.{type(model).__name__}. A tf_keras (Keras 2) model must be "
            "rebuilt or re-saved with Keras 3."
        )


def check_separate_models(teacher, student):
    """A student that shares variables with its teacher would be frozen with it."""
    frozen = {id(variable) for variable in teacher.variables}
    shared = sorted(variable.path for variable in student.variables if id(variable) in frozen)
    if teacher is student or shared:
        received = "the same model" if teacher is student else f"shared variables {shared[:5]}"
        raise ValueError(
            "`teacher` and `student` must be separate models: the teacher is frozen, so a "
            f"student that is the teacher, or shares its layers, trains nothing. Received: "
            f"teacher {teacher.name!r} and student {student.name!r}, {received}. Give the "
            "student its own copy, e.g. `keras.models.clone_model(teacher)` with the teacher's "
            "weights set on it."
        )


def resolve_losses(distillation_losses, temperature):
    if distillation_losses is None:
        return [LogitsDistillation() if temperature is None else LogitsDistillation(temperature)]
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
    for index, loss in enumerate(losses):
        if not isinstance(loss, DistillationLoss):
            received = "distillation_losses" + (f"[{index}]" if len(losses) > 1 else "")
            raise TypeError(
                "Each of `distillation_losses` must be a tfkd.DistillationLoss. Received: "
                f"{received}={shown(loss)} of type {type(loss).__name__}. Subclass "
                "DistillationLoss to add one."
            )
    if not losses:
        raise ValueError("`distillation_losses` is empty. Received: []. Pass at least one loss.")
    return losses


def resolve_loss_weights(weights, losses):
    """One weight per loss: numbers >= 0 or schedules of the step."""
    if weights is None:
        return [1.0] * len(losses)
    several = isinstance(weights, (list, tuple)) or getattr(weights, "ndim", 0) == 1
    weights = list(weights) if several else [weights]
    if len(weights) != len(losses):
        raise ValueError(
            f"`distillation_loss_weights` needs one weight per loss ({len(losses)}). "
            f"Received: distillation_loss_weights={weights}."
        )
    checked = [
        schedules.validate(f"distillation_loss_weights[{i}]", weight, validate_weight)
        for i, weight in enumerate(weights)
    ]
    return [weight if callable(weight) else float(weight) for weight in checked]


def validate_student_loss_weight(weight):
    weight = schedules.validate("student_loss_weight", weight, check_share)
    return weight if callable(weight) else float(weight)


def check_share(name, weight):
    if not is_number(weight) or not 0 <= weight <= 1:
        raise ValueError(
            f"`{name}` must be a number in [0, 1] or a schedule. Received: "
            f"{name}={shown(weight)}. 0 trains on the teacher alone, 1 on labels alone."
        )


def check_input_shapes(teacher_shapes, student_shapes):
    """Raises unless teacher and student take inputs of the same shapes (None matches any)."""
    if teacher_shapes is None or student_shapes is None:
        return
    same = len(teacher_shapes) == len(student_shapes) and all(
        len(t) == len(s) and all(a is None or b is None or a == b for a, b in zip(t, s))
        for t, s in zip(teacher_shapes, student_shapes)
    )
    if not same:
        raise ValueError(
            "The teacher and the student must take the same inputs, since each training "
            f"batch feeds both. Received: teacher input shapes {teacher_shapes}, student "
            f"input shapes {student_shapes} (per example). Give the student the teacher's "
            "input shape; a teacher that needs another size can resize inside (e.g. a "
            "keras.layers.Resizing layer first)."
        )


def build_loss(loss, teacher_taps, student_taps):
    """Checks `loss` against the models and builds it.

    Returns, for `(teacher, student)`, the function that turns the output `loss`
    reads into logits before it sees them (`None`: it is read as it is).
    """
    teacher_shape = teacher_taps.shape(loss.teacher_layer_name)
    student_shape = student_taps.shape(loss.student_layer_name)
    convert = (None, None)
    # A loss that reads logits compares class distributions (LogitsDistillation
    # with from_logits=False reads probabilities, with the same constraint).
    if loss.reads_logits or isinstance(loss, LogitsDistillation):
        check_logits(loss, teacher_taps, student_taps, teacher_shape, student_shape)
    if loss.reads_logits:
        convert = tuple(
            _to_logits(taps, layer, shape)
            for taps, layer, shape in (
                (teacher_taps, loss.teacher_layer_name, teacher_shape),
                (student_taps, loss.student_layer_name, student_shape),
            )
        )
    if not loss.built:  # A loss restored from a `.keras` file comes built.
        loss.build(teacher_shape, student_shape)
    return convert


def _to_logits(taps, layer, shape):
    """What turns the probabilities of a model that ends in a softmax, or in a sigmoid of
    one output (a binary classifier), into logits; None for logits."""
    activation = taps.activation(layer)
    if activation == "sigmoid":
        return logit_of_probability
    if activation == "softmax":
        warnings.warn(
            f"The {taps.role} {taps.model.name!r} ends in a softmax; tfkd distils "
            "the log of its probabilities, which equal its logits up to a constant "
            "per example, so the softened distributions are the same.",
            stacklevel=5,
        )
        return log_of_probabilities
    return None


def _check_sigmoid(loss, taps, layer, shape):
    """Refuses independent sigmoids over several outputs (a multi-label model): a
    softmax over them, which every logits loss takes, is not their distribution."""
    if taps.activation(layer) == "sigmoid" and shape[-1] != 1:
        raise ValueError(
            f"{type(loss).__name__} compares softmax distributions over classes, but the "
            f"{taps.role}'s {taps.describe(layer)} ends in a sigmoid over {shape[-1]} "
            f"outputs: independent probabilities (a multi-label model), which a softmax "
            f"would misread. Received: a {taps.role} whose output of shape {tuple(shape)} "
            "ends in a sigmoid. For one class per example, end both models in logits "
            "(or a softmax); for a binary task, in one output."
        )


def check_logits(loss, teacher_taps, student_taps, teacher_shape, student_shape):
    if tuple(teacher_shape[1:]) != tuple(student_shape[1:]):
        raise ValueError(
            f"{type(loss).__name__} compares outputs of the same shape, but the teacher's "
            f"{teacher_taps.describe(loss.teacher_layer_name)} has shape {teacher_shape} and "
            f"the student's {student_taps.describe(loss.student_layer_name)} has shape "
            f"{student_shape}. "
            "Both must predict the same classes."
        )
    sides = (
        (teacher_taps, loss.teacher_layer_name, teacher_shape),
        (student_taps, loss.student_layer_name, student_shape),
    )
    for taps, layer, shape in sides:
        _check_sigmoid(loss, taps, layer, shape)
    if not isinstance(loss, LogitsDistillation) or loss.from_logits:
        return
    for taps, layer, _ in sides:
        if taps.activation(layer) not in ("softmax", "sigmoid", "unknown"):
            raise ValueError(
                f"LogitsDistillation(from_logits=False) reads both outputs as probabilities, "
                f"but the {taps.role}'s {taps.describe(layer)} applies no softmax: its logits "
                "would be clipped to [1e-7, 1] and training ruined. Received: "
                f"from_logits=False and a {taps.role} that outputs logits. Use the default "
                "from_logits=True: tfkd turns the output of a model that ends in a softmax "
                "into log-probabilities by itself, on each side separately."
            )


def unique_log_keys(losses):
    keys, counts = [], {}
    for loss in losses:
        base = _snake(loss)
        # Keep a name the user chose; replace Keras's auto-numbered ones.
        base = base if re.fullmatch(rf"{base}(_\d+)?", loss.name) else loss.name
        counts[base] = counts.get(base, 0) + 1
        suffix = "" if counts[base] == 1 else f"_{counts[base] - 1}"
        key = f"{base}{suffix}_loss"
        if key == "student_loss" or base.startswith("tfkd_label_errors"):
            # Before, the task loss's log entry (or the label guard's) was overwritten.
            raise ValueError(
                f"A distillation loss's name gives its log entry, and {loss.name!r} gives "
                f"{key!r}, which the Distiller logs already (the task loss, or its label "
                f"checks). Received: name={loss.name!r}. Pass another name."
            )
        keys.append(key)
    return keys


def _snake(loss):
    name = type(loss).__name__
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))


def validate_augmentation(augmentation):
    if augmentation is not None and not isinstance(augmentation, keras.layers.Layer):
        raise TypeError(
            "`augmentation` must be a Keras layer applied to each training batch, e.g. "
            "keras.Sequential([keras.layers.RandomFlip('horizontal'), "
            "keras.layers.RandomTranslation(0.1, 0.1)]), or None. Received: augmentation "
            f"of type {type(augmentation).__name__}."
        )
    return augmentation


def check_augmentable(inputs, cached_teacher_outputs, mixes=False):
    """Raises unless a batch can be augmented in the step: one tensor, no cached outputs,
    and, when it `mixes`, no integer inputs of rank 2 or less (token or category ids, which
    a blend makes meaningless; integer images, of rank 3 or 4, are blended as floats)."""
    if cached_teacher_outputs is not None:
        raise ValueError(
            "The Distiller augments or mixes each batch (augmentation, mixup or cutmix), so "
            "the teacher must see the augmented batch, but the inputs carry cached teacher "
            "outputs (with_teacher_outputs), which belong to the un-augmented images. "
            "Received: cached teacher outputs with in-step augmentation. Pass the plain "
            "inputs (the teacher then runs at every step), or drop the augmentation."
        )
    if isinstance(inputs, (dict, list, tuple)):
        raise ValueError(
            "In-step augmentation and mixing apply to a single input tensor (a batch of "
            f"images). Received: inputs of type {type(inputs).__name__}. Augment such "
            "inputs in the input pipeline instead, with the teacher run online."
        )
    dtype = keras.backend.standardize_dtype(inputs.dtype)
    if mixes and len(inputs.shape) <= 2 and not keras.backend.is_float_dtype(dtype):
        raise ValueError(
            "mixup and CutMix blend the values of two examples, and these inputs are "
            "integer ids (token or category ids, not pixels): a blend of two ids is no id. "
            f"Received: inputs of shape {tuple(inputs.shape)} and dtype {dtype} with "
            "mixup or cutmix. Remove `mixup` and `cutmix` for such inputs."
        )


def check_cached_keys(teacher_outputs, keys):
    """Refuses cached teacher outputs that lack one the distillation losses read."""
    missing = sorted(set(keys) - set(teacher_outputs))
    if missing:
        raise ValueError(
            f"The cached teacher outputs lack {missing}, which the distillation losses read "
            f"(`output` is the teacher's output, `layer:<name>` a layer's). Received: cached "
            f"outputs {sorted(teacher_outputs)}. Compute them with this Distiller's "
            "predict_teacher(x), which reads every output its losses need."
        )


def check_cached_probabilities(teacher_outputs, keys):
    """Refuses cached outputs under `keys` (a teacher's that ends in a softmax or a
    sigmoid, which the Distiller reads as probabilities) that hold numbers outside
    [0, 1]: logits or log-probabilities, which it would clip into a flat distribution."""
    for key in keys:
        values = teacher_outputs[key]
        if not isinstance(values, np.ndarray) or values.size == 0:
            continue
        low, high = float(np.min(values)), float(np.max(values))
        if low < 0.0 or high > 1.0 + 1e-6:
            raise ValueError(
                f"The teacher ends in a softmax (or a sigmoid), so the Distiller reads its "
                f"cached outputs {key!r} as probabilities, as the teacher gives them, and "
                f"these hold values in [{low:.4g}, {high:.4g}]: logits or log-probabilities, "
                "which would be clipped into a flat distribution. Received: cached outputs "
                f"{key!r} outside [0, 1]. Pass probabilities (e.g. propagate_labels' targets "
                "as they are, not their log)."
            )


def check_cached_outputs(x, teacher_outputs):
    """`teacher_outputs`: a non-empty dict of arrays with one row per example of `x`."""
    if x is None:
        raise TypeError("`x` must be the student's inputs. Received: x=None.")
    if not isinstance(teacher_outputs, dict):
        raise TypeError(
            "`teacher_outputs` must be the dict returned by Distiller.predict_teacher. "
            f"Received: teacher_outputs={shown(teacher_outputs)} of type "
            f"{type(teacher_outputs).__name__}."
        )
    if not teacher_outputs:
        raise ValueError(
            "`teacher_outputs` is empty. Received: teacher_outputs={}. Pass what "
            "Distiller.predict_teacher(x) returned."
        )
    count = rows(x)
    for key, value in teacher_outputs.items():
        shape = tensor_shape(f"teacher_outputs[{key!r}]", value)
        if count is not None and shape is not None and shape[0] not in (None, count):
            raise ValueError(
                f"`teacher_outputs` must hold one row per example of `x` ({count}). Received: "
                f"teacher_outputs[{key!r}] of shape {shape}. Compute them with "
                "Distiller.predict_teacher(x) on the same inputs."
            )


def rows(x):
    """The number of examples in arrays `x` (or a dict or list of them), else None."""
    first = next(iter(x.values()), None) if isinstance(x, dict) else x
    if isinstance(first, (list, tuple)) and first and hasattr(first[0], "shape"):
        first = first[0]
    shape = getattr(first, "shape", None)
    try:
        return int(shape[0]) if shape is not None and len(shape) and shape[0] is not None else None
    except (TypeError, ValueError):
        return None


def shared_temperature(losses):
    """The one constant temperature of the losses that read the teacher's output logits."""
    temperatures = {
        getattr(loss, "temperature", None)
        for loss in losses
        if loss.reads_logits and loss.teacher_layer_name is None
    }
    if not temperatures:
        return 1.0
    if len(temperatures) > 1 or callable(next(iter(temperatures))):
        raise ValueError(
            "A list of teachers is averaged at the temperature of the logits losses, so they "
            "must share one constant temperature. Received: temperatures "
            f"{sorted(map(repr, temperatures))}. Build the ensemble yourself with "
            "tfkd.distill.teacher_ensemble(teachers, temperature=...) and pass it as teacher."
        )
    return next(iter(temperatures))
