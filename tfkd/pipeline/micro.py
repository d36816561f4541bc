"""The `micro` stage: a microcontroller bundle of the incoming `.tflite` file."""

import importlib.util

from tfkd import _checks
from tfkd.pipeline.data import spread_rows
from tfkd.pipeline.stage import Stage, check_positive, invalid_argument, register_stage

# What an `export` stage may make for a microcontroller: integer compute only (`auto`
# may keep a file that computes in float, so it is not among them).
INTEGER_QUANTIZATIONS = ("int8", "int16x8")
INTEGER_RECIPES = ("static_int8", "static_int16x8")


@register_stage("micro")
class Micro(Stage):
    """Checks the incoming `.tflite` file for TensorFlow Lite for Microcontrollers and
    writes its bundle into the stage's directory (`tfkd.export.micro_bundle`). The bundle:
    the model as a C array, an op resolver header with exactly its ops, the tensor arena measured
    by the TFLM interpreter, and TFLM's outputs compared with LiteRT's on the first
    `samples` test inputs, all in `micro.json`. The file passes on unchanged.

    Args:
        c_name: the C name of the model (arrays and files). Defaults to `"model"`.
        arena_margin: the share added to the measured arena. Defaults to `0.1`.
        arena_limit: bytes of RAM the arena must fit in, or `None`. Defaults to `None`.
        samples: test inputs TFLM and LiteRT are compared on, the first (from every
            class where the split is stored class by class). Defaults to `500`.
        **kwargs: `name`, `from_stage` (see `Stage`).
    """

    trains = False
    needs_input = True

    def __init__(
        self,
        c_name: str = "model",
        arena_margin: float = 0.1,
        arena_limit: int | None = None,
        samples: int = 500,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _checked("c_name", lambda: _checks.check_c_identifier(c_name, "c_name"))
        _checked(
            "arena_margin",
            lambda: _checks.check_number("arena_margin", arena_margin, low=0, high=10),
        )
        _checked(
            "arena_limit",
            lambda: _checks.check_number(
                "arena_limit", arena_limit, low=1, integer=True, allow_none=True
            ),
        )
        check_positive("samples", samples, int)
        self.c_name, self.arena_margin, self.arena_limit = c_name, arena_margin, arena_limit
        self.samples = samples

    def _check_before_run(self, data):
        if importlib.util.find_spec("tflite_micro") is None:
            raise invalid_argument(
                "stage",
                "The `micro` stage runs the model in the TFLM interpreter, from the "
                "`tflite-micro` package, which is not installed. Received: stage='micro'. "
                "pip install tflite-micro (or pip install 'tfkd[micro]'), or remove the stage.",
                ImportError,
            )

    def _check_input_model(self, build, incoming):
        raise invalid_argument(
            "from_stage",
            f"Stage {self.name!r} (micro) needs a .tflite file as input, and the stage before "
            f"it gives a Keras model. Received: from_stage={self.from_stage!r}. Put it after "
            "an `export` stage with quantization: int8, or set `from_stage` to one.",
        )

    def _check_input_tflite(self, export):
        if "path" in export:
            # A loaded file, read now for how it computes (as `micro_bundle` reads it).
            from tfkd.export.micro import check_ops

            try:
                check_ops(export["path"])
            except ValueError as error:
                raise invalid_argument(
                    "from_stage",
                    f"Stage {self.name!r} (micro) needs a file that TFLM runs in integers, "
                    f"and the file it receives is not one. Received: {export['path']!r} "
                    f"(from_stage={self.from_stage!r}). {error}",
                ) from None
            return
        quantization, recipe = export["quantization"], export["recipe"]
        if quantization in INTEGER_QUANTIZATIONS or recipe in INTEGER_RECIPES:
            return
        made = f"recipe={recipe!r}" if recipe is not None else f"quantization={quantization!r}"
        # `auto` keeps the smallest file within its accuracy budget, which may compute in
        # float (int4 weights): before, such a run failed at `micro`, after the export.
        makes = "may make" if quantization == "auto" else "makes"
        raise invalid_argument(
            "from_stage",
            f"Stage {self.name!r} (micro) needs a file that computes in integers, and the "
            f"export stage before it {makes} one that computes in float ({made}). Received: "
            f"from_stage={self.from_stage!r}. Export with quantization: int8 (or int16x8, "
            f"or recipe: static_int8), or set `from_stage` to such an export.",
        )

    def run(self, model, context):
        from tfkd.export import TFLiteModel
        from tfkd.export.micro import describe, micro_bundle

        if not isinstance(model, TFLiteModel):
            raise TypeError(
                f"Stage {self.name!r} (micro) needs a .tflite file as input. Received: "
                f"{type(model).__name__}. Put it after an `export` stage with "
                "quantization: int8, or set `from_stage` to one."
            )
        rows, spread = spread_rows(context.data.y_test, self.samples)
        summary = micro_bundle(
            model.path,
            context.directory,
            context.data.x_test[rows],
            name=self.c_name,
            arena_margin=self.arena_margin,
            arena_limit=self.arena_limit,
        )
        note = (
            f"for TFLite Micro: {describe(summary)}. C files and micro.json in stages/{self.name}/"
        )
        context.log(note)
        notes = [note] if spread is None else [note, f"the test inputs compared: {spread}"]
        return model, {"micro": summary, "notes": notes}

    def _output_spec(self, incoming):
        return incoming  # the file passes on unchanged


def _checked(argument, check):
    """Runs `check`; its error, if any, names `argument` for the config reader."""
    try:
        check()
    except (TypeError, ValueError) as error:
        raise invalid_argument(argument, str(error), type(error)) from None
