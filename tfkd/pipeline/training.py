"""The stages that train: train (labels), distill and quantize_aware (prune: `pruning.py`)."""

import inspect
import numbers

import numpy as np

from tfkd import _checks, _hashing
from tfkd.pipeline import _distillation, _fit, architectures
from tfkd.pipeline.data import UNLABELED
from tfkd.pipeline.stage import (
    KerasModel,
    Stage,
    check_positive,
    check_range,
    invalid_argument,
    refuse_tflite_input,
    register_stage,
)

# Keras, tfkd.distill, tfkd.quantize and TensorFlow are imported inside `run` and the
# helpers it calls: reading and checking a config needs only the constructors.


# The arguments the training stages share, declared once: `training_arguments` adds them
# to each stage's signature (which configs are checked against, and `get_config` and the
# fingerprints read), and `_Training.__init__` checks them.
TRAINING_ARGUMENTS = {
    "epochs": int,
    "teacher": str | list | None,
    "learning_rate": float,
    "batch_size": int,
    "temperature": float,
    "student_loss_weight": float,
    "method": str,
    "method_arguments": dict | None,
    "augmentation": dict | None,
    "mixup": float | None,
    "cutmix": float | None,
    "propagation": dict | bool | None,
}
_LOSS_DEFAULTS = {"temperature": 1.0, "student_loss_weight": 0.1}
_DEFAULTS = {
    "teacher": None,
    "batch_size": 128,
    **_LOSS_DEFAULTS,
    **_distillation.DEFAULTS,
}


def training_arguments(epochs, learning_rate, only=None):
    """Class decorator of a training stage: its constructor also takes the arguments of
    `TRAINING_ARGUMENTS` (or those named in `only`), keyword-only, with this stage's
    default `epochs` and `learning_rate`. The constructor itself takes them as
    `**kwargs` and hands them to `_Training.__init__`."""

    def decorate(cls):
        if "__init__" not in cls.__dict__:  # its own, so that the parent's keeps its signature

            def __init__(self, **kwargs):
                super(cls, self).__init__(**kwargs)

            cls.__init__ = __init__
        signature = inspect.signature(cls.__init__)
        own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
        rest = [p for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD]
        defaults = {**_DEFAULTS, "epochs": epochs, "learning_rate": learning_rate}
        taken = {p.name for p in own}
        shared = [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=defaults[name], annotation=annotation
            )
            for name, annotation in TRAINING_ARGUMENTS.items()
            if name not in taken and (only is None or name in only)
        ]
        cls.__init__.__signature__ = signature.replace(parameters=own + shared + rest)
        return cls

    return decorate


