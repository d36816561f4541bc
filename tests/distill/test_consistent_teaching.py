"""Consistent teaching: augmentation and mixing inside the step, the same batch for both models."""

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import assert_keras_round_trip, random_images, small_cnn
from tfkd import _graph
from tfkd.distill import UNLABELED, mixing


@keras.saving.register_keras_serializable(package="tfkd_tests")
class RandomNoise(keras.layers.Layer):
    """Adds fresh noise in training: a teacher fed the clean batch would disagree."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(3)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        return inputs + 3.0 * keras.random.normal(keras.ops.shape(inputs), seed=self.seed_generator)


def _twin_distiller(jit_compile="auto", **kwargs):
    """Teacher and student with the same weights: the KD loss is 0 iff both saw the same batch."""
    student = small_cnn(4, "student")
    teacher = keras.models.clone_model(student)
    teacher.set_weights(student.get_weights())
    distiller = tfkd.Distiller(teacher, student, temperature=2.0, student_loss_weight=0.5, **kwargs)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return distiller


@pytest.mark.parametrize(
    "options",
    [
        {"augmentation": RandomNoise()},
        {"mixup": 0.4},
        {"cutmix": 1.0},
        {"augmentation": RandomNoise(), "mixup": 0.4, "cutmix": 1.0, "seed": 1},
    ],
    ids=["augmentation", "mixup", "cutmix", "all"],
)
def test_teacher_and_student_see_the_same_augmented_batch(options):
    x, y = random_images(count=128)
    distiller = _twin_distiller(**options)
    logs = distiller.fit(x, y, batch_size=32, epochs=2, verbose=0).history
    assert logs["logits_distillation_loss"] == pytest.approx([0.0, 0.0], abs=1e-6)
    # ... and the batch really changed: the task loss differs from the clean one.
    clean = _twin_distiller().fit(x, y, batch_size=32, epochs=1, verbose=0).history
    assert abs(logs["student_loss"][0] - clean["student_loss"][0]) > 1e-3


def test_uint8_images_are_mixed_as_the_same_images_in_float32():
    x, y = random_images(count=64)
    x = np.round(x * 255).astype("uint8")
    weights = []
    for images in (x, x.astype("float32")):
        keras.utils.set_random_seed(0)
        distiller = _twin_distiller(mixup=0.4, cutmix=1.0, seed=2)
        distiller.optimizer.learning_rate.assign(0.01)
        initial = distiller.student.get_weights()[0]
        distiller.fit(images, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
        weights.append(distiller.student.get_weights())
    for uint8_weight, float_weight in zip(*weights):
        np.testing.assert_allclose(uint8_weight, float_weight, rtol=1e-5, atol=1e-6)
    assert not np.allclose(weights[0][0], initial)  # it trained


def test_cached_teacher_outputs_are_refused_under_augmentation():
    x, y = random_images(count=64)
    distiller = _twin_distiller(mixup=0.2)
    cached = distiller.predict_teacher(x)
    with pytest.raises(ValueError, match="cached teacher outputs"):
        distiller.fit(tfkd.distill.with_teacher_outputs(x, cached), y, epochs=1, verbose=0)


def test_augmentation_that_cannot_run_on_the_inputs_is_named():
    # Before: RandomFlip's "Expected image tensor to have rank 3 or 4", from inside the
    # training step, naming neither `augmentation` nor the inputs.
    def features(name):
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)], name=name)

    flip = keras.layers.RandomFlip("horizontal", name="flip")
    distiller = tfkd.Distiller(features("teacher"), features("student"), augmentation=flip)
    distiller.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    x = np.zeros((8, 6), "float32")
    with pytest.raises(
        ValueError, match=r"`augmentation` \('flip'\) cannot run on .* \((8|None), 6\)"
    ):
        distiller.fit(x, np.zeros(8, int), batch_size=8, verbose=0)


@pytest.mark.parametrize("options", [{"mixup": 0.2}, {"cutmix": 1.0}])
def test_mixing_refuses_token_ids_and_names_them(options):
    def text_model(name):
        inputs = keras.Input((12,), dtype="int32")
        x = keras.layers.Embedding(50, 8)(inputs)
        outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(x))
        return keras.Model(inputs, outputs, name=name)

    if "cutmix" in options:  # not images: refused when the Distiller is made
        with pytest.raises(ValueError, match=r"`cutmix`.*inputs of shape \[\(12,\)\]"):
            tfkd.Distiller(text_model("teacher"), text_model("student"), **options)
        return
    ids = np.random.default_rng(0).integers(0, 50, size=(32, 12)).astype("int32")
    distiller = tfkd.Distiller(text_model("teacher"), text_model("student"), **options)
    distiller.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    with pytest.raises(ValueError, match=r"integer ids.*shape \(\d+, 12\) and dtype int32"):
        distiller.fit(ids, np.zeros(32, "int32"), batch_size=16, epochs=1, verbose=0)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"mixup": 0.0}, ValueError, "mixup.*Received: mixup=0.0"),
        ({"cutmix": -1}, ValueError, "cutmix.*Received: cutmix=-1"),
        ({"mixup": True}, ValueError, "mixup"),
        ({"augmentation": lambda x: x}, TypeError, "augmentation.*function"),
    ],
)
def test_bad_augmentation_arguments_fail_at_construction(options, error, match):
    with pytest.raises(error, match=match):
        tfkd.Distiller(small_cnn(8, "teacher"), small_cnn(4, "student"), **options)


def test_mixup_and_cutmix_golden_values():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 6, 5, 2)).astype("float32")
    partners = np.array([2, 0, 3, 1])
    ratio = np.array([0.9, 0.5, 0.25, 1.0], dtype="float32")
    mixed = keras.ops.convert_to_numpy(mixing.mixup(images, partners, ratio))
    expected = (
        ratio[:, None, None, None] * images + (1 - ratio[:, None, None, None]) * images[partners]
    )
    np.testing.assert_allclose(mixed, expected, rtol=1e-6)

    box = np.array([[0.0, 0.0, 0.5, 0.4], [0.5, 0.2, 1.0, 1.0], [0, 0, 1, 1], [0, 0, 0, 0]])
    mixed, own = mixing.cutmix(images, partners, box.astype("float32"))
    mixed, own = keras.ops.convert_to_numpy(mixed), keras.ops.convert_to_numpy(own)
    for i, (top, left, bottom, right) in enumerate(box):
        rows = (np.arange(6) + 0.5) / 6
        columns = (np.arange(5) + 0.5) / 5
        inside = ((rows >= top) & (rows < bottom))[:, None] & (
            (columns >= left) & (columns < right)
        )
        np.testing.assert_array_equal(mixed[i][inside], images[partners[i]][inside])
        np.testing.assert_array_equal(mixed[i][~inside], images[i][~inside])
        assert own[i] == pytest.approx(1 - inside.mean())


def test_sampled_mixing_draws_a_permutation_and_beta_ratios_that_change_each_call():
    images = np.arange(64, dtype="float32").reshape(64, 1, 1, 1) * np.ones((1, 4, 4, 1), "float32")
    generator = keras.random.SeedGenerator(0)
    draws = [mixing.sample_mixing(images, generator, mixup_alpha=0.5) for _ in range(2)]
    for mixed, partners, ratio in draws:
        partners, ratio = keras.ops.convert_to_numpy(partners), keras.ops.convert_to_numpy(ratio)
        assert sorted(partners.tolist()) == list(range(64))
        assert ((ratio >= 0) & (ratio <= 1)).all()
        expected = ratio * np.arange(64) + (1 - ratio) * partners
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(mixed)[:, 0, 0, 0], expected, atol=1e-4
        )
    assert not np.array_equal(*(keras.ops.convert_to_numpy(d[2]) for d in draws))
    # Beta(0.5, 0.5) puts most mass near 0 and 1: a U shape, mean 1/2.
    ratios = np.concatenate(
        [
            keras.ops.convert_to_numpy(mixing.sample_mixing(images, generator, 0.5)[2])
            for _ in range(20)
        ]
    )
    assert abs(ratios.mean() - 0.5) < 0.05
    assert np.mean((ratios < 0.1) | (ratios > 0.9)) > 0.3


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "mean_with_sample_weight", "sum"])
def test_mixed_labels_weigh_each_label_by_its_share_and_skip_unlabelled(reduction):
    """The task loss of a mixed batch equals numpy's share-weighted cross-entropy, reduced
    as the loss's `reduction` says (before, the mean's factor was applied to all three:
    `"sum"` and `"mean_with_sample_weight"` came out rescaled by the unlabelled share)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 3)).astype("float32")
    labels = np.array([0, 2, UNLABELED, 1, 1, UNLABELED])
    partners = np.array([1, 0, 3, 2, 5, 4])
    ratio = np.array([0.7, 0.2, 0.5, 0.9, 1.0, 0.4], dtype="float32")
    terms, factors, counted = tfkd.distill._task.task_terms(
        labels, None, partners, ratio, reduction=reduction
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
    value = sum(f * loss(t, logits, sample_weight=w) for (t, w), f in zip(terms, factors))

    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    total = shares = 0.0
    for i in range(6):
        for label, share in ((labels[i], ratio[i]), (labels[partners[i]], 1 - ratio[i])):
            if label != UNLABELED:
                total += -share * log_p[i, label]
                shares += share
    assert float(counted) == pytest.approx(shares, rel=1e-6)
    expected = total if reduction == "sum" else total / shares
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_augmenting_distiller_survives_a_keras_round_trip(tmp_path):
    x, y = random_images(count=64)
    augmentation = keras.Sequential([keras.layers.RandomFlip("horizontal", seed=0)])
    distiller = tfkd.Distiller(
        small_cnn(8, "teacher"), small_cnn(4, "student"), augmentation=augmentation, mixup=0.2
    )
    distiller.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    restored = assert_keras_round_trip(distiller, x, tmp_path)
    assert restored.get_config()["mixup"] == 0.2
    assert isinstance(restored.augmentation, keras.Sequential)


def _keras_augmentation(*extra):
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=1),
            keras.layers.RandomTranslation(0.25, 0.25, fill_mode="constant", seed=2),
            *extra,
        ]
    )


