"""Time and peak memory of checking and loading the bundled MNIST pickle, two trees side by side.

Each measurement runs in a fresh process with one tree on its `PYTHONPATH`, the trees
alternating run by run (the machine is shared, so both see the same load). After its
imports, a process resets its resident-memory high-water mark (Linux: `/proc/self/clear_refs`)
and reads it (`VmHWM` in `/proc/self/status`) when the step is done:

- `scan`: `check_pickle` on the inflated pickle (210 MB, inflated before the clock starts);
- `load`: `_load_gzipped_pickle` of `mnist.pkl.gz` (inflate, check, unpickle);
- `dataset`: `tfkd.datasets.load("mnist")` (the above, then the pixels made bytes).

    mkdir /tmp/old && git archive cb904cf tfkd | tar -x -C /tmp/old  # before the scan skipped
    python benchmarks/pickle_load_cost.py --trees /tmp/old . --runs 5

Prints, per step and tree, the median seconds and the medians of the peak resident memory
(MiB) in all and above what the process held before the step; `--output` writes them as JSON
(`benchmarks/results/pickle_load_cost.json`: its first tree is cb904cf, its second
`git_commit`).
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

from provenance import git_commit, machine

STEPS = ("scan", "load", "dataset")
MEASURE = """\
import gzip, io, json, sys, time
from tfkd.datasets import _pickle, _sources

def status(field):
    with open("/proc/self/status") as file:
        line = next(line for line in file if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024

step = sys.argv[1]
path = _sources._locate_mnist()[0]
if step == "scan":
    with gzip.open(path, "rb") as file:
        inflated = file.read()
    run = lambda: _pickle.check_pickle(io.BytesIO(inflated))
elif step == "load":
    run = lambda: _pickle._load_gzipped_pickle(path)
else:
    import tfkd
    run = lambda: tfkd.datasets.load("mnist")
with open("/proc/self/clear_refs", "w") as file:
    file.write("5")
before = status("VmRSS")
start = time.perf_counter()
run()
seconds = time.perf_counter() - start
peak = status("VmHWM")
tree = _pickle.__file__.rsplit("/datasets/", 1)[0]
print(json.dumps({"seconds": seconds, "peak_mib": peak, "above_mib": peak - before, "tfkd": tree}))
"""


def measure(tree, step):
    environment = {**os.environ, "PYTHONPATH": str(tree), "KERAS_BACKEND": "numpy"}
    command = [sys.executable, "-c", MEASURE, step]
    # Run from the tree: `python -c` puts the working directory before `PYTHONPATH`.
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=tree)
    if result.returncode:
        sys.exit(f"{step} on {tree} failed:\n{result.stderr[-3000:]}")
    found = json.loads(result.stdout.strip().splitlines()[-1])
    if pathlib.Path(found.pop("tfkd")) != tree / "tfkd":
        sys.exit(f"{step} imported tfkd from elsewhere than {tree}")
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", required=True, help="roots holding tfkd/")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", help="JSON file for the medians and every run")
    args = parser.parse_args(argv)
    trees = [pathlib.Path(tree).resolve() for tree in args.trees]
    runs = {(step, tree): [] for step in args.steps for tree in trees}
    for step in args.steps:
        for _ in range(args.runs):
            for tree in trees:
                runs[(step, tree)].append(measure(tree, step))
    rows = []
    for (step, tree), results in runs.items():
        medians = {key: statistics.median(r[key] for r in results) for key in results[0]}
        rows.append({"step": step, "tree": str(tree), **medians, "runs": results})
        print(
            f"{step:8} {str(tree):40} {medians['seconds']:7.3f} s  peak "
            f"{medians['peak_mib']:6.0f} MiB  above start {medians['above_mib']:6.0f} MiB"
        )
    if args.output:
        report = {
            "command": "python benchmarks/pickle_load_cost.py " + " ".join(sys.argv[1:]),
            "git_commit": git_commit(),
            "machine": machine(),
            "runs_each": args.runs,
            "rows": rows,
        }
        pathlib.Path(args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
