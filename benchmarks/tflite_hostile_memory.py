"""What LiteRT allocates for the crafted `.tflite` files README.md cites, left unchecked,
and what tfkd's check says of each (README.md, "Files tfkd reads may be hostile").

Each file is built by the builders of `tests/export` (the files those tests keep), checked
by `tfkd.export._tflite_file.check` (as `TFLiteModel` checks a file), then handed to LiteRT
itself, without the check, in a child process of its own: `Interpreter(model_content=...)`
with XNNPACK, LiteRT's default, as tfkd's `_interpreter` makes it; `allocate_tensors()`; and
one `invoke()` on zeros (not for the pools: minutes on 2 cores), each child stopped after
60 s. After importing LiteRT the child caps its address space (RLIMIT_AS) at what it holds plus
`--cap-gib` (4 GiB), so an allocation larger than that fails instead of filling the machine.
After each stage it reports, in MiB, the growth of its peak resident memory (`VmHWM`, reset
after the import: touched) and of its peak address space (`VmPeak`: reserved) since the
import, and after `allocate_tensors` the largest tensor LiteRT sized (in any subgraph). The
same is measured for the compile config tfkd does not build when it loads a `.keras` file:
`AUC(num_thresholds=10**7)` and Adam with `amsgrad` and EMA (bytes of their variables).

    python benchmarks/tflite_hostile_memory.py

Writes `benchmarks/results/tflite_hostile_memory.json` (`--output`); takes about two minutes.
"""

import argparse
import datetime
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version

from provenance import git_commit, machine

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MIB = 2**20
TIMEOUT = 60  # seconds a child may take: the others take under 10

# The child: loads, allocates and runs one file, printing a JSON line after each stage (so
# a signal leaves the stages before it), and an `error` line for the stage that raised.
_LITERT = """
import json, resource, sys
import numpy as np
from ai_edge_litert import interpreter as litert

def status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    keys = ("VmSize", "VmPeak", "VmRSS", "VmHWM")
    return {key: int(fields[key].split()[0]) * 1024 for key in keys}

def report(stage, **fields):
    now = status()
    fields["rss_growth"] = now["VmHWM"] - start["VmRSS"]
    fields["reserved_growth"] = now["VmPeak"] - start["VmPeak"]
    print(json.dumps({"stage": stage, **fields}), flush=True)

def largest_tensor(interpreter):
    found = []
    for graph in range(interpreter.num_subgraphs()):
        for detail in interpreter.get_tensor_details(graph):
            size = int(np.prod(detail["shape"])) * np.dtype(detail["dtype"]).itemsize
            found.append((size, graph, detail["name"], detail["shape"].tolist()))
    size, graph, name, shape = max(found)
    return {"bytes": size, "subgraph": graph, "name": name, "shape": shape}

content = open(sys.argv[1], "rb").read()
hard = resource.getrlimit(resource.RLIMIT_AS)[1]
limit = status()["VmSize"] + int(sys.argv[2])
limit = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
with open("/proc/self/clear_refs", "w") as file:  # the peak resident memory restarts here
    file.write("5")
start = status()
stage = "load"
try:
    interpreter = litert.Interpreter(model_content=content)
    report(stage)
    stage = "allocate"
    interpreter.allocate_tensors()
    report(stage, largest_tensor=largest_tensor(interpreter))
    if sys.argv[3] != "invoke":
        sys.exit()
    stage = "invoke"
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()
    report(stage)
except Exception as error:
    report(stage, error=type(error).__name__ + ": " + " ".join(str(error).split())[:300])
"""

# The compile config of a `.keras` file: the variables AUC and Adam would make.
_KERAS = """
import json
import numpy as np
import keras

def status(key):
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(fields[key].split()[0]) * 1024

def size(variables):
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)

model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(3)])
with open("/proc/self/clear_refs", "w") as file:
    file.write("5")
before = status("VmRSS")
auc = keras.metrics.AUC(num_thresholds=10**7)
auc_rss = status("VmHWM") - before
optimizer = keras.optimizers.Adam(amsgrad=True, use_ema=True)
optimizer.build(model.trainable_variables)
shaped = [v for v in optimizer.variables if len(v.shape) > 0]
print(json.dumps({
    "auc_variables": [[v.name, list(v.shape), v.dtype] for v in auc.variables],
    "auc_variable_bytes": size(auc.variables),
    "auc_rss_growth_mib": round(auc_rss / 2**20, 1),
    "adam_trainable_bytes": size(model.trainable_variables),
    "adam_optimizer_bytes": size(shaped),
    "adam_copies": size(shaped) / size(model.trainable_variables),
    "adam_variables": [v.path for v in shaped],
}))
"""


