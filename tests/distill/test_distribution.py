"""The Distiller and pruning under data parallelism: two replicas train exactly like one device.

Each case runs in a fresh process, since devices must be configured before the
backend starts.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

_TRAIN = """
import keras, numpy as np, tfkd
from tests.helpers import random_images, small_cnn

x, y = random_images(128)

def train():
    keras.utils.set_random_seed(0)
    teacher = small_cnn(16, "teacher", batch_norm=True)
    student = small_cnn(4, "student")
    distiller = tfkd.Distiller(teacher, student, student_loss_weight=0.5, temperature=2.0)
    distiller.compile(
        keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = distiller.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history
    return history, [keras.ops.convert_to_numpy(w) for w in student.weights]

def assert_same(single, parallel):
    (history_1, weights_1), (history_2, weights_2) = single, parallel
    for key in ("loss", "student_loss", "logits_distillation_loss"):
        np.testing.assert_allclose(history_2[key], history_1[key], rtol=1e-4, err_msg=key)
    for a, b in zip(weights_1, weights_2):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    print("SAME", history_2["logits_distillation_loss"])
"""

_PRUNE_TRAIN = """
import keras, numpy as np, tfkd
from tests.helpers import random_images, small_cnn

x, y = random_images(128)

def train():
    keras.utils.set_random_seed(0)
    schedule = tfkd.prune.ConstantSparsity(0.6, frequency=2)
    student = tfkd.prune.prune(small_cnn(8, "student"), schedule)
    student.compile(
        keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    student.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    weights = [keras.ops.convert_to_numpy(w) for w in student.weights]
    return tfkd.prune.summary(student).sparsity, weights

def assert_same(single, parallel):
    assert abs(single[0] - 0.6) < 0.01 and parallel[0] == single[0], (single[0], parallel[0])
    for a, b in zip(single[1], parallel[1]):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    print("SAME", parallel[0])
"""

# A QAT student distilled from cached teacher outputs: the weights, and the activation
# ranges the quantizers track, must match one device's.
_QAT_CACHED_TRAIN = """
import keras, numpy as np, tfkd
from tests.helpers import random_images, small_cnn

x, y = random_images(128)

def train():
    keras.utils.set_random_seed(0)
    teacher = small_cnn(16, "teacher", batch_norm=True)
    student = tfkd.quantize.quantize_aware(small_cnn(4, "student"))
    distiller = tfkd.Distiller(teacher, student, student_loss_weight=0.5, temperature=2.0)
    distiller.compile(
        keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    cached = tfkd.distill.with_teacher_outputs(x, distiller.predict_teacher(x, batch_size=32))
    history = distiller.fit(cached, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history
    ranges = [
        keras.ops.convert_to_numpy(w)
        for w in student.weights
        if w.path.endswith(("/min_value", "/max_value"))
    ]
    return history, [keras.ops.convert_to_numpy(w) for w in student.weights], ranges

def assert_same(single, parallel):
    (history_1, weights_1, ranges_1), (history_2, weights_2, ranges_2) = single, parallel
    assert len(ranges_1) == len(ranges_2) == 8, len(ranges_1)
    minima, maxima = ranges_1[0::2], ranges_1[1::2]
    assert all(np.all(low < high) for low, high in zip(minima, maxima)), "ranges not tracked"
    for a, b in zip(ranges_1, ranges_2):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    for key in ("loss", "student_loss", "logits_distillation_loss"):
        np.testing.assert_allclose(history_2[key], history_1[key], rtol=1e-4, err_msg=key)
    for a, b in zip(weights_1, weights_2):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    print("SAME", [float(value) for value in ranges_2[:2]])
"""

_MIRRORED = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
{train}
single = train()
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
with strategy.scope():
    parallel = train()
assert_same(single, parallel)
"""

_DATA_PARALLEL = """
import jax
{train}
single = train()
devices = jax.devices()
assert len(devices) == 2, devices
keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
parallel = train()
assert_same(single, parallel)
"""


def _run(script, backend, train=_TRAIN, **env):
    environment = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO), **env}
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script).format(train=train)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=1800,  # ends a hung run: 91 s in CI at most, 3.5 times that on slower machines
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SAME" in result.stdout


def _run_on_two_jax_devices(train=_TRAIN):
    _run(_DATA_PARALLEL, "jax", train=train, XLA_FLAGS="--xla_force_host_platform_device_count=2")


def test_tf_mirrored_strategy_on_two_cpu_devices():
    _run(_MIRRORED, "tensorflow")


# Slow (`bash scripts/test.sh -m slow`): 91 s in CI; JAX data parallel stays in the default run
# through the QAT and pruning tests below
@pytest.mark.slow
def test_jax_data_parallel_on_two_host_devices():
    _run_on_two_jax_devices()


def test_pruning_under_tf_mirrored_strategy():
    _run(_MIRRORED, "tensorflow", train=_PRUNE_TRAIN)


def test_pruning_under_jax_data_parallel():
    _run_on_two_jax_devices(_PRUNE_TRAIN)


def test_qat_with_cached_teacher_outputs_under_tf_mirrored_strategy():
    _run(_MIRRORED, "tensorflow", train=_QAT_CACHED_TRAIN)


def test_qat_with_cached_teacher_outputs_under_jax_data_parallel():
    _run_on_two_jax_devices(_QAT_CACHED_TRAIN)
