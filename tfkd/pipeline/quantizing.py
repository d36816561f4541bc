"""The quantize_aware stage: quantization-aware training (`tfkd.quantize.quantize_aware`)."""

from tfkd.pipeline import architectures
from tfkd.pipeline.stage import check_keras_input, invalid_argument, register_stage
from tfkd.pipeline.training import _Training, training_arguments


@register_stage("quantize_aware")
@training_arguments(epochs=2, learning_rate=1e-4)
class QuantizeAware(_Training):
    """Quantization-aware training of the incoming model (`tfkd.quantize.quantize_aware`).

    The result exports to a fully int8 `.tflite` with `Export(quantization="int8")`,
    no calibration needed. With `teacher`, training is distillation, as in `Distill`
    (every training image, the distillation keys below); without, it trains on the
    labelled examples only.

    Args:
        epochs: Defaults to `2`.
        teacher: an earlier stage to distil from (or a list of them, as in
            `Distill`), or `None`. Defaults to `None`.
        learning_rate: Defaults to `1e-4`.
        method, method_arguments, augmentation, mixup, cutmix, propagation: as in `Distill`;
            all but `augmentation` need `teacher`. Default to `"kd"` and `None`.
        preserve_clusters: after a `cluster` stage, keep each kernel on its clusters
            (cluster-preserving QAT; see `tfkd.quantize.quantize_aware`). Defaults to
            `false`.
        **kwargs: `temperature`, `student_loss_weight`, `batch_size`, `name`, `from_stage`.
    """

    compresses = True

    def __init__(self, preserve_clusters: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(preserve_clusters, bool):
            raise invalid_argument(
                "preserve_clusters",
                "`preserve_clusters` must be true or false. Received: "
                f"preserve_clusters={preserve_clusters!r}",
                TypeError,
            )
        self.preserve_clusters = preserve_clusters

    def _check_input_model(self, build, incoming):
        from tfkd.quantize import is_quantized
        from tfkd.quantize.qat import check_clustered, check_supported

        model = build()
        if is_quantized(model):
            # Before: each of its layers named as one it "cannot quantize-aware train".
            raise invalid_argument(
                "from_stage",
                f"Stage {self.name!r} (quantize_aware) receives a model that is already "
                "quantization-aware (a quantize_aware stage before it made it so). Received: "
                f"from_stage={self.from_stage!r} (None: the stage before). Train it on in "
                "that stage (more `epochs`), or give this one the float model it came from.",
            )
        try:
            check_supported(model)
        except TypeError as error:
            raise invalid_argument(
                "from_stage",
                f"Stage {self.name!r} (quantize_aware) receives a model it cannot quantize. "
                f"Received: from_stage={self.from_stage!r} (None: the stage before). {error}",
                TypeError,
            ) from None
        if not self.preserve_clusters:
            return
        try:
            check_clustered(model)
        except ValueError as error:
            raise invalid_argument(
                "preserve_clusters",
                f"Stage {self.name!r} (quantize_aware) keeps the clusters a `cluster` stage "
                "made, and the model it receives has none: put a `cluster` stage right before "
                f"it (a stage that trains in between spreads the clusters). {error}",
            ) from None

    def _output_spec(self, incoming):
        # Known before anything runs, so that an export after it is checked against a
        # quantization-aware model (`per_channel: false` failed after the training).
        return architectures.quantized(architectures.trained(incoming), self)

    def quantized(self, model):
        """`model` made quantization-aware, as the checks before a run build this stage's
        output (its clusters are not read: an untrained build has none)."""
        from tfkd import quantize

        return quantize.quantize_aware(model)

    def run(self, model, context):
        from tfkd import quantize

        check_keras_input(self, model)
        quantized = quantize.quantize_aware(model, preserve_clusters=self.preserve_clusters)
        return quantized, self.train(quantized, context)
