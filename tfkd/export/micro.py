"""`micro_bundle`: what a microcontroller build needs from a `.tflite` file, checked and
measured with TensorFlow Lite for Microcontrollers (TFLM) itself."""

import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from tfkd import _atomic, _checks
from tfkd.export import _interpreter
from tfkd.export._micro_ops import CONVERSION_OPS, RESOLVER_METHODS

__all__ = ["micro_bundle"]

_ALIGNMENT = 16  # bytes; the model array and the arena figure are aligned to this
_LARGEST_ARENA = 256 * 2**20  # the search for the arena gives up above this
_WORKER_SECONDS = 600
HOST_NOTE = (
    "measured by the TFLM interpreter of the tflite-micro package on a 64-bit host; a 32-bit "
    "microcontroller needs about the same or less (pointers are half the size), and its "
    "kernels (CMSIS-NN and others) may ask for scratch memory of their own"
)


def micro_bundle(path, directory, data=None, *, name="model", arena_margin=0.1, arena_limit=None):
    """Checks that a `.tflite` file runs on TFLM, and writes what a firmware build needs.

    - checks: builtin ops only, each one TFLM has a kernel for, computing in integers
      (int8, or int16 activations); names each op that is not;
    - writes `{name}_data.cc` / `{name}_data.h`, the file as a C array aligned to 16
      bytes with its length and the arena size, and `{name}_ops.h`, a
      `tflite::MicroMutableOpResolver` that registers exactly the file's ops;
    - measures the tensor arena: the smallest that the TFLM interpreter (the `tflite-micro`
      package, run on this host) runs the file with, then adds `arena_margin`;
    - with `data`, runs both TFLM and LiteRT on it and compares their outputs;
    - writes `micro.json` with all of it.

    Args:
        path: the `.tflite` file (an int8 export: `tfkd.export_tflite(...,
            quantization="int8")`).
        directory: the folder to write the bundle to (created if needed).
        data: inputs to compare TFLM's outputs with LiteRT's on, as the Keras model takes
            them (one example per row), or `None`. Defaults to `None`.
        name: the C name of the model, prefixing the arrays and files. Defaults to
            `"model"`.
        arena_margin: the share added to the measured arena. Defaults to `0.1`.
        arena_limit: bytes of RAM the arena must fit in, or `None`. Defaults to `None`.

    Returns:
        The dict written to `micro.json`: `flash_bytes`, `arena_bytes` (with the margin),
        `measured_arena_bytes`, `ops`, `agreement` (with `data`: `top1` and
        `max_abs_difference`, else `None`), `files` and `host`.

    Raises:
        ValueError: the file has ops TFLM cannot run or that compute in float, the
            arena exceeds `arena_limit`, an argument is out of range, or `data` holds
            NaN or infinite values.
        ImportError: the `tflite-micro` package is missing.

    Example:

    ```python
    tfkd.export_tflite(student, "student.tflite", quantization="int8", representative_data=x)
    tfkd.export.micro_bundle("student.tflite", "firmware/model", x_test[:500])["arena_bytes"]
    ```
    """
    path = _checks.check_file(path, "path", "a .tflite file")
    directory = _checks.check_path(directory, "directory")
    if os.path.exists(directory) and not os.path.isdir(directory):
        # Before: found by os.makedirs after the arena was measured.
        raise ValueError(
            f"`directory` must be a folder to write the bundle to (made if missing), and "
            f"it is a file. Received: directory={directory!r}."
        )
    _checks.check_c_identifier(name, "name")
    margin = _checks.check_number("arena_margin", arena_margin, low=0, high=10)
    _checks.check_number("arena_limit", arena_limit, low=1, integer=True, allow_none=True)
    data = _checked_data(data)
    _require_tflite_micro()
    ops = check_ops(path)
    if data is not None:
        data = _shaped_for(path, data)
    measured = measure_arena(path)
    arena = _aligned(int(np.ceil(measured * (1 + margin))))
    if arena_limit is not None and arena > arena_limit:
        raise ValueError(
            f"The model needs a tensor arena of {arena:,} bytes ({measured:,} measured plus "
            f"{margin:.0%}), more than the limit. Received: arena_limit={arena_limit:,}. "
            "Use a smaller or lower-resolution student, int8 inputs, or raise the limit."
        )
    with open(path, "rb") as file:
        content = file.read()
    files = _c_files(content, name, ops, arena)
    summary = {
        "model": os.path.abspath(path),
        "model_sha256": hashlib.sha256(content).hexdigest(),
        "flash_bytes": len(content),
        "measured_arena_bytes": measured,
        "arena_margin": margin,
        "arena_bytes": arena,
        "ops": ops,
        "agreement": None if data is None else compare(path, data, arena),
        "files": sorted(files),
        "host": HOST_NOTE,
    }
    os.makedirs(directory, exist_ok=True)
    for file_name, text in files.items():
        _atomic.write_bytes(os.path.join(directory, file_name), text.encode())
    _atomic.write_bytes(
        os.path.join(directory, "micro.json"), (json.dumps(summary, indent=1) + "\n").encode()
    )
    return summary


