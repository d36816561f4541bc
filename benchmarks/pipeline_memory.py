"""Peak resident memory of `tfkd run` on an image folder of 5,000 and of 40,000 images.

Writes Fashion-MNIST's first N training images (and 1,000 test images) as PNG files in
class folders, then runs the same config on each folder in a fresh process: a CNN
teacher trained one epoch, a student distilled from it one epoch, an int8 export. Each
run's peak resident set size is the process's own `ru_maxrss` (Linux: kilobytes), read
when it ends. The sizes run one after the other, so they share the machine's state.

    python benchmarks/pipeline_memory.py [--sizes 5000 40000] [--work DIR]

Writes `benchmarks/results/pipeline_memory.json` (per size: peak MiB and seconds; and
the ratio of the largest size's peak to the smallest's). Issue 18's target: < 1.3x.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import time

from provenance import machine

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "pipeline_memory.json"
TEST_IMAGES = 1000
CONFIG = """\
data: {{directory: {folder}, image_size: [28, 28], color_mode: grayscale}}
seed: 0
stages:
  - {{stage: train, name: teacher, model: {{architecture: cnn, filters: [32, 64]}}, epochs: 1}}
  - {{stage: distill, teacher: teacher, epochs: 1,
     student: {{architecture: cnn, filters: [8, 16]}}}}
  - {{stage: export, name: int8, quantization: int8}}
"""
# Runs `tfkd run` in this process and prints its peak resident memory, in KiB.
MEASURE = """\
import resource, sys
from tfkd import cli
status = cli.main(sys.argv[1:])
print("peak_kib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
sys.exit(status)
"""


def write_folder(folder, size):
    """Fashion-MNIST's first `size` training and `TEST_IMAGES` test images as PNGs, in
    `folder/{train,test}/<class>/` (kept when already written)."""
    import tensorflow as tf

    import tfkd

    done = folder / f".complete-{size}"
    if done.exists():
        return
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    names = tfkd.datasets.info("fashion_mnist")["class_names"]
    for split, x, y in (("train", x_train[:size], y_train[:size]), ("test", x_test, y_test)):
        for index in range(len(x) if split == "train" else TEST_IMAGES):
            path = folder / split / names[y[index]].replace("/", "-") / f"{index:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            tf.io.write_file(str(path), tf.io.encode_png(x[index][..., None]))
    done.touch()


def measure(folder, output):
    """`(peak MiB, seconds)` of `tfkd run` on `folder`, in a fresh process."""
    config = output.parent / f"{output.name}.yaml"
    config.write_text(CONFIG.format(folder=folder))
    start = time.perf_counter()
    command = [sys.executable, "-c", MEASURE, "run", str(config), "--output", str(output)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    lines = [line for line in result.stdout.splitlines() if line.startswith("peak_kib")]
    if result.returncode or not lines:
        sys.exit(f"tfkd run failed on {folder}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return int(lines[-1].split()[1]) / 1024, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 40000])
    parser.add_argument("--work", type=pathlib.Path, default=ROOT / "runs" / "pipeline_memory")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = []
    for size in args.sizes:
        folder = args.work / f"images_{size}"
        write_folder(folder, size)
        output = args.work / f"run_{size}"
        if output.exists():  # a finished run would be reused, not measured
            import shutil

            shutil.rmtree(output)
        peak, seconds = measure(folder, output)
        rows.append({"images": size, "peak_mib": round(peak, 1), "seconds": round(seconds, 1)})
        print(f"{size:>7,} images: peak {peak:,.0f} MiB, {seconds:.0f} s", flush=True)
    ratio = rows[-1]["peak_mib"] / rows[0]["peak_mib"]
    results = {
        "command": "python benchmarks/pipeline_memory.py " + " ".join(argv or sys.argv[1:]),
        "config": CONFIG.format(folder="FOLDER"),
        "runs": rows,
        "peak_ratio_largest_to_smallest": round(ratio, 3),
        "target": "< 1.3",
        "machine": machine(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"peak ratio {ratio:.3f} (target < 1.3); written to {RESULTS}")
    return results


if __name__ == "__main__":
    main()
