"""How a stage distils: the loss (`method`, `method_arguments`), in-step augmentation, mixing.

The checks here import no Keras, so that `tfkd check` lists these keys' errors in well
under a second: `METHODS` spells out each loss class's keyword arguments, and a test
holds it equal to the classes' signatures. Values (a negative weight, say) are checked
by the loss class itself, which the pipeline builds before any stage runs.
"""

import numpy as np

from tfkd import _checks
from tfkd.pipeline._reader import _describe, _matches
from tfkd.pipeline.data import UNLABELED
from tfkd.pipeline.stage import check_positive, check_range, invalid_argument

_LAYER = str | None
# method: (class in tfkd.distill, {keyword argument: type}, required arguments). The
# stage's own `temperature` goes to the classes that take one; it is no method argument.
METHODS = {
    "kd": (
        "LogitsDistillation",
        {
            "from_logits": bool,
            "standardize": bool,
            "teacher_layer_name": _LAYER,
            "student_layer_name": _LAYER,
        },
        (),
    ),
    "decoupled": (
        "DecoupledDistillation",
        {
            "target_weight": float,
            "non_target_weight": float,
            "teacher_layer_name": _LAYER,
            "student_layer_name": _LAYER,
        },
        (),
    ),
    "dist": (
        "CorrelationDistillation",
        {
            "inter_class_weight": float,
            "intra_class_weight": float,
            "teacher_layer_name": _LAYER,
            "student_layer_name": _LAYER,
        },
        (),
    ),
    "feature": (
        "FeatureDistillation",
        {"teacher_layer_name": str, "student_layer_name": str, "projection": str},
        ("teacher_layer_name", "student_layer_name"),
    ),
    "attention": (
        "AttentionTransfer",
        {"teacher_layer_name": str, "student_layer_name": str, "exponent": float},
        ("teacher_layer_name", "student_layer_name"),
    ),
    "relational": (
        "RelationalDistillation",
        {
            "distance_weight": float,
            "angle_weight": float,
            "teacher_layer_name": _LAYER,
            "student_layer_name": _LAYER,
        },
        (),
    ),
}
_TAKES_TEMPERATURE = ("kd", "decoupled", "dist")
# `method_arguments` renamed to follow keras.distillation, {old: current}: the old names
# are still read (configs hold them). A test holds it equal to `tfkd.distill.losses.RENAMED`.
RENAMED_ARGUMENTS = {"teacher_layer": "teacher_layer_name", "student_layer": "student_layer_name"}
# The distillation keys of a training stage and their defaults.
DEFAULTS = {
    "method": "kd",
    "method_arguments": None,
    "augmentation": None,
    "mixup": None,
    "cutmix": None,
    "propagation": None,
}
# `propagation: {...}`: its keys, their types and defaults (`true` takes every default).
PROPAGATION_KEYS = {"weight": float, "neighbours": int, "alpha": float}
PROPAGATION_DEFAULTS = {"weight": 0.5, "neighbours": 10, "alpha": 0.9}
AUGMENTATION_KEYS = {"flip": bool, "shift": int, "rotation": float, "zoom": float}
# `{name: (whether a value is in range, what is accepted)}` of the keys with a range.
AUGMENTATION_RANGES = {
    "shift": (lambda value: value >= 0, "a number of pixels >= 0"),
    "rotation": (
        lambda value: 0 <= value <= 0.5,
        "a fraction of a turn in [0, 0.5] (0.5: any angle)",
    ),
    "zoom": (lambda value: 0 <= value <= 0.9, "a fraction in [0, 0.9]"),
}
PROPAGATION_RANGES = {
    "weight": (lambda value: 0 < value <= 1, "in (0, 1]"),
    "neighbours": (lambda value: value >= 1, ">= 1"),
    "alpha": (lambda value: 0 < value < 1, "in (0, 1)"),
}


def current_names(method_arguments):
    """`method_arguments` with deprecated names (`RENAMED_ARGUMENTS`) changed to their
    current ones; raises `invalid_argument` when a mapping holds both names."""
    if not isinstance(method_arguments, dict):
        return method_arguments
    both = [old for old, new in RENAMED_ARGUMENTS.items() if {old, new} <= set(method_arguments)]
    if both:
        raise invalid_argument(
            "method_arguments",
            f"`method_arguments` holds both {both[0]!r} (deprecated) and "
            f"{RENAMED_ARGUMENTS[both[0]]!r}. Received: method_arguments={method_arguments!r}. "
            f"Keep {RENAMED_ARGUMENTS[both[0]]!r} only.",
        )
    return {RENAMED_ARGUMENTS.get(name, name): value for name, value in method_arguments.items()}