def describe(summary):
    """One sentence of `micro_bundle`'s figures, for the CLI and the pipeline's report."""
    agreement = summary["agreement"]
    compared = (
        f"; TFLM against LiteRT on {agreement['samples']} examples: top-1 agreement "
        f"{agreement['top1']:.3f}, largest output difference {agreement['max_abs_difference']:.4g}"
        if agreement
        else ""
    )
    return (
        f"{summary['flash_bytes']:,} bytes of flash, a tensor arena of "
        f"{summary['arena_bytes']:,} bytes ({summary['measured_arena_bytes']:,} measured by the "
        f"TFLM interpreter on this 64-bit host, plus {summary['arena_margin']:.0%}), ops "
        f"{', '.join(summary['ops'])}{compared}"
    )


def _checked_data(data):
    if data is None:
        return None
    array = np.asarray(data)
    if array.dtype.kind not in "biuf" or array.ndim < 2 or len(array) == 0:
        raise ValueError(
            "`data` must be a numeric array of examples, one per row. Received: data of "
            f"dtype {array.dtype} and shape {array.shape}."
        )
    # NaN examples give NaN outputs whose argmax (0) agrees on both interpreters.
    return _checks.check_finite_array("data", array)


def _require_tflite_micro():
    try:
        import tflite_micro  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "Checking a model for microcontrollers runs it in the TFLM interpreter: "
            "pip install tflite-micro (or pip install 'tfkd[micro]')."
        ) from error


def check_ops(path):
    """The file's op names, sorted, once each is one TFLM runs in integers.

    Raises:
        ValueError: an op TFLM has no kernel for, or one that computes in float.
    """
    ops = _interpreter.list_ops(path)
    names = sorted({name for name, _ in ops})
    flex = [name for name in names if name.startswith("Flex")]
    if flex:
        raise ValueError(
            f"The model uses TensorFlow (Flex) ops, which TFLM cannot run: {flex}. Export "
            "without select_tf_ops=True, replacing the layers that need them."
        )
    unknown = [name for name in names if name not in RESOLVER_METHODS]
    if unknown:
        raise ValueError(
            f"TFLM has no kernel for these ops of the model: {unknown}. Replace the layers "
            "that produce them (the LiteRT op names map to Keras layers: e.g. "
            "GELU -> use relu or hard_swish)."
        )
    floats = sorted(
        {
            name
            for name, dtypes in ops
            if name not in CONVERSION_OPS and any("float" in dtype for dtype in dtypes)
        }
    )
    if floats:
        raise ValueError(
            f"These ops of the model compute in float: {floats}. Microcontrollers need "
            "integer compute: export with tfkd.export_tflite(model, path, "
            'quantization="int8", representative_data=...).'
        )
    return names


