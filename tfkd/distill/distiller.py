"""`Distiller`: a `keras.Model` that trains a student from a frozen teacher."""

import contextlib
import inspect

import keras
import numpy as np
from keras import ops

from tfkd import _checks, _graph
from tfkd.distill import (
    _probe,
    _replicas,
    _saving,
    _taps,
    _task,
    _validation,
    ensemble,
    mixing,
    schedules,
    teacher_cache,
)
from tfkd.distill._checks import check_temperature_value
from tfkd.distill.callbacks import (
    LabelGuard,
    NonFiniteLossGuard,
    pop_label_errors,
    raise_label_errors,
)
from tfkd.distill.losses import log_of_probabilities

# Keys of the structure `call` returns in training when feature losses need
# intermediate student outputs: one forward pass yields both.
_OUTPUTS = "__tfkd_outputs__"
_FEATURES = "__tfkd_features__"
# ... and, under in-step augmentation, the batch both models saw and how it was mixed.
_INPUTS = "__tfkd_inputs__"
_PARTNERS = "__tfkd_partners__"
_MIX_RATIO = "__tfkd_mix_ratio__"


@keras.saving.register_keras_serializable(package="tfkd")
class Distiller(_replicas.FrozenTeacher, _saving.Saving, keras.Model):
    """Trains a student model to match a frozen teacher, through `model.fit`.

    The training loss is
    `student_loss_weight * task_loss + (1 - student_loss_weight) *
    sum(weight_i * distillation_loss_i)`, where the task loss is the one given
    to `compile` (computed on the labels) and each distillation loss compares
    teacher and student outputs. `evaluate` and `predict` are the student's:
    they never run the teacher, so their numbers compare directly with a
    student trained alone. Training logs show `student_loss` and one
    `<name>_loss` entry per distillation loss next to the total `loss`.

    The teacher is frozen: its variables are left out of the Distiller's
    trainable ones, it runs with `training=False`, and its outputs go through
    `stop_gradient`, so its weights stay bit-identical. The teacher given is
    not changed (`keras.distillation.Distiller` sets `teacher.trainable =
    False` on the caller's model; this one does not): the same model can be
    fine-tuned afterwards as it was before.

    Teacher and student may be Sequential (also never called: the student is
    built on the teacher's input shape), functional, nested or subclassed
    models; both must take inputs of the same shape, checked here. A model
    that ends in a softmax distils through the log of its probabilities,
    which a softmax treats exactly as logits (a warning says so). To save the
    student alone during `fit`, use `tfkd.distill.StudentCheckpoint`: Keras's
    `ModelCheckpoint` would save the whole Distiller, teacher included.

    Unlabelled examples: give them the integer label `tfkd.distill.UNLABELED`
    (-1), in numpy arrays, a `tf.data.Dataset` or a `keras.utils.PyDataset`
    alike. They get the distillation losses only; the task loss and the
    metrics are the mean over the labelled examples of each batch (the logged
    `student_loss`, over those of the epoch; `evaluate`'s `loss` weighs each
    batch by its size, as Keras does: evaluate on labelled examples). A task loss
    compiled with `reduction="sum"` trains on their sum (logged as the batches'
    sums, averaged weighed by their labelled examples), and one with
    `"mean_with_sample_weight"` on their mean weighed by the sample weights. (To
    skip them, `compile` passes `metrics`, a list or a dict by output name, to
    Keras as `weighted_metrics`: with sample weights, every metric is weighted.)

    Consistent teaching (function matching, Beyer et al., CVPR 2022): with
    `augmentation`, `mixup` or `cutmix`, each training step augments and mixes
    the batch once and feeds the result to both models, so the student matches
    the teacher on the very images it sees. The teacher then runs at every
    step (no cached outputs); a mixed example's task loss weighs its label and
    its partner's by their shares.

    Offline distillation: when the training inputs are not randomly augmented,
    compute the teacher's outputs once with `predict_teacher` and pass them
    with `with_teacher_outputs`; each step then runs the student only. Under
    random augmentation do not cache: the teacher must see the same augmented
    image as the student, and a cached output belongs to the un-augmented one.

    Args:
        teacher: A trained `keras.Model`, or a list of them: several teachers
            whose softened outputs are averaged with equal weights at the
            logits losses' temperature (`tfkd.distill.teacher_ensemble`; build
            it yourself for other weights or one loss per teacher).
        student: The `keras.Model` to train; its output shape must be
            comparable with the teacher's.
        distillation_losses: A `DistillationLoss` or a list of them. Defaults
            to `None`: one `LogitsDistillation(temperature=temperature)`.
        distillation_loss_weights: One weight >= 0 per distillation loss.
            Defaults to `None` (all 1).
        student_loss_weight: Weight in [0, 1] of the task loss; the
            distillation losses get `1 - student_loss_weight`. Defaults to
            `0.1`.
        temperature: Shortcut for the default logits loss; cannot be combined
            with `distillation_losses`. Defaults to `None`, which means
            `LogitsDistillation()`'s default, 1.0: on the Fashion-MNIST
            benchmark (BENCHMARKS.md) a student 20x smaller than its teacher
            did best at T=1 and lost 2.8 points at T=4. Larger students often
            prefer T=2 to 4.
        augmentation: A Keras layer (e.g. a `keras.Sequential` of
            `RandomFlip`, `RandomTranslation`...) applied with `training=True`
            to each training batch, before mixing. Defaults to `None`.
        mixup: Alpha of mixup's Beta distribution (each example blended with
            another of the batch), or `None` for none. Not for integer inputs of
            rank 2 (token ids): the first training step refuses them. Defaults
            to `None`.
        cutmix: Alpha of CutMix (a box of another image pasted in), or `None`.
            With `mixup` too, each batch uses one of them at random. Images
            only. Defaults to `None`.
        seed: Seed of the mixing draws. Defaults to `None`.
        name: Model name. Defaults to `"distiller"`.

    Raises:
        TypeError: If `teacher` or `student` is not a Keras model, or a loss is
            not a `DistillationLoss`.
        ValueError: For weights out of range, a non-positive temperature,
            inputs or outputs that cannot be compared, unknown layer names, a
            model that was never built while the other's input shape is unknown,
            or `LogitsDistillation(from_logits=False)` with a model that outputs
            logits.

    Example:

    ```python
    distiller = tfkd.Distiller(teacher=teacher, student=student, temperature=4.0)
    distiller.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    distiller.fit(x_train, y_train, epochs=10)
    distiller.student.save("student.keras")
    ```
    """

    def __init__(
        self,
        teacher,
        student,
        distillation_losses=None,
        distillation_loss_weights=None,
        student_loss_weight=0.1,
        temperature=None,
        augmentation=None,
        mixup=None,
        cutmix=None,
        seed=None,
        name="distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        losses = _validation.resolve_losses(distillation_losses, temperature)
        if isinstance(teacher, (list, tuple)):
            temperature_of_losses = _validation.shared_temperature(losses)
            teacher = ensemble.teacher_ensemble(teacher, temperature=temperature_of_losses)
        _validation.validate_model("teacher", teacher)
        _validation.validate_model("student", student)
        _validation.check_separate_models(teacher, student)
        seed = _checks.check_seed(seed, allow_none=True)
        self._config = {
            "distillation_losses": distillation_losses,
            "distillation_loss_weights": distillation_loss_weights,
            "student_loss_weight": student_loss_weight,
            "temperature": temperature,
            "mixup": mixup,
            "cutmix": cutmix,
            "seed": seed,
        }
        self.augmentation = _graph.allow_jit(_validation.validate_augmentation(augmentation))
        self._mixing = {
            "mixup_alpha": mixing.validate_alpha("mixup", mixup),
            "cutmix_alpha": mixing.validate_alpha("cutmix", cutmix),
        }
        if mixup is not None or cutmix is not None:
            self._seed_generator = keras.random.SeedGenerator(seed, name="mixing_seed")
        self.distillation_loss_weights = _validation.resolve_loss_weights(
            distillation_loss_weights, losses
        )
        self.student_loss_weight = _validation.validate_student_loss_weight(student_loss_weight)
        teacher_shapes, student_shapes = _taps.input_shapes(teacher), _taps.input_shapes(student)
        _validation.check_input_shapes(teacher_shapes, student_shapes)
        shapes = teacher_shapes or student_shapes
        mixing.check_cutmix_inputs(cutmix, shapes)
        self.teacher = teacher
        self.student = student
        self.distillation_losses = losses
        self._teacher_taps = _taps.TapModel(
            teacher, "teacher", [loss.teacher_layer_name for loss in losses], shapes
        )
        self._student_taps = _taps.TapModel(
            student, "student", [loss.student_layer_name for loss in losses], shapes
        )
        # Per loss, what turns (teacher, student) outputs that are probabilities
        # (a final softmax, or a binary classifier's sigmoid) into the logits it reads.
        self._logit_converters = [
            _validation.build_loss(loss, self._teacher_taps, self._student_taps) for loss in losses
        ]
        # (loss index, side: 0 teacher, 1 student) of outputs read as logits that the graph
        # does not show to be logits: the first `fit` reads them on a few examples for
        # probabilities (a softmax it does not show).
        sides = (self._teacher_taps, self._student_taps)
        self._unprobed = [
            (index, side)
            for index, (loss, converters) in enumerate(zip(losses, self._logit_converters))
            if loss.reads_logits
            for side, layer in enumerate((loss.teacher_layer_name, loss.student_layer_name))
            if converters[side] is None and not sides[side].shows_logits(layer)
        ]
        self._loss_keys = _validation.unique_log_keys(losses)
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        self.distillation_loss_trackers = [keras.metrics.Mean(name=key) for key in self._loss_keys]
        self.label_errors = _task.LabelErrors()
        # The training step the schedules read (0 first). The Distiller counts it
        # itself: the JAX trainer computes the loss without the optimizer's state,
        # where `optimizer.iterations` would be frozen.
        self._step = None
        if self._scheduled():
            self._step = self.add_weight(
                name="distillation_step",
                shape=(),
                initializer="zeros",
                dtype="int32",
                trainable=False,
            )
        self.built = True  # Teacher, student and losses are built above.

    # Forward pass and losses.

    def _scheduled(self):
        return any(callable(value) for _, value, _ in self._schedules())

    def _schedules(self):
        """`(name, value, check)` of every number that may be a schedule."""
        weights = [
            (f"distillation_loss_weights[{index}]", weight, _validation.validate_weight)
            for index, weight in enumerate(self.distillation_loss_weights)
        ]
        temperatures = [
            (f"{loss.name}.temperature", loss.temperature, check_temperature_value)
            for loss in self.distillation_losses
            if hasattr(loss, "temperature")
        ]
        share = ("student_loss_weight", self.student_loss_weight, _validation.check_share)
        return [share, *weights, *temperatures]

    def _check_schedules(self, inputs, arguments):
        """Checks each schedule over the steps this `fit` will run, where they are known
        (arrays, datasets that say their length, `steps_per_epoch`): a decay that passes 0
        within them fails here, not in the middle."""
        rows = _validation.rows(inputs)
        steps = arguments.get("steps_per_epoch") or _batches(arguments.get("x"))
        if self._step is None or (rows is None and steps is None):
            return
        steps = steps or -(-rows // (arguments.get("batch_size") or 32))
        epochs = arguments.get("epochs", 1) - arguments.get("initial_epoch", 0)
        first = int(keras.ops.convert_to_numpy(self._step))
        last = first + max(steps * epochs - 1, 0)
        for name, value, check in self._schedules():
            schedules.validate(name, value, check, schedules.steps_to_check(first, last))

    @property
    def augments(self):
        """Whether training steps augment or mix their batch (the teacher runs online)."""
        return self.augmentation is not None or any(self._mixing.values())

    def call(self, inputs, training=None):
        inputs, cached = teacher_cache.split_teacher_outputs(inputs)
        if not training or not (self.augments or self._student_taps.has_features):
            return _taps.single(self.student(inputs, training=training))
        extra = {}
        if self.augments:
            _validation.check_augmentable(inputs, cached, mixes=any(self._mixing.values()))
            extra[_INPUTS], extra[_PARTNERS], extra[_MIX_RATIO] = self._augment(inputs)
        outputs = self._student_taps(inputs if not extra else extra[_INPUTS], training=True)
        return {_OUTPUTS: outputs.pop(_taps.OUTPUT), _FEATURES: outputs, **extra}

    def _augment(self, inputs):
        """The batch both models train on: augmented, then mixed (partners, ratios or None).
        Integer images (uint8, as image loaders give them) become floats first: a mix of two
        pixels is not an integer."""
        if not keras.backend.is_float_dtype(keras.backend.standardize_dtype(inputs.dtype)):
            inputs = ops.cast(inputs, keras.backend.floatx())
        if self.augmentation is not None:
            try:
                inputs = self.augmentation(inputs, training=True)
            except (ValueError, TypeError) as error:  # before: the layer's words alone
                raise ValueError(
                    f"`augmentation` ({getattr(self.augmentation, 'name', self.augmentation)!r}) "
                    "cannot run on the training inputs. Received: inputs of shape "
                    f"{tuple(inputs.shape)}: {type(error).__name__}: {error} Keras's random "
                    "image layers take batches of images (batch, height, width, channels)."
                ) from error
        if not any(self._mixing.values()):
            return inputs, None, None
        return mixing.sample_mixing(inputs, self._seed_generator, **self._mixing)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        student_outputs, student_features, seen = _unpack_predictions(y_pred)
        task_loss, regularization, labelled = self._task_loss(
            x, y, student_outputs, sample_weight, training, seen
        )
        if not training:
            return task_loss + regularization
        inputs, teacher_outputs = teacher_cache.split_teacher_outputs(x)
        if seen.get(_INPUTS) is not None:
            inputs = seen[_INPUTS]
        if teacher_outputs is None:
            teacher_outputs = self._teacher_taps(inputs, training=False)
        teacher_outputs = {key: ops.stop_gradient(value) for key, value in teacher_outputs.items()}
        student_features[_taps.OUTPUT] = student_outputs
        # Each batch's mean over its labelled examples, weighed by how many it has: with
        # equal weights, a batch with no label added a 0 and one label weighed as many.
        self.student_loss_tracker.update_state(_replicas.unscale(task_loss), labelled)
        with schedules.at_step(self._step):
            student_loss_weight = schedules.value_at_current_step(self.student_loss_weight)
            distillation = self._distillation_loss(teacher_outputs, student_features, sample_weight)
            total = task_loss * student_loss_weight + regularization
            total = total + distillation * (1.0 - student_loss_weight)
        if self._step is not None:
            # After every read above (TensorFlow orders the ops as written).
            self._step.assign_add(1)
        return total

    def _distillation_loss(self, teacher_outputs, student_features, sample_weight):
        """The weighted sum of the distillation losses (each logged on its own)."""
        total = ops.zeros((), "float32")
        for loss, weight, tracker, converters in zip(
            self.distillation_losses,
            self.distillation_loss_weights,
            self.distillation_loss_trackers,
            self._logit_converters,
        ):
            pair = (
                teacher_outputs[_taps.key(loss.teacher_layer_name)],
                student_features[_taps.key(loss.student_layer_name)],
            )
            pair = [to_logits(v) if to_logits else v for v, to_logits in zip(pair, converters)]
            value = _replicas.reduce(loss(*pair), sample_weight)
            tracker.update_state(_replicas.unscale(value))
            total = total + value * schedules.value_at_current_step(weight)
        return total

    def _task_loss(self, x, y, y_pred, sample_weight, training, seen):
        """Returns the compiled loss on the labels and the regularization losses, apart,
        and how many labelled examples (shares of mixed ones) the first is the mean of.

        Only the first is weighted by `student_loss_weight`; regularizers keep
        their own weight. (A regularized teacher adds a constant here, which
        changes the logged loss but no gradient.) Unlabelled examples and mixed
        labels are handled by `_task.task_terms`.
        """
        regularization = ops.zeros((), "float32")
        if self.losses:
            regularization = ops.sum([ops.cast(loss, "float32") for loss in self.losses])
            regularization = regularization / _replicas.replica_count()
        examples = ops.cast(ops.shape(keras.tree.flatten(y_pred)[0])[0], "float32")
        if self.loss is None:
            return ops.zeros((), "float32"), regularization, examples
        self.label_errors.update_state(y, y_pred, self.loss)
        y, labelled = _task.fitting_labels(y, y_pred, self.loss)
        partners, ratio = seen.get(_PARTNERS), seen.get(_MIX_RATIO)
        reduction = getattr(self.loss, "reduction", None) or "sum_over_batch_size"
        terms, factors, labelled = _task.task_terms(
            y, sample_weight, partners, ratio, labelled, reduction
        )
        task_loss = ops.zeros((), "float32")
        for (labels, weights), factor in zip(terms, factors):
            combined = super().compute_loss(x, labels, y_pred, weights, training)
            task_loss = task_loss + factor * (ops.cast(combined, "float32") - regularization)
        return task_loss, regularization, examples if labelled is None else labelled

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        y_pred = _unpack_predictions(y_pred)[0]
        y, labelled = _task.fitting_labels(y, y_pred, self.loss)
        labels, weights = _task.metric_labels(y, sample_weight, labelled)
        return super().compute_metrics(x, labels, y_pred, weights)

    # Offline distillation.

    def predict_teacher(self, x, batch_size=256, verbose=0, cache=None, runtime="keras"):
        """Computes the teacher outputs that training needs, once.

        Pass the result to `with_teacher_outputs` to train without running
        the teacher at every step. Only valid for inputs that are not
        randomly augmented during training.

        With `cache`, the outputs are also kept in a file: a later call (in this
        process or another) with the same inputs, the same teacher (architecture,
        layer configs and weights) and the same distillation taps loads them
        instead of running the teacher, once the file is checked (one finite
        row per input).
        Any change recomputes and overwrites the file, which is written
        atomically. Worth it for a slow teacher, e.g. a BERT on CPU.

        Args:
            x: Inputs the student will be trained on (numpy array, dict or list
                of arrays, or a `tf.data.Dataset` yielding inputs only; a
                dataset cannot be cached).
            batch_size: Batch size of the teacher's forward passes.
                Defaults to `256`.
            verbose: Progress bar, as for `keras.Model.predict`.
                Defaults to `0`.
            cache: Path of a `.npz` file to keep the outputs in. Defaults to
                `None` (no file).
            runtime: `"keras"`, or `"litert"`: the teacher converted to a float32
                `.tflite` and run by LiteRT, faster on CPU, for losses that read the
                final output only (see `tfkd.distill.teacher_outputs`). Defaults to
                `"keras"`.

        Returns:
            A dict of numpy arrays, one per teacher output the distillation
            losses read.

        Example:

        ```python
        cached = distiller.predict_teacher(ids_train, cache="cache/teacher.npz")
        distiller.fit(tfkd.distill.with_teacher_outputs(ids_train, cached), y_train)
        ```
        """
        return teacher_cache.predict(self._teacher_taps, x, batch_size, verbose, cache, runtime)

    # Keras plumbing (the frozen teacher: `_replicas.FrozenTeacher`; saving: `_saving`).

    @property
    def metrics(self):
        # Keras lists the trackers already (it tracks the metrics set as attributes);
        # each is listed once, or `train_on_batch` returned its value twice.
        trackers = [self.student_loss_tracker, *self.distillation_loss_trackers, self.label_errors]
        return list({id(metric): metric for metric in [*super().metrics, *trackers]}.values())

    def evaluate(self, *args, **kwargs):
        # Evaluation is the student's alone: the distillation entries would be
        # zeros there, so they are left out of its logs. So are the labels that do
        # not fit the student, raised once it has run.
        arguments = inspect.signature(keras.Model.evaluate).bind(self, *args, **kwargs).arguments
        arguments.pop("self")
        extra = arguments.pop("kwargs", {})
        if "y" in arguments:
            classes = self._class_count()
            arguments["y"] = _task.check_class_ids(
                arguments["y"], classes, self.loss, output_rank=self._output_rank()
            )
        with self._evaluation():
            result = super().evaluate(**arguments, **extra)
        self._raise_label_errors(self.label_errors.result(), "in the data evaluated")
        return result

    def test_on_batch(self, *args, **kwargs):
        with self._evaluation():
            result = super().test_on_batch(*args, **kwargs)
        self._raise_label_errors(self.label_errors.result(), "in test_on_batch's labels")
        return result

    def train_on_batch(self, *args, **kwargs):
        arguments = inspect.signature(keras.Model.train_on_batch).bind(self, *args, **kwargs)
        arguments = arguments.arguments
        arguments.pop("self")
        if self._unprobed:
            self._probe_outputs(arguments.get("x"))
        return_dict = arguments.pop("return_dict", False)
        logs = super().train_on_batch(**arguments, return_dict=True)
        self._raise_label_errors(pop_label_errors(logs), "in train_on_batch's labels")
        return logs if return_dict else self._flatten_metrics_in_order(logs)

    @contextlib.contextmanager
    def _evaluation(self):
        self._evaluating = True
        try:
            yield
        finally:
            self._evaluating = False

    def _raise_label_errors(self, errors, where):
        """Raises (and resets) the labels counted that do not fit the student, if any."""
        errors = {key: float(value) for key, value in errors.items()}
        if errors.get(_task.LABEL_ERRORS):
            self.label_errors.reset_state()
        raise_label_errors(errors, where, self._class_count())

    def get_metrics_result(self):
        result = super().get_metrics_result()
        if getattr(self, "_evaluating", False):
            for name in ("student_loss", *self._loss_keys, *self.label_errors.result()):
                result.pop(name, None)
        return result

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        if loss is None and (callable(self.student_loss_weight) or self.student_loss_weight > 0):
            raise ValueError(
                "Distiller.compile needs the student's task loss, since "
                f"student_loss_weight={self.student_loss_weight} > 0. Received: loss=None. "
                "Pass e.g. loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), "
                "or build the Distiller with student_loss_weight=0.0 to train on teacher "
                "outputs alone."
            )
        if metrics is not None:
            # Keras gives sample weights to `weighted_metrics` only; unlabelled
            # examples reach the metrics as weights of 0, so every metric takes them.
            kwargs["weighted_metrics"] = _joined_metrics(metrics, kwargs.get("weighted_metrics"))
            metrics = None
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def fit(self, *args, **kwargs):
        _checks.check_fit_strategy(self)
        arguments = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs).arguments
        arguments.pop("self")
        for name in ("x", "validation_data"):
            _checks.check_batched(arguments.get(name), name)
        extra = arguments.pop("kwargs", {})
        arguments = _checks.fit_options(arguments.get("x"), arguments)
        self._check_fit_data(arguments)
        if arguments.get("class_weight") and hasattr(arguments.get("x"), "element_spec"):
            weighed = _task.weigh_classes(arguments["x"], arguments["class_weight"])
            if weighed is not None:
                arguments["x"], arguments["class_weight"] = weighed, None
        given = arguments.pop("callbacks", None) or []
        given = list([given] if isinstance(given, keras.callbacks.Callback) else given)
        # First, so that no other callback sees the label errors in the logs, nor an epoch
        # with NaN weights or losses (a ModelCheckpoint saved them before the guard raised).
        guard = NonFiniteLossGuard(["student_loss", *self._loss_keys, "loss"])
        given = [LabelGuard(self._class_count()), guard, *given]
        return super().fit(callbacks=given, **arguments, **extra)

    def _class_count(self):
        return (self._student_taps.output_shape or (None,))[-1]

    def _output_rank(self):
        shape = self._student_taps.output_shape
        return None if shape is None else len(shape)

    def _check_labels_given(self, x, arguments):
        """Refuses arrays `x` without `y` when a task loss is compiled, which reads labels
        (a dataset or generator carries its own)."""
        arrays = isinstance(x, (np.ndarray, list, tuple)) or (
            isinstance(x, dict) and all(hasattr(value, "shape") for value in x.values())
        )
        if arrays and arguments.get("y") is None and self.loss is not None:
            raise ValueError(
                "`y` must be given: the Distiller was compiled with a task loss, which reads "
                f"labels. Received: y=None with x an array, loss={self.loss!r}. Pass the "
                "labels (tfkd.distill.UNLABELED for examples without one), or build the "
                "Distiller with student_loss_weight=0.0 and compile it with loss=None to "
                "train on the teacher alone."
            )

    def _probe_outputs(self, x):
        """Reads the outputs that losses read as logits on a few examples of `x`, and those
        that hold probabilities (a softmax the graph does not show) as the log of them."""
        if keras.distribution.distribution() is not None:
            return  # JAX's predict there gives arrays spread over processes, not readable
        inputs, cached = _probe.sample(x, (self.student, self.teacher))
        if inputs is None:
            return
        taps = (self._teacher_taps, self._student_taps)
        sides = {}
        for index, side in self._unprobed:
            loss = self.distillation_losses[index]
            layer = (loss.teacher_layer_name, loss.student_layer_name)[side]
            sides.setdefault((side, layer), []).append(index)
        found = _probe.probabilities_read_as_logits(
            [(taps[side], layer) for side, layer in sides], inputs, cached
        )
        self._unprobed = []
        for found_taps, layer in found:
            side = taps.index(found_taps)
            for index in sides[(side, layer)]:
                converters = list(self._logit_converters[index])
                converters[side] = log_of_probabilities
                self._logit_converters[index] = tuple(converters)
        if found:  # traced with the converters before
            self.train_function = self.test_function = None

    def _check_fit_data(self, arguments):
        """Checks numpy labels (and those of `validation_data`) against the student's
        classes, and cached teacher outputs against what the losses read."""
        classes = self._class_count()
        inputs, cached = teacher_cache.split_teacher_outputs(arguments.get("x"))
        # On TensorFlow, a NaN input through a ReLU trains NaN weights on finite losses.
        _checks.warn_non_finite_inputs(inputs, "x")
        self._check_labels_given(inputs, arguments)
        if self._unprobed:
            self._probe_outputs(arguments.get("x"))
        self._check_schedules(inputs, arguments)
        rank = self._output_rank()
        if "y" in arguments:
            arguments["y"] = _task.check_class_ids(
                arguments["y"], classes, self.loss, output_rank=rank
            )
        validation = arguments.get("validation_data")
        if isinstance(validation, tuple) and len(validation) >= 2:
            _checks.warn_non_finite_inputs(validation[0], "validation_data[0]")
            checked = _task.check_class_ids(
                validation[1], classes, self.loss, "validation_data[1]", output_rank=rank
            )
            arguments["validation_data"] = (validation[0], checked, *validation[2:])
        if cached is not None:
            keys = [_taps.key(loss.teacher_layer_name) for loss in self.distillation_losses]
            _validation.check_cached_keys(cached, keys)
            converted = zip(keys, self._logit_converters)
            probabilities = {key for key, (to_logits, _) in converted if to_logits is not None}
            _validation.check_cached_probabilities(cached, sorted(probabilities))


def _batches(x):
    """The batches an epoch of dataset `x` holds, where it says (a tf.data set of known
    length, a `PyDataset`), else None: before, schedules were checked for arrays only,
    and a weight decaying below 0 trained on (a negative loss)."""
    if hasattr(x, "cardinality"):
        count = int(x.cardinality())
        return count if count > 0 else None
    if isinstance(x, keras.utils.PyDataset):
        try:
            return len(x) or None
        except (TypeError, NotImplementedError):
            return None
    return None


def _unpack_predictions(y_pred):
    """`(student outputs, student features, {augmented inputs, partners, ratios})`."""
    if isinstance(y_pred, dict) and _OUTPUTS in y_pred:
        seen = {key: y_pred.get(key) for key in (_INPUTS, _PARTNERS, _MIX_RATIO)}
        return y_pred[_OUTPUTS], dict(y_pred[_FEATURES]), seen
    return y_pred, {}, {}


def _joined_metrics(metrics, weighted):
    """`metrics` joined to `weighted_metrics`, as a list or as Keras's dict by output name
    (before, a dict stayed plain metrics, which counted unlabelled examples as class 0)."""
    if not isinstance(metrics, (list, tuple, dict)):  # Keras's words would name the other
        raise TypeError(
            "`metrics` must be a list, tuple or dict by output name, as Keras takes it. "
            f"Received: metrics={metrics!r:.100}. Pass a list, e.g. metrics=['accuracy']."
        )
    if weighted is None:
        return metrics
    if isinstance(metrics, dict) != isinstance(weighted, dict):
        raise TypeError(
            "`metrics` and `weighted_metrics` must be both lists or both dicts by output "
            f"name: the Distiller passes its metrics on as weighted metrics. Received: "
            f"metrics={metrics!r:.100} and weighted_metrics={weighted!r:.100}."
        )
    if not isinstance(metrics, dict):
        return [*_listed(metrics), *_listed(weighted)]
    return {
        name: [*_listed(metrics.get(name)), *_listed(weighted.get(name))]
        for name in {**metrics, **weighted}
    }


def _listed(metrics):
    if metrics is None:
        return []
    return list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
