"""`Data`: arrays, subsets, fingerprints and the teacher-labelled augmented copies."""

import numpy as np
import pytest

from tfkd.pipeline import Data
from tfkd.pipeline.data import shifted_copies


@pytest.fixture(scope="module")
def data():
    return Data.load("fashion_mnist", train_size=300, test_size=50)


def test_load_adds_channels_and_counts_classes(data):
    assert data.x_train.shape == (300, 28, 28, 1) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (50, 28, 28, 1) and data.num_classes == 10
    assert data.quick().x_train.shape[0] == 300  # already below the quick size


def test_images_stay_uint8_or_become_float32_and_train_alike(data, tmp_path):
    import tfkd

    floats = Data(
        data.x_train.astype("float32"), data.y_train, data.x_test.astype("float64"), data.y_test
    )
    assert floats.x_train.dtype == floats.x_test.dtype == np.float32
    stages = [
        tfkd.pipeline.Train(
            {"architecture": "cnn", "filters": [16, 32]},
            epochs=3,
            batch_size=16,
            learning_rate=0.003,
            name="cnn",
        ),
        tfkd.pipeline.Export(quantization="int8", name="int8"),
    ]
    rows = [
        tfkd.Pipeline(stages)
        .execute(arrays, tmp_path / name, tensorboard=False, verbose=0, log=lambda _: None)
        .rows
        for name, arrays in (("uint8", data), ("float32", floats))
    ]
    assert [row["accuracy"] for row in rows[0]] == [row["accuracy"] for row in rows[1]]
    assert rows[0][0]["accuracy"] > 0.2  # twice chance (10 classes, 300 images): it learnt


def test_fingerprint_follows_the_arrays(data):
    same = Data.load("fashion_mnist", train_size=300, test_size=50)
    assert same.fingerprint == data.fingerprint
    assert data.subset(299).fingerprint != data.fingerprint
    # The classes too: before, a stage trained for 11 classes, or under other names, was
    # reused (a model of 11 outputs for data of 10 classes, which failed every stage after).
    arrays = (data.x_train, data.y_train, data.x_test, data.y_test)
    names = list(data.class_names)
    assert Data(*arrays, class_names=names).fingerprint == data.fingerprint
    assert Data(*arrays, num_classes=11).fingerprint != data.fingerprint
    renamed = Data(*arrays, class_names=["tee", *names[1:]])
    assert renamed.fingerprint != data.fingerprint


def test_augmented_copies_are_fixed_shifted_and_flipped(data):
    x, y = data.augmented_copies(2, seed=0)
    assert x.shape == (600, 28, 28, 1) and np.array_equal(y, np.tile(data.y_train, 2))
    again, _ = data.augmented_copies(2, seed=0)
    np.testing.assert_array_equal(x, again)
    original = data.x_train[:, :, :, 0]
    for index in range(50):  # every copy is the image moved by at most 2 pixels, maybe flipped
        copy = x[index, :, :, 0]
        candidates = [original[index], original[index, :, ::-1]]
        best = min(
            np.abs(np.roll(image, (dy, dx), axis=(0, 1))[2:-2, 2:-2] - copy[2:-2, 2:-2]).max()
            for image in candidates
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        )
        assert best == 0
    assert not np.array_equal(x[:300], data.x_train)
    # The same copies from the arrays alone (benchmarks/distill_few_labels.py uses it).
    np.testing.assert_array_equal(shifted_copies(data.x_train, 2, seed=0), x)
    with pytest.raises(ValueError, match=r"images of shape \(n, height, width, channels\)"):
        shifted_copies(data.x_train[..., 0], 2)
    with pytest.raises(
        ValueError, match=r"`copies` must be a positive integer. Received: copies=0"
    ):
        shifted_copies(data.x_train, 0)
    with pytest.raises(
        TypeError, match=r"`copies` must be a positive integer. Received: copies=1.5"
    ):
        shifted_copies(data.x_train, 1.5)
    with pytest.raises(
        ValueError, match=r"`shift` must be a non-negative integer. Received: shift=-1"
    ):
        shifted_copies(data.x_train, 1, shift=-1)
    with pytest.raises(ValueError, match=r"`seed` must be"):
        shifted_copies(data.x_train, 1, seed=-3)
    with pytest.raises(TypeError, match=r"`flip`"):
        shifted_copies(data.x_train, 1, flip="yes")
    # No shift and no flip: every copy is the image itself.
    np.testing.assert_array_equal(
        shifted_copies(data.x_train, 2, shift=0, flip=False), np.concatenate([data.x_train] * 2)
    )