class _Training(Stage):
    """Arguments and training loop shared by the stages that train (with or without a teacher).

    Subclasses declare the shared arguments with `training_arguments`; their values are
    read from the stage's recorded config, where the signature put them, with defaults.
    """

    needs_input = True
    # Whether the stage compresses the model it trains (prune, cluster, QAT): it then
    # trains the layers the incoming model holds frozen too (`train`).
    compresses = False

    def __init__(self, **kwargs):
        for name in TRAINING_ARGUMENTS:
            kwargs.pop(name, None)
        super().__init__(**kwargs)
        values = {name: self._config.get(name, _DEFAULTS.get(name)) for name in TRAINING_ARGUMENTS}
        epochs, learning_rate, batch_size = (
            values["epochs"],
            values["learning_rate"],
            values["batch_size"],
        )
        teacher, temperature = values["teacher"], values["temperature"]
        student_loss_weight = values["student_loss_weight"]
        method = values["method"]
        method_arguments = _distillation.current_names(values["method_arguments"])
        augmentation, mixup, cutmix = values["augmentation"], values["mixup"], values["cutmix"]
        check_positive("epochs", epochs, int, allow_zero=True)
        check_positive("learning_rate", learning_rate, float)
        check_positive("batch_size", batch_size, int)
        check_positive("temperature", temperature, float)
        check_range("temperature", temperature, _checks.check_temperature)
        valid = isinstance(student_loss_weight, numbers.Real) and not isinstance(
            student_loss_weight, bool
        )
        if not valid or not 0.0 <= student_loss_weight <= 1.0:
            raise invalid_argument(
                "student_loss_weight",
                "`student_loss_weight` must be a number in [0, 1]. "
                f"Received: student_loss_weight={student_loss_weight!r}",
                ValueError if valid else TypeError,
            )
        _check_teacher(teacher)
        _distillation.check_method(method, method_arguments)
        _distillation.check_augmentation(augmentation)
        _distillation.check_mixing(mixup, cutmix)
        propagation = _distillation.check_propagation(values["propagation"])
        self.epochs, self.learning_rate, self.batch_size = epochs, learning_rate, batch_size
        self.teacher, self.temperature = teacher, temperature
        self.student_loss_weight = student_loss_weight
        self.method, self.method_arguments = method, method_arguments
        self.augmentation, self.mixup, self.cutmix = augmentation, mixup, cutmix
        self.propagation = propagation
        _distillation.check_needs_teacher(self, _LOSS_DEFAULTS)
        if propagation is not None and _distillation.teacher_runs_online(self):
            online = next(
                (a for a in ("augmentation", "mixup", "cutmix") if getattr(self, a)),
                "method_arguments",
            )
            raise invalid_argument(
                "propagation",
                "`propagation` mixes labels into the teacher's outputs cached before training, "
                f"and `{online}` runs the teacher at every step instead. Received: "
                f"propagation={values['propagation']!r}, {online}={getattr(self, online)!r}. "
                "Use one of the two.",
            )
        if isinstance(teacher, list) and (method_arguments or {}).get("teacher_layer_name"):
            raise invalid_argument(
                "teacher",
                "Several teachers are joined into one ensemble, which has no layer "
                f"{method_arguments['teacher_layer_name']!r} to read. Received: "
                f"teacher={teacher!r} with method_arguments={method_arguments!r}. Use one "
                "teacher for a method "
                "that reads a teacher layer.",
            )

        if isinstance(teacher, list) and (method_arguments or {}).get("from_logits") is False:
            raise invalid_argument(
                "method_arguments",
                "Several teachers are joined into one ensemble whose output is the logits of "
                "their softened average (a final softmax of a teacher is undone), so the "
                "loss must read logits. Received: "
                f"teacher={teacher!r} with method_arguments={method_arguments!r}. Remove "
                "`from_logits: false`.",
            )

    def references(self):
        return list(_teacher_names(self.teacher))

    def fingerprint(self):
        """The config, plus the contents of a model file or folder given as `{"path": ...}`
        or `{"preset": ...}`, or of an application's `weights` file."""
        fingerprint = self.get_config()
        for argument in ("model", "student"):
            spec = fingerprint.get(argument)
            for kind in ("path", "preset"):
                if isinstance(spec, dict) and kind in spec:
                    fingerprint[f"{argument}_sha256"] = _hashing.path_sha256(spec[kind])
            weights = spec.get("weights") if isinstance(spec, dict) else None
            if isinstance(weights, str) and weights != "imagenet":
                fingerprint[f"{argument}_weights_sha256"] = _hashing.path_sha256(weights)
        # The distillation keys at their defaults are left out, so that runs made before
        # these keys existed are reused.
        for key, default in _distillation.DEFAULTS.items():
            if fingerprint.get(key, default) == default:
                fingerprint.pop(key, None)
        return fingerprint

    def _check_input_tflite(self, export):
        refuse_tflite_input(self)

    def _check_reference_tflite(self, name, export):
        raise invalid_argument(
            "teacher",
            f"Stage {self.name!r} ({self.kind}) distils from Keras models, and its teacher "
            f"{name!r} gives a .tflite file. Received: teacher={self.teacher!r}. Name the "
            "stage that returns the Keras model it was exported from.",
        )

    def _check_layer_names(self, build, incoming, specs):
        # A single teacher's layer; an ensemble's are named "<teacher>_logits" by tfkd.
        arguments = self.method_arguments or {}
        sides = {
            "teacher": specs.get(self.teacher) if isinstance(self.teacher, str) else None,
            "student": self._student_spec(incoming),
        }
        for side, spec in sides.items():
            layer = arguments.get(f"{side}_layer_name")
            if layer is None or not _keras_spec(spec):
                continue
            names = [each.name for each in build(spec).layers]
            if layer not in names:
                raise invalid_argument(
                    "method_arguments",
                    f"The {side} of stage {self.name!r} has no layer named {layer!r}. "
                    f"Received: method_arguments={self.method_arguments!r}. Its layers: "
                    f"{names}.",
                )
        known = [spec for spec in sides.values() if _keras_spec(spec)]
        if len(known) == 2 and any(arguments.get(f"{side}_layer_name") for side in sides):
            self._check_layer_shapes(build(sides["teacher"]), build(sides["student"]))
        if self.propagation is not None and _keras_spec(sides["teacher"]):
            from tfkd import _graph

            try:  # where propagation reads the teacher's features
                _graph.head_input_model(build(sides["teacher"]))
            except ValueError as error:  # before, refused after the stages before it
                raise invalid_argument(
                    "propagation",
                    f"`propagation` reads the features of teacher {self.teacher!r}: {error}",
                ) from None

    def _check_layer_shapes(self, teacher, student):
        """The loss made against untrained builds of the two models, which checks what its
        layers' shapes allow (a projection on the last axis only, an attention map's
        size): before, checked when the stage ran, after the stages before it."""
        from tfkd.distill.distiller import Distiller  # the class: a test may spy on the name

        try:
            Distiller(teacher, student, distillation_losses=_distillation.build_loss(self))
        except ValueError as error:
            raise invalid_argument("method_arguments", str(error)) from None

    def _student_spec(self, incoming):
        """The spec of the model this stage trains."""
        return incoming

    def _check_before_run(self, data):
        """Builds the distillation loss (its class checks the values of `method_arguments`)
        and checks that in-step augmentation and mixing get inputs they apply to, before
        any stage runs."""
        _distillation.check_augmentation_data(self.augmentation, data)
        _distillation.check_mixing_data(self.mixup, self.cutmix, data)
        _distillation.check_propagation_data(self.propagation, data)
        if not self.teacher:
            if self.epochs:  # no epoch reads no example (a one-shot prune or cluster)
                _distillation.check_labelled_data(self, data)
            return
        try:
            _distillation.build_loss(self)
        except (ValueError, TypeError) as error:
            raise invalid_argument("method_arguments", str(error), type(error)) from None

    def _training_examples(self, context):
        """How many examples an epoch covers (without augmented copies): every training
        image with a teacher, the labelled ones only without."""
        y_train = context.data.y_train
        return len(y_train) if self.teacher else int(np.sum(y_train != UNLABELED))

    def train(self, model, context, augmented_copies=0):
        """Trains `model` in place: distilled from `teacher` when given, else on labels.

        A compression stage (`compresses`) trains every layer but frozen BatchNormalization
        layers (`_fit.train_every_layer`); `train` and `distill` leave frozen layers frozen.
        Without a teacher it trains on the labelled examples only (each batch
        augmented in the step with `augmentation`); with one, on every training
        image, the hidden labels passed on as `UNLABELED` (the Distiller's task loss
        skips them). With `augmented_copies`, it also trains on that many fixed,
        shifted and flipped copies of those images.
        """
        from tfkd import _graph

        epochs = context.epochs(self.epochs)
        if epochs == 0:
            return {"epochs": 0}
        x, y = self._training_data(context, augmented_copies)
        unfrozen = _fit.train_every_layer(model) if self.compresses else 0
        student, propagation = model, None
        if self.teacher:
            model, x, propagation = self._distiller(model, context, x, augmented_copies)
        else:
            augmentation = self._augmentation(context)
            model = _graph.behind_augmentation(model, augmentation, context.data.input_shape)
        from_logits = not _graph.ends_in_softmax(student)
        _fit.compile_with_cosine(
            context, model, self.learning_rate, epochs, self.batch_size, len(y), from_logits
        )
        history = context.fit(model, x, y, epochs=epochs, batch_size=self.batch_size)
        _fit.recompute_moving_statistics(student, context.data.x_train, seed=context.seed)
        details = _fit.history_details(history, epochs)
        details["train_examples"] = len(y)
        details["labelled_examples"] = int(np.sum(y != UNLABELED))
        if propagation:
            details["propagation"] = propagation
            details["notes"] = [_propagation_note(propagation)]
        if unfrozen:
            note = f"trained {unfrozen} layers the incoming model held frozen"
            details.setdefault("notes", []).append(note)
            context.log(note)
        return details

    def _training_data(self, context, augmented_copies):
        data = context.data
        x, y = (data.x_train, data.y_train) if self.teacher else data.labelled()
        if augmented_copies:
            x_more, y_more = data.augmented_copies(augmented_copies, context.seed)
            if not self.teacher:
                labelled = y_more != UNLABELED
                x_more, y_more = x_more[labelled], y_more[labelled]
            x, y = np.concatenate([x, x_more]), np.concatenate([y, y_more])
        return x, y

    def _distiller(self, student, context, x, augmented_copies):
        """The `Distiller` that trains `student`; `x`, packed with the cached teacher
        logits, or as it is when the teacher runs at every step; and what `propagation`
        did (a dict for the stage's details), or None."""
        from tfkd.distill import Distiller, teacher_ensemble, with_teacher_outputs

        names = _teacher_names(self.teacher)
        teachers = []
        for name in names:
            teacher = context.model(name)
            if not isinstance(teacher, KerasModel):
                raise TypeError(
                    f"`teacher` must name stages that return a Keras model. Received: "
                    f"teacher={self.teacher!r}, {name!r} a {type(teacher).__name__}"
                )
            teachers.append(teacher)
        if len(teachers) > 1:
            teachers = [_named(teacher, name) for teacher, name in zip(teachers, names)]
        distiller = Distiller(
            teacher=teachers[0]
            if len(teachers) == 1
            else teacher_ensemble(teachers, temperature=self.temperature),
            student=student,
            distillation_losses=_distillation.build_loss(self),
            student_loss_weight=self.student_loss_weight,
            **self._mixing(context),
        )
        if _distillation.teacher_runs_online(self):
            return distiller, x, None
        outputs, propagation = [self._cached_outputs(context, names)], None
        if self.propagation is not None:
            mixed, propagation = self._propagated(context, names, teachers, outputs[0])
            outputs = [mixed]
        if augmented_copies:
            key = f"augmented{augmented_copies}-seed{context.seed}"
            copies = x[len(context.data.x_train) :]
            outputs.append(self._cached_outputs(context, names, copies, key))
        packed = with_teacher_outputs(x, {"output": np.concatenate(outputs)})
        return distiller, packed, propagation

    def _cached_outputs(self, context, names, inputs=None, key="train"):
        """The teacher's logits on `inputs`, each teacher's computed once per run; several
        teachers' joined as `teacher_ensemble` joins them, at the stage's temperature."""
        import keras

        from tfkd import _graph
        from tfkd.distill import softened_average
        from tfkd.distill.losses import log_of_probabilities

        logits = [context.teacher_outputs(name, inputs, key)["output"] for name in names]
        if len(logits) == 1:
            return logits[0]
        logits = [
            log_of_probabilities(outputs)
            if _graph.ends_in_softmax(context.model(name))
            else outputs
            for outputs, name in zip(logits, names)
        ]
        weights = [1.0 / len(logits)] * len(logits)
        joined = softened_average(logits, weights, temperature=self.temperature)
        return keras.ops.convert_to_numpy(joined)

    def _propagated(self, context, names, teachers, outputs):
        """The cached `outputs` mixed with the labels propagated along a graph of the first
        teacher's features (`propagation`), in the same form (logits, or probabilities
        for one teacher that ends in a softmax); and a dict of what was done: the
        settings, how many `examples` had no label, on what share of them the
        propagated labels' top class is the teacher's (`teacher_agreement`), and what
        share of the known labels propagation from the other folds gets right
        (`held_out_accuracy`; None with fewer than 2 labelled examples)."""
        from tfkd import _graph

        settings = self.propagation
        try:
            propagated, held_out = context.propagated_labels(
                names[0], neighbours=settings["neighbours"], alpha=settings["alpha"]
            )
        except ValueError as error:  # no Dense layer to read features at, too few examples
            raise invalid_argument(
                "propagation",
                f"`propagation` reads the features of teacher {names[0]!r}: {error}",
            ) from None
        labels = context.data.y_train
        unlabelled, checked = labels == UNLABELED, held_out != UNLABELED
        agree = np.mean(propagated[unlabelled].argmax(-1) == outputs[unlabelled].argmax(-1))
        done = dict(
            settings,
            examples=int(unlabelled.sum()),
            teacher_agreement=round(float(agree), 4),
            held_out_accuracy=round(float(np.mean(held_out[checked] == labels[checked])), 4)
            if checked.any()
            else None,
        )
        context.log(_propagation_note(done))
        probabilities = len(teachers) == 1 and bool(_graph.ends_in_softmax(teachers[0]))
        mixed = _distillation.with_propagated(
            outputs, propagated, settings["weight"], self.temperature, probabilities
        )
        return mixed, done

    def _augmentation(self, context):
        """The Keras layers `augmentation` asks for, or None."""
        return _distillation.build_augmentation(
            self.augmentation, context.data.input_shape, context.seed
        )

    def _mixing(self, context):
        """The Distiller's `augmentation`, `mixup` and `cutmix` arguments that are set."""
        arguments = {
            "augmentation": self._augmentation(context),
            "mixup": self.mixup,
            "cutmix": self.cutmix,
        }
        return {name: value for name, value in arguments.items() if value is not None}


