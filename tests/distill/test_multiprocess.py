"""Two JAX processes joined by `jax.distributed` (issue 19): the Distiller (online teacher,
cached outputs, and a sharded cache each process wrote its part of), pruning and QAT
train on each process's half of every global batch exactly as one process trains on the
whole batch, and every process ends with the same weights, masks, pruning step and
quantization ranges. Under TensorFlow's
MultiWorkerMirroredStrategy across two workers, where Keras 3's `fit` fails, tfkd's entry
points say so and point to the JAX path.

The processes run on this machine only (coordinator 127.0.0.1, CPU collectives through
gloo), each under a time limit, and stop by themselves.
"""

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
TIME_LIMIT = 240  # seconds a process may take (about 20 here) before the test fails
GLOBAL_BATCH = 32

_WORKER = """
import os, sys
process_id, processes, port, output = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
import jax
jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_cpu_collectives_implementation", "gloo")
if processes > 1:
    jax.distributed.initialize(
        f"127.0.0.1:{port}", num_processes=processes, process_id=process_id,
        initialization_timeout=60,
    )
import keras, numpy as np, tfkd
from tests.helpers import random_images, small_cnn

x, y = random_images(128)
teacher_logits = None
local = GLOBAL_BATCH // processes


def shard(array):
    # Global batch k is rows [32k, 32k + 32); this process feeds its slice of each.
    steps = len(array) // GLOBAL_BATCH
    array = array.reshape(steps, processes, local, *array.shape[1:])[:, process_id]
    return array.reshape(-1, *array.shape[2:])


def compiled(model):
    model.compile(
        keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def distiller(cached):
    keras.utils.set_random_seed(0)
    teacher = small_cnn(16, "teacher", batch_norm=True)
    student = small_cnn(4, "student")
    losses = [
        tfkd.distill.LogitsDistillation(temperature=2.0),
        tfkd.distill.FeatureDistillation(
            teacher_layer_name="features", student_layer_name="features"
        ),
    ]
    model = tfkd.Distiller(teacher, student, distillation_losses=losses, student_loss_weight=0.5)
    if not cached:
        return compiled(model), shard(x)
    inputs = tfkd.distill.with_teacher_outputs(x, CACHED)
    return compiled(model), keras.tree.map_structure(shard, inputs)


def train(model, inputs):
    model.fit(inputs, shard(y), batch_size=local, epochs=2, shuffle=False, verbose=0)


# The teacher's outputs, computed on this process before the distribution is set (the
# same teacher as `distiller` builds: the same seed); every model after it is built under
# the distribution, which places its variables on every process's device.
keras.utils.set_random_seed(0)
TEACHER = small_cnn(16, "teacher", batch_norm=True)
CACHED = tfkd.distill.teacher_outputs(TEACHER, x, layers=["features"])
# The sharded cache: each process writes its slices of the global batches as one shard,
# and (shards sorted, one per process) reads back its own.
SHARDS = os.path.join(os.path.dirname(output), f"shards_{processes}")
tfkd.distill.write_teacher_shards(
    TEACHER, (shard(x), shard(y).astype("int64")), SHARDS, layers=["features"],
    rows_per_shard=len(x), process_index=process_id,
)
if processes > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("every process wrote its shards")
    keras.distribution.set_distribution(DISTRIBUTION)
results = {}
for name in ("online", "cached"):
    model, inputs = distiller(cached=name == "cached")
    train(model, inputs)
    results[name] = model.student.weights
model, _ = distiller(cached=True)
shards = tfkd.distill.TeacherShards(SHARDS)
model.fit(shards.dataset(local, False, None, process_id, processes), epochs=2, verbose=0)
results["shards"] = model.student.weights
keras.utils.set_random_seed(0)
schedule = tfkd.prune.ConstantSparsity(0.6, frequency=2)
pruned = compiled(tfkd.prune.prune(small_cnn(8, "pruned"), schedule))
keras.utils.set_random_seed(0)
quantized = compiled(tfkd.quantize.quantize_aware(small_cnn(8, "quantized", batch_norm=True)))
for name, model in (("pruned", pruned), ("quantized", quantized)):
    train(model, shard(x))
    results[name] = model.weights  # masks, the pruning step, the quantization ranges

arrays = {
    f"{name}/{index}/{weight.path}": keras.ops.convert_to_numpy(weight)
    for name, weights in results.items()
    for index, weight in enumerate(weights)
}
np.savez(output, **arrays)
print("trained", process_id, flush=True)
"""