def test_labels_as_whole_number_floats_or_one_hot_rows_are_class_ids():
    # Before, both were refused ("must hold integer class ids"), and one-hot rows of
    # integers were read as one label per column (2 labels an example here).
    labels = np.array([2, 0, 1, 2])
    x = np.zeros((4, 4, 4), "float32")
    for y in (labels.astype("float32"), np.eye(3)[labels], np.eye(3, dtype="uint8")[labels]):
        data = Data(x, y, x[:2], y[:2])
        np.testing.assert_array_equal(data.y_train, labels)
        np.testing.assert_array_equal(data.y_test, labels[:2])
        assert data.y_train.dtype == np.int64 and data.num_classes == 3
    # Rows of 5 columns say 5 classes, though class 3 and 4 have no example here.
    assert Data(x, np.eye(5)[labels], x[:2], np.eye(5)[labels[:2]]).num_classes == 5


def test_bad_arguments(data):
    with pytest.raises(ValueError, match="`x_train` and `y_train` differ in length"):
        Data(np.zeros((3, 4, 4)), np.zeros(2, int), np.zeros((1, 4, 4)), np.zeros(1, int))
    with pytest.raises(TypeError, match=r"`y_train` must hold integer class ids.*0\.5 at index 1"):
        Data(np.zeros((2, 4, 4)), np.array([1.0, 0.5]), np.zeros((1, 4, 4)), np.zeros(1, int))
    with pytest.raises(
        ValueError, match=r"`y_test` must hold class ids, or one-hot rows.*\(1, 3\)"
    ):
        Data(np.zeros((2, 4, 4)), np.zeros(2, int), np.zeros((1, 4, 4)), [[0.2, 0.5, 0.3]])
    with pytest.raises(ValueError, match=r"one class id per example.*\(2, 1, 1\)"):
        Data(np.zeros((2, 4, 4)), np.zeros((2, 1, 1), int), np.zeros((1, 4, 4)), [1])
    # A test split of other shapes failed after the training stages, naming no stage.
    with pytest.raises(ValueError, match=r"same shape.*\(3, 4, 4, 1\) .*\(1, 5, 4, 1\)"):
        Data(np.zeros((3, 4, 4)), np.zeros(3, int), np.zeros((1, 5, 4)), np.zeros(1, int))
    # A name of None ran, and its report's config.json was then called damaged.
    with pytest.raises(TypeError, match=r"`name` must be a non-empty string.*name=None"):
        Data(np.zeros((2, 4, 4)), np.zeros(2, int), np.zeros((1, 4, 4)), np.zeros(1, int), None)
    # A label of 10**9 made a name per class: a MemoryError.
    with pytest.raises(ValueError, match=r"ask for 1000000001 classes, more than the 100000"):
        Data(np.zeros((2, 4, 4)), np.array([0, 10**9]), np.zeros((1, 4, 4)), np.zeros(1, int))
    with pytest.raises(ValueError, match="Unknown data set. Received: name='cifar'"):
        Data.load("cifar")
    with pytest.raises(ValueError, match="`train_size` must be a positive integer"):
        Data.load("fashion_mnist", train_size=0)


def test_class_names_that_miss_a_class_are_named_as_the_cause():
    # Before: "`num_classes` must be >= 2 and above every label. Received: num_classes=2",
    # an argument the .npz's user never gave.
    x = np.zeros((6, 4, 4, 1), "float32")
    y = np.array([0, 1, 2, 0, 1, 2])
    with pytest.raises(
        ValueError,
        match=r"`class_names` must name every class: the labels go up to 2, 3 classes. "
        r"Received: 2 class_names \['a', 'b'\]",
    ):
        Data(x, y, x, y, class_names=["a", "b"])
    assert Data(x, y, x, y, class_names=["a", "b", "c"]).num_classes == 3


def test_a_test_class_without_a_labelled_training_example_is_noted():
    # Before: a 4-output model trained on 3 of the classes without a word.
    x = np.zeros((6, 4, 4, 1), "float32")
    data = Data(x, np.array([0, 1, 2, 0, 1, -1]), x, np.array([0, 1, 2, 3, 3, 1]), num_classes=4)
    assert data.describe()["notes"] == [
        "no labelled training example of class(es) ['3'], which the test split has 2 of: "
        "no stage learns them"
    ]
    assert "notes" not in Data(x, np.array([0, 1, 2, 3, 0, 1]), x, np.arange(6) % 4).describe()
