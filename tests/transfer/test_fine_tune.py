"""`fine_tune`, `build_classifier` and `feature_extractor` on small backbones and real data."""

import json
import pathlib
import warnings

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import Batches, assert_keras_round_trip, random_images, small_cnn

REPO = pathlib.Path(__file__).resolve().parents[2]
TEACHER = REPO / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"


def _backbone(input_shape=(8, 8, 3), name="backbone"):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.ReLU(name="relu_a")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv_b")(x)
    return keras.Model(inputs, x, name=name)


def _numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_phases_freeze_then_unfreeze_from_a_named_layer():
    x, y = random_images(96, shape=(8, 8, 3))
    base = _backbone()
    original = {w.path: _numpy(w).copy() for w in base.weights}
    model, history = tfkd.transfer.fine_tune(
        base, 3, (x, y), head_epochs=2, fine_tune_epochs=2, unfreeze="conv_b", verbose=0
    )
    assert len(history.history["loss"]) == 4 and history.head_epochs == 2
    assert history.unfrozen_layers == ["conv_b"]
    tuned = model.get_layer("backbone")
    # The passed backbone is untouched; in the copy, layers below `conv_b` kept their weights
    # and BatchNormalization kept its statistics (inference mode throughout).
    for weight in base.weights:
        np.testing.assert_array_equal(_numpy(weight), original[weight.path])
    for name in ("conv_a", "bn_a"):
        for old, new in zip(base.get_layer(name).weights, tuned.get_layer(name).weights):
            np.testing.assert_array_equal(_numpy(old), _numpy(new))
    assert not np.allclose(
        _numpy(tuned.get_layer("conv_b").kernel), _numpy(base.get_layer("conv_b").kernel)
    )


def test_feature_extraction_mode_keeps_the_backbone_frozen():
    x, y = random_images(64, shape=(8, 8, 3))
    base = _backbone()
    model, history = tfkd.transfer.fine_tune(
        base, 3, (x, y), head_epochs=1, fine_tune_epochs=0, verbose=0
    )
    assert history.unfrozen_layers == []
    for old, new in zip(base.weights, model.get_layer("backbone").weights):
        np.testing.assert_array_equal(_numpy(old), _numpy(new))
    features = tfkd.transfer.extract_features(base, x)
    assert features.shape == (64, 8)


@pytest.mark.parametrize("unfreeze, expected", [(1, 1), (0.5, 2), ("all", 3)])
def test_unfreeze_by_count_fraction_or_all(unfreeze, expected):
    x, y = random_images(32, shape=(8, 8, 3))
    _, history = tfkd.transfer.fine_tune(
        _backbone(), 3, (x, y), head_epochs=0, fine_tune_epochs=1, unfreeze=unfreeze, verbose=0
    )
    assert len(history.unfrozen_layers) == expected  # of 4 layers; `bn_a` stays frozen


def _nested_backbone():
    inner = _backbone(name="block")
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Conv2D(8, 1, name="conv_top")(inner(inputs))
    return keras.Model(inputs, outputs, name="backbone")


def _find(model, name):
    """The layer `name` of `model` or of a model nested in it."""
    for layer in model.layers:
        if layer.name == name:
            return layer
        if isinstance(layer, keras.Model) and name in [sub.name for sub in layer.layers]:
            return layer.get_layer(name)
    raise KeyError(name)


@pytest.mark.parametrize("make", [_backbone, _nested_backbone])
def test_default_unfreeze_keeps_batch_norm_statistics(make):
    """fit's training=True overrides the backbone's training=False (keras-team/keras#20285)."""
    x, y = random_images(64, shape=(8, 8, 3))
    x = 2 * x + 3  # far from the initial moving statistics (0, 1): any update shows
    base = make()
    model, history = tfkd.transfer.fine_tune(
        base, 3, (x, y), head_epochs=1, fine_tune_epochs=2, verbose=0
    )
    tuned = model.get_layer("backbone")
    for old, new in zip(_find(base, "bn_a").weights, _find(tuned, "bn_a").weights):
        np.testing.assert_array_equal(_numpy(new), _numpy(old), err_msg=new.path)
    kernel = _find(tuned, "conv_a").kernel  # the rest of the backbone did train
    assert not np.allclose(_numpy(kernel), _numpy(_find(base, "conv_a").kernel))
    assert "bn_a" not in history.unfrozen_layers


