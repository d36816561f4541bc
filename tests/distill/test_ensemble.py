"""Several teachers: their softened outputs averaged, or one loss each."""

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import random_images, small_cnn


def _softmax(z, temperature=1.0):
    z = z.astype("float64") / temperature
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _teachers():
    return [small_cnn(8, "teacher_a"), small_cnn(6, "teacher_b", softmax=True)]


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_the_ensemble_softens_into_the_weighted_average(temperature):
    x, _ = random_images(count=16)
    a, b = _teachers()
    ensemble = tfkd.distill.teacher_ensemble([a, b], [3.0, 1.0], temperature=temperature)
    logits_a = a.predict(x, verbose=0)
    probabilities_b = b.predict(x, verbose=0)  # b ends in a softmax: its logits are log(p)
    expected = 0.75 * _softmax(logits_a, temperature) + 0.25 * _softmax(
        np.log(probabilities_b), temperature
    )
    received = _softmax(ensemble.predict(x, verbose=0), temperature)
    np.testing.assert_allclose(received, expected, atol=1e-5)


def test_a_list_of_teachers_distils_their_average_at_the_loss_temperature():
    x, y = random_images(count=32)
    a, b = _teachers()
    student = small_cnn(4, "student")
    distiller = tfkd.Distiller([a, b], student, temperature=2.0, student_loss_weight=0.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = distiller.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    average = 0.5 * _softmax(a.predict(x, verbose=0), 2.0) + 0.5 * _softmax(
        np.log(b.predict(x, verbose=0)), 2.0
    )
    student_probabilities = _softmax(student.predict(x, verbose=0), 2.0)
    kd = 4.0 * (average * (np.log(average) - np.log(student_probabilities))).sum(-1).mean()
    assert logs["logits_distillation_loss"][0] == pytest.approx(kd, rel=1e-4)
    # The teachers train nothing, and are left as they were given.
    assert a.trainable and b.trainable
    assert not {id(v) for v in a.variables + b.variables} & {
        id(v) for v in distiller.trainable_variables
    }


def test_one_loss_per_teacher_reads_each_by_name():
    x, y = random_images(count=32)
    a, b = _teachers()
    student = small_cnn(4, "student")
    distiller = tfkd.Distiller(
        tfkd.distill.teacher_ensemble([a, b]),
        student,
        distillation_losses=[
            tfkd.distill.LogitsDistillation(teacher_layer_name="teacher_a_logits", name="from_a"),
            tfkd.distill.LogitsDistillation(teacher_layer_name="teacher_b_logits", name="from_b"),
        ],
        student_loss_weight=0.0,
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    logs = distiller.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    student_probabilities = _softmax(student.predict(x, verbose=0))
    for key, teacher in (("from_a_loss", a), ("from_b_loss", b)):
        outputs = teacher.predict(x, verbose=0)
        p = _softmax(outputs) if teacher is a else outputs.astype("float64")
        kd = (p * (np.log(p) - np.log(student_probabilities))).sum(-1).mean()
        assert logs[key][0] == pytest.approx(kd, rel=1e-4)


@pytest.mark.parametrize(
    ("teachers", "kwargs", "match"),
    [
        (lambda: [small_cnn(8, "a")], {}, "two or more"),
        (lambda: [small_cnn(8, "a"), small_cnn(8, "b", input_shape=(9, 9, 1))], {}, "same"),
        (lambda: [small_cnn(8, "a"), small_cnn(8, "b", num_classes=4)], {}, "same classes"),
        (lambda: [small_cnn(8, "a"), small_cnn(8, "a")], {}, "distinct names"),
        (lambda: [small_cnn(8, "a"), small_cnn(8, "b")], {"weights": [1, -1]}, "weights"),
    ],
)
def test_bad_ensembles_are_refused(teachers, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tfkd.distill.teacher_ensemble(teachers(), **kwargs)


def test_a_list_of_teachers_with_scheduled_temperature_asks_for_an_explicit_ensemble():
    schedule = keras.optimizers.schedules.PolynomialDecay(4.0, 10, end_learning_rate=1.0)
    with pytest.raises(ValueError, match="teacher_ensemble"):
        tfkd.Distiller(
            _teachers(),
            small_cnn(4, "student"),
            distillation_losses=tfkd.distill.LogitsDistillation(temperature=schedule),
        )


def test_an_ensemble_distiller_survives_a_keras_round_trip(tmp_path):
    x, y = random_images(count=32)
    distiller = tfkd.Distiller(_teachers(), small_cnn(4, "student"), temperature=2.0)
    distiller.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    path = tmp_path / "ensemble.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        restored.teacher.predict(x, verbose=0), distiller.teacher.predict(x, verbose=0), atol=1e-5
    )