def _hidden(shape):
    """A float32 export of a small dense model whose hidden tensor is declared `shape`."""

    def build(path):
        import keras

        import tfkd
        from tests.export.test_hostile_tflite_files import _mutant, _shape

        inputs = keras.Input((8,))
        hidden = keras.layers.Dense(16, activation="relu")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
        real = path.with_name("float.tflite")
        if not real.exists():
            tfkd.export_tflite(model, real)
        return _mutant(real, path, _shape(shape))

    return build


def _graphs(make):
    """A builder of the file of the subgraphs `make()` returns (tests/export's builders)."""

    def build(path):
        from tests.export.tflite_builder import build_file

        graphs = make()
        return build_file(path, *(graphs if isinstance(graphs[0], tuple) else [graphs]))

    return build


def _tile():
    from tests.export.test_hostile_tflite_files import _one_op

    return _one_op("TILE", [([2**15, 2**14], "int32")])


def _add_broadcast():
    from tests.export.test_hostile_tflite_files import SIZED_BY_OPS

    return SIZED_BY_OPS["add_broadcast"](8192)  # [16384, 1] + [1, 8192]


def _conv_of(x, weights, padding):
    def make():
        from tests.export.test_hostile_tflite_files import _conv

        return _conv(x, weights, padding=padding)

    return make


def _average_pool(case):
    def make():
        from tests.export.test_tflite_window_sizes import POOLS, _pool

        return _pool(*POOLS[case][0])

    return make


def _while_conv():
    from tests.export.test_tflite_control_flow import LARGE, REFUSED

    return REFUSED["while_conv"][0](LARGE)


def _reversed_filter():
    from tests.export.test_tflite_slice_sizes import _reversed_filter_conv

    return _reversed_filter_conv()


# name: (builder of the file, what it is, whether LiteRT runs it (False: loads and
# allocates it only))
CASES = {
    "hidden_16gib": (
        _hidden([65536, 65536]),
        "a dense export whose hidden tensor declares [65536, 65536] float32 (16 GiB)",
        True,
    ),
    "hidden_1gib": (
        _hidden([8193, 32768]),
        "the same, declared [8193, 32768] (1 GiB and 128 KiB)",
        True,
    ),
    "tile": (_graphs(_tile), "a TILE by the constant multiples [32768, 16384]", True),
    "add_broadcast": (_graphs(_add_broadcast), "an ADD of [16384, 1] and [1, 8192]", True),
    "conv_600_channels": (
        _graphs(_conv_of([1, 1024, 1024, 1], [600, 1, 1, 1], 0)),
        "a CONV_2D of 600 channels at 1024x1024, its output declared [1, 1, 1, 1]",
        True,
    ),
    "im2col_10x10": (
        _graphs(_conv_of([1, 256, 256, 64], [1, 10, 10, 64], 1)),
        "a CONV_2D, a 10x10 window over 256x256x64 (im2col)",
        True,
    ),
    # XNNPACK prepares this one for minutes on 2 cores: `allocate_tensors` times out.
    "average_pool_320": (
        _graphs(_average_pool("average_320_same")),
        "an AVERAGE_POOL_2D, 320x320 SAME at 1024x1024",
        False,
    ),
    "average_pool_320_over_8_rows": (
        _graphs(_average_pool("average_320_over_8_rows")),
        "the same window over 8 rows of 1024 (test_tflite_window_sizes.py)",
        False,
    ),
    "while_conv": (
        _graphs(_while_conv),
        "a WHILE whose body's CONV_2D (600 channels) is given [1, 1024, 1024, 1]",
        True,
    ),
    "reverse_v2_filter": (
        _graphs(_reversed_filter),
        "a CONV_2D whose filter, a REVERSE_V2 of 258 channels, is declared [1, 1, 1, 1]",
        True,
    ),
}


