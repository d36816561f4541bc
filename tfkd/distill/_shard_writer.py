"""Writes the shards of `teacher_shards`: regroups the data into chunks, runs the teacher
on each (and its augmented views), and reuses a shard already written with the same key."""

import os
import time

import numpy as np

from tfkd import _checks, _hashing
from tfkd.distill import _shard_files, _taps, _validation

_PREDICT_BATCHES = 16  # teacher batches a `predict` call


def check_write_arguments(
    layers, top_k, views, augmentation, rows_per_shard, batch_size, process_index
):
    """The settings that key a shard, once each argument is checked."""
    if isinstance(layers, str) or not all(isinstance(name, str) for name in layers):
        raise TypeError(f"`layers` must be a list of layer names. Received: layers={layers!r}")
    top_k = _checks.check_number("top_k", top_k, low=1, integer=True, allow_none=True)
    views = _checks.check_number("views", views, low=1, integer=True)
    _validation.validate_augmentation(augmentation)
    if views > 1 and augmentation is None:
        raise ValueError(
            "Several views of an example are the same without augmentation. Received: "
            f"views={views}, augmentation=None. Pass an augmentation layer, or views=1."
        )
    _checks.check_number("rows_per_shard", rows_per_shard, low=1, integer=True, allow_none=True)
    _checks.check_number("batch_size", batch_size, low=1, integer=True)
    _checks.check_number("process_index", process_index, low=0, integer=True)
    augmented = (
        None
        if augmentation is None
        else _hashing.json_sha256(augmentation.get_config(), default=repr)
    )
    return {
        "format": _shard_files.FORMAT,
        "top_k": top_k,
        "views": views,
        "augmentation": augmented,
        "batch_size": batch_size,
        "process_index": process_index,
    }


class ShardWriter:
    """Writes (or reuses) shards one chunk of examples at a time; keeps the totals."""

    def __init__(self, directory, taps, settings, augmentation):
        self.directory, self.taps, self.settings = directory, taps, settings
        self.augmentation = augmentation
        self.names, self.rows, self.written, self.reused = [], 0, 0, 0
        self.bytes, self.teacher_seconds, self.start = 0, 0.0, time.perf_counter()
        self.layout = None

    def write(self, index, x, y):
        name = _shard_files.shard_name(self.settings["process_index"], index)
        key = dict(self.settings, inputs=_hashing.array_sha256(x))
        key["labels"] = None if y is None else _hashing.array_sha256(y)
        meta = _shard_files.shard_meta(self.directory, name)
        if meta is not None and meta.get("key") == key:
            self.reused += 1
            self.layout = self.layout or meta.get("layout")
        else:
            arrays, layout = self._compute(x, y)
            meta = {"format": _shard_files.FORMAT, "key": key, "rows": len(arrays["x.npy"])}
            meta["layout"] = self.layout = layout
            _shard_files.write_shard(self.directory, name, arrays, meta)
            self.written += 1
        self.names.append(name)
        self.rows += meta["rows"]
        self.bytes += folder_bytes(os.path.join(self.directory, name))

    def _compute(self, x, y):
        views = [self._augmented(x) for _ in range(self.settings["views"])]
        inputs = np.concatenate(views) if len(views) > 1 else views[0]
        start = time.perf_counter()
        outputs = self._predict(inputs)
        self.teacher_seconds += time.perf_counter() - start
        arrays = {"x.npy": inputs}
        if y is not None:
            arrays["y.npy"] = np.tile(y, len(views))
        layout = {
            "x": [list(inputs.shape[1:]), inputs.dtype.str],
            "labels": y is not None,
            "outputs": [],
        }
        for position, key in enumerate(self.settings["keys"]):
            value = np.asarray(outputs[key], dtype=np.float32)
            _check_finite(key, value)
            top_k = self.settings["top_k"] if key == _taps.OUTPUT else None
            arrays.update(_encoded(position, value, top_k))
            layout["outputs"].append([key, list(value.shape[1:]), top_k])
        return arrays, layout

    def _predict(self, inputs):
        # In slices: `predict` converts what it is given to float32 at once, which would
        # make a shard of uint8 images cost four times its size in memory.
        step = self.settings["batch_size"] * _PREDICT_BATCHES
        parts = [
            self.taps.predict(inputs[start : start + step], batch_size=self.settings["batch_size"])
            for start in range(0, len(inputs), step)
        ]
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

    def _augmented(self, x):
        if self.augmentation is None:
            return x
        step = self.settings["batch_size"]
        views = [
            np.asarray(self.augmentation(x[start : start + step], training=True))
            for start in range(0, len(x), step)
        ]
        view = np.concatenate(views)
        if x.dtype.kind in "iu":
            limits = np.iinfo(x.dtype)
            view = np.clip(np.rint(view), limits.min, limits.max).astype(x.dtype)
        return view

    def manifest(self):
        return {
            "format": _shard_files.FORMAT,
            "process_index": self.settings["process_index"],
            "shards": self.names,
            "rows": self.rows,
            "teacher": self.settings["teacher"],
            "views": self.settings["views"],
            "layout": self.layout,
        }

    def summary(self):
        return {
            "rows": self.rows,
            "shards": len(self.names),
            "written": self.written,
            "reused": self.reused,
            "bytes": self.bytes,
            "seconds": round(time.perf_counter() - self.start, 3),
            "teacher_seconds": round(self.teacher_seconds, 3),
        }


