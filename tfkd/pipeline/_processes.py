"""One pipeline on several processes: JAX's `keras.distribution.DataParallel` across
processes joined by `jax.distributed`, each training on its share of every global batch.

A process learns its place from the environment, which `tfkd run --processes N` sets for
the N processes it starts on this machine, and a cluster's launcher sets on each host:

    TFKD_COORDINATOR=host:port   the address of process 0, which every process can reach
    TFKD_PROCESS_COUNT=N         how many processes take part
    TFKD_PROCESS_ID=i            this process's number, 0 to N - 1

What a process does with it (the engine's rules, `_engine._Engine`):
- every process runs every stage that trains, in step, on its rows of each global batch;
- only process 0 writes: stage files, entries, the teacher-output cache and the report.
  The others keep their copies in memory and read process 0's entries after each stage;
- stages that do not train (`export`, `micro`) run on process 0 alone, on local copies;
- a process that fails ends its run at once (`tfkd.cli` leaves without JAX's shutdown
  barrier); `launch` then stops the others, which would wait for it at the next barrier.
  On a cluster, JAX's coordination service is meant to end them on missed heartbeats.
"""

import contextlib
import dataclasses
import os
import pathlib
import socket
import subprocess
import sys
import time

COORDINATOR = "TFKD_COORDINATOR"
PROCESS_COUNT = "TFKD_PROCESS_COUNT"
PROCESS_ID = "TFKD_PROCESS_ID"
ENVIRONMENT = (COORDINATOR, PROCESS_COUNT, PROCESS_ID)
# Seconds a process waits for the others to join before it fails.
JOIN_TIMEOUT = 300

_current = None


@dataclasses.dataclass(frozen=True)
class Processes:
    """This process's place among the processes running one pipeline."""

    coordinator: str
    count: int
    index: int

    @property
    def writes(self):
        """Whether this process writes the run directory (process 0 alone)."""
        return self.index == 0

    @classmethod
    def from_environment(cls, environ=None):
        """The processes the environment names, or `None` when it names none.

        Raises:
            ValueError: when only some of the variables are set, or one is malformed.
        """
        environ = os.environ if environ is None else environ
        present = [name for name in ENVIRONMENT if environ.get(name)]
        if not present:
            return None
        if len(present) < len(ENVIRONMENT):
            missing = [name for name in ENVIRONMENT if name not in present]
            raise ValueError(
                f"Running on several processes needs {', '.join(ENVIRONMENT)} all set. "
                f"Received: {', '.join(f'{n}={environ[n]!r}' for n in present)}; missing: "
                f"{', '.join(missing)}."
            )
        coordinator = environ[COORDINATOR]
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(
                f"{COORDINATOR} must be host:port, the address of process 0. "
                f"Received: {COORDINATOR}={coordinator!r}"
            )
        numbers = {}
        for name in (PROCESS_COUNT, PROCESS_ID):
            value = environ[name]
            if not value.isdigit():
                raise ValueError(f"{name} must be a whole number. Received: {name}={value!r}")
            numbers[name] = int(value)
        count, index = numbers[PROCESS_COUNT], numbers[PROCESS_ID]
        if count < 1 or index >= count:
            raise ValueError(
                f"{PROCESS_ID} must be in [0, {PROCESS_COUNT}) and {PROCESS_COUNT} at least "
                f"1. Received: {PROCESS_COUNT}={count}, {PROCESS_ID}={index}"
            )
        return cls(coordinator, count, index)

    def join(self):
        """Joins the other processes (`jax.distributed.initialize`) and sets Keras's
        distribution: every model built afterwards is replicated on every process's
        devices. Call it before anything runs on JAX."""
        global _current
        import keras

        if keras.backend.backend() != "jax":
            raise RuntimeError(
                "Running on several processes needs the JAX backend (KERAS_BACKEND=jax): "
                "Keras 3's `fit` fails under TensorFlow's MultiWorkerMirroredStrategy "
                f"(keras-team/keras#20585). Received backend: {keras.backend.backend()!r}"
            )
        import jax

        # CPU processes exchange gradients through gloo; GPUs use NCCL and ignore this.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            self.coordinator,
            num_processes=self.count,
            process_id=self.index,
            initialization_timeout=JOIN_TIMEOUT,
        )
        distribution = keras.distribution.DataParallel(devices=jax.devices())
        # Each process feeds its own rows of every global batch (`shard`).
        distribution.auto_shard_dataset = False
        keras.distribution.set_distribution(distribution)
        _current = self

    def barrier(self, name):
        """Waits until every process reaches the barrier of this `name`."""
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)

    def local_batch_size(self, batch_size):
        """This process's share of a global batch of `batch_size` examples.

        Raises:
            ValueError: when the processes cannot share it evenly.
        """
        if batch_size % self.count:
            raise ValueError(
                f"`batch_size` must be a multiple of the number of processes, which share "
                f"each batch. Received: batch_size={batch_size} on {self.count} processes."
            )
        return batch_size // self.count

    def shard(self, structure):
        """This process's rows of every array in `structure` (the same rows in each):
        every `count`-th row, after the last `len % count` rows are dropped, so that
        every process has as many rows, and so as many steps, as the others."""
        import keras

        def rows(array):
            usable = len(array) - len(array) % self.count
            return array[self.index : usable : self.count]

        return keras.tree.map_structure(rows, structure)

    @contextlib.contextmanager
    def local(self):
        """Runs its body without the distribution: models built there live on this
        process alone, so it can predict, evaluate and export without the others."""
        import keras

        distribution = keras.distribution.distribution()
        keras.distribution.set_distribution(None)
        try:
            yield
        finally:
            keras.distribution.set_distribution(distribution)


