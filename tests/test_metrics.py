"""`tfkd.metrics`: per-class figures equal to scikit-learn's on the same predictions."""

import numpy as np
import pytest
from sklearn import metrics as sk

import tfkd


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_report_equals_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 5, 300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 4, 300))  # never 5
    names = ["cat", "dog", "fox", "owl", "eel", "yak"]  # class 5 has no example
    report = tfkd.metrics.classification_report(y_true, y_pred, class_names=names)
    labels = list(range(6))
    precision, recall, f1, support = sk.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    np.testing.assert_allclose([c["precision"] for c in report["classes"]], precision)
    np.testing.assert_allclose([c["recall"] for c in report["classes"]], recall)
    np.testing.assert_allclose([c["f1"] for c in report["classes"]], f1)
    assert [c["support"] for c in report["classes"]] == support.tolist()
    assert [c["name"] for c in report["classes"]] == names
    expected = sk.classification_report(
        y_true, y_pred, labels=labels, zero_division=0, output_dict=True
    )
    for average in ("macro", "weighted"):
        for key, name in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert report[average][key] == pytest.approx(expected[f"{average} avg"][name])
    assert report["confusion_matrix"] == sk.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert report["accuracy"] == pytest.approx(sk.accuracy_score(y_true, y_pred))


def test_scores_are_read_by_their_argmax_and_drops_are_ranked():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], "float32")
    report = tfkd.metrics.classification_report([0, 1, 1, 1], scores)
    assert report["confusion_matrix"] == [[1, 0], [1, 2]]
    teacher = tfkd.metrics.classification_report([0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2])
    student = tfkd.metrics.classification_report([0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 0, 0])
    drops = tfkd.metrics.largest_drops(teacher, student)
    assert [(d["name"], d["change"]) for d in drops] == [("2", -1.0), ("1", -0.5)]
    assert tfkd.metrics.largest_drops(teacher, teacher) == []