def _encoded(position, value, top_k):
    """The files of one teacher output: whole, or its top k (logits of shape (rows, C))."""
    if top_k is None:
        return {_shard_files.output_file(position, "full"): value}
    if value.ndim != 2 or top_k >= value.shape[1]:
        raise ValueError(
            "`top_k` keeps some of the classes of 2-D logits. Received: "
            f"top_k={top_k} for teacher outputs of shape {value.shape}. Pass a top_k below "
            "the number of classes, or top_k=None."
        )
    parts = dict(zip(("values", "indices", "rest"), _shard_files.encode_top_k(value, top_k)))
    return {_shard_files.output_file(position, part): array for part, array in parts.items()}


def _check_finite(key, value):
    if not np.all(np.isfinite(value)):
        raise ValueError(
            f"The teacher's {key!r} holds NaN or infinite values, which would train the "
            f"student on garbage. Received: {int(np.sum(~np.isfinite(value)))} non-finite "
            "values. Check the teacher and its inputs."
        )


def folder_bytes(folder):
    return sum(entry.stat().st_size for entry in os.scandir(folder) if entry.is_file())


def batches(data):
    """Yields `(x, y or None)` numpy batches from arrays, `(x, y)`, or an iterable."""
    if isinstance(data, dict) or (
        isinstance(data, (list, tuple)) and len(data) == 2 and isinstance(data[0], dict)
    ):
        raise TypeError(
            "`data` must hold one input tensor per example; a dict of inputs cannot be "
            "sharded. Received: a dict. Cache such teachers with "
            "tfkd.distill.teacher_outputs(..., cache=PATH)."
        )
    if isinstance(data, np.ndarray) or (
        isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], np.ndarray)
    ):
        data = [data]
    elif hasattr(data, "as_numpy_iterator"):
        data = data.as_numpy_iterator()
    elif not hasattr(data, "__iter__"):
        raise TypeError(
            "`data` must be a numpy array, a tuple (x, y) of arrays, or an iterable of "
            f"batches. Received: data of type {type(data).__name__}."
        )
    for batch in data:
        yield _as_pair(batch)


def _as_pair(batch):
    x, y = batch if isinstance(batch, (tuple, list)) and len(batch) == 2 else (batch, None)
    x = np.asarray(x)
    if y is not None:
        y = np.asarray(y).reshape(-1)
        if y.dtype.kind not in "iu" or len(y) != len(x):
            raise ValueError(
                "Labels must be one integer per example. Received: labels of dtype "
                f"{y.dtype} and {len(y)} rows for {len(x)} inputs."
            )
    return x, y


def chunks(batches, rows):
    """Regroups `(x, y)` batches into chunks of `rows` examples (the last may be short);
    a large batch is sliced, not copied whole."""
    pieces, count = [], 0
    for x, y in batches:
        start = 0
        while start < len(x):
            take = min(rows - count, len(x) - start)
            pieces.append((x[start : start + take], None if y is None else y[start : start + take]))
            count, start = count + take, start + take
            if count == rows:
                yield _joined(pieces)
                pieces, count = [], 0
    if pieces:
        yield _joined(pieces)


def _joined(pieces):
    x = np.concatenate([x for x, _ in pieces])
    labels = [y for _, y in pieces]
    if any(y is None for y in labels) and not all(y is None for y in labels):
        raise ValueError("`data` gives labels with some batches and not others.")
    return x, None if labels[0] is None else np.concatenate(labels)