def check_batch_sizes(pipeline, count):
    """Raises `ValueError` (with `stage` and `argument` attributes) for the first stage
    whose batches `count` processes cannot share evenly."""
    processes = Processes("", count, 0)
    for stage in pipeline.leaves():
        batch_size = getattr(stage, "batch_size", None)
        if isinstance(batch_size, int):
            try:
                processes.local_batch_size(batch_size)
            except ValueError as error:
                error.stage, error.argument = stage.name, "batch_size"
                raise


def current():
    """The `Processes` this process joined, or `None` when it runs alone."""
    return _current


def join_from_environment():
    """Joins the processes the environment names; returns them, or `None`."""
    processes = Processes.from_environment()
    if processes is not None and processes.count > 1:
        processes.join()
        return processes
    return None


def launch(arguments, count, output_dir, echo=print):
    """Starts `tfkd run ARGUMENTS` as `count` processes on this machine, joined through a
    free port of 127.0.0.1 on the JAX backend; returns process 0's exit code.

    Process 0's output is this command's; each other process's goes to
    `OUTPUT_DIR/processes/process-<i>.log`. When a process fails, the others are stopped
    (they would wait for it forever) and its exit code is returned, with its log's end.
    """
    logs = pathlib.Path(output_dir) / "processes"
    logs.mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    environment = dict(os.environ, KERAS_BACKEND="jax", **{COORDINATOR: f"127.0.0.1:{port}"})
    environment[PROCESS_COUNT] = str(count)
    # Processes sharing one GPU would each take most of its memory: local runs use the CPU
    # unless JAX_PLATFORMS says otherwise.
    environment.setdefault("JAX_PLATFORMS", "cpu")
    command = [sys.executable, "-m", "tfkd", "run", *arguments]
    started = time.perf_counter()
    processes, files = [], []
    try:
        for index in range(count):
            output = None
            if index:
                output = open(logs / f"process-{index}.log", "w")  # noqa: SIM115
                files.append(output)
            processes.append(
                subprocess.Popen(
                    command,
                    env={**environment, PROCESS_ID: str(index)},
                    stdout=output,
                    stderr=subprocess.STDOUT if output else None,
                )
            )
        failed = _wait_all(processes)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for file in files:
            file.close()
    elapsed = time.perf_counter() - started
    if failed is None:
        echo(f"tfkd: {count} processes finished in {elapsed:.0f} s.")
        return 0
    index, code = failed
    where = "its output is above" if index == 0 else f"its log: {logs / f'process-{index}.log'}"
    if index:
        tail = (logs / f"process-{index}.log").read_text(errors="replace").splitlines()[-15:]
        echo("\n".join(tail), file=sys.stderr)
    echo(
        f"tfkd: process {index} of {count} failed (exit code {code}) after {elapsed:.0f} s; "
        f"the others were stopped. {where[0].upper() + where[1:]}. Finished stages are kept: "
        "rerun the same command to resume.",
        file=sys.stderr,
    )
    return code or 1


def _wait_all(processes):
    """Waits until every process ends, or one fails; returns `(index, exit code)` of the
    first that failed, or `None`."""
    running = dict(enumerate(processes))
    while running:
        for index, process in list(running.items()):
            try:
                code = process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
            del running[index]
            if code != 0:
                return index, code
    return None
