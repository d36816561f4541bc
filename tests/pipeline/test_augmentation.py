"""`augmentation` without a teacher (train, prune, quantize_aware) and on `transfer`: each
batch changes inside the training step, and the model trained does not keep the layers.

The data makes the effect plain: the class is the side of the image that is bright, so with a
left-right flip of half of each batch the training accuracy stays at chance (the model cannot
tell a flipped image from another one), while without it reaches 1."""

import json

import keras
import numpy as np
import pytest

import tfkd
from tfkd.pipeline import Data, Distill, Train, Transfer


def _sides(count, seed):
    """Images with their left (class 0) or right (class 1) half bright, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, count)
    x = rng.uniform(0.0, 0.2, (count, 28, 28, 1)).astype("float32")
    for image, label in zip(x, y):
        image[:, 14:] += 0.8 if label else 0.0
        image[:, :14] += 0.0 if label else 0.8
    return x, y


@pytest.fixture(scope="module")
def data():
    (x_train, y_train), (x_test, y_test) = _sides(512, 0), _sides(256, 1)
    return Data(x_train, y_train, x_test, y_test, name="sides", num_classes=2)


def _flat(name="flat", called=True):
    """Flatten and Dense; with `called=False` a Sequential that was never called, as users
    often write it (the stage builds its copy on the data's images)."""
    keras.utils.set_random_seed(0)
    layers = [keras.layers.Flatten(), keras.layers.Dense(2)]
    return keras.Sequential([keras.Input((28, 28, 1)), *layers] if called else layers, name=name)


def _train_accuracy(stages, data, directory):
    """Each stage's training accuracy in its last epoch, on the batches it trained on."""
    tfkd.Pipeline(stages).execute(data, directory, tensorboard=False, verbose=0, log=lambda _: None)
    return {
        stage.name: json.loads((directory / "stages" / stage.name / "entry.json").read_text())[
            "details"
        ]["train_accuracy"][-1]
        for stage in stages
    }


def test_train_augments_each_batch_and_keeps_no_augmentation_layer(data, tmp_path):
    stages = [
        Train(_flat(), epochs=4, name="plain"),
        Train(_flat(called=False), epochs=4, augmentation={"flip": True}, name="flipped"),
    ]
    accuracy = _train_accuracy(stages, data, tmp_path)
    assert accuracy["plain"] == 1.0
    assert accuracy["flipped"] < 0.65, accuracy
    saved = keras.saving.load_model(tmp_path / "stages" / "flipped" / "model.keras")
    assert [type(layer).__name__ for layer in saved.layers] == ["Flatten", "Dense"]


def test_transfer_augments_the_labelled_images(data, tmp_path):
    backbone = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(8)], name="backbone"
    )
    path = tmp_path / "backbone.keras"
    backbone.save(path)
    options = dict(
        backbone=str(path), image_size=8, head_epochs=8, fine_tune_epochs=0, batch_size=32
    )
    stages = [
        Transfer(**options, head_learning_rate=1e-2, name="plain"),
        Transfer(**options, head_learning_rate=1e-2, augmentation={"flip": True}, name="flipped"),
    ]
    accuracy = _train_accuracy(stages, data, tmp_path / "run")
    assert accuracy["plain"] > 0.95
    assert accuracy["flipped"] < 0.65, accuracy
    saved = keras.saving.load_model(tmp_path / "run" / "stages" / "flipped" / "model.keras")
    assert not any("random" in type(layer).__name__.lower() for layer in saved.layers)


def test_a_shift_larger_than_the_images_fails_before_any_stage_runs(data, tmp_path):
    stages = [Train(_flat(), epochs=1, name="first"), Train(augmentation={"shift": 29})]
    with pytest.raises(ValueError, match=r"`augmentation.shift` is in pixels, at most") as info:
        tfkd.Pipeline(stages).execute(data, tmp_path, tensorboard=False, log=lambda _: None)
    assert (info.value.stage, info.value.argument) == ("train", "augmentation")
    assert not (tmp_path / "stages").exists()  # before: a Keras factor error after `first`
    tfkd.pipeline._distillation.check_augmentation_data({"shift": 28}, data)  # the whole side


def test_augmentation_of_inputs_that_are_not_images_fails_before_any_stage_runs(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 16)).astype("float32"), rng.integers(0, 2, 64)
    flat = Data(x, y, x, y, name="vectors", num_classes=2)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(2)])
    stages = [Train(model, epochs=1, name="first"), Train(augmentation={"flip": True})]
    with pytest.raises(ValueError, match=r"`augmentation` applies to images of shape") as error:
        tfkd.Pipeline(stages).execute(flat, tmp_path, tensorboard=False, log=lambda _: None)
    assert "inputs of shape (16,)" in str(error.value)
    assert not (tmp_path / "stages" / "first").exists()
    stages[1] = Distill(teacher="first", cutmix=1.0)
    with pytest.raises(ValueError, match=r"`cutmix` pastes a box.*inputs of shape \(16,\)"):
        tfkd.Pipeline(stages).execute(flat, tmp_path, tensorboard=False, log=lambda _: None)
    assert not (tmp_path / "stages" / "first").exists()
