"""The distill stage: trains a student from one or more teachers (`tfkd.Distiller`)."""

from tfkd.pipeline.stage import KerasModel, invalid_argument, register_stage
from tfkd.pipeline.training import _NewModelTraining, training_arguments


@register_stage("distill")
@training_arguments(epochs=8, learning_rate=2e-3)
class Distill(_NewModelTraining):
    """Trains a student with `tfkd.Distiller` from a frozen teacher.

    The teacher's outputs on the training images are computed once and cached; the
    teacher runs at every step instead when the batch changes inside the step
    (`augmentation`, `mixup`, `cutmix`: the teacher and the student then see the same
    augmented images) or when `method_arguments` name a teacher layer. With
    `labelled_per_class` data, the student trains on every training image: the task
    loss on the labelled ones, the distillation loss on all.

    Args:
        teacher: name of the earlier stage whose model teaches, or a list of two or
            more names: their softened outputs, averaged with equal weights at
            `temperature`, teach (`tfkd.distill.teacher_ensemble`; each one's outputs
            are computed once and cached). Teachers that were trained differently
            (a fine-tuned backbone and a student trained on the labels) make
            different mistakes, so their average is often better than either.
        student: `{"architecture": "cnn", ...}`, `{"path": "file.keras"}`,
            `{"application": "MobileNetV3Small", weights: null, image_size: 32, ...}`
            (any keras.applications model) or a Sequential or functional Keras model
            (a copy, with its weights, trains); `None` distils into a copy of the
            incoming model. Defaults to `None`.
        epochs: Defaults to `8`.
        temperature: softmax temperature of the methods that soften logits (`kd`,
            `decoupled`, `dist`), of several teachers' average and of `propagation`;
            refused where none of those reads it. Defaults to `1.0`.
        student_loss_weight: weight of the label loss; the distillation loss gets
            the rest. Defaults to `0.1`.
        learning_rate: Adam's initial learning rate (cosine decay). Defaults to `2e-3`.
        batch_size: Defaults to `128`.
        augmented_copies: how many fixed copies of the training images, randomly
            shifted by up to 2 pixels and half of them flipped left-right, the teacher
            labels for the student to train on too (the teacher's outputs on them are
            computed once and cached). More inputs carry more of what the teacher
            knows; an epoch then covers `1 + augmented_copies` times the data.
            Images only; not with `augmentation`, `mixup` or `cutmix`. Defaults to `0`.
        method: the distillation loss: `"kd"` (`tfkd.distill.LogitsDistillation`),
            `"decoupled"` (`DecoupledDistillation`), `"dist"`
            (`CorrelationDistillation`), `"feature"` (`FeatureDistillation`),
            `"attention"` (`AttentionTransfer`) or `"relational"`
            (`RelationalDistillation`). The loss replaces KD: with `feature` or
            `attention` the student's logits learn from the labels alone.
            Defaults to `"kd"`.
        method_arguments: keyword arguments of that loss, e.g. `{standardize: true}`
            for `kd`, `{non_target_weight: 8.0}` for `decoupled`, and for `feature`
            and `attention` (required) `{teacher_layer_name: ..., student_layer_name:
            ...}` (the names of `keras.distillation`; the deprecated `teacher_layer`
            and `student_layer` are still read).
            `tfkd check` checks names and types; the loss checks values when the
            pipeline starts. Defaults to `None`.
        augmentation: random changes applied to each batch in the training step,
            the same for teacher and student: `{flip: true}` (left-right),
            `shift: 2` (up to that many pixels), `rotation: 0.05` (up to that
            fraction of a turn), `zoom: 0.1` (in or out by up to that fraction).
            Images only; the teacher runs at every step. Defaults to `None`.
        mixup: alpha of mixup inside the step (each image blended with another of
            its batch, the ratio drawn from Beta(alpha, alpha)), e.g. `0.2`. The
            teacher runs at every step. Not for token ids. Defaults to `None`.
        cutmix: alpha of CutMix inside the step (a box pasted from another image
            of the batch); with `mixup` too, each batch uses one of the two.
            Images only.
            Defaults to `None`.
        propagation: with few labels, better targets than the teacher's outputs alone:
            the labels spread from the labelled training examples to the others along
            a graph of each example's nearest neighbours in the (first) teacher's
            features, the input of its last Dense layer
            (`tfkd.distill.propagate_labels`), mixed into the teacher's cached outputs.
            `true`, or `{weight: 0.5, neighbours: 10, alpha: 0.9}`: `weight` is the
            propagated labels' share of the target distribution at `temperature` (1
            replaces the teacher's), `neighbours` and `alpha` go to
            `propagate_labels`. Computed once per run and cached, with a check on
            the known labels (`tfkd.distill.LabelGraph.held_out_labels`, 5 folds)
            whose share right the report's note gives. Needs unlabelled
            training examples (`data: {labelled_per_class: N}`); not with
            `augmentation`, `mixup`, `cutmix`, `augmented_copies` or a method that
            reads a teacher layer. Defaults to `None`.
        **kwargs: `name`, `from_stage` (see `Stage`).
    """

    new_model_argument = "student"

    def __init__(
        self,
        teacher: str | list,
        student: dict | KerasModel | None = None,
        augmented_copies: int = 0,
        **kwargs,
    ):
        if teacher is None:
            raise invalid_argument(
                "teacher", "`teacher` must be a stage name. Received: teacher=None", TypeError
            )
        super().__init__(**kwargs)
        self.student = self._check_new_model(student, augmented_copies)
