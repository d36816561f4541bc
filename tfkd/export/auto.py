"""`auto_quantize`: the smallest `.tflite` file whose accuracy stays within a budget of the
float32 file's, chosen among the converter's and the LiteRT quantizer's files, each made
and measured through `TFLiteModel` on held-out data."""

import json
import os
import pathlib
import re

from tfkd import _atomic, _checks
from tfkd.export.model import TFLiteModel

# Every candidate. The mixed one keeps at int8 the layers where the int4 file's error
# report shows the error growing most (`mixed_overrides`).
CANDIDATES = (
    "int4_weight_only",
    "int4_mixed",
    "int8",
    "int8_weight_only",
    "int16x8",
    "dynamic",
    "float16",
    "float32",
)
_CONVERTER = {"int8": "int8", "int16x8": "int16x8", "dynamic": "dynamic", "float16": "float16"}
# The share of weighted layers the mixed candidate keeps at int8 (BENCHMARKS.md, *The LiteRT
# quantizer against the converter*, measures it on MobileNetV2 and MiniLM).
MIXED_SHARE = 0.2
# As many as `export_tflite` and `litert_quantize` calibrate on by default.
_CALIBRATION_SAMPLES = 500


def auto_quantize(
    model,
    path,
    x_val,
    y_val,
    calibration_data,
    *,
    accuracy_budget=0.5,
    candidates=CANDIDATES,
    latency_runs=50,
):
    """Makes every candidate file of `model`, measures each on `(x_val, y_val)`, and copies
    to `path` the smallest whose accuracy is within `accuracy_budget` points of the
    float32 file's; writes the table of all of them to `<path stem>.auto.json`.

    Args:
        model: a Keras model (one input).
        path: where the chosen `.tflite` file goes; the candidates go to the folder
            `<path stem>.candidates/` beside it.
        x_val, y_val: held-out examples and their labels (not the test split, which then
            checks the choice).
        calibration_data: inputs for the calibrated candidates (`int8`, `int16x8`): a
            numpy array, a `tf.data.Dataset` or an iterable of batches, as
            `export_tflite`'s `representative_data`; up to 500 samples are read once,
            before any candidate is made.
        accuracy_budget: accuracy points (0 to 100) a candidate may lose against the
            float32 file on `(x_val, y_val)`. Defaults to `0.5`.
        candidates: names from `CANDIDATES`; `"float32"` is always made (the reference).
        latency_runs: batch-1 inferences timed per candidate (median). Defaults to `50`.

    Returns:
        A dict: `chosen` (the candidate's name), `reference_accuracy`, `budget_points`,
        `candidates` (per name: `bytes`, `accuracy`, `latency_ms`, `within_budget`, or
        `error` for one that could not be made) and `path`.

    Raises:
        ValueError: a bad budget, candidate name or data (also `x_val` or
            `calibration_data` holding NaN or infinite values), or a float32 file that
            cannot be made (the reference); no candidate within the budget cannot happen
            (the float32 file is one).
    """
    _checks.check_number("accuracy_budget", accuracy_budget, low=0, high=100)
    _checks.check_number("latency_runs", latency_runs, low=1, integer=True)
    unknown = [name for name in candidates if name not in CANDIDATES]
    if unknown or not candidates:
        raise ValueError(
            f"Unknown candidates {unknown or candidates!r}. Received: candidates="
            f"{list(candidates)!r}. Accepted: {list(CANDIDATES)}"
        )
    if len(x_val) != len(y_val) or not len(y_val):
        raise ValueError(
            f"`x_val` and `y_val` must hold as many examples, at least one. Received: "
            f"{len(x_val)} and {len(y_val)}."
        )
    # Before any candidate is made: NaN examples score as class 0 in every file alike.
    x_val = _checks.check_finite_array("x_val", x_val)
    if not (hasattr(model, "layers") and hasattr(model, "predict")):
        raise TypeError(f"`model` must be a Keras model. Received: {type(model).__name__}")
    from tfkd.export.tflite import check_float_model

    # Every candidate is made from the float model (before, the float32 one refused it).
    check_float_model(model, "a quantization-aware `model`, for auto_quantize")
    calibration_data = _calibration_arrays(model, calibration_data)
    path = pathlib.Path(_checks.check_output_file(path))
    folder = path.with_name(path.stem + ".candidates")
    folder.mkdir(parents=True, exist_ok=True)
    names = ["float32", *[name for name in CANDIDATES if name in candidates and name != "float32"]]
    measured, reports = {}, {}
    for name in names:
        file = folder / f"{name}.tflite"
        try:
            _make(name, model, file, calibration_data, reports)
        except (ValueError, ImportError) as error:
            if name == "float32":  # the reference every candidate is measured against
                raise
            measured[name] = {"error": f"{type(error).__name__}: {error}"[:500]}
            continue
        lite = TFLiteModel(file)
        result = lite.evaluate(x_val, y_val)
        latency = lite.benchmark(num_runs=latency_runs, warmup_runs=5, sample=x_val[:1])
        measured[name] = {
            "bytes": lite.bytes,
            "accuracy": round(float(result["accuracy"]), 4),
            "latency_ms": round(latency["median_ms"], 4),
        }
    reference = measured["float32"]["accuracy"]
    floor = reference - accuracy_budget / 100
    for entry in measured.values():
        if "accuracy" in entry:
            entry["within_budget"] = entry["accuracy"] >= floor - 1e-9
    within = [name for name, entry in measured.items() if entry.get("within_budget")]
    chosen = min(within, key=lambda name: (measured[name]["bytes"], names.index(name)))
    _atomic.write_bytes(path, (folder / f"{chosen}.tflite").read_bytes())
    summary = {
        "chosen": chosen,
        "reference_accuracy": reference,
        "budget_points": accuracy_budget,
        "validation_examples": len(y_val),
        "candidates": measured,
        "path": os.fspath(path),
    }
    _atomic.write_bytes(
        path.with_name(path.stem + ".auto.json"), (json.dumps(summary, indent=2) + "\n").encode()
    )
    return summary


