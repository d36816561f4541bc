"""The labels side of a Distiller step: unlabelled examples and mixed labels.

Integer labels equal to `UNLABELED` mark examples without a label: they get
the distillation losses only. A mixed batch (mixup, CutMix) weighs each
example's label by its share and its partner's label by the rest.
"""

import keras
import numpy as np
from keras import ops

# Label of an example that has none. Integer class labels only; float targets
# (one-hot rows, regression) are never read as missing.
UNLABELED = -1


def task_terms(
    y,
    sample_weight,
    partner_index=None,
    mix_ratio=None,
    labelled=None,
    reduction="sum_over_batch_size",
):
    """The task loss as weighted terms on clean labels.

    Returns `[(labels, weights), ...]`, a factor per term and the number of labelled
    examples (shares of mixed ones; None where all are, as the batch's size): the task
    loss is
    `sum(factor * compiled_loss(labels, y_pred, weights))`, reduced over the labelled
    examples as the loss's `reduction` reduces a batch: with Keras's default
    (`"sum_over_batch_size"`), the mean over the labelled (share of each) example,
    whatever the batch's unlabelled count; with `"sum"`, their sum; with
    `"mean_with_sample_weight"`, their weighted mean (each term is divided by its own
    weights, so each is weighed back by them). Before, the default's factor was applied
    to every reduction: 1.5x the task loss with a third of the batch unlabelled.
    With no unlabelled label and no mixing, it is `[(y, sample_weight)]`, `[1]`.
    `labelled`: the mask of labelled examples where `fitting_labels` gives one (float
    targets), else read from integer `y`.
    """
    labelled = _labelled_mask(y) if labelled is None else labelled
    if labelled is None and partner_index is None:
        return [(y, sample_weight)], [1.0], None
    labels, weights = metric_labels(y, sample_weight, labelled)
    if labelled is None:
        labelled = ops.ones((ops.shape(y)[0],), "float32")
        weights = labelled if sample_weight is None else _flat(sample_weight)
    if partner_index is None:
        terms = [(labels, weights)]
        shares = labelled
    else:
        ratio = ops.cast(mix_ratio, "float32")
        partner_labels = ops.take(labels, partner_index, axis=0)
        partner_weights = ops.take(weights, partner_index, axis=0)
        terms = [(labels, ratio * weights), (partner_labels, (1.0 - ratio) * partner_weights)]
        shares = ratio * labelled + (1.0 - ratio) * ops.take(labelled, partner_index, axis=0)
    count = ops.cast(ops.shape(labelled)[0], "float32")
    labelled_count = ops.sum(shares)
    if reduction == "sum":
        return terms, [1.0] * len(terms), labelled_count
    if reduction == "mean_with_sample_weight":
        sums = [ops.sum(weights) for _, weights in terms]
        total = ops.maximum(sum(sums), 1e-6)
        return terms, [part / total for part in sums], labelled_count
    scale = count / ops.maximum(labelled_count, 1e-6)
    return terms, [scale] * len(terms), labelled_count


def metric_labels(y, sample_weight, labelled=None):
    """Labels and weights for the compiled metrics: unlabelled examples weigh 0
    (`labelled`: as in `task_terms`)."""
    labelled = _labelled_mask(y) if labelled is None else labelled
    if labelled is None:
        return y, sample_weight
    labels = ops.where(y == UNLABELED, ops.zeros_like(y), y)
    weights = labelled if sample_weight is None else labelled * _flat(sample_weight)
    return labels, weights


def _labelled_mask(y):
    """Float mask `(batch,)` of labelled examples, or `None` for float or nested targets."""
    if y is None or isinstance(y, (dict, list, tuple)):
        return None
    y = ops.convert_to_tensor(y)
    integer = "int" in keras.backend.standardize_dtype(y.dtype)
    if not integer or len(y.shape) > 2 or (len(y.shape) == 2 and y.shape[1] != 1):
        return None
    return ops.cast(ops.reshape(y, (-1,)) != UNLABELED, "float32")


