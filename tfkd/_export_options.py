"""What `export_tflite` and `litert_quantize` accept, in a module without Keras: pipeline
configs are checked against it without importing TensorFlow or LiteRT."""

import re

from tfkd._checks import check_number

QUANTIZATIONS = (None, "dynamic", "float16", "int8", "int16x8")
# The file's input/output dtypes each quantization can have.
IO_DTYPES = {
    None: ("float32",),
    "dynamic": ("float32",),
    "float16": ("float32",),
    "int8": ("float32", "int8", "uint8"),
    "int16x8": ("float32", "int16"),
}
# The quantizations whose kernels `per_channel=False` gives one scale each (the converter's
# int16x8 fails on depthwise layers with it).
PER_TENSOR_QUANTIZATIONS = ("dynamic", "int8")

# tfkd's recipe names: what each quantizes, and its compute.
LITERT_RECIPES = {
    "int8_weight_only": "int8 weights (per channel), dequantized to float32 at load time",
    "int4_weight_only": "int4 weights (per channel), dequantized to float32 at load time",
    "int4_blockwise": "int4 weights in blocks of 32 on fully-connected and embedding layers, "
    "int8 elsewhere; activations quantized on the fly (dynamic)",
    "dynamic_int8": "int8 weights, activations quantized on the fly (as the converter's dynamic)",
    "static_int8": "int8 weights and activations, calibrated (as the converter's int8)",
    "static_int16x8": "int8 weights, int16 activations, calibrated (as the converter's int16x8)",
}
# What a layer override may keep a layer at: a recipe, or float32.
LITERT_OVERRIDE_RECIPES = (*LITERT_RECIPES, "float")
LITERT_IO_DTYPES = {"static_int8": ("float32", "int8"), "static_int16x8": ("float32", "int16")}
LITERT_CALIBRATIONS = ("min_max", "moving_average")


def dtype_name(value):
    """`value` as its name where it is a numpy dtype or scalar type (`np.int8`,
    `np.dtype("int8")` give `"int8"`); anything else as it is, for the caller's check to
    name (numpy would read `None` and `float` as float64). numpy is imported only for a
    value that is not a string: configs are checked without it."""
    if isinstance(value, str) or value is None:
        return value
    import numpy as np

    if isinstance(value, np.dtype):
        return value.name
    if isinstance(value, type) and issubclass(value, np.generic):
        return np.dtype(value).name
    return value


def check_litert_arguments(recipe, overrides, io_dtype, calibration, calibration_samples):
    """`litert_quantize`'s checks, which need no LiteRT. Each error has an `argument`
    attribute naming the argument it is about (the pipeline points configs at it)."""
    if recipe not in LITERT_RECIPES:
        raise _error(
            "recipe",
            f"Unknown recipe. Received: recipe={recipe!r}. Accepted: {list(LITERT_RECIPES)}.",
        )
    if overrides is not None:
        if not isinstance(overrides, list | tuple):
            raise _error(
                "overrides",
                "`overrides` must be a list of {'layers': regex, 'recipe': name}. Received: "
                f"overrides={overrides!r}",
                TypeError,
            )
        for index, override in enumerate(overrides):
            _check_override(index, override, recipe)
    accepted = LITERT_IO_DTYPES.get(recipe, ("float32",))
    if io_dtype not in accepted:
        raise _error(
            "io_dtype",
            f"`io_dtype` {io_dtype!r} does not go with recipe={recipe!r}. Received: "
            f"io_dtype={io_dtype!r}. Accepted: {list(accepted)}.",
        )
    if calibration not in LITERT_CALIBRATIONS:
        raise _error(
            "calibration",
            f"Unknown calibration. Received: calibration={calibration!r}. Accepted: "
            f"{list(LITERT_CALIBRATIONS)}.",
        )
    try:
        check_number("calibration_samples", calibration_samples, low=1, integer=True)
    except (ValueError, TypeError) as error:
        error.argument = "calibration_samples"
        raise


def _check_override(index, override, recipe):
    where = f"overrides[{index}]"
    if not isinstance(override, dict) or set(override) != {"layers", "recipe"}:
        raise _error(
            "overrides",
            f"{where} must be a mapping with exactly the keys 'layers' (a regex) and "
            f"'recipe'. Received: {where}={override!r}",
        )
    try:
        re.compile(override["layers"])
    except (re.error, TypeError) as error:
        raise _error(
            "overrides",
            f"{where}['layers'] must be a regular expression. Received: "
            f"{override['layers']!r} ({error})",
        ) from None
    name = override["recipe"]
    if name not in LITERT_OVERRIDE_RECIPES:
        raise _error(
            "overrides",
            f"Unknown recipe in {where}. Received: recipe={name!r}. Accepted: "
            f"{list(LITERT_OVERRIDE_RECIPES)}.",
        )
    if name.startswith("static") and name != recipe:
        raise _error(
            "overrides",
            f"{where}: a static recipe ({name!r}) needs calibrated activations around the "
            f"layer, which recipe={recipe!r} does not have. Received: {where}={override!r}",
        )


def _error(argument, message, kind=ValueError):
    error = kind(message)
    error.argument = argument
    return error