def _calibration_arrays(model, calibration_data):
    """`calibration_data` as the array (one per input) every candidate calibrates on: read
    once, as a generator gives its batches once and the LiteRT quantizer takes arrays
    only; refused, naming it, when it holds NaN or infinite values, which the converter
    calibrates on without complaint."""
    if calibration_data is None:
        return None
    from tfkd.export import _representative, _signature

    inputs = _signature.model_inputs(model)
    arrays = _representative.collect(
        calibration_data, inputs, _CALIBRATION_SAMPLES, name="calibration_data"
    )
    if inputs is not None:  # shaped now, so that a misshapen one is refused by its name
        arrays = _representative.as_model_inputs(arrays, inputs, name="calibration_data")
    return arrays[0] if len(arrays) == 1 else arrays


def _make(name, model, file, calibration_data, reports):
    """Writes candidate `name` to `file`; keeps the quantizer's error reports in `reports`."""
    from tfkd.export.litert_quantizer import litert_quantize
    from tfkd.export.tflite import export_tflite, float_with_signature

    if name == "float32":
        # The quantizer's source too; the data builds a model never called.
        _atomic.write_bytes(file, float_with_signature(model, calibration_data))
    elif name in _CONVERTER:
        export_tflite(model, file, _CONVERTER[name], calibration_data)
    elif name in ("int4_weight_only", "int8_weight_only"):
        report = litert_quantize(file.with_name("float32.tflite"), file, name, calibration_data)
        reports[name] = report.layer_errors
    else:  # int4_mixed
        errors = reports.get("int4_weight_only")
        if errors is None:
            report = litert_quantize(
                file.with_name("float32.tflite"),
                file.with_name("int4_weight_only.tflite"),
                "int4_weight_only",
                calibration_data,
            )
            errors = report.layer_errors
        litert_quantize(
            file.with_name("float32.tflite"),
            file,
            "int4_weight_only",
            calibration_data,
            overrides=mixed_overrides(errors, file.with_name("float32.tflite")),
        )


def mixed_overrides(errors, float_file, share=MIXED_SHARE):
    """Overrides keeping at int8 the `share` of weighted layers where an int4 file's error
    grows most, from its error report (`litert_quantize`'s `layer_errors`).

    A layer's growth is the signal-to-noise ratio (dB) its output loses against its
    inputs'. The weights' own errors do not rank layers: int4 per channel gives every
    kernel about the same error, but a 3x3 depthwise kernel, whose outputs sum 9
    products, passes far more of it on than a pointwise one summing hundreds.

    Args:
        errors: the report of the int4 file.
        float_file: the float32 `.tflite` file it was quantized from (for the graph).
    """
    from tfkd.export import _interpreter

    noise = {
        row["tensor"]: row["snr_db"]
        for row in errors["tensors"] + errors["outputs"]
        if row["snr_db"] is not None
    }
    weights = {row["tensor"] for row in errors["tensors"] if row["kind"] == "weight"}
    clean = max(noise.values(), default=0)  # what an exact input counts as
    interpreter = _interpreter.make_interpreter(os.fspath(float_file), delegates=False)
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    growth = {}
    for op in _interpreter.ops_details(interpreter):
        inputs = [names.get(int(i)) for i in op["inputs"] if int(i) >= 0]
        outputs = [names.get(int(i)) for i in op["outputs"]]
        if not outputs or outputs[0] not in noise or not weights.intersection(inputs):
            continue
        before = min((noise[n] for n in inputs if n in noise and n not in weights), default=clean)
        growth[outputs[0]] = before - noise[outputs[0]]  # dB of signal-to-noise lost here
    if not growth:
        return []
    worst = sorted(growth, key=growth.get, reverse=True)[: max(1, round(len(growth) * share))]
    regex = "|".join(re.escape(name) for name in worst)
    return [{"layers": regex, "recipe": "int8_weight_only"}]
