"""Bad inputs to `tfkd.metrics` are refused with the argument and the value named."""

import numpy as np

import tfkd
from tests.bad_inputs._cases import Case, check, parametrize

report = tfkd.metrics.classification_report
drops = tfkd.metrics.largest_drops
GOOD = report([0, 1], [0, 1])

CASES = [
    Case(report, lambda: report([0.5, 1.0], [0, 1]), TypeError, "y_true", "float64"),
    Case(report, lambda: report([0, 1], [[0], [1]]), ValueError, "y_pred", "(2, 1)"),
    Case(report, lambda: report([0, -1], [0, 1]), ValueError, "y_true", "-1"),
    Case(report, lambda: report([0, 1], [0, 1, 1]), ValueError, "y_pred", "3 predictions"),
    Case(report, lambda: report([0, 3], [0, 1], num_classes=2), ValueError, "num_classes", "3"),
    Case(
        report,
        lambda: report([0, 1], [0, 1], class_names=["a"]),
        ValueError,
        "class_names",
        "['a']",
    ),
    Case(report, lambda: report([0, 1], [0, 1], num_classes="2"), TypeError, "num_classes", "'2'"),
    Case(drops, lambda: drops(GOOD, GOOD, metric="loss"), ValueError, "metric", "'loss'"),
    Case(drops, lambda: drops(GOOD, GOOD, count=0), ValueError, "count", "0"),
    Case(drops, lambda: drops(GOOD, report([0, 2], [0, 2])), ValueError, "classes", "3 classes"),
    Case(report, lambda: report(np.zeros((2, 2), int), [0, 1]), ValueError, "y_true", "(2, 2)"),
    # Before: one score per example read by its argmax, 0 on every row (accuracy 0.4 here).
    Case(
        report,
        lambda: report([0, 1, 1, 0, 1], np.array([[0.1], [0.9], [0.8], [0.2], [0.7]])),
        ValueError,
        "y_pred",
        "(5, 1)",
    ),
    Case(
        report,
        lambda: report([0, 1], [0, 1], class_names=np.array([7, 8])),
        ValueError,
        "class_names",
        "[7, 8]",
    ),
]


def test_class_names_may_be_a_numpy_array():
    # Before: "A label or prediction is outside the 0 classes".
    names = np.array(["cat", "dog"])
    assert [c["name"] for c in report([0, 1], [0, 1], class_names=names)["classes"]] == [
        "cat",
        "dog",
    ]


@parametrize(CASES)
def test_bad_input_is_refused(case):
    check(case)