def test_keras_augmentation_layers_do_not_turn_jit_off():
    """Keras marks RandomTranslation (and rotation, zoom) `supports_jit=False`, which on JAX
    trained every step op by op. The step compiles as it would without augmentation, and
    draws the same random batches as without jit."""
    x, y = random_images(count=128)
    jit_without_augmentation = _twin_distiller().jit_compile
    distiller = _twin_distiller(augmentation=_keras_augmentation())
    assert distiller.jit_compile == jit_without_augmentation
    if keras.backend.backend() == "jax":
        assert distiller.jit_compile is True
    eager = _twin_distiller(augmentation=_keras_augmentation(), jit_compile=False)
    assert eager.jit_compile is False
    for model in (eager.teacher, eager.student):
        model.set_weights(distiller.student.get_weights())
    compiled = distiller.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0).history
    op_by_op = eager.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0).history
    assert compiled["student_loss"] == pytest.approx(op_by_op["student_loss"], rel=1e-5)
    assert compiled["logits_distillation_loss"] == pytest.approx([0.0] * 3, abs=1e-6)
    # A learning rate of 0 and the same batches in order: only fresh augmentation in each
    # step moves the task loss from one epoch to the next.
    assert len({round(loss, 6) for loss in compiled["student_loss"]}) == 3


def test_augmentation_with_other_keras_preprocessing_layers_is_left_as_keras_sets_it():
    augmentation = _keras_augmentation(keras.layers.RandomCrop(6, 6, seed=3))
    distiller = _twin_distiller(augmentation=augmentation)
    assert distiller.jit_compile is False
    assert [layer.supports_jit for layer in augmentation.layers] == [True, False, False]


def test_a_model_trained_behind_augmentation_compiles_as_the_model_alone():
    """The path of `tfkd.transfer.fine_tune` and the pipeline's `train` stage."""
    model = small_cnn(4, "student")
    alone = tfkd.models.compile_classifier(keras.models.clone_model(model))
    augmented = _graph.behind_augmentation(model, _keras_augmentation(), (8, 8, 1))
    tfkd.models.compile_classifier(augmented)
    assert augmented.jit_compile == alone.jit_compile
    if keras.backend.backend() == "jax":
        assert augmented.jit_compile is True
