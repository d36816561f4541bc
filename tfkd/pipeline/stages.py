"""The stages that do not train: load, export and transfer (which trains through fine_tune)."""

import os

from tfkd import _hashing
from tfkd._export_options import IO_DTYPES, QUANTIZATIONS
from tfkd.pipeline import _distillation, _store, architectures
from tfkd.pipeline.stage import (
    Stage,
    check_keras_input,
    check_positive,
    invalid_argument,
    register_stage,
)


@register_stage("load")
class Load(Stage):
    """Loads a model file: `.keras`, or `.tflite` (as a `tfkd.TFLiteModel`).

    Args:
        path: the file. The stage reruns when the file's contents change.
        **kwargs: `name`, `from_stage` (see `Stage`).
    """

    def __init__(self, path: str, **kwargs):
        super().__init__(**kwargs)
        architectures.check_model_file(path, "path", suffixes=(".keras", ".tflite"))
        self.path = os.fspath(path)

    def takes_input(self):
        return False

    def fingerprint(self):
        return {**self.get_config(), "sha256": _hashing.file_sha256(self.path)}

    def _output_spec(self, incoming):
        return {"path": self.path} if self.path.endswith(".keras") else None

    def run(self, model, context):
        from tfkd.export import TFLiteModel

        if self.path.endswith(".tflite"):
            return TFLiteModel(self.path), {"path": self.path}
        return _store.load_keras(self.path), {"path": self.path}


