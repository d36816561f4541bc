"""`litert_quantize`: a float `.tflite` file quantized by Google's LiteRT quantizer
(`ai-edge-quantizer`), with recipes the converter lacks (int4 and int8 weight-only,
int4 blockwise), per-layer recipes, and a per-tensor error report saved with the file.

The quantizer edits the flatbuffer; it needs no TensorFlow. Its calibration merges the
ranges of successive batches with a moving average (0.95 old, 0.05 new), which clips
activations the converter would not: with one sample a step, a static int8 model's
outputs lost up to 0.9 of a logit against 0.04 on the same data calibrated as one batch
(ai-edge-quantizer 0.10.0). tfkd calibrates with running minima and maxima over every
sample instead, as the converter does (`calibration="min_max"`, the default); the
quantizer's own is `calibration="moving_average"`.
"""

import json
import math
import os
import pathlib
import re
import warnings

import numpy as np

from tfkd import _atomic, _checks
from tfkd._export_options import LITERT_RECIPES, check_litert_arguments, dtype_name
from tfkd.export import _interpreter
from tfkd.export.report import ExportReport

RECIPES = tuple(LITERT_RECIPES)  # what each does: `LITERT_RECIPES`
# Samples a calibration step runs at once, and samples the error report compares on.
_CALIBRATION_BATCH = 32
_ERROR_SAMPLES = 32
_ERROR_STEP = 8


def litert_quantize(
    source,
    path,
    recipe,
    data,
    *,
    overrides=None,
    io_dtype="float32",
    calibration="min_max",
    calibration_samples=500,
):
    """Quantizes the float32 `.tflite` file `source` with the LiteRT quantizer into `path`;
    writes the per-tensor error report beside it (`<path stem>.errors.json`).

    Args:
        source: a float32 `.tflite` file (e.g. `tfkd.export_tflite(model, path)`'s), or a
            Keras model, exported to float32 first.
        path: where to write the quantized `.tflite` file.
        recipe: one of `RECIPES`: `"int8_weight_only"`, `"int4_weight_only"`,
            `"int4_blockwise"`, `"dynamic_int8"`, `"static_int8"`, `"static_int16x8"`.
        data: inputs of the model (a numpy array, one example per row): the static
            recipes calibrate on up to `calibration_samples` of them, and the error
            report compares the float and quantized files on the first 32.
        overrides: layers quantized otherwise, a list of `{"layers": regex, "recipe":
            name}` applied in order (a later one wins), `name` one of `RECIPES` or
            `"float"`. The regex is searched in the names of each op's output tensors,
            which hold the Keras layer names (`"conv2d/"`, `"dense_1/"`). E.g. keep the
            first and last layers at 8 bits in an int4 model:
            `[{"layers": "conv2d/|predictions/", "recipe": "int8_weight_only"}]`.
            Static recipes cannot be applied to single layers of a non-static recipe.
        io_dtype: the file's input and output dtype for the static recipes: `"float32"`
            (the default: QUANTIZE and DEQUANTIZE ops at the edges) or the activations'
            integer dtype (`"int8"`, `"int16"`); the others are float32.
        calibration: `"min_max"` (the default; the smallest and largest value of each
            tensor over all calibration samples, as the converter does) or
            `"moving_average"` (the quantizer's own).
        calibration_samples: at most this many rows of `data` calibrate. Defaults to 500.

    Returns:
        An `ExportReport` (`quantization` is `"litert_quantizer:<recipe>"`) whose
        `layer_errors` holds the error report: for the outputs and every tensor the two
        files share, the MSE, the signal-to-noise ratio in dB and the cosine similarity
        between float and quantized values, averaged over the samples, worst first.

    Raises:
        ImportError: the quantizer is not installed (`pip install 'tfkd[quantizer]'`).
        ValueError: an unknown recipe, override, io_dtype or calibration; a source that
            is not a float32 file; data that does not fit its input; a recipe the
            quantizer refuses for a layer (the message names it); a file LiteRT cannot
            prepare or run on `data` (its words, and the file's name).
    """
    io_dtype = dtype_name(io_dtype)
    check_litert_arguments(recipe, overrides, io_dtype, calibration, calibration_samples)
    if hasattr(source, "layers"):
        from tfkd.export.tflite import check_float_model

        check_float_model(source, f"a quantization-aware `source`, with recipe={recipe!r}")
    path = pathlib.Path(_checks.check_output_file(path))
    if isinstance(data, np.ndarray):  # before a Keras `source` is exported on it
        _checks.check_finite_array("data", data)
    quantizer, names = _load_quantizer()
    content = _float_content(source, data)
    signature, input_name = _signature(content)
    # A file's path, where `source` is one, names it in LiteRT's errors.
    named = os.fspath(source) if isinstance(source, str | os.PathLike) else None
    x = _checked_data(data, content, named)
    engine = quantizer.Quantizer(bytes(content))
    overrides = overrides or []
    scoped = [
        dict(o, layers=_ops_matching(content, o["layers"], i)) for i, o in enumerate(overrides)
    ]
    _configure(engine, names, recipe, scoped, io_dtype)
    calibration_result = None
    with warnings.catch_warnings():
        # Said whenever it keeps every tensor, which calibration and the report need.
        warnings.filterwarnings("ignore", ".*Enabling `experimental_preserve_all_tensors`")
        if engine.need_calibration:
            try:
                calibration_result = _calibrate(
                    engine, content, signature, input_name, x[:calibration_samples], calibration
                )
            except RuntimeError as error:  # LiteRT's, running the file
                raise _interpreter.litert_failure(
                    "run", named or content, content, error, " on `data` (to calibrate)"
                ) from None
        try:
            result = engine.quantize(calibration_result, enable_progress_report=False)
        except (ValueError, RuntimeError) as error:
            raise ValueError(
                f"The LiteRT quantizer refused recipe {recipe!r} with overrides "
                f"{overrides!r}: {error}. Keep the layer it names out with an override "
                '(`{"layers": "<its name>", "recipe": "int8_weight_only"}`).'
            ) from error
        quantized = bytes(result.quantized_model)
        try:
            errors = _layer_errors(content, quantized, signature, input_name, x)
        except RuntimeError as error:
            raise _interpreter.litert_failure(
                "run",
                named or content,
                content,
                error,
                " (or the file quantized from it) on `data`, comparing their tensors",
            ) from None
    errors = {
        "recipe": recipe,
        "overrides": overrides,
        "calibration": calibration if calibration_result is not None else None,
        "quantizer_recipe": engine.get_quantization_recipe(),
        **errors,
    }
    _atomic.write_bytes(path, quantized)
    _atomic.write_bytes(
        error_report_path(path), (json.dumps(errors, indent=1, default=_plain) + "\n").encode()
    )
    report = ExportReport.from_file(os.fspath(path), quantization=f"litert_quantizer:{recipe}")
    report.layer_errors = errors
    return report


