"""The user's own texts: a CSV file (or a folder with `train.csv` and `test.csv`).

`load_csv` returns the texts as lists of strings and the labels as class ids; a model
needs them tokenized (`tfkd.text.WordPieceTokenizer`, as the pipeline does). An empty
label cell in the training rows marks a text whose label is unknown: it gets the label
`UNLABELED` (-1), which `tfkd.Distiller` and the pipeline read as "distil only".
"""

import codecs
import csv
import os
import re
import warnings

import numpy as np

from tfkd import _checks
from tfkd.datasets._files import _error, _stratified_test_indices

UNLABELED = -1


def load_csv(path, text="text", label="label", test_split=None, seed=0, encoding="utf-8"):
    """Texts and labels from a CSV file with a header row, read with Python's `csv`.

    Two layouts: a folder with `train.csv` and `test.csv`, or one file with
    `test_split`, the fraction of each class's labelled rows kept for testing, drawn with
    `seed`. Class names are the label column's distinct values, in numerical order
    where all are whole numbers, else in alphabetical order (label `i` is the `i`-th
    name). A training row whose label cell is empty is kept
    with the label `UNLABELED` (-1): a teacher can still teach on it. A label cell that
    holds `-1` is a class like any other (sentiment's -1, 0, 1), with a warning.

    Args:
        path: the `.csv` file, or the folder of `train.csv` and `test.csv`.
        text: the column of texts. Defaults to `"text"`.
        label: the column of labels. Defaults to `"label"`.
        test_split: a fraction in (0, 1) for a single file; `None` for a folder.
            Defaults to `None`.
        seed: draws the test rows of a single file. Defaults to `0`.
        encoding: the files' text encoding. Defaults to `"utf-8"`.

    Returns:
        `(texts_train, y_train), (texts_test, y_test), class_names`: lists of str, int64
        arrays, a list of str.

    Raises:
        ValueError, TypeError: the first of `csv_errors`.

    Example:

    ```python
    (texts, y), (test_texts, test_y), names = tfkd.datasets.load_csv(
        "reviews.csv", text="review", label="stars", test_split=0.2
    )
    ```
    """
    errors, read = _read(path, text, label, test_split, seed, encoding)
    if errors:
        raise errors[0]
    return read


def csv_errors(path, text="text", label="label", test_split=None, seed=0, encoding="utf-8"):
    """What is wrong with `load_csv`'s arguments and files: errors with an `argument`
    attribute, each naming the file and line. Reads the files (text is small)."""
    return _read(path, text, label, test_split, seed, encoding)[0]


def _read(path, text, label, test_split, seed, encoding):
    """`(errors, result)`: the result of `load_csv` when there are no errors."""
    errors = _argument_errors(path, text, label, test_split, seed, encoding)
    if errors:
        return errors, None
    path = os.fspath(path)
    files = _files(path, test_split)
    if isinstance(files, Exception):
        return [files], None
    rows = {}
    for split, file in files.items():
        rows[split] = _rows(file, text, label, encoding, labels_required=split == "test")
        if isinstance(rows[split], Exception):
            return [rows[split]], None
    names = _ordered({value for _, _, value in rows["train"] if value})
    if str(UNLABELED) in names and names != [str(UNLABELED)]:
        # -1 is UNLABELED in arrays; in a CSV file it may be a class (sentiment -1, 0, 1).
        warnings.warn(
            f"The label {str(UNLABELED)!r} in {files['train']!r} is read as a class, class id "
            f"{names.index(str(UNLABELED))} of {names}, not as a row without a label: leave "
            "the label cell empty for rows that have none.",
            stacklevel=4,
        )
    if len(names) < 2:
        return [
            _error(
                "csv",
                "A classifier needs at least 2 distinct labels in the label column. Received: "
                f"{files['train']!r} with labels {names} in column {label!r}",
            )
        ], None
    if "test" in rows:
        unknown = [row for row in rows["test"] if row[2] not in names]
        if unknown:
            line, _, value = unknown[0]
            return [
                _error(
                    "csv",
                    f"{files['test']}:{line}: the label {value!r} is not among the training "
                    f"labels {names}",
                )
            ], None
        return [], (_split(rows["train"], names), _split(rows["test"], names), names)
    texts, y = _split(rows["train"], names)
    test = _stratified_test_indices(y[y != UNLABELED], test_split, seed)
    test = np.flatnonzero(y != UNLABELED)[test]
    train = np.setdiff1d(np.arange(len(y)), test)
    return [], (
        ([texts[i] for i in train], y[train]),
        ([texts[i] for i in test], y[test]),
        names,
    )