def check_method(method, method_arguments):
    """Raises `invalid_argument` unless `method` is known and `method_arguments` are
    keyword arguments of its loss class, of the right types, the required ones given.
    One error lists every problem of `method_arguments`."""
    if not isinstance(method, str) or method not in METHODS:
        raise invalid_argument(
            "method",
            f"Unknown distillation method. Received: method={method!r}. Accepted: {list(METHODS)}",
            ValueError if isinstance(method, str) else TypeError,
        )
    if method_arguments is not None and not isinstance(method_arguments, dict):
        raise invalid_argument(
            "method_arguments",
            "`method_arguments` must be a mapping of keyword arguments of the method's loss. "
            f"Received: method_arguments={method_arguments!r}",
            TypeError,
        )
    class_name, accepted, required = METHODS[method]
    missing = [name for name in required if (method_arguments or {}).get(name) is None]
    if method_arguments is None and missing:
        # Blamed on `method`, so that a config check drops it and goes on to the other keys.
        raise invalid_argument(
            "method",
            f"method={method!r} compares a teacher layer with a student layer, so it needs "
            f"`method_arguments` with {missing}. Received: method={method!r}, "
            "method_arguments=None. Add `method_arguments: {teacher_layer_name: <teacher "
            "layer>, student_layer_name: <student layer>}`.",
        )
    problems = _argument_problems(method_arguments or {}, accepted, "method_arguments")
    if any(name not in accepted for name in method_arguments or {}):
        hint = (
            " (`temperature` is the stage's own key)" if "temperature" in method_arguments else ""
        )
        problems.append(f"{class_name} (method={method!r}) takes {sorted(accepted)}{hint}")
    if missing:
        problems.append(f"method={method!r} compares two named layers, so it needs {missing}")
    if problems:
        raise invalid_argument(
            "method_arguments",
            f"Bad `method_arguments`: {'; '.join(problems)}. Received: "
            f"method_arguments={method_arguments!r}",
        )


def check_augmentation(augmentation):
    """Raises `invalid_argument` unless `augmentation` is None or a mapping of
    `flip` (bool), `shift` (pixels, >= 0), `rotation` (a fraction of a turn, in [0, 0.5])
    and `zoom` (a fraction, in [0, 0.9]). One error lists every problem."""
    if augmentation is None:
        return
    if not isinstance(augmentation, dict):
        raise invalid_argument(
            "augmentation",
            f"`augmentation` must be a mapping with any of {list(AUGMENTATION_KEYS)}. "
            f"Received: augmentation={augmentation!r}",
            TypeError,
        )
    _check_mapping("augmentation", augmentation, AUGMENTATION_KEYS, AUGMENTATION_RANGES)


def check_propagation(propagation):
    """`propagation` as the settings it asks for (`PROPAGATION_DEFAULTS` filled in), or None
    for `None` and `false`; raises `invalid_argument` unless it is one of those, `true`, or a
    mapping of `weight` (in (0, 1]), `neighbours` (an integer >= 1) and `alpha` (in (0, 1)).
    One error lists every problem."""
    if propagation is None or propagation is False:
        return None
    if propagation is True:
        return dict(PROPAGATION_DEFAULTS)
    if not isinstance(propagation, dict):
        raise invalid_argument(
            "propagation",
            f"`propagation` must be true, false or a mapping with any of "
            f"{list(PROPAGATION_KEYS)}. Received: propagation={propagation!r}",
            TypeError,
        )
    _check_mapping("propagation", propagation, PROPAGATION_KEYS, PROPAGATION_RANGES)
    return {**PROPAGATION_DEFAULTS, **propagation}


def check_propagation_data(propagation, data):
    """Raises `invalid_argument` when `propagation` is set but every training label is
    known: there is nothing to spread the labels to."""
    if propagation is not None and not np.any(data.y_train == UNLABELED):
        raise invalid_argument(
            "propagation",
            "`propagation` spreads the known labels to the training examples without one, "
            f"and every one of the {len(data.y_train):,} training examples has a label. "
            f"Received: propagation={propagation!r}. Keep some labels only (`data: "
            "{labelled_per_class: N}`, or label examples `tfkd.distill.UNLABELED`), or "
            "remove `propagation`.",
        )
    examples = len(data.y_train)
    if propagation is not None and propagation["neighbours"] > examples - 1:
        raise invalid_argument(
            "propagation",
            "`propagation.neighbours` links each training example to that many others, so "
            f"it must be at most {examples - 1:,} (the {examples:,} training examples but "
            f"itself). Received: propagation={propagation!r}. Lower `neighbours`.",
        )