def error_report_path(path):
    """Where `litert_quantize` writes the error report of the file at `path`."""
    path = pathlib.Path(path)
    return path.with_name(path.stem + ".errors.json")


def _load_quantizer():
    try:
        from ai_edge_quantizer import qtyping, quantizer, recipe
    except ImportError as error:
        raise ImportError(
            "`litert_quantize` needs Google's LiteRT quantizer: pip install "
            f"'tfkd[quantizer]' (ai-edge-quantizer). ({error})"
        ) from error
    return quantizer, {"qtyping": qtyping, "recipe": recipe, "quantizer": quantizer}


def _float_content(source, data):
    """The bytes of a float32 `.tflite` file: `source`'s, or a Keras model's export."""
    if isinstance(source, str | os.PathLike):
        source = pathlib.Path(os.fspath(source))
        if not source.is_file():
            raise ValueError(
                f"`source` must be a float32 .tflite file or a Keras model. Received: "
                f"source={os.fspath(source)!r}, which is not a file."
            )
        content = _interpreter.checked_content(source)  # a ValueError naming the file
    elif hasattr(source, "layers") and hasattr(source, "predict"):
        from tfkd.export.tflite import float_with_signature

        content = float_with_signature(source, data)
    else:
        raise TypeError(
            "`source` must be a float32 .tflite file or a Keras model. Received: "
            f"{type(source).__name__}."
        )
    try:
        ops = _interpreter.list_ops(content)
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"`source` is not a .tflite file LiteRT can read: {error}") from None
    integer = sorted(
        {name for name, dtypes in ops if dtypes and dtypes[0] in ("int8", "int16", "uint8")}
    )
    if integer or any(name == "DEQUANTIZE" for name, _ in ops):
        raise ValueError(
            "`source` must be a float32 .tflite file (export it with quantization=None); "
            f"this one is quantized already (ops {integer or ['DEQUANTIZE']})."
        )
    return content


