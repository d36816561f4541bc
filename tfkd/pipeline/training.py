"""The stages that train: train (labels), distill, prune and quantize_aware."""

import math
import re

import keras
import numpy as np

from tfkd import prune as prune_lib
from tfkd import quantize
from tfkd.distill import Distiller, with_teacher_outputs
from tfkd.pipeline import _store, architectures
from tfkd.pipeline.stage import (
    Stage,
    check_keras_input,
    check_positive,
    invalid_argument,
    register_stage,
)


class _Training(Stage):
    """Arguments and training loop shared by the stages that train (with or without a teacher)."""

    def __init__(
        self,
        epochs,
        learning_rate,
        batch_size,
        teacher=None,
        temperature=1.0,
        student_loss_weight=0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive("epochs", epochs, int, allow_zero=True)
        check_positive("learning_rate", learning_rate, float)
        check_positive("batch_size", batch_size, int)
        check_positive("temperature", temperature, float)
        valid = isinstance(student_loss_weight, int | float) and not isinstance(
            student_loss_weight, bool
        )
        if not valid or not 0.0 <= student_loss_weight <= 1.0:
            raise invalid_argument(
                "student_loss_weight",
                "`student_loss_weight` must be in [0, 1]. "
                f"Received: student_loss_weight={student_loss_weight!r}",
            )
        if teacher is not None and not isinstance(teacher, str):
            raise invalid_argument(
                "teacher", f"`teacher` must be a stage name. Received: {teacher!r}", TypeError
            )
        self.epochs, self.learning_rate, self.batch_size = epochs, learning_rate, batch_size
        self.teacher, self.temperature = teacher, temperature
        self.student_loss_weight = student_loss_weight

    def references(self):
        return [self.teacher] if self.teacher else []

    def fingerprint(self):
        """The config, plus the contents of a model file given as `{"path": ...}`."""
        fingerprint = self.get_config()
        for argument in ("model", "student"):
            spec = fingerprint.get(argument)
            if isinstance(spec, dict) and "path" in spec:
                fingerprint[f"{argument}_sha256"] = _store.sha256(spec["path"])
        return fingerprint

    def train(self, model, context, augmented_copies=0):
        """Trains `model` in place: distilled from `teacher` when given, else on labels.

        With `augmented_copies`, it also trains on that many fixed, shifted and flipped
        copies of the training images (labelled by the teacher when there is one).
        """
        epochs = context.epochs(self.epochs)
        if epochs == 0:
            return {"epochs": 0}
        x, y = context.data.x_train, context.data.y_train
        if augmented_copies:
            x_more, y_more = context.data.augmented_copies(augmented_copies, context.seed)
            x, y = np.concatenate([x, x_more]), np.concatenate([y, y_more])
        if self.teacher:
            model, x = self._distiller(model, context, x, augmented_copies)
        _compile(context, model, self.learning_rate, epochs, self.batch_size, len(y))
        history = context.fit(model, x, y, epochs=epochs, batch_size=self.batch_size)
        return _history_details(history, epochs)

    def _distiller(self, student, context, x, augmented_copies):
        """The `Distiller` that trains `student`, and `x` packed with the cached teacher logits."""
        teacher = context.model(self.teacher)
        if not isinstance(teacher, keras.Model):
            raise TypeError(
                f"`teacher` must be a stage that returns a Keras model. Received: "
                f"teacher={self.teacher!r}, a {type(teacher).__name__}"
            )
        distiller = Distiller(
            teacher=teacher,
            student=student,
            temperature=self.temperature,
            student_loss_weight=self.student_loss_weight,
        )
        outputs = [context.teacher_outputs(self.teacher)["output"]]
        if augmented_copies:
            key = f"augmented{augmented_copies}-seed{context.seed}"
            copies = x[len(context.data.x_train) :]
            outputs.append(context.teacher_outputs(self.teacher, copies, key)["output"])
        return distiller, with_teacher_outputs(x, {"output": np.concatenate(outputs)})


class _NewModelTraining(_Training):
    """A training stage that can build its own model from a spec (`new_model_argument`)."""

    new_model_argument = None

    def _check_new_model(self, spec, augmented_copies):
        if spec is not None:
            architectures.check_spec(spec, self.new_model_argument)
        check_positive("augmented_copies", augmented_copies, int, allow_zero=True)
        self.augmented_copies = augmented_copies
        return spec

    def takes_input(self):
        return getattr(self, self.new_model_argument) is None

    def run(self, model, context):
        spec = getattr(self, self.new_model_argument)
        model = _new_or_copy(spec, model, context, self.new_model_argument)
        return model, self.train(model, context, self.augmented_copies)


@register_stage("train")
class Train(_NewModelTraining):
    """Trains a model on the labels alone: a new one from `model`, or the incoming one.

    Args:
        model: `{"architecture": "cnn", ...}` or `{"path": "file.keras"}` (or, from
            Python, a Keras model to clone). `None` trains a copy of the incoming
            model. Defaults to `None`.
        epochs: training epochs. Defaults to `8`.
        learning_rate: Adam's initial learning rate, decayed to 0 on a cosine.
            Defaults to `2e-3`.
        batch_size: Defaults to `128`.
        augmented_copies: train on that many fixed, shifted and flipped copies of
            the training images too, with their labels (see `Distill`). Defaults to `0`.
        **kwargs: `name`, `from_stage` (see `Stage`).
    """

    new_model_argument = "model"

    def __init__(
        self,
        model: dict | keras.Model | None = None,
        epochs: int = 8,
        learning_rate: float = 2e-3,
        batch_size: int = 128,
        augmented_copies: int = 0,
        **kwargs,
    ):
        super().__init__(epochs, learning_rate, batch_size, **kwargs)
        self.model = self._check_new_model(model, augmented_copies)


@register_stage("distill")
class Distill(_NewModelTraining):
    """Trains a student with `tfkd.Distiller` from a frozen teacher's cached logits.

    Args:
        teacher: name of the earlier stage whose model teaches.
        student: `{"architecture": "cnn", ...}`, `{"path": "file.keras"}` or a Keras
            model; `None` distils into a copy of the incoming model. Defaults to `None`.
        epochs: Defaults to `8`.
        temperature: softmax temperature of the logits distillation. Defaults to `1.0`.
        student_loss_weight: weight of the label loss; the distillation loss gets
            the rest. Defaults to `0.1`.
        learning_rate: Adam's initial learning rate (cosine decay). Defaults to `2e-3`.
        batch_size: Defaults to `128`.
        augmented_copies: how many fixed copies of the training images, randomly
            shifted by up to 2 pixels and half of them flipped left-right, the teacher
            labels for the student to train on too (the teacher's outputs on them are
            computed once and cached). More inputs carry more of what the teacher
            knows; an epoch then covers `1 + augmented_copies` times the data.
            Images only. Defaults to `0`.
        **kwargs: `name`, `from_stage` (see `Stage`).
    """

    new_model_argument = "student"

    def __init__(
        self,
        teacher: str,
        student: dict | keras.Model | None = None,
        epochs: int = 8,
        temperature: float = 1.0,
        student_loss_weight: float = 0.1,
        learning_rate: float = 2e-3,
        batch_size: int = 128,
        augmented_copies: int = 0,
        **kwargs,
    ):
        if not isinstance(teacher, str):
            raise invalid_argument(
                "teacher", f"`teacher` must be a stage name. Received: {teacher!r}", TypeError
            )
        super().__init__(
            epochs,
            learning_rate,
            batch_size,
            teacher=teacher,
            temperature=temperature,
            student_loss_weight=student_loss_weight,
            **kwargs,
        )
        self.student = self._check_new_model(student, augmented_copies)


@register_stage("prune")
class Prune(_Training):
    """Prunes the incoming model by magnitude while it trains, then strips the wrappers.

    Sparsity rises from 0 to `sparsity` over the first 70% of the steps (polynomial
    decay), then holds while the model recovers. With `teacher`, training is
    distillation, as in `Distill`.

    Args:
        sparsity: fraction of each pruned kernel set to zero. Defaults to `0.5`.
        pattern: `"unstructured"` or `"N:M"` (see `tfkd.prune.prune`).
            Defaults to `"unstructured"`.
        epochs: Defaults to `2`.
        teacher: an earlier stage to distil from, or `None` for labels only.
            Defaults to `None`.
        learning_rate: Defaults to `5e-4`.
        **kwargs: `temperature`, `student_loss_weight`, `batch_size`, `name`, `from_stage`.
    """

    def __init__(
        self,
        sparsity: float = 0.5,
        pattern: str = "unstructured",
        epochs: int = 2,
        teacher: str | None = None,
        learning_rate: float = 5e-4,
        batch_size: int = 128,
        temperature: float = 1.0,
        student_loss_weight: float = 0.1,
        **kwargs,
    ):
        super().__init__(
            epochs,
            learning_rate,
            batch_size,
            teacher=teacher,
            temperature=temperature,
            student_loss_weight=student_loss_weight,
            **kwargs,
        )
        if (
            isinstance(sparsity, bool)
            or not isinstance(sparsity, int | float)
            or not 0 <= sparsity < 1
        ):
            raise invalid_argument(
                "sparsity", f"`sparsity` must be in [0, 1). Received: sparsity={sparsity!r}"
            )
        _check_pattern(pattern)
        self.sparsity, self.pattern = float(sparsity), pattern

    def run(self, model, context):
        check_keras_input(self, model)
        steps = context.epochs(self.epochs) * _steps_per_epoch(context, self.batch_size)
        schedule = prune_lib.PolynomialDecay(
            0.0, self.sparsity, begin_step=0, end_step=max(1, int(0.7 * steps))
        )
        pruned = prune_lib.prune(model, schedule, pattern=self.pattern)
        details = self.train(pruned, context)
        summary = prune_lib.summary(pruned)
        details["sparsity"] = round(float(summary.sparsity), 4)
        return prune_lib.strip(pruned), details


@register_stage("quantize_aware")
class QuantizeAware(_Training):
    """Quantization-aware training of the incoming model (`tfkd.quantize.quantize_aware`).

    The result exports to a fully int8 `.tflite` with `Export(quantization="int8")`,
    no calibration needed. With `teacher`, training is distillation.

    Args:
        epochs: Defaults to `2`.
        teacher: an earlier stage to distil from, or `None`. Defaults to `None`.
        learning_rate: Defaults to `1e-4`.
        **kwargs: `temperature`, `student_loss_weight`, `batch_size`, `name`, `from_stage`.
    """

    def __init__(
        self,
        epochs: int = 2,
        teacher: str | None = None,
        learning_rate: float = 1e-4,
        batch_size: int = 128,
        temperature: float = 1.0,
        student_loss_weight: float = 0.1,
        **kwargs,
    ):
        super().__init__(
            epochs,
            learning_rate,
            batch_size,
            teacher=teacher,
            temperature=temperature,
            student_loss_weight=student_loss_weight,
            **kwargs,
        )

    def run(self, model, context):
        check_keras_input(self, model)
        quantized = quantize.quantize_aware(model)
        details = self.train(quantized, context)
        details["parameters"] = int(model.count_params())  # without the quantizers' ranges
        return quantized, details


def _compile(context, model, learning_rate, epochs, batch_size, examples=None):
    """`context.compile` with Adam's learning rate decayed to 0 on a cosine over training."""
    steps = epochs * _steps_per_epoch(context, batch_size, examples)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps))
    context.compile(model, schedule)