def test_batch_norm_trains_when_asked():
    x, y = random_images(64, shape=(8, 8, 3))
    base = _backbone()
    model, _ = tfkd.transfer.fine_tune(
        base,
        3,
        (2 * x + 3, y),
        head_epochs=0,
        fine_tune_epochs=1,
        frozen_batch_norm=False,
        verbose=0,
    )
    old, new = base.get_layer("bn_a"), model.get_layer("backbone").get_layer("bn_a")
    for name in ("moving_mean", "gamma"):
        assert not np.allclose(_numpy(getattr(new, name)), _numpy(getattr(old, name)))
    with pytest.raises(TypeError, match="frozen_batch_norm='no'"):
        tfkd.transfer.fine_tune(base, 3, (x, y), frozen_batch_norm="no", verbose=0)


def _sequential_softmax():
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(4, 3, name="conv"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


CLASSIFIERS = {
    "applications_softmax": lambda: keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10
    ),
    "applications_logits": lambda: keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3),
        weights=None,
        classes=10,
        minimalistic=True,
        classifier_activation=None,
    ),
    "tfkd_mobilenet_v2": lambda: tfkd.transfer.mobilenet_v2((32, 32, 3), num_classes=10),
    "functional_logits": lambda: small_cnn(4, "cnn", input_shape=(32, 32, 3)),
    "sequential_softmax": _sequential_softmax,
    "nested_softmax": lambda: keras.Sequential([_sequential_softmax()]),
}


@pytest.mark.heavy  # on TensorFlow only: a check of the arguments, on large models
@pytest.mark.parametrize("kind", sorted(CLASSIFIERS))
def test_a_backbone_with_its_classifier_is_refused(kind):
    base = CLASSIFIERS[kind]()
    x, y = random_images(8, shape=(32, 32, 3))
    fix = r"`base` ends in a classifier.*Received: base=.*include_top=False.*get_layer\('"
    with pytest.raises(ValueError, match=fix):
        tfkd.transfer.fine_tune(base, 3, (x, y), verbose=0)
    with pytest.raises(ValueError, match=fix):
        tfkd.transfer.build_classifier(base, 3)
    with pytest.raises(ValueError, match=fix):
        tfkd.transfer.feature_extractor(base)


def test_features_of_rank_2_are_not_mistaken_for_a_classifier():
    pooled = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, include_top=False, pooling="avg"
    )
    cnn = small_cnn(4, "cnn", input_shape=(32, 32, 3))
    cut = keras.Model(cnn.inputs, cnn.get_layer("features").output)
    inputs = keras.Input((32, 32, 3))
    embedding = keras.layers.Dense(16, activation="relu", name="embedding")(
        keras.layers.GlobalAveragePooling2D()(inputs)
    )
    for base in (pooled, cut, keras.Model(inputs, embedding)):
        model = tfkd.transfer.build_classifier(base, 3)
        assert model.output_shape == (None, 3)


def test_small_grey_images_into_an_rgb_backbone(tmp_path):
    x, y = random_images(32, shape=(6, 6, 1))
    model = tfkd.transfer.build_classifier(
        _backbone((12, 12, 3)), 3, input_shape=(6, 6, 1), preprocessing=keras.layers.Rescaling(0.5)
    )
    assert model.input_shape == (None, 6, 6, 1)
    assert model.get_layer("resize").output.shape[1:3] == (12, 12)
    assert model.get_layer("grayscale_to_rgb").output.shape[-1] == 3
    assert model.output_shape == (None, 3)
    assert_keras_round_trip(model, x[:8], tmp_path)


