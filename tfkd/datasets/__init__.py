"""Real data sets, offline: images as numpy arrays and TensorFlow Datasets, and text.

`load(name)` returns `(x_train, y_train), (x_test, y_test)` like
`keras.datasets.fashion_mnist.load_data()`, from files installed by system or
pip packages (no network). `write_tfds(name, data_dir)` writes the same data
for `tfds.load(name, data_dir=data_dir, download=False)`. `load_tweets()` returns
the tweets sentiment data set as lists of strings with a train/test/unlabeled split.
"""

from tfkd.datasets._load import available, info, load
from tfkd.datasets._tfds import write_tfds
from tfkd.datasets._tweets import TextSplits, load_tweets

__all__ = ["TextSplits", "available", "info", "load", "load_tweets", "write_tfds"]
