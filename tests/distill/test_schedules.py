"""Temperatures and loss weights that follow the training step, on every backend."""

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import random_images, small_cnn


def _linear(start, end, steps):
    return keras.optimizers.schedules.PolynomialDecay(start, steps, end_learning_rate=end)


def _numpy_kd(teacher, student, temperature):
    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    log_t = log_softmax(teacher.astype("float64") / temperature)
    log_s = log_softmax(student.astype("float64") / temperature)
    return float((temperature**2 * (np.exp(log_t) * (log_t - log_s)).sum(-1)).mean())


def _frozen_fit(distiller, x, y, epochs):
    """One batch per epoch and a learning rate of 0: each epoch logs one step's exact values."""
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return distiller.fit(x, y, batch_size=len(x), epochs=epochs, verbose=0).history


def test_a_temperature_schedule_is_read_at_each_step():
    x, y = random_images(count=32)
    teacher, student = small_cnn(8, "teacher"), small_cnn(4, "student")
    schedule = _linear(4.0, 1.0, 3)
    loss = tfkd.distill.LogitsDistillation(temperature=schedule)
    logs = _frozen_fit(tfkd.Distiller(teacher, student, loss), x, y, epochs=5)
    t, s = (m.predict(x, verbose=0) for m in (teacher, student))
    expected = [_numpy_kd(t, s, temperature) for temperature in (4.0, 3.0, 2.0, 1.0, 1.0)]
    np.testing.assert_allclose(logs["logits_distillation_loss"], expected, rtol=1e-4)


def test_loss_weight_schedules_weigh_each_step():
    x, y = random_images(count=32)
    distiller = tfkd.Distiller(
        small_cnn(8, "teacher"),
        small_cnn(4, "student"),
        distillation_losses=[
            tfkd.distill.LogitsDistillation(2.0),
            tfkd.distill.DecoupledDistillation(temperature=_linear(2.0, 1.0, 2)),
        ],
        distillation_loss_weights=[1.0, _linear(0.0, 2.0, 2)],
        student_loss_weight=_linear(1.0, 0.5, 2),
    )
    logs = _frozen_fit(distiller, x, y, epochs=3)
    for step, (weight, share) in enumerate([(0.0, 1.0), (1.0, 0.75), (2.0, 0.5)]):
        distillation = (
            logs["logits_distillation_loss"][step]
            + weight * logs["decoupled_distillation_loss"][step]
        )
        expected = share * logs["student_loss"][step] + (1 - share) * distillation
        assert logs["loss"][step] == pytest.approx(expected, rel=1e-5)
    # The decoupled loss's own temperature moved from 2 to 1 over the same steps.
    assert logs["decoupled_distillation_loss"][0] != pytest.approx(
        logs["decoupled_distillation_loss"][2], rel=1e-3
    )


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        (
            {"temperature": lambda step: -1.0},
            ValueError,
            r"temperature\(0\)` must be a finite number > 0",
        ),
        ({"temperature": lambda: 2.0}, TypeError, "schedule `temperature\\(step\\)"),
        ({"student_loss_weight": lambda step: 1.5}, ValueError, r"student_loss_weight\(0\)"),
        (
            {"distillation_loss_weights": [lambda step: -0.5]},
            ValueError,
            r"distillation_loss_weights\[0\]",
        ),
    ],
)
def test_bad_schedules_fail_when_the_distiller_is_made(options, error, match):
    with pytest.raises(error, match=match):
        tfkd.Distiller(small_cnn(8, "teacher"), small_cnn(4, "student"), **options)


def test_schedules_are_checked_over_the_steps_fit_will_run():
    # Right at step 0, wrong later: a decay past 0, a share that grows past 1.
    x, y = random_images(count=32)
    decay = keras.optimizers.schedules.PolynomialDecay(4.0, 1000, -2.0)  # < 0 from step 667

    def growing(step):  # > 1 from step 51
        return keras.ops.minimum(0.5 + keras.ops.cast(step, "float32") / 100, 3.0)

    for options, match in [
        ({"temperature": decay}, r"temperature\(961\)` must be a finite number > 0"),
        ({"student_loss_weight": growing}, r"`student_loss_weight\(100\)` must be a number"),
    ]:
        distiller = tfkd.Distiller(small_cnn(8, "teacher"), small_cnn(4, "student"), **options)
        distiller.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        distiller.fit(x, y, batch_size=32, epochs=2, verbose=0)  # steps 0 and 1: fine
        with pytest.raises(
            ValueError, match=match
        ):  # after 2 steps, 30 epochs of 32: steps 2 to 961
            distiller.fit(x, y, batch_size=1, epochs=30, verbose=0)
    # A decay that is only 0 far past the run (float32 underflow at 10**5 steps) is fine.
    fading = keras.optimizers.schedules.ExponentialDecay(4.0, 100, 0.9)
    distiller = tfkd.Distiller(small_cnn(8, "teacher"), small_cnn(4, "student"), temperature=fading)
    distiller.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert np.isfinite(distiller.fit(x, y, batch_size=32, epochs=1, verbose=0).history["loss"][0])


def test_schedules_are_checked_over_the_batches_of_a_dataset_of_known_length():
    # Before, checked for arrays only: a weight below 0 from step 4 trained on a dataset,
    # the loss going negative (-2.62).
    import tensorflow as tf

    x, y = random_images(count=32)
    distiller = tfkd.Distiller(
        small_cnn(8, "teacher"),
        small_cnn(4, "student"),
        distillation_loss_weights=[lambda step: 1.0 - keras.ops.cast(step, "float32") / 3],
    )
    distiller.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)  # 8 batches an epoch
    with pytest.raises(ValueError, match=r"`distillation_loss_weights\[0\]\(7\)`"):
        distiller.fit(dataset, epochs=1, verbose=0)
    distiller.fit(dataset.take(2), epochs=1, verbose=0)  # steps 0 and 1: fine


def test_scheduled_distiller_survives_a_keras_round_trip_and_keeps_its_step(tmp_path):
    x, y = random_images(count=32)
    distiller = tfkd.Distiller(
        small_cnn(8, "teacher"),
        small_cnn(4, "student"),
        temperature=_linear(4.0, 1.0, 10),
        student_loss_weight=_linear(0.5, 0.1, 10),
    )
    _frozen_fit(distiller, x, y, epochs=3)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(
        restored.distillation_losses[0].temperature, keras.optimizers.schedules.PolynomialDecay
    )
    assert int(keras.ops.convert_to_numpy(restored._step)) == 3
