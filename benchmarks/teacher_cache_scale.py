"""The sharded teacher-output cache (`tfkd.distill.write_teacher_shards`) on a generated set
of 1x and 10x the size of Fashion-MNIST's training set: write and read throughput, and
peak memory; then what keeping only the top-k logits costs in bytes and accuracy.

Part 1, each scale in a fresh process, one after the other: a generator yields
Fashion-MNIST training images, each copy shifted by a seeded random offset of up to two
pixels and flipped at random (scale x 60,000 images, never all in memory); the bundled
CNN teacher (`saved_models/fashion_mnist_cnn_teacher`) runs on them once inside
`write_teacher_shards` (default shard size, about 64 MiB of inputs); then one epoch of
`TeacherShards(...).dataset(batch_size=256, seed=0)` is read. Throughputs are the bytes
of the cache's files over seconds: writing without the teacher's own forward passes
(they are reported apart), reading as `Distiller.fit` would (shuffled, decoded). Peak
memory is the process's `ru_maxrss` at the end (it includes TensorFlow and the teacher).

Part 2, in this process: the 8,194-parameter student of `benchmarks/models.py` distilled
(T=1, student_loss_weight=0.5, Adam 1e-3, batch 128, `--epochs` epochs, seed 0) from caches
of the real 60,000 training images with all 10 logits, the top 3 and the top 1; test
accuracy on the 10,000 test images, and the cache's bytes per example.

    python benchmarks/teacher_cache_scale.py [--scales 1 10] [--epochs 5] [--work DIR]

Writes `benchmarks/results/teacher_cache_scale.json`. Issue 19's target: peak memory
flat as the set grows (the ratio of the largest scale's peak to the smallest's).
"""

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import time

import numpy as np
from provenance import machine

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "teacher_cache_scale.json"
TEACHER = ROOT / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
BATCH = 1000  # images a generator batch


def generated_batches(x, y, scale, seed=0):
    """`scale` x len(x) images: each a copy of a Fashion-MNIST image, shifted and flipped."""
    rng = np.random.default_rng(seed)
    for copy in range(scale):
        for start in range(0, len(x), BATCH):
            images, labels = x[start : start + BATCH], y[start : start + BATCH]
            shifts = rng.integers(-2, 3, size=2) if copy else (0, 0)
            images = np.roll(images, tuple(int(s) for s in shifts), axis=(1, 2))
            if copy and rng.random() < 0.5:
                images = images[:, :, ::-1]
            yield images[..., None], labels.astype("int64")


def measure_scale(scale, work):
    """Writes and reads the cache at `scale`; returns its figures (run in a fresh process)."""
    import keras

    import tfkd

    (x, y), _ = tfkd.datasets.load("fashion_mnist")
    teacher = keras.saving.load_model(TEACHER)
    directory = work / f"scale_{scale}"
    shutil.rmtree(directory, ignore_errors=True)
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    summary = tfkd.distill.write_teacher_shards(
        teacher, generated_batches(x, y, scale), directory, batch_size=512
    )
    shards = tfkd.distill.TeacherShards(directory)
    start = time.perf_counter()
    rows = sum(len(labels) for _, labels in shards.dataset(batch_size=256, seed=0))
    read_seconds = time.perf_counter() - start
    megabytes = shards.nbytes / 1e6
    io_seconds = summary["seconds"] - summary["teacher_seconds"]
    result = {
        "scale": scale,
        "images": summary["rows"],
        "rows_read": rows,
        "shards": summary["shards"],
        "cache_mb": round(megabytes, 1),
        "write_seconds": summary["seconds"],
        "teacher_seconds": summary["teacher_seconds"],
        "write_mb_per_s_without_teacher": round(megabytes / io_seconds, 1),
        "write_mb_per_s_with_teacher": round(megabytes / summary["seconds"], 1),
        "read_seconds": round(read_seconds, 2),
        "read_mb_per_s": round(megabytes / read_seconds, 1),
        "peak_mib_after_loading": round(baseline_kib / 1024, 1),
        "peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    shutil.rmtree(directory)
    return result


def run_scale(scale, work):
    """`measure_scale` in a fresh process, so that each peak is its own."""
    command = [sys.executable, __file__, "--measure", str(scale), "--work", str(work)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode or not lines:
        sys.exit(f"scale {scale} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])


def top_k_effect(work, epochs):
    """Test accuracy of the 8k student distilled from full, top-3 and top-1 caches."""
    import keras

    import tfkd
    from benchmarks.models import student_cnn

    (x, y), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    x, x_test = x[..., None], x_test[..., None]
    teacher = keras.saving.load_model(TEACHER)
    rows = []
    for top_k in (None, 3, 1):
        directory = work / f"top_{top_k}"
        shutil.rmtree(directory, ignore_errors=True)
        tfkd.distill.write_teacher_shards(teacher, (x, y.astype("int64")), directory, top_k=top_k)
        shards = tfkd.distill.TeacherShards(directory)
        keras.utils.set_random_seed(0)
        student = student_cnn(seed=0)
        distiller = tfkd.Distiller(teacher, student, student_loss_weight=0.5, temperature=1.0)
        distiller.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        start = time.perf_counter()
        distiller.fit(shards.dataset(batch_size=128, seed=0), epochs=epochs, verbose=0)
        seconds = time.perf_counter() - start
        accuracy = float(np.mean(student.predict(x_test, verbose=0).argmax(1) == y_test))
        teacher_bytes = shards.nbytes - sum(
            os.path.getsize(os.path.join(directory, name, part))
            for name in os.listdir(directory)
            if name.startswith("p0")
            for part in ("x.npy", "y.npy")
        )
        rows.append(
            {
                "top_k": top_k,
                "test_accuracy": round(accuracy, 4),
                "teacher_output_bytes_per_example": round(teacher_bytes / len(x), 2),
                "fit_seconds": round(seconds, 1),
            }
        )
        print(f"top_k={top_k}: accuracy {accuracy:.4f}, {rows[-1]}", flush=True)
        shutil.rmtree(directory)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--work", type=pathlib.Path, default=ROOT / "runs" / "teacher_cache")
    parser.add_argument("--measure", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.measure:
        print(json.dumps(measure_scale(args.measure, args.work)), flush=True)
        return None
    start = time.perf_counter()
    scales = []
    for scale in args.scales:
        scales.append(run_scale(scale, args.work))
        print(f"scale {scale}: {scales[-1]}", flush=True)
    sys.path.insert(0, str(ROOT))
    results = {
        "command": "python benchmarks/teacher_cache_scale.py " + " ".join(argv or sys.argv[1:]),
        "scales": scales,
        "peak_ratio_largest_to_smallest": round(scales[-1]["peak_mib"] / scales[0]["peak_mib"], 3),
        "top_k": top_k_effect(args.work, args.epochs),
        "epochs": args.epochs,
        "machine": machine(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"peak ratio {results['peak_ratio_largest_to_smallest']}; {results['seconds']} s")
    return results


if __name__ == "__main__":
    main()
