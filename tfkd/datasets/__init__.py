"""Real data sets, offline: images as numpy arrays and TensorFlow Datasets, and text.

`load(name)` returns `(x_train, y_train), (x_test, y_test)` like
`keras.datasets.fashion_mnist.load_data()`, from files installed by system or
pip packages (no network). `load_directory`, `load_npz`, `load_tfds` and `load_csv`
read the user's own data: a folder of images in class folders, a `.npz` file, a
prepared tfds data set, texts in a CSV file; `directory_errors`, `npz_errors`,
`tfds_errors` and `csv_errors` are the checks they make first (the pipeline runs them
on a config before any work).
`write_tfds(name, data_dir)` writes the bundled data for
`tfds.load(name, data_dir=data_dir, download=False)`. `load_tweets()` returns
the tweets sentiment data set as lists of strings with a train/test/unlabeled split.
"""

from tfkd.datasets._files import (
    directory_errors,
    load_directory,
    load_npz,
    load_tfds,
    npz_errors,
    tfds_errors,
)
from tfkd.datasets._load import available, info, load
from tfkd.datasets._text_files import csv_errors, load_csv
from tfkd.datasets._tfds import write_tfds
from tfkd.datasets._tweets import TextSplits, load_tweets

__all__ = [
    "TextSplits",
    "available",
    "csv_errors",
    "directory_errors",
    "info",
    "load",
    "load_csv",
    "load_directory",
    "load_npz",
    "load_tfds",
    "load_tweets",
    "npz_errors",
    "tfds_errors",
    "write_tfds",
]