def tfkd_check(path):
    """What `_tflite_file.check` says of `path`: refused (its words and the first byte
    count they give) or admitted."""
    from tests.export.tflite_builder import check_file

    try:
        check_file(path)
    except ValueError as error:
        message = " ".join(str(error).split())
        counted = re.search(r"(\d+) bytes", message)
        return {
            "outcome": "refused",
            "counted_bytes": counted and int(counted[1]),
            "message": message,
        }
    return {"outcome": "admitted", "counted_bytes": None, "message": None}


def litert_unchecked(path, cap, invoke):
    """The stages LiteRT went through for `path` (`invoke`: up to running it once) in a
    child capped at `cap` bytes more than it holds after importing LiteRT, and how the
    child ended."""
    command = [sys.executable, "-c", _LITERT, str(path), str(cap), "invoke" * invoke]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=TIMEOUT, env=environment
        )
    except subprocess.TimeoutExpired as timeout:
        return _stages((timeout.stdout or b"").decode(), f"timed out after {TIMEOUT} s", None)
    ended = f"exit {result.returncode}"
    if result.returncode < 0:
        ended = signal.Signals(-result.returncode).name
    return _stages(result.stdout, ended, result.stderr[-500:] or None)


def _stages(stdout, ended, stderr):
    stages = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    for stage in stages:
        stage["rss_growth_mib"] = round(stage.pop("rss_growth") / MIB)
        stage["reserved_growth_mib"] = round(stage.pop("reserved_growth") / MIB)
    return {"stages": stages, "ended": ended, "stderr_tail": stderr}


def measure_case(name, folder, cap):
    build, described, invoke = CASES[name]
    path = build(folder / f"{name}.tflite")
    started = time.perf_counter()
    row = {"case": name, "file": described, "file_bytes": path.stat().st_size}
    row["tfkd"] = tfkd_check(path)
    row["litert"] = litert_unchecked(path, cap, invoke)
    row["seconds"] = round(time.perf_counter() - started, 1)
    return row


def compile_config():
    """The variables of `AUC(num_thresholds=10**7)` and of Adam with amsgrad and EMA."""
    result = subprocess.run(
        [sys.executable, "-c", _KERAS], capture_output=True, text=True, timeout=300
    )
    if result.returncode:
        return {"error": result.stderr[-1500:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _summary(row):
    stages = row["litert"]["stages"]
    last = stages[-1] if stages else {}
    peak = max((s["rss_growth_mib"] for s in stages), default=0)
    reserved = max((s["reserved_growth_mib"] for s in stages), default=0)
    what = last.get("error") or f"{last.get('stage', 'none')} ok"
    return (
        f"{row['case']:18} {row['file_bytes']:6} B  tfkd {row['tfkd']['outcome']:8} "
        f"{row['tfkd']['counted_bytes'] or '':>11}  LiteRT rss +{peak:7.1f} MiB  "
        f"reserved +{reserved:7.1f} MiB  {row['litert']['ended']}: {what[:90]}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--cap-gib", type=float, default=4.0)
    parser.add_argument(
        "--output", default=str(ROOT / "benchmarks/results/tflite_hostile_memory.json")
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cap = int(args.cap_gib * 2**30)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.cases:
            rows.append(measure_case(name, pathlib.Path(folder), cap))
            print(_summary(rows[-1]), flush=True)
    keras_config = compile_config()
    print("compile config:", json.dumps(keras_config))
    seconds = time.perf_counter() - started
    report = {
        "command": "python benchmarks/tflite_hostile_memory.py " + " ".join(sys.argv[1:]),
        "git_commit": git_commit(),
        "machine": machine(),
        "litert": version("ai-edge-litert"),
        "date": datetime.date.today().isoformat(),
        "cap_bytes_above_import": cap,
        "seconds": round(seconds, 1),
        "cases": rows,
        "compile_config": keras_config,
    }
    pathlib.Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{seconds:.1f} s; wrote {args.output}")


if __name__ == "__main__":
    main()