def _checked_data(data, content, named=None):
    runner = _interpreter.Runner(content, name=named)
    if len(runner.inputs) != 1:
        raise ValueError(
            f"`litert_quantize` takes models of one input. This one has {len(runner.inputs)}."
        )
    signature = [int(size) for size in runner.inputs[0]["shape_signature"]]
    if not isinstance(data, np.ndarray) or data.ndim < 1 or not len(data):
        raise ValueError(
            f"`data` must be a non-empty numpy array of the model's inputs, shaped "
            f"{['batch', *signature[1:]]}. Received: "
            f"{getattr(data, 'shape', type(data).__name__)}"
        )
    if data.ndim == len(signature) - 1 and signature[-1] == 1:
        data = data[..., None]  # grayscale images without their channel axis
    if data.ndim != len(signature):
        raise ValueError(
            f"`data` does not fit the model's input {['batch', *signature[1:]]}. Received: "
            f"shape {data.shape}."
        )
    fixed = [(want, got) for want, got in zip(signature[1:], data.shape[1:]) if want != -1]
    if any(want != got for want, got in fixed):
        raise ValueError(
            f"`data` does not fit the model's input {['batch', *signature[1:]]}. Received: "
            f"shape {data.shape}."
        )
    dtype = runner.inputs[0]["dtype"]
    return _checks.check_finite_array("data", data, dtype).astype(dtype)


def _signature(content):
    interpreter = _interpreter.make_interpreter(content, delegates=False)
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        raise ValueError(
            "The LiteRT quantizer runs a file through its signature, and `source` has "
            f"{len(signatures)} ({list(signatures)}); tfkd's exported files have none. Pass "
            "the Keras model as `source`: tfkd then exports it with one."
        )
    key, signature = next(iter(signatures.items()))
    return key, signature["inputs"][0]


def _ops_matching(content, regex, index):
    """A regex the quantizer matches to exactly the ops `regex` names: those with a weight
    or an output whose tensor name `regex` finds (the quantizer itself looks at outputs
    only, and a model's last layer outputs a tensor named for the signature).

    Raises:
        ValueError: when `regex` names no op; the message lists the layers.
    """
    interpreter = _interpreter.make_interpreter(content, delegates=False)
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    ops = _interpreter.ops_details(interpreter)
    # Weights: inputs no op computes. An op's other inputs are its producers' outputs,
    # which name the producing layer, not this one.
    computed = {int(i) for op in ops for i in op["outputs"]}
    computed |= {int(d["index"]) for d in interpreter.get_input_details()}
    matched, layers = [], set()
    for op in ops:
        own = [int(i) for i in op["inputs"] if int(i) >= 0 and int(i) not in computed]
        tensors = [names[i] for i in (*own, *map(int, op["outputs"])) if i in names]
        layers.update(name.split(";")[0] for name in tensors if "/" in name)
        if any(re.search(regex, name) for name in tensors) and len(op["outputs"]):
            matched.append(re.escape(names[int(op["outputs"][0])]))
    if not matched:
        raise ValueError(
            f"overrides[{index}]['layers'] names no op of the model. Received: {regex!r}. "
            f"Its tensors are named for the layers: {sorted(layers)[:40]}"
        )
    return "|".join(sorted(set(matched)))


def _configure(engine, names, recipe, overrides, io_dtype):
    qtyping, recipes = names["qtyping"], names["recipe"]
    engine.load_quantization_recipe(_RECIPE_RULES[recipe](recipes))
    if recipe == "int4_blockwise":  # int4 blocks where the quantizer has them
        _apply(engine, names, ".*", recipe)
    for override in overrides:
        _apply(engine, names, override["layers"], override["recipe"])
    if recipe.startswith("static") and io_dtype == "float32":
        no_quantize = names["quantizer"].AlgorithmName.NO_QUANTIZE
        for edge in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            engine.update_quantization_recipe(".*", edge, algorithm_key=no_quantize)