class _NewModelTraining(_Training):
    """A training stage that can build its own model from a spec (`new_model_argument`)."""

    new_model_argument = None

    def _check_new_model(self, spec, augmented_copies):
        if spec is not None:
            architectures.check_spec(spec, self.new_model_argument)
        check_positive("augmented_copies", augmented_copies, int, allow_zero=True)
        if augmented_copies and self.propagation is not None:
            raise invalid_argument(
                "augmented_copies",
                "`augmented_copies` adds copies that have no place in the graph `propagation` "
                f"spreads labels along. Received: augmented_copies={augmented_copies!r}, "
                f"propagation={self._config.get('propagation')!r}. Use one of the two.",
            )
        if augmented_copies and _distillation.mixes_online(self):
            argument = next(a for a in ("augmentation", "mixup", "cutmix") if getattr(self, a))
            raise invalid_argument(
                argument,
                f"`{argument}` changes every batch inside the training step, and "
                "`augmented_copies` adds fixed copies the teacher labels once: use one of the "
                f"two. Received: {argument}={getattr(self, argument)!r}, "
                f"augmented_copies={augmented_copies!r}",
            )
        self.augmented_copies = augmented_copies
        return spec

    def _check_before_run(self, data):
        super()._check_before_run(data)
        argument = self.new_model_argument
        architectures.check_buildable(getattr(self, argument), data, argument)
        if self.augmented_copies and data.x_train.ndim != 4:
            raise invalid_argument(
                "augmented_copies",
                "`augmented_copies` adds shifted and flipped copies of images of shape "
                f"(height, width, channels). Received: augmented_copies={self.augmented_copies!r}"
                f" for inputs of shape {data.input_shape}. Remove it for this data.",
            )

    def takes_input(self):
        return getattr(self, self.new_model_argument) is None

    def _student_spec(self, incoming):
        spec = getattr(self, self.new_model_argument)
        return incoming if spec is None else spec

    def _output_spec(self, incoming):
        spec = getattr(self, self.new_model_argument)
        return architectures.trained(incoming) if spec is None else spec

    def run(self, model, context):
        spec = getattr(self, self.new_model_argument)
        model = _new_or_copy(spec, model, context, self.new_model_argument)
        return model, self.train(model, context, self.augmented_copies)