def with_propagated(outputs, propagated, weight, temperature, probabilities):
    """The cached teacher `outputs` (logits, or probabilities when `probabilities`) with
    their softened distribution at `temperature` replaced by its mixture with the
    `propagated` label distributions, `propagated` weighing `weight` (`softened_average`
    of the two): outputs in the same form, from which a loss at `temperature` reads
    exactly that mixture."""
    import keras

    from tfkd.distill import softened_average
    from tfkd.distill.losses import log_of_probabilities

    logits = log_of_probabilities(outputs) if probabilities else outputs
    # Logits whose softmax at `temperature` is `propagated`.
    labels = temperature * np.log(np.clip(propagated, 1e-30, None))
    joined = softened_average([logits, labels], [1.0 - weight, weight], temperature=temperature)
    # A loss reads a softmax teacher's outputs `p` as logits `log p`: `p ~ mixture^T`.
    mixed = keras.ops.softmax(joined) if probabilities else joined
    return keras.ops.convert_to_numpy(mixed)


def _check_mapping(argument, mapping, accepted, ranges):
    """Raises `invalid_argument` naming every problem of the mapping `argument`: names not
    in `accepted` (`{name: type}`), values of the wrong type, and values outside `ranges`
    (`{name: (whether a value is in range, what is accepted)}`)."""
    problems = _argument_problems(mapping, accepted, argument)
    if any(name not in accepted for name in mapping):
        problems.append(f"accepted: {list(accepted)}")
    for name, (within, what) in ranges.items():
        value = mapping.get(name)
        if name in mapping and _matches(value, accepted[name]) and not within(value):
            problems.append(f"`{argument}.{name}` must be {what}")
    if problems:
        raise invalid_argument(
            argument, f"Bad `{argument}`: {'; '.join(problems)}. Received: {argument}={mapping!r}"
        )


def _argument_problems(mapping, accepted, key):
    """What is wrong with the names and types of `mapping` (`{name: type}` in `accepted`)."""
    problems = []
    for name, value in mapping.items():
        if name not in accepted:
            problems.append(f"unknown `{key}.{name}`")
        elif not _matches(value, accepted[name]):
            problems.append(
                f"`{key}.{name}` must be {_describe(accepted[name])}, not "
                f"{value!r} ({type(value).__name__})"
            )
    return problems


def check_labelled_data(stage, data):
    """Raises `invalid_argument` (argument `data`) when `stage` trains on the labelled
    training examples alone and the data have none: it would train on nothing."""
    if np.any(data.y_train != UNLABELED):
        return
    raise invalid_argument(
        "data",
        f"Stage {stage.name!r} ({stage.kind}) trains on the labelled training examples, and "
        f"the data have none: all {len(data.y_train):,} training labels are {UNLABELED} "
        f"(unlabelled). Received: data {data.name!r}. Label some training examples, or "
        "distil from a teacher (distill, or `teacher:`), which reads every example.",
    )


def check_augmentation_data(augmentation, data):
    """Raises `invalid_argument` when `augmentation` is set but the inputs are not images,
    or shifts them by more than their height or width."""
    if augmentation is not None and data.x_train.ndim != 4:
        raise invalid_argument(
            "augmentation",
            "`augmentation` applies to images of shape (height, width, channels). Received: "
            f"augmentation={augmentation!r} for inputs of shape {data.input_shape}. "
            "Remove it for this data.",
        )
    side = min(data.input_shape[:2]) if augmentation is not None else None
    if augmentation is not None and (augmentation.get("shift") or 0) > side:
        raise invalid_argument(
            "augmentation",
            "`augmentation.shift` is in pixels, at most the images' height and width "
            f"({data.input_shape[0]}x{data.input_shape[1]}). Received: "
            f"augmentation={augmentation!r}. Shift by a few pixels, e.g. shift: 2.",
        )