# The quantizer's recipe each of tfkd's starts from.
_RECIPE_RULES = {
    "int8_weight_only": lambda recipes: recipes.weight_only_wi8_afp32(),
    "int4_weight_only": lambda recipes: recipes.weight_only_wi4_afp32(),
    "int4_blockwise": lambda recipes: recipes.dynamic_wi8_afp32(),
    "dynamic_int8": lambda recipes: recipes.dynamic_wi8_afp32(),
    "static_int8": lambda recipes: recipes.static_wi8_ai8(),
    "static_int16x8": lambda recipes: recipes.static_wi8_ai16(),
}


def _apply(engine, names, regex, name):
    qtyping = names["qtyping"]
    everything = qtyping.TFLOperationName.ALL_SUPPORTED
    if name == "float":
        no_quantize = names["quantizer"].AlgorithmName.NO_QUANTIZE
        engine.update_quantization_recipe(regex, everything, algorithm_key=no_quantize)
    elif name == "int8_weight_only":
        engine.add_weight_only_config(regex, everything, num_bits=8)
    elif name == "int4_weight_only":
        engine.add_weight_only_config(regex, everything, num_bits=4)
    elif name == "dynamic_int8":
        engine.add_dynamic_config(regex, everything, num_bits=8)
    elif name == "int4_blockwise":
        for operation in ("FULLY_CONNECTED", "EMBEDDING_LOOKUP"):
            engine.add_dynamic_config(
                regex,
                getattr(qtyping.TFLOperationName, operation),
                num_bits=4,
                granularity=qtyping.QuantGranularity.BLOCKWISE_32,
            )
    else:  # the static recipe itself, on layers an earlier override changed
        bits = 16 if name == "static_int16x8" else 8
        engine.add_static_config(regex, everything, activation_num_bits=bits, weight_num_bits=8)


def _calibrate(engine, content, signature, input_name, x, calibration):
    """Ranges of every tensor over `x`, in steps of `_CALIBRATION_BATCH` samples."""
    from ai_edge_quantizer import calibrator, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    steps = [
        {input_name: x[start : start + _CALIBRATION_BATCH]}
        for start in range(0, len(x), _CALIBRATION_BATCH)
    ]
    if calibration == "moving_average":
        return engine.calibrate({signature: steps})
    rules = recipe_manager.RecipeManager()
    rules.load_quantization_recipe(engine.get_quantization_recipe())
    running = calibrator.Calibrator(content, qsv_update_func=qsv_utils.min_max_update)
    running.calibrate({signature: steps}, rules)
    return running.get_model_qsvs()


def _layer_errors(content, quantized, signature, input_name, x):
    """Float against quantized, tensor by tensor, on the first `_ERROR_SAMPLES` rows."""
    from ai_edge_quantizer import quantizer

    metrics = quantizer.ValidationErrorMetric
    checker = quantizer.Quantizer(bytes(content), previous_quantized_model=quantized)
    x = x[:_ERROR_SAMPLES]
    steps = [{input_name: x[s : s + _ERROR_STEP]} for s in range(0, len(x), _ERROR_STEP)]
    result = checker.validate(
        test_data={signature: steps},
        error_metrics=[metrics.MSE, metrics.SNR, metrics.COSINE_SIMILARITY],
    )
    compared = result.get_signature_comparison_result(signature)

    def rows(tensors, kind):
        return [
            {
                "tensor": name,
                "kind": kind,
                "mse": float(values["mse"]),
                "snr_db": _decibels(values["snr"]),
                "cosine": float(values["cosine_similarity"]),
            }
            for name, values in tensors.items()
        ]

    tensors = rows(compared.intermediate_tensors, "activation") + rows(
        compared.constant_tensors, "weight"
    )
    tensors.sort(key=lambda row: row["cosine"])
    return {
        "samples": len(x),
        "outputs": rows(compared.output_tensors, "output"),
        "tensors": tensors,
    }


def _decibels(ratio):
    """A power ratio in dB; `None` where the two are identical (no noise)."""
    ratio = float(ratio)
    if not math.isfinite(ratio) or ratio <= 0:
        return None
    return round(10 * math.log10(ratio), 3)


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "value"):  # enums
        return value.value
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
