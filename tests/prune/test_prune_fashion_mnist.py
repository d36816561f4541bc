"""Pruning on real data, alone and as the student of a Distiller."""

import pathlib

import keras
import numpy as np
import pytest

import tfkd
from benchmarks.models import student_cnn
from tests.helpers import random_images, small_cnn

REPO = pathlib.Path(__file__).resolve().parents[2]
TEACHER = REPO / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_distiller_prunes_its_student_without_a_callback():
    teacher = small_cnn(16, "teacher")
    student = tfkd.prune.prune(
        small_cnn(8, "student"), tfkd.prune.ConstantSparsity(0.6, frequency=2)
    )
    teacher_weights = [keras.ops.convert_to_numpy(w).copy() for w in teacher.weights]
    distiller = tfkd.Distiller(teacher=teacher, student=student)
    distiller.compile(optimizer="adam", loss=_loss())
    x, y = random_images()
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert int(keras.ops.convert_to_numpy(student.get_layer("conv").pruning_step)) == 8
    assert tfkd.prune.summary(student).sparsity == pytest.approx(0.6, abs=0.01)
    for before, after in zip(teacher_weights, teacher.weights, strict=True):
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))
    assert tfkd.prune.summary(teacher).sparsity == 0.0


@pytest.mark.heavy
def test_pruning_to_half_keeps_accuracy_on_fashion_mnist():
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    x_train, y_train = x_train[:12000, ..., None].astype("float32"), y_train[:12000]
    x_test, y_test = x_test[:3000, ..., None].astype("float32"), y_test[:3000]
    dense = student_cnn(seed=0)
    dense.compile(optimizer=keras.optimizers.Adam(3e-3), loss=_loss(), metrics=["accuracy"])
    dense.fit(x_train, y_train, epochs=3, batch_size=128, verbose=0)
    dense_accuracy = dense.evaluate(x_test, y_test, verbose=0)[1]
    schedule = tfkd.prune.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=150, frequency=10)
    pruned = tfkd.prune.prune(dense, schedule)
    pruned.compile(optimizer=keras.optimizers.Adam(1e-3), loss=_loss(), metrics=["accuracy"])
    pruned.fit(x_train, y_train, epochs=3, batch_size=128, verbose=0)
    pruned_accuracy = pruned.evaluate(x_test, y_test, verbose=0)[1]
    assert tfkd.prune.summary(pruned).sparsity == pytest.approx(0.5, abs=0.005)
    assert dense_accuracy > 0.6
    assert pruned_accuracy >= dense_accuracy - 0.03, (pruned_accuracy, dense_accuracy)
    stripped = tfkd.prune.strip(pruned)
    assert stripped.evaluate(x_test, y_test, verbose=0)[1] == pytest.approx(pruned_accuracy)