def test_affine_preprocessing_runs_on_the_smaller_image():
    x, _ = random_images(8, shape=(6, 6, 1))
    normalization = tfkd.transfer.torchvision_normalization(name="norm")
    model = tfkd.transfer.build_classifier(
        _backbone((12, 12, 3)), 3, input_shape=(6, 6, 1), preprocessing=normalization
    )
    # Channels and normalization on the 6x6 image, then the resize to 12x12.
    assert tuple(model.get_layer("norm").output.shape) == (None, 6, 6, 3)
    assert tuple(model.get_layer("resize").output.shape) == (None, 12, 12, 3)
    prepared = keras.Model(model.input, model.get_layer("resize").output)
    resized_first = normalization(tfkd.transfer.GrayscaleToRGB()(keras.layers.Resizing(12, 12)(x)))
    np.testing.assert_allclose(
        prepared.predict(x, verbose=0), keras.ops.convert_to_numpy(resized_first), atol=1e-4
    )


@pytest.mark.parametrize(
    "input_shape, preprocessing, spatial",
    [
        # Shrunk images: the resize first, then the normalization on 12x12.
        ((24, 24, 1), lambda name: tfkd.transfer.torchvision_normalization(name=name), (12, 12)),
        # A layer that is not affine: kept after the resize.
        ((6, 6, 1), lambda name: keras.layers.Activation("tanh", name=name), (12, 12)),
        # A Normalization still to be adapted: its statistics would be of other pixels.
        ((6, 6, 3), lambda name: keras.layers.Normalization(name=name), (12, 12)),
    ],
)
def test_other_preprocessing_runs_after_the_resize(input_shape, preprocessing, spatial):
    model = tfkd.transfer.build_classifier(
        _backbone((12, 12, 3)), 3, input_shape=input_shape, preprocessing=preprocessing("pre")
    )
    assert tuple(model.get_layer("pre").output.shape)[1:3] == spatial
    assert tuple(model.get_layer("resize").output.shape[1:3]) == (12, 12)


def test_errors_name_the_argument_and_candidates():
    x, y = random_images(16, shape=(8, 8, 3))
    with pytest.raises(ValueError, match="labels outside.*max 2.*num_classes=2"):
        tfkd.transfer.fine_tune(_backbone(), 2, (x, y), verbose=0)
    with pytest.raises(ValueError, match="unfreeze='conv_c'.*'conv_a'"):
        tfkd.transfer.fine_tune(_backbone(), 3, (x, y), unfreeze="conv_c", verbose=0)
    with pytest.raises(ValueError, match=r"unfreeze=7"):
        tfkd.transfer.fine_tune(_backbone(), 3, (x, y), unfreeze=7, verbose=0)
    inputs = keras.Input((8, 8, 3))
    flat = keras.Model(inputs, keras.ops.sum(inputs, axis=(1, 2, 3)), name="scalar")
    with pytest.raises(ValueError, match="cannot take a classification head"):
        tfkd.transfer.build_classifier(flat, 3)
    with pytest.raises(TypeError, match="`base` must be a Keras 3 model"):
        tfkd.transfer.fine_tune("mobilenet", 3, (x, y))
    with pytest.raises(ValueError, match="num_classes=0"):
        tfkd.transfer.build_classifier(_backbone(), 0)