def _argument_errors(path, text, label, test_split, seed, encoding):
    errors = []
    for argument, value in (("text", text), ("label", label), ("encoding", encoding)):
        if not isinstance(value, str) or not value:
            errors.append(
                _error(
                    argument,
                    f"`{argument}` must be a non-empty string. Received: {argument}={value!r}",
                    TypeError,
                )
            )
    if isinstance(encoding, str) and encoding:
        try:
            "".encode(encoding)
        except LookupError:
            errors.append(_error("encoding", f"Unknown encoding. Received: encoding={encoding!r}"))
    for argument, check in (
        (
            "test_split",
            lambda: _checks.check_number(
                "test_split", test_split, low=0, high=1, low_open=True, high_open=True,
                allow_none=True,
            ),
        ),
        ("split_seed", lambda: _checks.check_seed(seed)),
    ):  # fmt: skip
        try:
            check()
        except (TypeError, ValueError) as error:
            errors.append(_error(argument, str(error), type(error)))
    if not isinstance(path, str | os.PathLike):
        errors.insert(
            0,
            _error(
                "csv",
                f"`csv` must be a .csv file or a folder path. Received: csv={path!r} of type "
                f"{type(path).__name__}",
                TypeError,
            ),
        )
    return errors


def _files(path, test_split):
    """`{"train": file[, "test": file]}`, or the error that says why not."""
    if os.path.isdir(path):
        files = {split: os.path.join(path, f"{split}.csv") for split in ("train", "test")}
        missing = [file for file in files.values() if not os.path.isfile(file)]
        if missing or test_split is not None:
            return _error(
                "csv",
                "A `csv` folder must hold `train.csv` and `test.csv` (and takes no "
                f"`test_split`). Received: csv={path!r}, missing {missing}, "
                f"test_split={test_split!r}",
            )
        return files
    if not os.path.isfile(path):
        return _error("csv", f"File or folder not found. Received: csv={path!r}")
    if test_split is None:
        return _error(
            "test_split",
            "One `csv` file needs `test_split`, the fraction of each class kept for testing "
            f"(or give a folder with train.csv and test.csv). Received: csv={path!r}, "
            "test_split=None",
        )
    return {"train": path}


def _rows(file, text, label, encoding, labels_required):
    """`[(line, text, label value)]` of a CSV file, or the error naming its file and line."""
    line = 1
    try:
        # Excel's "CSV UTF-8" starts with a byte-order mark, which UTF-8 read as part of
        # the first column's name: the header then lacked '\ufefftext'.
        utf_8 = codecs.lookup(encoding).name == "utf-8"
        with open(file, encoding="utf-8-sig" if utf_8 else encoding, newline="") as stream:
            reader = csv.reader(stream)
            header = next(reader, None)
            missing = [column for column in (text, label) if column not in (header or [])]
            if missing:
                return _error(
                    "csv",
                    f"{file}:1: the header lacks the column(s) {missing}. Received: "
                    f"columns {header}",
                )
            columns = header.index(text), header.index(label)
            rows = []
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue  # a blank line
                if len(row) != len(header):
                    return _error(
                        "csv", f"{file}:{line}: {len(row)} cells where the header has {len(header)}"
                    )
                content, value = row[columns[0]], row[columns[1]].strip()
                if not content.strip():
                    return _error("csv", f"{file}:{line}: the text column {text!r} is empty")
                if labels_required and not value:
                    return _error(
                        "csv",
                        f"{file}:{line}: the label column {label!r} is empty; every test row "
                        "needs a label",
                    )
                rows.append((line, content, value))
    except (OSError, UnicodeDecodeError, csv.Error) as error:  # csv.Error: a cell over its limit
        return _error(
            "csv",
            f"{file}:{line + 1}: not a readable {encoding} CSV file "
            f"({type(error).__name__}: {error})",
        )
    if not rows:
        return _error("csv", f"{file}: no rows below the header")
    return rows


def _ordered(labels):
    """The distinct labels in order: as numbers where all are whole numbers (so that
    labels 0 to 10 are class ids 0 to 10: as text, '10' came before '2'), else as text."""
    if all(re.fullmatch("-?[0-9]+", label) for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _split(rows, names):
    index = {name: i for i, name in enumerate(names)}
    texts = [content for _, content, _ in rows]
    return texts, np.array([index.get(value, UNLABELED) for _, _, value in rows], np.int64)
