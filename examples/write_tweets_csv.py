"""Writes the tweets sentiment data set (bundled offline) as `train.csv` and `test.csv`:
the form a user's own texts come in, for `examples/pipeline_tweets.yaml`.

The split is `tfkd.datasets.load_tweets(unlabeled_fraction=0.5, seed=0)`, the one of
`examples/distill_minilm_tweets.py` and BENCHMARKS.md: the training tweets whose labels
are hidden are written with an empty `label` cell (unlabelled text for the teacher).

    python examples/write_tweets_csv.py --output data/tweets_csv [--train-size N --test-size N]
"""

import argparse
import csv
import os
import pathlib
import time

from tfkd.datasets import load_tweets


def write(output, train_size=None, test_size=None):
    """Writes `output/train.csv` (labelled rows, then unlabelled ones) and
    `output/test.csv`, each with the columns `text` and `label` (the class name), keeping
    the first `train_size` labelled and unlabelled tweets and `test_size` test tweets
    (all when `None`). Returns the rows written per file."""
    data = load_tweets(unlabeled_fraction=0.5, seed=0)
    names = data.class_names
    texts, labels = data.train
    labelled = [(t, names[y]) for t, y in zip(texts[:train_size], labels[:train_size])]
    rows = {
        "train.csv": labelled + [(text, "") for text in data.unlabeled[:train_size]],
        "test.csv": [(t, names[y]) for t, y in zip(*(part[:test_size] for part in data.test))],
    }
    os.makedirs(output, exist_ok=True)
    for file_name, lines in rows.items():
        temporary = pathlib.Path(output) / f".{file_name}.tmp"
        with open(temporary, "w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["text", "label"])
            writer.writerows(lines)
        os.replace(temporary, pathlib.Path(output) / file_name)
    return {file_name: len(lines) for file_name, lines in rows.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=pathlib.Path, default=pathlib.Path("data/tweets_csv"))
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--test-size", type=int, default=None)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    counts = write(args.output, args.train_size, args.test_size)
    print(f"{counts} rows written to {args.output} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