_DISTRIBUTION = """
import jax, keras
DISTRIBUTION = keras.distribution.DataParallel(devices=jax.devices())
# Each process feeds its own slice of the global batch (numpy arrays cannot be auto-sharded).
DISTRIBUTION.auto_shard_dataset = False
"""


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(process_id, processes, port, output):
    code = f"GLOBAL_BATCH = {GLOBAL_BATCH}\n" + (
        _WORKER.replace(
            "import keras, numpy as np, tfkd", "import keras, numpy as np, tfkd\n" + _DISTRIBUTION
        )
    )
    environment = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "PYTHONPATH": str(REPO),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    return subprocess.Popen(
        [sys.executable, "-c", code, str(process_id), str(processes), str(port), str(output)],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(processes):
    """Waits for every process (killing all at the time limit); asserts each succeeded."""
    logs = []
    try:
        for process in processes:
            logs.append(process.communicate(timeout=TIME_LIMIT)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    for process, log in zip(processes, logs):
        assert process.returncode == 0, log[-3000:]
        process.stdout_text = log


def test_two_processes_train_like_one_and_agree(tmp_path):
    port = _free_port()
    _finish([_start(rank, 2, port, tmp_path / f"two_{rank}.npz") for rank in range(2)])
    _finish([_start(0, 1, 0, tmp_path / "one.npz")])
    one = np.load(tmp_path / "one.npz")
    ranks = [np.load(tmp_path / f"two_{rank}.npz") for rank in range(2)]
    assert sorted(ranks[0].files) == sorted(one.files)
    kinds = {name.split("/")[0] for name in one.files}
    assert kinds == {"online", "cached", "shards", "pruned", "quantized"}
    for name in one.files:
        np.testing.assert_array_equal(ranks[1][name], ranks[0][name], err_msg=name)
        np.testing.assert_allclose(ranks[0][name], one[name], rtol=1e-4, atol=1e-4, err_msg=name)
        if name.startswith("shards"):  # the sharded cache trains as the cached arrays do
            cached = name.replace("shards/", "cached/", 1)
            np.testing.assert_allclose(one[name], one[cached], rtol=1e-5, atol=1e-5, err_msg=name)
    masks = [name for name in one.files if name.startswith("pruned") and "mask" in name]
    assert masks and all(0.55 < 1 - one[name].mean() < 0.65 for name in masks)
    steps = [name for name in one.files if name.startswith("pruned") and "step" in name]
    assert steps and all(int(one[name]) > 0 for name in steps)
    ranges = [name for name in one.files if name.endswith(("/min_value", "/max_value"))]
    assert len(ranges) == 8 and all(one[name] > 0 for name in ranges if "max" in name)


_TF_WORKER = """
import json, os, sys
index, ports = int(sys.argv[1]), sys.argv[2].split(",")
workers = [f"127.0.0.1:{port}" for port in ports]
task = {"type": "worker", "index": index}
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": workers}, "task": task})
import keras, numpy as np, tensorflow as tf, tfkd
from tests.helpers import random_images, small_cnn

strategy = tf.distribute.MultiWorkerMirroredStrategy()
x, y = random_images(32)
with strategy.scope():
    distiller = tfkd.Distiller(small_cnn(8, "teacher"), small_cnn(4, "student"))
    distiller.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
try:
    distiller.fit(x, y, epochs=1, verbose=0)
except RuntimeError as error:
    print("REFUSED", str(error).replace(chr(10), " "), flush=True)
"""


def test_tf_multi_worker_strategy_is_refused_naming_the_keras_issue():
    ports = f"{_free_port()},{_free_port()}"
    environment = {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(REPO)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _TF_WORKER, str(index), ports],
            cwd=REPO,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index in range(2)
    ]
    _finish(workers)
    for worker in workers:
        (line,) = [line for line in worker.stdout_text.splitlines() if line.startswith("REFUSED")]
        assert "keras-team/keras#20585" in line and "2 workers" in line
        assert "KERAS_BACKEND=jax" in line and "DataParallel" in line
