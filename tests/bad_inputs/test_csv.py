"""Bad CSV files and arguments are refused by `tfkd.datasets.load_csv` and `csv_errors`,
naming the argument, the file and the line."""

import os
import tempfile

from tests.bad_inputs._cases import Case, check, parametrize
from tfkd import datasets

load, errors = datasets.load_csv, datasets.csv_errors
GOOD_TRAIN = "text,label\nfine day,pos\nawful day,neg\n"


def _folder(train, test, call):
    """`call(folder)` on a folder of `train.csv` and `test.csv` with these contents."""
    with tempfile.TemporaryDirectory() as folder:
        for name, content in (("train.csv", train), ("test.csv", test)):
            with open(os.path.join(folder, name), "wb") as file:
                file.write(content.encode("utf-8") if isinstance(content, str) else content)
        return call(folder)


def _first(found):
    raise found[0]


CASES = [
    Case(load, lambda: load(3), TypeError, "csv", "3"),
    Case(load, lambda: load("no/such.csv", test_split=0.2), ValueError, "csv", "'no/such.csv'"),
    Case(
        load,
        lambda: _folder("words,label\na,b\n", GOOD_TRAIN, load),
        ValueError,
        "csv",
        "['words', 'label']",
    ),
    Case(
        load,
        lambda: _folder(GOOD_TRAIN + '"  ",pos\n', GOOD_TRAIN, load),
        ValueError,
        "csv",
        "train.csv:4",
    ),
    Case(
        load,
        lambda: _folder(GOOD_TRAIN, "text,label\nok,pos\nnot ok,\n", load),
        ValueError,
        "csv",
        "test.csv:3",
    ),
    Case(
        load,
        lambda: _folder(GOOD_TRAIN, "text,label\nok,maybe\n", load),
        ValueError,
        "csv",
        "'maybe'",
    ),
    Case(
        load,
        lambda: _folder("text,label\na,x\nb,x\n", GOOD_TRAIN, load),
        ValueError,
        "csv",
        "['x']",
    ),
    Case(load, lambda: load("a.csv", text=""), TypeError, "text", "''"),
    Case(load, lambda: load("a.csv", test_split=1.5), ValueError, "test_split", "1.5"),
    Case(
        load,
        lambda: _folder(b"text,label\n\xff\xfe,pos\n", GOOD_TRAIN, load),
        ValueError,
        "csv",
        "train.csv:2",
    ),
    Case(
        load,
        lambda: _folder(GOOD_TRAIN, GOOD_TRAIN, lambda f: load(f, test_split=0.5)),
        ValueError,
        "test_split",
        "0.5",
    ),
    Case(
        errors,
        lambda: _first(_folder(GOOD_TRAIN + "x,pos,extra\n", GOOD_TRAIN, errors)),
        ValueError,
        "csv",
        "train.csv:4",
    ),
    Case(errors, lambda: _first(errors("a.csv", label=None)), TypeError, "label", "None"),
    Case(
        errors,
        lambda: _first(
            _folder(GOOD_TRAIN, GOOD_TRAIN, lambda f: errors(os.path.join(f, "train.csv")))
        ),
        ValueError,
        "test_split",
        "None",
    ),
    Case(
        errors,
        lambda: _first(errors("a.csv", encoding="klingon", test_split=0.2)),
        ValueError,
        "encoding",
        "'klingon'",
    ),
]


@parametrize(CASES)
def test_bad_input_is_refused(case):
    check(case)