def _flat(sample_weight):
    return ops.reshape(ops.cast(sample_weight, "float32"), (-1,))


def check_class_ids(y, num_classes, loss, argument="y", output_rank=None):
    """`y` (numpy labels for `loss`) checked before training: class ids in
    `[0, num_classes)`, `UNLABELED` for an example's label, or the loss's `ignore_class`
    (for padding in a label per position, e.g. per token), for a loss that reads class
    ids (sparse categorical cross-entropy; binary cross-entropy on one output, 2 classes,
    whose targets that are not whole numbers are probabilities, left as they are).
    Whole-number float ids come back as integers, so that `UNLABELED` marks them too.
    Other labels and losses (one-hot rows, a dataset) come back unchecked.

    Raises:
        ValueError: an id outside the classes, a float that is not a whole number, or
            one-hot rows for a sparse loss and a student of one output per class
            (`output_rank` 2): before, Keras's "must have rank (ndim) `target.ndim - 1`".
    """
    kind = _class_id_loss(loss)
    if kind is None or num_classes is None or not isinstance(y, np.ndarray):
        return y
    if kind == "sparse" and output_rank == 2 and _one_hot_rows(y, num_classes):
        raise ValueError(
            f"`{argument}` holds one-hot rows, and the loss (sparse categorical cross-entropy) "
            f"reads one class id per example. Received: {argument} of shape {y.shape}. Pass "
            f"{argument}.argmax(axis=-1), or compile with "
            "keras.losses.CategoricalCrossentropy for one-hot labels."
        )
    layout = _id_layout(kind, y.shape, num_classes)
    if layout is None or y.dtype.kind not in "iuf":
        return y
    per_example, classes = layout
    whole = y.dtype.kind != "f" or bool(np.all(np.isfinite(y) & (y == np.round(y))))
    if kind == "binary" and not whole:
        return y  # probabilities: soft or smoothed targets, which binary cross-entropy takes
    given = y[~np.isin(y, _skipped_ids(loss, per_example))]
    outside = given[(given < 0) | (given >= classes)] if whole else given[given != np.round(given)]
    if outside.size or not whole:
        shown = np.unique(outside)[:5].tolist() if outside.size else "NaN or inf"
        skip = (
            f"or tfkd.distill.UNLABELED ({UNLABELED}) for an example without a label"
            if per_example
            else "one per position (to skip padding, compile the loss with `ignore_class`)"
        )
        raise ValueError(
            f"`{argument}` must hold class ids in [0, {classes}) for the {classes} classes of "
            f"the student's output, {skip}. Received: {argument} with "
            f"{outside.size or 'some'} values outside them, e.g. {shown}."
        )
    return y.astype("int64") if y.dtype.kind == "f" else y


# Log key of `LabelErrors` (and, suffixed, of its smallest and largest label).
LABEL_ERRORS = "tfkd_label_errors"


class LabelErrors(keras.metrics.Metric):
    """Labels that do not fit the student, counted inside the step: labels from a
    dataset or generator, which `fit` cannot read ahead (numpy labels are checked by
    `check_class_ids` first). Its result is the count since the last reset and the
    smallest and largest such label; `Distiller.fit` reads it from the logs after
    each batch and stops with an error naming them. On the TensorFlow backend a
    sparse cross-entropy fails on such a label by itself; on JAX it gives a loss of
    0 there and trains on.
    """

    def __init__(self, name=LABEL_ERRORS, unlabeled=True):
        super().__init__(name=name)
        self.unlabeled = unlabeled
        self.count, self.low, self.high = (
            self.add_variable((), "zeros", "float32", name=name)
            for name in ("count", "low", "high")
        )
        self.reset_state()  # the bounds start at +-inf, which `min`/`max` then move

    def reset_state(self):
        self.count.assign(0.0)
        self.low.assign(np.inf)
        self.high.assign(-np.inf)

    def update_state(self, y, y_pred, loss):
        """Counts the labels in `y` outside the classes of `y_pred` for `loss`
        (decided when traced: no op for a loss or labels that are not class ids)."""
        found = _outside_classes(y, y_pred, loss, self.unlabeled)
        if found is None:
            return
        labels, outside = found
        self.count.assign(self.count + ops.sum(ops.cast(outside, "float32")))
        self.low.assign(ops.minimum(self.low, ops.min(ops.where(outside, labels, np.inf))))
        self.high.assign(ops.maximum(self.high, ops.max(ops.where(outside, labels, -np.inf))))

    def result(self):
        values = (self.count, self.low, self.high)
        keys = (self.name, f"{self.name}_low", f"{self.name}_high")
        return {key: ops.convert_to_tensor(value) for key, value in zip(keys, values)}


