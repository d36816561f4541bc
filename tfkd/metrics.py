"""Per-class results of a classifier: what a person checks before shipping a model.

Plain numpy on labels and predictions, so that Keras models, `.tflite` files and the
pipeline's report are scored the same way. The figures equal scikit-learn's
`classification_report` and `confusion_matrix` (a class that is never predicted gets a
precision of 0, as scikit-learn's `zero_division=0`).
"""

import numpy as np

from tfkd import _checks

__all__ = ["classification_report", "largest_drops"]


def classification_report(y_true, y_pred, num_classes=None, class_names=None):
    """Accuracy, precision, recall and F1 per class, their averages, and the confusion matrix.

    Args:
        y_true: integer labels, one per example.
        y_pred: predicted labels (integers), or scores of shape `(examples, classes)`
            whose argmax is the prediction.
        num_classes: the number of classes. Defaults to `len(class_names)`, else one
            more than the largest label or prediction.
        class_names: a name per class (a list, tuple or 1-D numpy array of strings),
            for reading the result. Defaults to `"0"`, `"1"`, ...

    Returns:
        A dict: `accuracy`; `classes`, one dict per class with `name`, `precision`,
        `recall`, `f1` and `support` (its examples); `macro` (the unweighted mean over
        classes) and `weighted` (weighted by support), each with `precision`, `recall`
        and `f1`; `confusion_matrix`, a list of rows, row `i` counting the examples of
        class `i` by predicted class.

    Example:

    >>> report = tfkd.metrics.classification_report([0, 0, 1, 1], [0, 1, 1, 1])
    >>> report["accuracy"], report["classes"][1]["precision"], report["classes"][0]["recall"]
    (0.75, 0.6666666666666666, 0.5)
    """
    y_true = _labels(y_true, "y_true")
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2 and y_pred.dtype.kind == "f":
        if y_pred.shape[1] == 1:
            # Its argmax is 0 on every row: the report was of a model that always says 0.
            raise ValueError(
                "`y_pred` holds one score per example (a binary classifier's sigmoid or "
                "logit?), whose argmax is always 0. Received: y_pred of shape "
                f"{y_pred.shape}. Pass the predicted classes: "
                "`(y_pred[:, 0] > 0.5).astype(int)` after a sigmoid, `> 0` for a logit."
            )
        y_pred = y_pred.argmax(axis=-1)
    y_pred = _labels(y_pred, "y_pred")
    if len(y_pred) != len(y_true):
        raise ValueError(
            "`y_true` and `y_pred` must hold one entry per example. Received: "
            f"{len(y_true)} labels and {len(y_pred)} predictions."
        )
    if isinstance(class_names, np.ndarray) and class_names.ndim == 1:
        class_names = class_names.tolist()  # numpy's strings as Python's
    num_classes = _num_classes(num_classes, class_names, y_true, y_pred)
    names = _names(class_names, num_classes)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    correct = np.diag(confusion)
    precision = np.divide(correct, predicted, out=np.zeros(num_classes), where=predicted > 0)
    recall = np.divide(correct, support, out=np.zeros(num_classes), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(num_classes), where=total > 0)
    weights = support / max(int(support.sum()), 1)
    metrics = {"precision": precision, "recall": recall, "f1": f1}
    return {
        "accuracy": float(correct.sum() / max(len(y_true), 1)),
        "classes": [
            {
                "name": names[index],
                **{key: float(values[index]) for key, values in metrics.items()},
                "support": int(support[index]),
            }
            for index in range(num_classes)
        ],
        "macro": {key: float(values.mean()) for key, values in metrics.items()},
        "weighted": {key: float(np.sum(values * weights)) for key, values in metrics.items()},
        "confusion_matrix": confusion.tolist(),
    }


def largest_drops(before, after, count=3, metric="recall"):
    """The classes whose `metric` fell the most from report `before` to report `after`
    (two `classification_report` results on the same classes), largest drop first;
    classes that did not fall are left out.

    Returns:
        A list of `{"name", "before", "after", "change"}` dicts, at most `count`.
    """
    if metric not in ("precision", "recall", "f1"):
        raise ValueError(
            f"`metric` must be 'precision', 'recall' or 'f1'. Received: metric={metric!r}"
        )
    _checks.check_number("count", count, low=1, integer=True)
    if len(before["classes"]) != len(after["classes"]):
        raise ValueError(
            "The two reports must score the same classes. Received: "
            f"{len(before['classes'])} and {len(after['classes'])} classes."
        )
    changes = [
        {
            "name": new["name"],
            "before": old[metric],
            "after": new[metric],
            "change": new[metric] - old[metric],
        }
        for old, new in zip(before["classes"], after["classes"])
    ]
    dropped = sorted((c for c in changes if c["change"] < 0), key=lambda c: c["change"])
    return dropped[:count]


def _labels(values, argument):
    array = np.asarray(values)
    if array.dtype.kind not in "iu" or array.ndim != 1:
        raise (TypeError if array.dtype.kind not in "iu" else ValueError)(
            f"`{argument}` must be a 1-D array of integer class ids. Received: {argument} of "
            f"shape {array.shape} and dtype {array.dtype}"
        )
    if array.size and array.min() < 0:
        raise ValueError(
            f"`{argument}` must hold class ids >= 0. Received: {argument} with {int(array.min())}"
        )
    return array.astype(np.int64)


def _num_classes(num_classes, class_names, y_true, y_pred):
    largest = int(max(y_true.max(initial=0), y_pred.max(initial=0)))
    if num_classes is not None:
        _checks.check_number("num_classes", num_classes, low=1, integer=True)
        given = f"num_classes={num_classes}"
    elif class_names is not None:
        num_classes = len(class_names) if isinstance(class_names, list | tuple) else 0
        given = f"class_names={_checks.shown(class_names)}"
    else:
        return largest + 1
    if largest >= num_classes:
        raise ValueError(
            f"A label or prediction is outside the {num_classes} classes. Received: {given} "
            f"with class id {largest}."
        )
    return int(num_classes)


def _names(class_names, num_classes):
    if class_names is None:
        return [str(index) for index in range(num_classes)]
    names = list(class_names) if isinstance(class_names, list | tuple) else None
    if names is None or len(names) != num_classes or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"`class_names` must be a list of {num_classes} strings, one per class. "
            f"Received: class_names={_checks.shown(class_names)}"
        )
    return names