@register_stage("train")
@training_arguments(
    epochs=8, learning_rate=2e-3, only=("epochs", "learning_rate", "batch_size", "augmentation")
)
class Train(_NewModelTraining):
    """Trains a model on the labels alone: a new one from `model`, or the incoming one.

    It trains on the labelled training examples only: all of them, or, with
    `data: {labelled_per_class: N}`, the `N` per class the pipeline kept.

    Args:
        model: `{"architecture": "cnn", ...}`, `{"path": "file.keras"}`,
            `{"application": "MobileNetV3Small", ...}` (any keras.applications model,
            see `tfkd.pipeline.architectures.application`), or from Python a
            Sequential or functional Keras model: a copy of it trains, from
            its current weights (the model itself is not changed). `None` trains a
            copy of the incoming model. Defaults to `None`.
        epochs: training epochs. Defaults to `8`.
        learning_rate: Adam's initial learning rate, decayed to 0 on a cosine.
            Defaults to `2e-3`.
        batch_size: Defaults to `128`.
        augmented_copies: train on that many fixed, shifted and flipped copies of
            the training images too, with their labels (see `Distill`). Defaults to `0`.
        augmentation: random changes applied to each batch in the training step, as
            in `Distill` (`{flip: true, shift: 2, rotation: 0.05, zoom: 0.1}`); the
            model trained does not contain them. Images only; not with
            `augmented_copies`. Defaults to `None`.
        **kwargs: `name`, `from_stage` (see `Stage`).
    """

    new_model_argument = "model"

    def __init__(
        self,
        model: dict | KerasModel | None = None,
        augmented_copies: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.model = self._check_new_model(model, augmented_copies)


def _keras_spec(spec):
    """Whether `spec` (see `Stage._output_spec`) is known and gives a Keras model."""
    return spec is not None and not (isinstance(spec, dict) and "tflite" in spec)


def _check_teacher(teacher):
    """`teacher` is None, a stage name, or a list of two or more distinct names."""
    names = teacher if isinstance(teacher, list) else [teacher]
    valid = teacher is None or (
        all(isinstance(name, str) for name in names)
        and (isinstance(teacher, str) or len(set(names)) == len(names) >= 2)
    )
    if not valid:
        raise invalid_argument(
            "teacher",
            "`teacher` must be the name of an earlier stage, or a list of two or more distinct "
            f"names (their softened outputs averaged). Received: teacher={teacher!r}",
            TypeError if not isinstance(teacher, str | list) else ValueError,
        )


def _teacher_names(teacher):
    if teacher is None:
        return []
    return list(teacher) if isinstance(teacher, list) else [teacher]


def _named(model, name):
    """`model` under the stage's `name`, so that an ensemble can read each by name (two
    stages may build models of the same name); the weights are shared, not copied."""
    import keras

    if model.name == name:
        return model
    inputs = keras.Input(tuple(model.inputs[0].shape[1:]), name=f"{name}_inputs")
    return keras.Model(inputs, model(inputs), name=name)


def _new_or_copy(spec, model, context, argument):
    if spec is not None:
        return architectures.build(spec, context.data, context.seed)
    if not isinstance(model, KerasModel):
        raise ValueError(
            f"`{argument}` is not given, so this stage trains the incoming model, but there is "
            f"none (or it is a {type(model).__name__}). Give `{argument}` or put a stage that "
            "returns a Keras model before it."
        )
    return context.copy_model(model)


def _propagation_note(done):
    """The report's line for what `propagation` did (`_Training._propagated`'s dict)."""
    note = (
        f"labels propagated to {done['examples']:,} examples (weight {done['weight']}, "
        f"{done['neighbours']} neighbours, alpha {done['alpha']}); the teacher's top class "
        f"agrees on {done['teacher_agreement']:.1%} of them"
    )
    if done["held_out_accuracy"] is not None:
        note += (
            f"; propagated from the other folds' labels, {done['held_out_accuracy']:.1%} of "
            "the known labels are right"
        )
    return note
