"""Real image data sets, offline: numpy arrays and TensorFlow Datasets.

`load(name)` returns `(x_train, y_train), (x_test, y_test)` like
`keras.datasets.fashion_mnist.load_data()`, from files installed by system or
pip packages (no network). `write_tfds(name, data_dir)` writes the same data
for `tfds.load(name, data_dir=data_dir, download=False)`.
"""

from tfkd.datasets._load import available, info, load
from tfkd.datasets._tfds import write_tfds

__all__ = ["available", "info", "load", "write_tfds"]
