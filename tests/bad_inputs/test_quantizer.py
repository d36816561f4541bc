"""Bad inputs to `tfkd.export.litert_quantize` (issue 20): each refused before the LiteRT
quantizer runs."""

import numpy as np

from tests.bad_inputs._cases import Case, check, parametrize, tmp
from tests.helpers import small_cnn
from tfkd.export import auto_quantize, litert_quantize

_X = np.zeros((4, 28, 28, 1), "float32")
_Y = np.zeros(4, "int64")
# Images with one NaN pixel, for a model that takes them.
_NAN = np.where(np.arange(4 * 8 * 8).reshape(4, 8, 8, 1) == 5, np.nan, 0.0).astype("float32")

CASES = [
    Case(
        litert_quantize,
        lambda: litert_quantize("m.tflite", "q.tflite", "int3", _X),
        ValueError,
        "recipe",
        "recipe='int3'",
    ),
    Case(
        litert_quantize,
        lambda: litert_quantize("m.tflite", "q.tflite", "dynamic_int8", _X, io_dtype="int8"),
        ValueError,
        "io_dtype",
        "io_dtype='int8'",
    ),
    Case(
        litert_quantize,
        lambda: litert_quantize("m.tflite", "q.tflite", "static_int8", _X, calibration="ema"),
        ValueError,
        "calibration",
        "calibration='ema'",
    ),
    Case(
        litert_quantize,
        lambda: litert_quantize(
            "m.tflite", "q.tflite", "int4_weight_only", _X, overrides=[{"layer": "conv"}]
        ),
        ValueError,
        "overrides",
        "{'layer': 'conv'}",
    ),
    Case(
        litert_quantize,
        lambda: litert_quantize(
            "m.tflite",
            "q.tflite",
            "int4_weight_only",
            _X,
            overrides=[{"layers": "conv", "recipe": "int2"}],
        ),
        ValueError,
        "recipe",
        "recipe='int2'",
    ),
    Case(
        litert_quantize,
        lambda: litert_quantize(3, "q.tflite", "dynamic_int8", _X),
        TypeError,
        "source",
        "Received: int",
    ),
    Case(
        litert_quantize,
        lambda: litert_quantize("m.tflite", "q.tflite", "static_int8", _X, calibration_samples=0),
        ValueError,
        "calibration_samples",
        "0",
    ),
    Case(
        litert_quantize,
        # Before: the export of the model named `representative_data`, not an argument here.
        lambda: litert_quantize(small_cnn(4, "m"), tmp("q.tflite"), "dynamic_int8", _NAN),
        ValueError,
        "data",
        "data with nan at index (0, 0, 5, 0)",
    ),
    Case(
        auto_quantize,
        lambda: auto_quantize(small_cnn(4, "m"), tmp("m.tflite"), np.zeros_like(_NAN), _Y, _NAN),
        ValueError,
        "calibration_data",
        "calibration_data with nan at index (0, 0, 5, 0)",
    ),
    Case(
        auto_quantize,
        lambda: auto_quantize(None, "m.tflite", _X, _Y, _X, accuracy_budget=-1),
        ValueError,
        "accuracy_budget",
        "-1",
    ),
    Case(
        auto_quantize,
        lambda: auto_quantize(None, "m.tflite", _X, _Y, _X, candidates=["int2"]),
        ValueError,
        "candidates",
        "'int2'",
    ),
    Case(
        auto_quantize,
        lambda: auto_quantize(None, "m.tflite", _X, _Y[:3], _X),
        ValueError,
        "y_val",
        "4 and 3",
    ),
    Case(
        auto_quantize,
        lambda: auto_quantize(None, "m.tflite", _X, _Y, _X, latency_runs=0),
        ValueError,
        "latency_runs",
        "0",
    ),
]


@parametrize(CASES)
def test_refused(case):
    check(case)