# Slow (`bash scripts/test.sh -m slow`): 161 s in CI; the default config's quick run (test_cli.py)
# checks a transferred teacher's accuracy
@pytest.mark.slow
def test_fashion_mnist_features_transfer_to_animal_mnist():
    """50 Animal-MNIST images per class, frozen backbone: pretrained features beat random ones."""
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("animal_mnist")
    rng = np.random.default_rng(0)
    index = np.concatenate([rng.choice(np.flatnonzero(y_train == c), 50, False) for c in range(10)])
    train = (x_train[index, ..., None].astype("float32"), y_train[index])
    x_test, y_test = x_test[:1000, ..., None].astype("float32"), y_test[:1000]
    teacher = keras.saving.load_model(TEACHER)
    base = keras.Model(teacher.inputs, teacher.get_layer("features").output, name="fashion")
    accuracies = []
    for backbone in (base, keras.models.clone_model(base)):  # pretrained, then random weights
        keras.utils.set_random_seed(0)
        model, _ = tfkd.transfer.fine_tune(
            backbone,
            10,
            train,
            head_epochs=15,
            head_learning_rate=1e-2,
            fine_tune_epochs=0,
            batch_size=32,
            verbose=0,
        )
        accuracies.append(np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test))
    assert accuracies[0] > 0.5
    assert accuracies[0] > accuracies[1] + 0.15


@pytest.mark.heavy
def test_saved_mobilenet_teacher_matches_its_metadata():
    directory = REPO / "saved_models" / "fashion_mnist_mobilenet_v2_teacher"
    metadata = json.loads((directory / "metadata.json").read_text())
    assert metadata["bytes"] == (directory / "model.keras").stat().st_size
    teacher = keras.saving.load_model(directory / "model.keras")
    assert teacher.input_shape == (None, 28, 28, 1)
    _, (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    predictions = teacher.predict(x_test[:1000, ..., None].astype("float32"), verbose=0)
    assert np.mean(predictions.argmax(-1) == y_test[:1000]) == pytest.approx(
        metadata["test_accuracy"], abs=0.02
    )


@pytest.mark.heavy  # on TensorFlow only: compiling a large keras.applications model: 16 s on JAX
def test_keras_applications_backbone_takes_the_same_path():
    """Users with internet pass weights="imagenet"; weights=None exercises the same code."""
    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None
    )
    x, y = random_images(32, shape=(16, 16, 1), num_classes=4)
    model, history = tfkd.transfer.fine_tune(
        base,
        4,
        (x, y),
        head_epochs=1,
        fine_tune_epochs=1,
        unfreeze="block_16_expand",
        input_shape=(16, 16, 1),
        preprocessing=keras.layers.Rescaling(1 / 127.5, offset=-1),
        verbose=0,
    )
    assert model.output_shape == (None, 4)
    unfrozen = set(history.unfrozen_layers)
    assert {"block_16_expand", "Conv_1"} <= unfrozen and "block_15_add" not in unfrozen
    assert "Conv_1_bn" not in unfrozen
    tuned = model.get_layer(base.name)
    for old, new in zip(base.get_layer("Conv_1_bn").weights, tuned.get_layer("Conv_1_bn").weights):
        np.testing.assert_array_equal(_numpy(new), _numpy(old))


