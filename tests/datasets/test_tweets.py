"""`tfkd.datasets.load_tweets`: the real tweets CSV, split without leaks."""

import numpy as np
import pytest

import tfkd


def test_split_sizes_classes_and_no_overlap():
    data = tfkd.datasets.load_tweets(unlabeled_fraction=0.5)
    (train, y_train), (test, y_test) = data.train, data.test
    total = len(train) + len(test) + len(data.unlabeled)
    assert total == 37_243  # 38,158 rows, exact duplicate texts dropped
    assert len(test) == pytest.approx(0.2 * total, abs=3)
    assert abs(len(train) - len(data.unlabeled)) <= 3
    assert not (set(train) & set(test)) and not (set(train) & set(data.unlabeled))
    assert not (set(test) & set(data.unlabeled))
    assert data.class_names == ("negative", "neutral", "positive")
    # Stratified: every split has the class shares of the whole set (43% / 39% / 18%).
    everything = np.concatenate([y_train, y_test, data.unlabeled_labels])
    shares = np.bincount(everything) / len(everything)
    np.testing.assert_allclose(shares, [0.429, 0.388, 0.183], atol=0.001)
    for labels in (y_train, y_test, data.unlabeled_labels):
        np.testing.assert_allclose(np.bincount(labels) / len(labels), shares, atol=0.001)
    assert y_train.dtype == np.int64 and isinstance(train[0], str)


def test_same_seed_same_split_other_seed_other_split():
    first, again = tfkd.datasets.load_tweets(), tfkd.datasets.load_tweets()
    assert first.test[0][:50] == again.test[0][:50]
    np.testing.assert_array_equal(first.train[1], again.train[1])
    assert tfkd.datasets.load_tweets(seed=1).test[0][:50] != first.test[0][:50]
    assert first.unlabeled == []


def test_reads_a_csv_given_by_path_and_checks_it(tmp_path):
    path = tmp_path / "tweets.csv"
    rows = ["sentiment,confidence,text"] + [
        f"{label},1,tweet {i} {label}"
        for i in range(10)
        for label in ("negative", "neutral", "positive")
    ]
    path.write_text("\n".join(rows), encoding="latin-1")
    data = tfkd.datasets.load_tweets(path, test_fraction=0.2)
    assert len(data.train[0]) == 24 and len(data.test[0]) == 6
    path.write_text("sentiment,text\nangry,hello\n", encoding="latin-1")
    with pytest.raises(ValueError, match="line 2: sentiment must be one of"):
        tfkd.datasets.load_tweets(path)
    with pytest.raises(FileNotFoundError, match="path="):
        tfkd.datasets.load_tweets(tmp_path / "missing.csv")
    for kwargs in ({"test_fraction": 0}, {"test_fraction": 1.0}, {"unlabeled_fraction": -0.1}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            tfkd.datasets.load_tweets(**kwargs)