@register_stage("export")
class Export(Stage):
    """Exports the incoming Keras model to `model.tflite` and measures the file.

    Uses `tfkd.export_tflite`, which raises instead of writing a file that disagrees
    with the Keras model. Calibration (for `"int8"` / `"int16x8"` without QAT) and
    the agreement check use the first `calibration_samples` training inputs.

    Args:
        quantization: `None` (float32), `"dynamic"`, `"float16"`, `"int8"` or
            `"int16x8"`. Defaults to `None`.
        io_dtype: the file's input/output dtype (see `tfkd.export_tflite`).
            Defaults to `"float32"`.
        calibration_samples: Defaults to `500`.
        **kwargs: `name`, `from_stage` (see `Stage`).
    """

    def __init__(
        self,
        quantization: str | None = None,
        io_dtype: str = "float32",
        calibration_samples: int = 500,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if quantization not in QUANTIZATIONS:
            raise invalid_argument(
                "quantization",
                f"Unknown quantization. Received: quantization={quantization!r}. "
                f"Accepted: {list(QUANTIZATIONS)}",
            )
        if io_dtype not in IO_DTYPES[quantization]:
            raise invalid_argument(
                "io_dtype",
                f"`io_dtype` {io_dtype!r} does not go with quantization={quantization!r}. "
                f"Received: io_dtype={io_dtype!r}. Accepted: {list(IO_DTYPES[quantization])}",
            )
        check_positive("calibration_samples", calibration_samples, int)
        self.quantization, self.io_dtype = quantization, io_dtype
        self.calibration_samples = calibration_samples

    def run(self, model, context):
        from tfkd.export import TFLiteModel, export_tflite

        check_keras_input(self, model)
        path = context.directory / "model.tflite"
        report = export_tflite(
            model,
            path,
            self.quantization,
            representative_data=context.data.x_train[: self.calibration_samples],
            io_dtype=self.io_dtype,
        )
        details = report.to_dict()
        details["path"] = os.fspath(path)
        return TFLiteModel(path), details


@register_stage("transfer")
class Transfer(Stage):
    """Fine-tunes a pretrained backbone to the data (`tfkd.transfer.fine_tune`).

    It trains on the labelled training examples only (all of them, unless the data
    has `labelled_per_class`).

    Args:
        backbone: `"mobilenet_v2"` (torchvision's ImageNet weights, offline) or a
            `.keras` backbone without its classifier. Defaults to `"mobilenet_v2"`.
        image_size: inputs are resized to `image_size` x `image_size` inside the
            model. Defaults to `96`.
        head_epochs: epochs training the new head, backbone frozen. Defaults to `2`.
        fine_tune_epochs: epochs training with `unfreeze`d layers. Defaults to `4`.
        unfreeze: `"all"`, or the number of top backbone layers. Defaults to `"all"`.
        head_learning_rate: Defaults to `1e-3`.
        fine_tune_learning_rate: Defaults to `1e-4`.
        batch_size: Defaults to `128`.
        augmentation: random changes applied to each training batch in the step, as
            in `Distill` (`{flip: true, shift: 2, rotation: 0.05, zoom: 0.1}`, in
            pixels of the data's images); the model returned does not contain them.
            With few labels, they keep the head from memorising the images.
            Defaults to `None`.
        **kwargs: `name`, `from_stage` (see `Stage`).
    """

    def __init__(
        self,
        backbone: str = "mobilenet_v2",
        image_size: int = 96,
        head_epochs: int = 2,
        fine_tune_epochs: int = 4,
        unfreeze: str | int | float = "all",
        head_learning_rate: float = 1e-3,
        fine_tune_learning_rate: float = 1e-4,
        batch_size: int = 128,
        augmentation: dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if backbone != "mobilenet_v2":
            architectures.check_model_file(backbone, "backbone")
        check_positive("image_size", image_size, int)
        check_positive("head_epochs", head_epochs, int, allow_zero=True)
        check_positive("fine_tune_epochs", fine_tune_epochs, int, allow_zero=True)
        check_positive("head_learning_rate", head_learning_rate, float)
        check_positive("fine_tune_learning_rate", fine_tune_learning_rate, float)
        check_positive("batch_size", batch_size, int)
        _check_unfreeze(unfreeze)
        _distillation.check_augmentation(augmentation)
        self.augmentation = augmentation
        self.backbone, self.image_size, self.unfreeze = backbone, image_size, unfreeze
        self.head_epochs, self.fine_tune_epochs = head_epochs, fine_tune_epochs
        self.head_learning_rate = head_learning_rate
        self.fine_tune_learning_rate = fine_tune_learning_rate
        self.batch_size = batch_size

    def takes_input(self):
        return False

    def _check_before_run(self, data):
        _distillation.check_augmentation_data(self.augmentation, data)

    def fingerprint(self):
        fingerprint = self.get_config()
        if fingerprint.get("augmentation") is None:  # runs made before the key are reused
            fingerprint.pop("augmentation", None)
        if self.backbone != "mobilenet_v2":
            fingerprint["backbone_sha256"] = _hashing.file_sha256(self.backbone)
        return fingerprint

    def run(self, model, context):
        import keras

        from tfkd import transfer

        options = {}
        if self.backbone == "mobilenet_v2":
            shape = (self.image_size, self.image_size, 3)
            base = transfer.pretrained_mobilenet_v2(shape, include_top=False)
            options["preprocessing"] = transfer.torchvision_normalization()
        else:
            base = _store.load_keras(self.backbone)
            options["image_size"] = (self.image_size, self.image_size)
        keras.utils.set_random_seed(context.seed)
        model, history = transfer.fine_tune(
            base,
            context.data.num_classes,
            context.data.labelled(),
            head_epochs=context.epochs(self.head_epochs),
            fine_tune_epochs=context.epochs(self.fine_tune_epochs),
            unfreeze=self.unfreeze,
            head_learning_rate=self.head_learning_rate,
            fine_tune_learning_rate=self.fine_tune_learning_rate,
            batch_size=self.batch_size,
            augmentation=_distillation.build_augmentation(
                self.augmentation, context.data.input_shape, context.seed
            ),
            callbacks=context.callbacks(),
            verbose=context.keras_verbose(),
            input_shape=context.data.input_shape,
            **options,
        )
        return model, {
            "train_accuracy": [round(value, 4) for value in history.history.get("accuracy", [])]
        }


def _check_unfreeze(unfreeze):
    """What `fine_tune` accepts, checked before any work (layer names: when it runs)."""
    if isinstance(unfreeze, bool) or not isinstance(unfreeze, str | int | float):
        raise invalid_argument(
            "unfreeze",
            "`unfreeze` must be 'all', a number of top layers, a fraction in (0, 1] or a layer "
            f"name. Received: unfreeze={unfreeze!r}",
            TypeError,
        )
    if (
        isinstance(unfreeze, int)
        and unfreeze < 1
        or isinstance(unfreeze, float)
        and not (0.0 < unfreeze <= 1.0)
    ):
        raise invalid_argument(
            "unfreeze",
            "`unfreeze` as a number of layers must be >= 1, as a fraction in (0, 1]. "
            f"Received: unfreeze={unfreeze!r}",
        )
