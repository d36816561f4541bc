"""Step time of the Distiller on two JAX processes against one, on the same global batch.

Both runs, one after the other in the same invocation, train the same teacher/student pair
on Fashion-MNIST images for `--steps` timed steps (after `--warmup` untimed ones): one
process feeding the whole global batch, then two processes joined by
`jax.distributed.initialize` on 127.0.0.1 (CPU collectives through gloo), each feeding
half of it under `keras.distribution.DataParallel`. On one machine the two processes share
its cores, so the ratio measures the cost of the collectives, not a speed-up.

    python benchmarks/multiprocess_step_time.py [--global-batch 256] [--steps 40]

Writes `benchmarks/results/multiprocess_step_time.json`.
"""

import argparse
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

from provenance import machine

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "multiprocess_step_time.json"
WORKER = """
import sys, time
rank, processes, port, batch, warmup, steps = sys.argv[1:7]
rank, processes, batch, warmup, steps = map(int, (rank, processes, batch, warmup, steps))
import jax
jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_cpu_collectives_implementation", "gloo")
if processes > 1:
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=processes, process_id=rank,
                               initialization_timeout=60)
import keras, numpy as np, tfkd
if processes > 1:
    distribution = keras.distribution.DataParallel(devices=jax.devices())
    distribution.auto_shard_dataset = False
    keras.distribution.set_distribution(distribution)
(x, y), _ = tfkd.datasets.load("fashion_mnist")
local = batch // processes
count = (warmup + steps) * batch
x, y = x[:count, ..., None].astype("float32") / 255.0, y[:count]
x = x.reshape(-1, processes, local, 28, 28, 1)[:, rank].reshape(-1, 28, 28, 1)
y = y.reshape(-1, processes, local)[:, rank].reshape(-1)
keras.utils.set_random_seed(0)
teacher = tfkd.models.cnn((28, 28, 1), 10, filters=(32, 64, 128))
student = tfkd.models.cnn((28, 28, 1), 10, filters=(16, 32))
distiller = tfkd.Distiller(teacher, student, temperature=2.0, student_loss_weight=0.5)
distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
distiller.fit(x[: warmup * local], y[: warmup * local], batch_size=local, verbose=0)


class Clock(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start


clock = Clock()
distiller.fit(x[warmup * local :], y[warmup * local :], batch_size=local, verbose=0,
              callbacks=[clock], shuffle=False)
print("STEP_MS", rank, 1000 * clock.seconds / steps, flush=True)
"""


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(processes, args):
    """Median over the processes of the milliseconds per global step."""
    port = _free_port()
    environment = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-c", WORKER]
    options = [str(processes), str(port), str(args.global_batch), str(args.warmup), str(args.steps)]
    workers = [
        subprocess.Popen(
            [*command, str(rank), *options],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(processes)
    ]
    times = []
    for worker in workers:
        log = worker.communicate(timeout=1200)[0]
        lines = [line for line in log.splitlines() if line.startswith("STEP_MS")]
        if worker.returncode or not lines:
            sys.exit(f"a worker failed:\n{log[-3000:]}")
        times.append(float(lines[-1].split()[2]))
    return sorted(times)[len(times) // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--global-batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    one = run(1, args)
    print(f"one process: {one:.1f} ms per step of {args.global_batch}", flush=True)
    two = run(2, args)
    print(f"two processes: {two:.1f} ms per step; ratio two / one {two / one:.2f}")
    results = {
        "command": "python benchmarks/multiprocess_step_time.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "global_batch": args.global_batch,
        "timed_steps": args.steps,
        "step_ms_one_process": round(one, 2),
        "step_ms_two_processes": round(two, 2),
        "ratio_two_over_one": round(two / one, 3),
        "machine": f"{machine()}, one machine",
        "seconds": round(time.perf_counter() - start, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