def _steps_per_epoch(context, batch_size, examples=None):
    examples = len(context.data.x_train) if examples is None else examples
    return math.ceil(examples / batch_size)


def _history_details(history, epochs):
    accuracy = history.history.get("accuracy") or history.history.get("student_accuracy") or []
    loss = history.history.get("loss", [])
    return {
        "epochs": epochs,
        "train_accuracy": [round(float(value), 4) for value in accuracy],
        "train_loss": [round(float(value), 4) for value in loss],
    }


def _new_or_copy(spec, model, context, argument):
    if spec is not None:
        return architectures.build(spec, context.data, context.seed)
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"`{argument}` is not given, so this stage trains the incoming model, but there is "
            f"none (or it is a {type(model).__name__}). Give `{argument}` or put a stage that "
            "returns a Keras model before it."
        )
    return context.copy_model(model)


def _check_pattern(pattern):
    match = isinstance(pattern, str) and re.fullmatch(r"(\d+):(\d+)", pattern)
    if pattern == "unstructured" or (match and 0 < int(match[1]) < int(match[2])):
        return
    raise invalid_argument(
        "pattern",
        "`pattern` must be 'unstructured' or 'N:M' with 0 < N < M (e.g. '2:4'). "
        f"Received: pattern={pattern!r}",
    )