def check_mixing_data(mixup, cutmix, data):
    """Raises `invalid_argument` when `cutmix` is set but the inputs are not images, or
    `mixup` is set and the inputs are integer ids (token ids of texts, say): a blend of two
    ids is no id."""
    if cutmix is not None and data.x_train.ndim != 4:
        raise invalid_argument(
            "cutmix",
            "`cutmix` pastes a box of one image into another, so it needs images of shape "
            f"(height, width, channels). Received: cutmix={cutmix!r} for inputs of shape "
            f"{data.input_shape}. Remove it for this data.",
        )
    integer = np.issubdtype(data.x_train.dtype, np.integer)
    if mixup is not None and integer and data.x_train.ndim <= 2:
        raise invalid_argument(
            "mixup",
            "`mixup` blends the values of two examples, and these inputs are integer ids "
            f"(dtype {data.x_train.dtype}, shape {data.input_shape}; token ids of texts, "
            f"say), whose blend is no id. Received: mixup={mixup!r}. Remove it for this data.",
        )


def check_mixing(mixup, cutmix):
    """Raises `invalid_argument` unless each of `mixup`, `cutmix` is None or an alpha > 0."""
    for argument, alpha in (("mixup", mixup), ("cutmix", cutmix)):
        if alpha is not None:
            check_positive(argument, alpha, float)
            check_range(argument, alpha, _checks.check_mixing_alpha)


def check_needs_teacher(stage, loss_defaults):
    """Raises unless the distillation keys that are set have a `teacher` to go with, and
    `temperature` something to soften. `loss_defaults`: the defaults of `temperature` and
    `student_loss_weight`, which are set when they differ from them."""
    if not stage.teacher:
        for argument, default in {**DEFAULTS, **loss_defaults}.items():
            if argument == "augmentation":  # without a teacher, it augments the labelled images
                continue
            value = getattr(stage, argument)
            if value != default:
                raise invalid_argument(
                    argument,
                    f"`{argument}` belongs to distillation, so it needs `teacher`. Received: "
                    f"{argument}={value!r}, teacher=None. Add `teacher: <an earlier stage>`, "
                    f"or remove `{argument}`.",
                )
        return
    softens = (
        stage.method in _TAKES_TEMPERATURE
        or isinstance(stage.teacher, list)
        or stage.propagation is not None
    )
    if not softens and stage.temperature != loss_defaults["temperature"]:
        raise invalid_argument(
            "temperature",
            f"method={stage.method!r} softens no logits with one teacher, so `temperature` "
            f"would change nothing. Received: temperature={stage.temperature!r}, "
            f"method={stage.method!r}, teacher={stage.teacher!r}. Remove `temperature`, or "
            f"use a method that reads it ({list(_TAKES_TEMPERATURE)}), several teachers "
            "(their average is taken at it) or `propagation`.",
        )


def mixes_online(stage):
    """Whether the stage changes each batch inside the training step (augmentation, mixup,
    CutMix): then the teacher must see that batch, so its outputs cannot be cached."""
    return bool(_enabled(stage.augmentation) or stage.mixup or stage.cutmix)


def teacher_runs_online(stage):
    """Whether the teacher runs at every step: mixing online, or a loss that reads a
    teacher layer (cached outputs hold the teacher's final output only)."""
    return (
        mixes_online(stage) or (stage.method_arguments or {}).get("teacher_layer_name") is not None
    )


def build_loss(stage):
    """The `tfkd.distill` loss of `stage.method`, with its arguments and temperature."""
    from tfkd import distill

    arguments = dict(stage.method_arguments or {})
    if stage.method in _TAKES_TEMPERATURE:
        arguments["temperature"] = stage.temperature
    return getattr(distill, METHODS[stage.method][0])(**arguments)


def build_augmentation(augmentation, input_shape, seed):
    """A `keras.Sequential` of the preprocessing layers `augmentation` asks for (each
    seeded from `seed`), or None when it asks for none."""
    names = _enabled(augmentation)
    if not names:
        return None
    import keras

    height, width = input_shape[0], input_shape[1]
    shift = augmentation.get("shift", 0)
    layers = {
        "flip": lambda: keras.layers.RandomFlip("horizontal", seed=seed),
        "shift": lambda: keras.layers.RandomTranslation(
            shift / height, shift / width, fill_mode="constant", seed=seed + 1
        ),
        "rotation": lambda: keras.layers.RandomRotation(
            augmentation["rotation"], fill_mode="constant", seed=seed + 2
        ),
        "zoom": lambda: keras.layers.RandomZoom(
            augmentation["zoom"], fill_mode="constant", seed=seed + 3
        ),
    }
    return keras.Sequential([layers[name]() for name in names], name="augmentation")


def _enabled(augmentation):
    """The augmentations a mapping switches on (`flip: false`, `shift: 0` are off)."""
    augmentation = augmentation or {}
    return [name for name in AUGMENTATION_KEYS if augmentation.get(name) not in (None, False, 0)]
