"""The stages that do not train: load, export and transfer (which trains through fine_tune)."""

import math
import os

from tfkd import _checks, _hashing
from tfkd._export_options import (
    IO_DTYPES,
    PER_TENSOR_QUANTIZATIONS,
    QUANTIZATIONS,
    check_litert_arguments,
    dtype_name,
)
from tfkd.pipeline import _distillation, _keras_file, _processes, architectures
from tfkd.pipeline.data import spread_rows
from tfkd.pipeline.stage import (
    Stage,
    check_keras_input,
    check_positive,
    invalid_argument,
    refuse_tflite_input,
    register_stage,
)

# `transfer`: the default size images are resized to, and the keys that only the
# fine-tuning reads (`fine_tune_epochs` > 0), with their defaults.
IMAGE_SIZE = 96
FINE_TUNE_ONLY = {"unfreeze": "all", "fine_tune_learning_rate": 1e-4, "fine_tune_decay": "constant"}
# The keys of `export` that `quantization: auto` alone reads, and their defaults.
AUTO_ONLY = {"accuracy_budget": 0.5, "validation_samples": 1000}
# The pretrained backbones `transfer` knows by name, and the inputs each takes.
PRETRAINED_BACKBONES = {"mobilenet_v2": "images", "minilm": "token ids"}


@register_stage("load")
class Load(Stage):
    """Loads a model: a `.keras` file, a `.tflite` file (as a `tfkd.TFLiteModel`), or a
    keras-hub classifier preset folder (`tfkd.transfer.load_preset`).

    Args:
        path: the file or folder. The stage reruns when its contents change.
        **kwargs: `name`, `from_stage` (see `Stage`).
    """

    def __init__(self, path: str, **kwargs):
        super().__init__(**kwargs)
        if isinstance(path, str | os.PathLike) and os.path.isdir(path):
            architectures.check_spec({"preset": os.fspath(path)}, "path")
        else:
            architectures.check_model_file(path, "path", suffixes=(".keras", ".tflite"))
        self.path = os.fspath(path)

    def takes_input(self):
        return False

    def _check_before_run(self, data):
        if self.path.endswith(".keras"):
            model = architectures.load_checked(self.path, "path")
            architectures.check_fits(model, data, "path", repr(self.path))

    def fingerprint(self):
        return {**self.get_config(), "sha256": _hashing.path_sha256(self.path)}

    def _output_spec(self, incoming):
        if os.path.isdir(self.path):
            return {"preset": self.path}
        if self.path.endswith(".tflite"):
            return {"tflite": {"path": self.path}}  # no export stage says how it was made
        return {"path": self.path}

    def run(self, model, context):
        from tfkd.export import TFLiteModel

        if self.path.endswith(".tflite"):
            return TFLiteModel(self.path), {"path": self.path}
        return architectures.build(self._output_spec(None), context.data, context.seed), {
            "path": self.path
        }


