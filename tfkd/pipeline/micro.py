"""The `micro` stage: a microcontroller bundle of the incoming `.tflite` file."""

from tfkd import _checks
from tfkd.pipeline.stage import Stage, check_positive, invalid_argument, register_stage


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
        samples: test inputs TFLM and LiteRT are compared on. Defaults to `500`.
        **kwargs: `name`, `from_stage` (see `Stage`).
    """

    trains = False

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

    def run(self, model, context):
        from tfkd.export import TFLiteModel
        from tfkd.export.micro import describe, micro_bundle

        if not isinstance(model, TFLiteModel):
            raise TypeError(
                f"Stage {self.name!r} (micro) needs a .tflite file as input. Received: "
                f"{type(model).__name__}. Put it after an `export` stage with "
                "quantization: int8, or set `from_stage` to one."
            )
        summary = micro_bundle(
            model.path,
            context.directory,
            context.data.x_test[: self.samples],
            name=self.c_name,
            arena_margin=self.arena_margin,
            arena_limit=self.arena_limit,
        )
        note = (
            f"for TFLite Micro: {describe(summary)}. C files and micro.json in stages/{self.name}/"
        )
        context.log(note)
        return model, {"micro": summary, "notes": [note]}


def _checked(argument, check):
    """Runs `check`; its error, if any, names `argument` for the config reader."""
    try:
        check()
    except (TypeError, ValueError) as error:
        raise invalid_argument(argument, str(error), type(error)) from None