class ClassIdErrors(LabelErrors):
    """`LabelErrors` as a compiled metric of a model trained with a sparse categorical
    cross-entropy (`model.compile(metrics=[...])`): `LabelGuard` reads it from the logs."""

    def __init__(self):
        super().__init__(unlabeled=False)  # a plain model's loss has no unlabelled examples

    def update_state(self, y_true, y_pred, sample_weight=None):
        super().update_state(y_true, y_pred, "sparse_categorical_crossentropy")


def _outside_classes(y, y_pred, loss, unlabeled=True):
    """`(labels, mask)` of the labels in `y` outside the classes of `y_pred` for
    `loss`, as float32 (so NaN and fractions are caught), or None where `loss` or `y`
    does not read class ids (as `check_class_ids` decides for numpy labels)."""
    kind = _class_id_loss(loss)
    if kind is None or y is None or isinstance(y, (dict, list, tuple)):
        return None
    if isinstance(y_pred, (dict, list, tuple)) or y_pred.shape[-1] is None:
        return None
    y = ops.convert_to_tensor(y)
    layout = _id_layout(kind, y.shape, y_pred.shape[-1], len(y_pred.shape))
    if layout is None:
        return None
    per_example, classes = layout
    integer = "int" in keras.backend.standardize_dtype(y.dtype)
    labels = ops.cast(y, "float32")
    outside = (labels < 0) | (labels > classes - 1.0)
    if not integer:
        # A fraction is no class id (binary cross-entropy takes it: a soft target);
        # NaN is neither.
        fraction = labels != ops.round(labels) if kind == "sparse" else labels != labels
        outside = outside | fraction
    # UNLABELED marks an example without a label in float ids too (a tf.data set's; numpy
    # float ids become integers in `check_class_ids`), where they cannot be soft targets.
    unlabelled_too = per_example and unlabeled
    for value in _skipped_ids(loss, unlabelled_too):
        outside = outside & (labels != value)
    return labels, outside


def fitting_labels(y, y_pred, loss):
    """`y` for a sparse cross-entropy `loss`, as integer class ids, with those outside the
    classes of `y_pred` (which `LabelErrors` counts, and `fit` then stops on) read as
    `UNLABELED` (one id per example: no task loss on them) or as the loss's
    `ignore_class` (else class 0, per position). Before, TensorFlow's sparse
    cross-entropy failed on them with its own error, before tfkd's named them, and a
    tf.data set's float ids of -1 were such labels where numpy's were unlabelled. For a
    binary cross-entropy's float targets (which may be soft), `UNLABELED` (-1) marks an
    example without a label as it does in numpy's. Returns `(y, labelled)`: the mask of
    labelled examples for float targets, else None (`task_terms` reads integer ids).
    Other losses and labels: `(y, None)`, `y` unchanged."""
    kind = _class_id_loss(loss)
    found = None if kind is None else _outside_classes(y, y_pred, loss)
    if found is None:
        return y, None
    labels, outside = found
    if kind == "binary":
        if "int" in keras.backend.standardize_dtype(ops.convert_to_tensor(y).dtype):
            return y, None
        flat = ops.reshape(labels, (-1,))
        return ops.where(labels == UNLABELED, 0.0, labels), ops.cast(flat != UNLABELED, "float32")
    per_example, _ = _id_layout("sparse", labels.shape, y_pred.shape[-1], len(y_pred.shape))
    ignored = getattr(loss, "ignore_class", None)
    instead = UNLABELED if per_example else (0 if ignored is None else ignored)
    dtype = keras.backend.standardize_dtype(ops.convert_to_tensor(y).dtype)
    ids = ops.cast(ops.where(outside, instead, labels), dtype if "int" in dtype else "int32")
    return ids, None