@register_stage("export")
class Export(Stage):
    """Exports the incoming Keras model to `model.tflite` and measures the file.

    For text data with a tokenizer (`data: {csv: ...}`), the tokenizer's files are
    written beside it (`write_tokenizer_files`), whichever way the file is made.

    Uses `tfkd.export_tflite`, which raises instead of writing a file that disagrees
    with the Keras model. Calibration (for `"int8"` / `"int16x8"` without QAT) and
    the agreement check use the first `calibration_samples` training inputs (where the
    split is stored class by class, as many drawn from every class: `spread_rows`).

    With `recipe`, the LiteRT quantizer (`tfkd.export.litert_quantize`) quantizes the
    float32 file instead of the converter, and its per-tensor error report is written
    beside the file (`model.errors.json`).

    Args:
        quantization: `None` (float32), `"dynamic"`, `"float16"`, `"int8"` or
            `"int16x8"`: the converter's. Defaults to `None`.
        recipe: a LiteRT quantizer recipe instead: `"int8_weight_only"`,
            `"int4_weight_only"`, `"int4_blockwise"`, `"dynamic_int8"`, `"static_int8"`
            or `"static_int16x8"`. Defaults to `None`.
        overrides: with `recipe`, layers quantized otherwise (see
            `tfkd.export.litert_quantize`). Defaults to `None`.
        io_dtype: the file's input/output dtype (see `tfkd.export_tflite`).
            Defaults to `"float32"`.
        calibration_samples: Defaults to `500`.
        per_channel: `false` gives each integer kernel one scale instead of one per
            output channel (see `tfkd.export_tflite`): after a `cluster` stage with
            `per_channel: false`, the int8 file then keeps at most `clusters` values
            per kernel (per channel where BatchNormalization follows the kernel). For
            `dynamic` and `int8`. Defaults to `true`.
        accuracy_budget: with `quantization: auto`, the accuracy points a file may lose
            against the float32 file: every candidate of `tfkd.export.auto_quantize` is
            made and measured on the last `validation_samples` labelled training
            examples (never the test split; drawn from every class as calibration is),
            and the smallest within the budget is kept; the candidates' table goes to
            the stage's details and `model.auto.json`. Defaults to `0.5`.
        validation_samples: Defaults to `1000`.
        **kwargs: `name`, `from_stage` (see `Stage`).
    """

    trains = False
    needs_input = True

    def __init__(
        self,
        quantization: str | None = None,
        io_dtype: str = "float32",
        calibration_samples: int = 500,
        recipe: str | None = None,
        overrides: list | None = None,
        accuracy_budget: float = AUTO_ONLY["accuracy_budget"],
        validation_samples: int = AUTO_ONLY["validation_samples"],
        per_channel: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        io_dtype = dtype_name(io_dtype)  # np.int8, as export_tflite takes it
        self.recipe, self.overrides = recipe, overrides
        try:
            self.per_channel = _checks.check_flag("per_channel", per_channel)
        except TypeError as error:
            raise invalid_argument("per_channel", str(error), TypeError) from None
        if not self.per_channel and quantization not in PER_TENSOR_QUANTIZATIONS:
            raise invalid_argument(
                "per_channel",
                "`per_channel: false` sets the scales of the converter's int8 kernels, "
                "for quantization dynamic or int8. Received: per_channel=False with "
                f"quantization={quantization!r}, recipe={recipe!r}",
            )
        try:
            _checks.check_number("accuracy_budget", accuracy_budget, low=0, high=100)
        except (TypeError, ValueError) as error:
            raise invalid_argument("accuracy_budget", str(error), type(error)) from None
        check_positive("validation_samples", validation_samples, int)
        self.accuracy_budget, self.validation_samples = accuracy_budget, validation_samples
        given = {"accuracy_budget": accuracy_budget, "validation_samples": validation_samples}
        for argument, default in AUTO_ONLY.items():
            if quantization != "auto" and given[argument] != default:
                raise invalid_argument(
                    argument,
                    f"`{argument}` is read by `quantization: auto` only (which measures "
                    f"each candidate file). Received: {argument}={given[argument]!r}, "
                    f"quantization={quantization!r}. Remove it, or set quantization: auto.",
                )
        if quantization == "auto":
            if io_dtype != "float32" or recipe is not None or overrides is not None:
                raise invalid_argument(
                    "quantization",
                    "`quantization: auto` chooses among float32-interface files, without a "
                    f"`recipe` or `overrides`. Received: io_dtype={io_dtype!r}, "
                    f"recipe={recipe!r}, overrides={overrides!r}",
                )
            check_positive("calibration_samples", calibration_samples, int)
            self.quantization, self.io_dtype = quantization, io_dtype
            self.calibration_samples = calibration_samples
            return
        if recipe is not None or overrides is not None:
            if quantization is not None:
                raise invalid_argument(
                    "recipe",
                    "Set `quantization` (the converter's) or `recipe` (the LiteRT "
                    f"quantizer's), not both. Received: quantization={quantization!r}, "
                    f"recipe={recipe!r}",
                )
            try:
                check_litert_arguments(recipe, overrides, io_dtype, "min_max", calibration_samples)
            except (ValueError, TypeError) as error:
                raise invalid_argument(error.argument, str(error), type(error)) from None
            self.quantization, self.io_dtype = None, io_dtype
            self.calibration_samples = calibration_samples
            return
        if quantization not in QUANTIZATIONS:
            raise invalid_argument(
                "quantization",
                f"Unknown quantization. Received: quantization={quantization!r}. "
                f"Accepted: {[*QUANTIZATIONS, 'auto']} (or a LiteRT quantizer `recipe`)",
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

    def _output_spec(self, incoming):
        return {"tflite": {"quantization": self.quantization, "recipe": self.recipe}}

    def _check_input_tflite(self, export):
        refuse_tflite_input(self)

    def _check_input_model(self, build, incoming):
        # Before, the export refused these after the training stages had run.
        int8 = self.quantization == "int8" and self.recipe is None
        if (int8 and self.per_channel) or architectures.may_be_quantized(incoming) is False:
            return
        from tfkd.quantize import is_quantized

        if not is_quantized(build()):
            return
        if not int8:
            asked = {"recipe": self.recipe} if self.recipe else {"quantization": self.quantization}
            ((argument, value),) = asked.items()
            raise invalid_argument(
                argument,
                f"Stage {self.name!r} (export) receives a quantization-aware model, which "
                f"exports as int8 only. Received: {argument}={value!r} "
                f"(from_stage={self.from_stage!r}). Set quantization: int8, or export the "
                "model from before the `quantize_aware` stage.",
            )
        raise invalid_argument(
            "per_channel",
            f"Stage {self.name!r} (export) receives a quantization-aware model, which "
            "exports with the per-channel scales it trained. Received: per_channel=False "
            f"(from_stage={self.from_stage!r}). Remove `per_channel`, or export the "
            "model from before the `quantize_aware` stage.",
        )

    def run(self, model, context):
        from tfkd.export import TFLiteModel, export_tflite

        check_keras_input(self, model)
        path = context.directory / "model.tflite"
        rows, spread = spread_rows(context.data.y_train, self.calibration_samples)
        data = context.data.x_train[rows]
        if self.quantization == "auto":
            details = self._auto(model, path, data, context)
        elif self.recipe is not None:
            from tfkd.export import litert_quantize

            report = litert_quantize(
                model,
                path,
                self.recipe,
                data,
                overrides=self.overrides,
                io_dtype=self.io_dtype,
                calibration_samples=self.calibration_samples,
            )
            details = report.to_dict()
            details["layer_errors"] = report.layer_errors["outputs"]
        else:
            details = export_tflite(
                model,
                path,
                self.quantization,
                representative_data=data,
                io_dtype=self.io_dtype,
                calibration_samples=self.calibration_samples,
                per_channel=self.per_channel,
                verbose=context.keras_verbose(),
            ).to_dict()
        details["path"] = os.fspath(path)
        if spread is not None:
            note = f"calibration and check inputs: {spread}"
            context.log(note)
            details.setdefault("notes", []).append(note)
        if context.data.tokenizer is not None:
            details["tokenizer_files"] = write_tokenizer_files(
                context.data.tokenizer, context.data.class_names, context.directory
            )
        return TFLiteModel(path), details

    def _auto(self, model, path, data, context):
        """Writes the file `quantization: auto` keeps; returns the stage's details."""
        from tfkd.export.auto import auto_quantize

        x, y = context.data.labelled()
        rows, spread = spread_rows(y, self.validation_samples, last=True)
        x_val, y_val = x[rows], y[rows]
        summary = auto_quantize(
            model, path, x_val, y_val, data, accuracy_budget=self.accuracy_budget
        )
        chosen = summary["candidates"][summary["chosen"]]
        note = (
            f"quantization: auto kept {summary['chosen']} ({chosen['bytes']:,} bytes, accuracy "
            f"{chosen['accuracy']:.4f} against {summary['reference_accuracy']:.4f} for float32 "
            f"on {len(y_val):,} labelled training examples, budget {self.accuracy_budget} "
            f"points) among {len(summary['candidates'])} candidates: "
            + "; ".join(
                f"{name} {entry['bytes']:,} B {entry['accuracy']:.4f}"
                if "bytes" in entry
                else f"{name} failed"
                for name, entry in summary["candidates"].items()
            )
        )
        context.log(note)
        notes = [note] if spread is None else [note, f"auto's validation examples: {spread}"]
        return {"auto": summary, "notes": notes}


def write_tokenizer_files(tokenizer, class_names, directory):
    """Writes what a script needs to run a text `.tflite` with LiteRT only, beside it:
    `vocab.txt`, `tokenizer.json` (sequence length, lowercasing, class names) and
    `wordpiece.py` (the tokenizer, pure Python: `WordPieceTokenizer("vocab.txt", ...)`).
    Returns the file names."""
    import json
    import pathlib

    from tfkd import _atomic
    from tfkd.text import _wordpiece

    tokens = sorted(tokenizer.vocabulary, key=tokenizer.vocabulary.get)
    settings = {
        "vocabulary": "vocab.txt",
        "sequence_length": tokenizer.sequence_length,
        "lowercase": tokenizer.lowercase,
        "class_names": list(class_names),
    }
    files = {
        "vocab.txt": "".join(f"{token}\n" for token in tokens),
        "tokenizer.json": json.dumps(settings, indent=2) + "\n",
        "wordpiece.py": pathlib.Path(_wordpiece.__file__).read_text(encoding="utf-8"),
    }
    for name, text in files.items():
        _atomic.write_bytes(pathlib.Path(directory) / name, text.encode("utf-8"))
    return sorted(files)


@register_stage("transfer")
class Transfer(Stage):
    """Fine-tunes a pretrained backbone to the data (`tfkd.transfer.fine_tune`).

    It trains on the labelled training examples only (all of them, unless the data
    has `labelled_per_class`).

    For text (token ids, e.g. `data: {csv: ...}`), the backbone is a BERT (`"minilm"`),
    and each batch is cut to its longest text (`tfkd.text.LengthBuckets`): the model
    takes token ids of any length.

    Args:
        backbone: `"mobilenet_v2"` (torchvision's ImageNet weights, offline),
            `"minilm"` (all-MiniLM-L6-v2, `tfkd.transfer.pretrained_minilm`, for token
            ids of its vocabulary), a `.keras` backbone without its classifier, or
            `{"preset": DIR}`, a keras-hub preset folder (or a Hugging Face BERT
            checkpoint folder), whose backbone is used (`tfkd.transfer.load_preset`).
            Defaults to `"mobilenet_v2"`.
        image_size: images are resized to `image_size` x `image_size` inside the
            model (images only). Defaults to `96`.
        head_epochs: epochs training the new head, backbone frozen. Defaults to `2`.
        fine_tune_epochs: epochs training with `unfreeze`d layers; with `0`, the
            three keys below are refused (nothing would read them). Defaults to `4`.
        unfreeze: `"all"`, or the number of top backbone layers. Defaults to `"all"`.
        head_learning_rate: Defaults to `1e-3`.
        fine_tune_learning_rate: Defaults to `1e-4`.
        fine_tune_decay: the fine-tuning learning rate over its steps: `"constant"`,
            `"linear"` (decayed to 0, as BERT is fine-tuned) or `"cosine"` (decayed to
            0 on a cosine). With few labels a decay matters: on 1,000 Fashion-MNIST
            labels the MobileNetV2 teacher scored 0.8724 ± 0.0012 with a cosine against
            0.8584 ± 0.0211 constant, 3 seeds (BENCHMARKS.md, "Few labels"). Defaults to
            `"constant"`.
        dropout: dropout before the new classifier. Defaults to `0.2`.
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
        backbone: str | dict = "mobilenet_v2",
        image_size: int = IMAGE_SIZE,
        head_epochs: int = 2,
        fine_tune_epochs: int = 4,
        unfreeze: str | int | float = FINE_TUNE_ONLY["unfreeze"],
        head_learning_rate: float = 1e-3,
        fine_tune_learning_rate: float = FINE_TUNE_ONLY["fine_tune_learning_rate"],
        fine_tune_decay: str = FINE_TUNE_ONLY["fine_tune_decay"],
        dropout: float = 0.2,
        batch_size: int = 128,
        augmentation: dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            _check_backbone_preset(backbone)
        elif backbone not in PRETRAINED_BACKBONES:
            architectures.check_model_file(backbone, "backbone")
        if fine_tune_decay not in ("constant", "linear", "cosine"):
            raise invalid_argument(
                "fine_tune_decay",
                "`fine_tune_decay` must be 'constant', 'linear' or 'cosine'. Received: "
                f"fine_tune_decay={fine_tune_decay!r}",
            )
        try:
            _checks.check_number("dropout", dropout, low=0, high=1, high_open=True)
        except (TypeError, ValueError) as error:
            raise invalid_argument("dropout", str(error), type(error)) from None
        check_positive("image_size", image_size, int)
        if backbone == "mobilenet_v2" and image_size < 32:
            raise invalid_argument(
                "image_size",
                "`image_size` must be at least 32 for the MobileNetV2 backbone (its layout "
                f"halves the images five times). Received: image_size={image_size!r}.",
            )
        check_positive("head_epochs", head_epochs, int, allow_zero=True)
        check_positive("fine_tune_epochs", fine_tune_epochs, int, allow_zero=True)
        check_positive("head_learning_rate", head_learning_rate, float)
        check_positive("fine_tune_learning_rate", fine_tune_learning_rate, float)
        check_positive("batch_size", batch_size, int)
        _check_unfreeze(unfreeze)
        _distillation.check_augmentation(augmentation)
        given = {
            "unfreeze": unfreeze,
            "fine_tune_learning_rate": fine_tune_learning_rate,
            "fine_tune_decay": fine_tune_decay,
        }
        for argument, default in FINE_TUNE_ONLY.items():
            if fine_tune_epochs == 0 and given[argument] != default:
                raise invalid_argument(
                    argument,
                    f"`{argument}` sets the fine-tuning, and `fine_tune_epochs: 0` trains the "
                    f"head alone. Received: {argument}={given[argument]!r}, "
                    "fine_tune_epochs=0. Remove it, or fine-tune for an epoch or more.",
                )
        self.augmentation = augmentation
        self.backbone, self.image_size, self.unfreeze = backbone, image_size, unfreeze
        self.head_epochs, self.fine_tune_epochs = head_epochs, fine_tune_epochs
        self.head_learning_rate = head_learning_rate
        self.fine_tune_learning_rate = fine_tune_learning_rate
        self.fine_tune_decay, self.dropout = fine_tune_decay, dropout
        self.batch_size = batch_size

    def takes_input(self):
        return False

    def _check_one_process(self, data):
        processes = _processes.current()
        if processes is not None and architectures.input_kind(data) != "images":
            raise invalid_argument(
                "backbone",
                f"Stage {self.name!r} (transfer) fine-tunes on texts on one process only: its "
                "batches of texts cut to their longest are not shared among processes yet. "
                f"Received: backbone={self.backbone!r} on {processes.count} processes. Run "
                "the pipeline without --processes, or start from a `load` stage.",
            )

    def _check_before_run(self, data):
        _distillation.check_labelled_data(self, data)
        _distillation.check_augmentation_data(self.augmentation, data)
        self._check_one_process(data)
        if isinstance(self.backbone, str) and self.backbone.endswith(".keras"):
            architectures.load_checked(self.backbone, "backbone")  # not a hostile or broken file
        if self.image_size != IMAGE_SIZE and data.x_train.ndim != 4:
            raise invalid_argument(
                "image_size",
                "`image_size` is the size images are resized to for the backbone, and the "
                f"inputs are not images (shape {data.input_shape}). Received: "
                f"image_size={self.image_size!r}. Remove it for this data.",
            )
        if self.backbone == "mobilenet_v2":
            scaling = "its ImageNet normalization divides them by 255"
            architectures.check_pixels(data, "backbone", repr(self.backbone), scaling)
        self._check_unfreeze_names(data)
        wanted = PRETRAINED_BACKBONES.get(self.backbone) if isinstance(self.backbone, str) else None
        if wanted is not None and wanted != architectures.input_kind(data):
            raise invalid_argument(
                "backbone",
                f"The backbone {self.backbone!r} takes {wanted}, and the data are "
                f"{architectures.input_kind(data)} of shape {data.input_shape}. Received: "
                f"backbone={self.backbone!r}",
            )

    def _check_unfreeze_names(self, data):
        """A layer name or a count of top layers in `unfreeze`, against the backbone's
        layers (MobileNetV2 of random weights, or a `.keras` file): before, checked when
        the stage ran, after the stages before it."""
        named = isinstance(self.unfreeze, str) and self.unfreeze != "all"
        cheap = self.backbone == "mobilenet_v2" or str(self.backbone).endswith(".keras")
        if not self.fine_tune_epochs or not cheap or not (named or isinstance(self.unfreeze, int)):
            return
        from tfkd.transfer import _backbone

        try:
            _backbone.unfreeze_names(self._backbone(data, pretrained=False)[0], self.unfreeze)
        except ValueError as error:
            raise invalid_argument("unfreeze", str(error)) from None

    def fingerprint(self):
        fingerprint = self.get_config()
        # Runs made before these keys existed are reused while they keep their defaults.
        defaults = {"augmentation": None, "fine_tune_decay": "constant", "dropout": 0.2}
        for key, default in defaults.items():
            if fingerprint.get(key) == default:
                fingerprint.pop(key, None)
        if isinstance(self.backbone, dict):
            fingerprint["backbone_sha256"] = _hashing.path_sha256(self.backbone["preset"])
        elif self.backbone not in PRETRAINED_BACKBONES:
            fingerprint["backbone_sha256"] = _hashing.path_sha256(self.backbone)
        return fingerprint

    def _output_spec(self, incoming):
        # The classifier `run` makes, untrained (`classifier`). A MiniLM or keras-hub
        # preset backbone is built only with its weights read in full: left unknown.
        if self.backbone == "minilm" or isinstance(self.backbone, dict):
            return None
        return {"transfer": self}

    def classifier(self, data):
        """The classifier `run` fine-tunes, for `data`, with a MobileNetV2 backbone of
        random weights: its architecture, which the checks before any stage runs read."""
        from tfkd import transfer

        base, options = self._backbone(data, pretrained=False)
        return transfer.build_classifier(base, data.num_classes, **options)

    def _backbone(self, data, pretrained=True):
        """The backbone, and the options of `build_classifier` for `data`."""
        from tfkd import transfer

        options = {"input_shape": data.input_shape, "dropout": self.dropout}
        if self.backbone == "mobilenet_v2":
            shape = (self.image_size, self.image_size, 3)
            build = transfer.pretrained_mobilenet_v2 if pretrained else transfer.mobilenet_v2
            base = build(shape, include_top=False)
            options["preprocessing"] = transfer.torchvision_normalization()
        elif self.backbone == "minilm":
            base = transfer.pretrained_minilm()
        elif isinstance(self.backbone, dict):
            base = transfer.load_preset(self.backbone["preset"], backbone=True)
        else:
            base = _keras_file.load_keras(self.backbone)
        images = architectures.input_kind(data) == "images"
        if images and self.backbone != "mobilenet_v2":
            options["image_size"] = (self.image_size, self.image_size)
        if not images:
            options["input_shape"] = (None,)  # batches cut to their longest text
        return base, options

    def run(self, model, context):
        import keras

        from tfkd import transfer

        base, options = self._backbone(context.data)
        train_data = context.data.labelled()
        if architectures.input_kind(context.data) != "images":
            from tfkd.text import LengthBuckets

            train_data = LengthBuckets(*train_data, batch_size=self.batch_size, seed=context.seed)
        epochs = context.epochs(self.head_epochs), context.epochs(self.fine_tune_epochs)
        fine_tune_rate = self._fine_tune_rate(epochs[1], train_data)
        batch_size = self.batch_size
        if isinstance(train_data, tuple):  # on several processes, this process's share
            *train_data, batch_size = context.share(*train_data, batch_size)
            train_data = tuple(train_data)
        keras.utils.set_random_seed(context.seed)
        model, history = transfer.fine_tune(
            base,
            context.data.num_classes,
            train_data,
            head_epochs=epochs[0],
            fine_tune_epochs=epochs[1],
            unfreeze=self.unfreeze,
            head_learning_rate=self.head_learning_rate,
            fine_tune_learning_rate=fine_tune_rate,
            batch_size=batch_size,
            augmentation=_distillation.build_augmentation(
                self.augmentation, context.data.input_shape, context.seed
            ),
            callbacks=context.callbacks(),
            verbose=context.keras_verbose(),
            **options,
        )
        return model, {
            "train_accuracy": [round(value, 4) for value in history.history.get("accuracy", [])]
        }

    def _fine_tune_rate(self, epochs, train_data):
        """The fine-tuning learning rate, or its linear or cosine decay to 0 over `epochs`."""
        if self.fine_tune_decay == "constant" or not epochs:
            return self.fine_tune_learning_rate
        import keras

        if isinstance(train_data, tuple):
            steps = epochs * math.ceil(len(train_data[1]) / self.batch_size)
        else:
            steps = epochs * len(train_data)  # LengthBuckets: its number of batches
        if self.fine_tune_decay == "cosine":
            return keras.optimizers.schedules.CosineDecay(self.fine_tune_learning_rate, steps)
        return keras.optimizers.schedules.PolynomialDecay(self.fine_tune_learning_rate, steps, 0.0)


def _check_backbone_preset(backbone):
    from tfkd import _presets

    if set(backbone) != {"preset"}:
        raise invalid_argument(
            "backbone",
            "`backbone` as a mapping must be `{preset: DIR}`, a keras-hub preset folder. "
            f"Received: backbone={backbone!r}",
        )
    try:
        _presets.preset_folder(backbone["preset"], "backbone.preset")
    except (TypeError, ValueError, FileNotFoundError) as error:
        kind = TypeError if isinstance(error, TypeError) else ValueError
        raise invalid_argument("backbone", str(error), kind) from None


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