def test_epochs_are_numbered_across_both_phases():
    class Epochs(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_epoch_begin(self, epoch, logs=None):
            self.seen.append(epoch)

    epochs = Epochs()
    x, y = random_images(32, shape=(8, 8, 3))
    tfkd.transfer.fine_tune(
        _backbone(), 3, (x, y), head_epochs=2, fine_tune_epochs=2, callbacks=[epochs], verbose=0
    )
    assert epochs.seen == [0, 1, 2, 3]


def test_a_tf_data_dataset_trains_without_keras_shuffle_warning():
    """A dataset shuffles itself: `fine_tune` does not pass fit's default shuffle=True,
    which Keras ignores with a warning on every phase."""
    import tensorflow as tf

    x, y = random_images(32, shape=(8, 8, 3))
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(32, seed=0).batch(8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, history = tfkd.transfer.fine_tune(
            _backbone(), 3, dataset, head_epochs=1, fine_tune_epochs=1, verbose=0
        )
    assert len(history.history["loss"]) == 2
    assert model.output_shape == (None, 3)
    assert not [w for w in caught if "shuffle" in str(w.message)], [str(w.message) for w in caught]


def test_one_shot_generators_are_refused():
    def batches():
        yield random_images(8, shape=(8, 8, 3))

    with pytest.raises(TypeError, match="generator cannot do twice.*Received: generator"):
        tfkd.transfer.fine_tune(_backbone(), 3, batches(), verbose=0)


def test_augmentation_runs_in_the_training_step_and_is_not_kept():
    """The class is the bright side of the image: flipping half of each batch in the
    step keeps the training accuracy at chance, and the classifier holds no random layer."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 256)
    x = rng.uniform(0.0, 0.2, (256, 8, 8, 3)).astype("float32")
    x[y == 1, :, 4:] += 0.8
    x[y == 0, :, :4] += 0.8
    keras.utils.set_random_seed(0)
    base = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten()], name="flat")
    accuracy = {}
    for augmentation in (None, keras.layers.RandomFlip("horizontal", seed=0)):
        model, history = tfkd.transfer.fine_tune(
            base,
            2,
            (x, y),
            head_epochs=6,
            head_learning_rate=1e-2,
            fine_tune_epochs=0,
            augmentation=augmentation,
            verbose=0,
        )
        assert not any(isinstance(layer, keras.layers.RandomFlip) for layer in model.layers)
        assert model.compiled
        accuracy[augmentation is None] = history.history["accuracy"][-1]
    assert accuracy[True] == 1.0
    assert accuracy[False] < 0.65, accuracy
    with pytest.raises(TypeError, match="`augmentation` must be a Keras layer.*type str"):
        tfkd.transfer.fine_tune(base, 2, (x, y), augmentation="flip")


def test_labels_in_a_dataset_and_a_nan_loss_stop_training():
    x, y = random_images(32, shape=(8, 8, 3))
    model, history = tfkd.transfer.fine_tune(
        _backbone(), 3, Batches(x, y, 8), Batches(x, y, 8), head_epochs=1, fine_tune_epochs=1
    )
    assert not [key for key in history.history if "label_errors" in key]
    assert set(model.evaluate(x, y, verbose=0, return_dict=True)) == {"accuracy", "loss"}
    bad = y.copy()
    bad[12] = 7
    if keras.backend.backend() == "jax":  # -1 is no UNLABELED here: JAX trained on it as 0 loss
        unlabelled = y.copy()
        unlabelled[3] = -1
        with pytest.raises(ValueError, match=r"1 label\(s\) outside them \(-1\)") as error:
            tfkd.transfer.fine_tune(_backbone(), 3, Batches(x, unlabelled, 8), verbose=0)
        assert "UNLABELED" not in str(error.value)
    # TensorFlow and PyTorch raise their own error naming the label; JAX trained on it.
    message = {"jax": r"in the training data at epoch 1, batch \d: 1 label\(s\) outside them \(7\)"}
    with pytest.raises(Exception, match=message.get(keras.backend.backend(), r"\b7\b")):
        tfkd.transfer.fine_tune(_backbone(), 3, Batches(x, bad, 8), verbose=0)
    if keras.backend.backend() == "jax":
        with pytest.raises(ValueError, match=r"in the validation data.*\(7\)"):
            tfkd.transfer.fine_tune(_backbone(), 3, Batches(x, y, 8), Batches(x, bad, 8), verbose=0)
    # Before: a NaN pixel gave a model of NaN weights, and no error.
    x[3, 0, 0, 0] = np.nan
    with pytest.raises(FloatingPointError, match=r"non-finite loss component\(s\) \['loss'\]"):
        tfkd.transfer.fine_tune(_backbone(), 3, (x, y), verbose=0)
    with pytest.raises(TypeError, match="`callbacks` must be None, a keras.callbacks.Callback"):
        tfkd.transfer.fine_tune(_backbone(), 3, (x, y), callbacks="x", verbose=0)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['epochs'\]"):
        tfkd.transfer.fine_tune(_backbone(), 3, (x, y), epochs=3, verbose=0)