def measure_arena(path):
    """The smallest tensor arena (bytes, to 16) that TFLM runs the file with."""
    high = _aligned(max(os.path.getsize(path), 4096))
    while True:
        works, failure = _runs(path, high)
        if works:
            break
        if not _out_of_memory(failure):
            raise ValueError(
                f"TFLM cannot run the model, and not for lack of arena memory: {failure}. "
                f"Received: path={path!r}. Replace the layers behind that op, or check the "
                "op's input types against TFLM's kernel for it."
            )
        if high >= _LARGEST_ARENA:
            raise ValueError(
                f"TFLM cannot run the model with an arena of {_LARGEST_ARENA:,} bytes: "
                f"{failure}. Received: path={path!r}."
            )
        high *= 4
    low = 0  # runs with `high`, not with `low`
    while high - low > _ALIGNMENT:
        middle = _aligned((low + high) // 2)
        if middle >= high:
            break
        if _runs(path, middle)[0]:
            high = middle
        else:
            low = middle
    return high


def _shaped_for(path, data):
    """`data` shaped for the file's input, as `TFLiteModel.predict` takes it (`(N, 28, 28)`
    images for a `(28, 28, 1)` input), or a ValueError naming `data` before the arena is
    measured (TFLM's "Dimension mismatch" came after)."""
    from tfkd.export.model import TFLiteModel

    lite = TFLiteModel(path)
    if len(lite.input_names) != 1:
        raise ValueError(
            "`data` feeds the file's one input, and this file has "
            f"{len(lite.input_names)}: {lite.input_names}. Received: data of shape "
            f"{np.shape(data)}. Bundle it without `data`, or export a model with one input."
        )
    expected = [int(size) for size in lite._runner.inputs[0]["shape_signature"][1:]]
    try:
        shaped = lite._fit_rank(np.asarray(data))
    except ValueError:  # its message names `x`, `predict`'s argument
        shaped = None
    if shaped is None:
        raise ValueError(
            f"`data` must hold examples of the file's input shape {tuple(expected)} (-1: any). "
            f"Received: data of shape {np.shape(data)}."
        )
    return shaped


def compare(path, data, arena):
    """TFLM against LiteRT on `data`: top-1 agreement and the largest output difference."""
    from tfkd.export.model import TFLiteModel

    lite = TFLiteModel(path)
    expected = lite.predict(data)
    details = lite._runner.inputs[0]
    with tempfile.TemporaryDirectory() as folder:
        inputs, outputs = os.path.join(folder, "x.npy"), os.path.join(folder, "y.npy")
        np.save(inputs, _interpreter.quantize_input(data, details))
        works, failure = _runs(path, arena, inputs, outputs)
        if not works:
            raise ValueError(f"TFLM failed on `data`: {failure}.")
        raw = np.load(outputs, allow_pickle=False)
    got = _interpreter.dequantize_output(raw, lite._runner.outputs[0])
    expected = np.asarray(expected[0] if isinstance(expected, list) else expected)
    got = got.reshape(expected.shape)
    if _interpreter.holds_ids(lite._runner.outputs[0]):
        expected = expected.astype(np.int64)
    return {
        "samples": len(data),
        "top1": _interpreter.top1_agreement(expected, got),
        "max_abs_difference": float(np.max(np.abs(got - expected))),
    }


def _runs(path, arena, inputs=None, outputs=None):
    """Whether TFLM runs the file with `arena` bytes, in a process of its own."""
    # The worker is run as a file, not as `-m tfkd...`: importing tfkd loads TensorFlow.
    worker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_micro_worker.py")
    command = [sys.executable, worker, path, str(arena)] + ([inputs, outputs] if inputs else [])
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=_WORKER_SECONDS)
    except subprocess.TimeoutExpired:
        return False, f"TFLM did not finish within {_WORKER_SECONDS} s"
    if result.returncode == 0 and result.stdout.strip().endswith("ok"):
        return True, None
    if result.returncode < 0:
        return False, f"died of signal {-result.returncode}"
    # TFLM logs what went wrong on stderr; the worker says which step failed on stdout.
    logged = [line for line in result.stderr.splitlines() if line.strip()][-3:]
    said = [line for line in result.stdout.splitlines() if line.startswith("failed: ")]
    reason = "; ".join(logged + [line.removeprefix("failed: ") for line in said])
    return False, reason.rstrip(".") or f"exit status {result.returncode}"


def _out_of_memory(failure):
    """Whether a failed TFLM run failed for lack of arena (TFLM says so, or its process
    died, as it does when the arena is too small even for its own bookkeeping)."""
    text = failure.lower()
    return failure.startswith("died") or "allocate" in text or "missing:" in text


def _aligned(size):
    return -(-size // _ALIGNMENT) * _ALIGNMENT


def _c_files(content, name, ops, arena):
    """`{name}_data.h`, `{name}_data.cc` and `{name}_ops.h`, as text."""
    guard = name.upper()
    lines = [
        "  " + ", ".join(f"0x{byte:02x}" for byte in content[start : start + 12]) + ","
        for start in range(0, len(content), 12)
    ]
    header = (
        f"// Generated by tfkd micro. The model as a C array, and the tensor arena it needs.\n"
        f"#ifndef {guard}_DATA_H_\n#define {guard}_DATA_H_\n\n"
        f"extern const unsigned char {name}_data[];\n"
        f"extern const unsigned int {name}_data_len;\n\n"
        "// Tensor arena in bytes, margin included: measured by TFLM on a 64-bit host\n"
        "// (micro.json says how).\n"
        f"constexpr unsigned int {name}_arena_bytes = {arena};\n\n"
        f"#endif  // {guard}_DATA_H_\n"
    )
    source = (
        f'// Generated by tfkd micro.\n#include "{name}_data.h"\n\n'
        f"alignas({_ALIGNMENT}) const unsigned char {name}_data[] = {{\n"
        + "\n".join(lines)
        + f"\n}};\nconst unsigned int {name}_data_len = {len(content)};\n"
    )
    calls = "".join(
        f"  if (resolver.{RESOLVER_METHODS[op]}() != kTfLiteOk) return kTfLiteError;\n"
        for op in ops
    )
    resolver = (
        "// Generated by tfkd micro. Registers exactly the ops of the model.\n"
        f"#ifndef {guard}_OPS_H_\n#define {guard}_OPS_H_\n\n"
        '#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"\n\n'
        f"constexpr unsigned int {name}_op_count = {len(ops)};\n"
        f"using {name}_op_resolver = tflite::MicroMutableOpResolver<{name}_op_count>;\n\n"
        f"// {', '.join(ops)}\n"
        f"inline TfLiteStatus {name}_register_ops({name}_op_resolver& resolver) {{\n"
        f"{calls}  return kTfLiteOk;\n}}\n\n#endif  // {guard}_OPS_H_\n"
    )
    return {f"{name}_data.h": header, f"{name}_data.cc": source, f"{name}_ops.h": resolver}