def _one_hot_rows(y, classes):
    """Whether `y` is one row per example of `classes` 0/1 values with a single 1."""
    if y.ndim != 2 or classes < 2 or y.shape[1] != classes or y.dtype.kind not in "iufb":
        return False
    return bool(np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1))


def _id_layout(kind, shape, outputs, output_rank=None):
    """`(per_example, classes)` where a loss of `kind` reads labels of `shape` as class
    ids of a model with `outputs` outputs (of rank `output_rank`, where known), else None:
    one id per example, or (sparse) one per position of a rank-3 or larger output."""
    per_example = len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
    if output_rank is not None:
        per_position = len(shape) == output_rank - 1
        per_example = per_example and output_rank == 2
    else:
        per_position = len(shape) > 0
    if kind == "binary":
        return (True, 2) if per_example and outputs == 1 else None
    return (per_example, outputs) if per_example or per_position else None


def _skipped_ids(loss, unlabelled_too):
    """The label values no class id is read from: the loss's `ignore_class` (padding) and,
    where `unlabelled_too`, `UNLABELED`."""
    ignored = getattr(loss, "ignore_class", None)
    skipped = [UNLABELED] if unlabelled_too else []
    return skipped + ([] if ignored is None else [ignored])


def _class_id_loss(loss):
    """`"sparse"` or `"binary"` for a compiled loss that reads class ids, else None."""
    name = loss if isinstance(loss, str) else getattr(loss, "name", None)
    name = (name or getattr(loss, "__name__", "") or type(loss).__name__).lower()
    name = name.replace("_", "")
    if "sparsecategorical" in name:
        return "sparse"
    return "binary" if "binarycrossentropy" in name else None


def weigh_classes(dataset, class_weight):
    """`dataset` of `(x, y)` batches of class ids with each batch's weights from
    `class_weight` (a dict from class id to weight) added, an unlabelled example
    (`UNLABELED`) weighing `class_weight[UNLABELED]` where the dict has it (before, 1
    whatever it said), and it and a class the dict leaves out 1, as Keras weighs numpy arrays;
    None for a dataset of another structure (Keras's own mapping reads one-hot rows).
    Keras's mapping of a dataset gathered `class_weight[-1]` for an unlabelled example:
    TensorFlow failed on the CPU ("indices[0] = -1 is not in [0, 4)")."""
    import tensorflow as tf

    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2 and hasattr(spec[1], "shape")):
        return None
    shape = spec[1].shape
    if shape.rank not in (1, 2) or (shape.rank == 2 and shape[-1] != 1):
        return None
    count = max(int(max(class_weight)) + 1, 1)
    table = tf.constant([float(class_weight.get(i, 1.0)) for i in range(count)], tf.float32)
    unlabelled = float(class_weight.get(UNLABELED, 1.0))

    def weighed(x, y):
        ids = tf.cast(tf.reshape(y, [-1]), tf.int32)
        inside = (ids >= 0) & (ids < count)
        weights = tf.where(inside, tf.gather(table, tf.clip_by_value(ids, 0, count - 1)), 1.0)
        return x, y, tf.where(ids == UNLABELED, unlabelled, weights)

    return dataset.map(weighed)
