"""Teacher outputs for data sets larger than memory: written once, in shards, by
`write_teacher_shards`, and streamed back by `TeacherShards` while the student trains.

The small-data form of the same cache is `teacher_outputs(..., cache=...)` (one `.npz`
file, loaded whole). Here the inputs themselves are stored beside the teacher's
outputs, so a shard is a self-contained piece of the training set: training reads one
shard at a time, memory-mapped, and memory stays flat as the set grows. Each process of
a multi-process run writes its own shards (`process_index`) from its own part of the
data; a rerun reuses every shard already written with the same inputs, teacher and
settings, so a crash loses at most the shard being written.
"""

import itertools
import os

import numpy as np

from tfkd import _checks, _graph
from tfkd.distill import _shard_files, _shard_writer, _taps, _validation, teacher_cache

__all__ = ["TeacherShards", "write_teacher_shards"]

_SHARD_BYTES = 64 * 2**20  # inputs per shard when `rows_per_shard` is not given


def write_teacher_shards(
    teacher,
    data,
    directory,
    *,
    layers=(),
    top_k=None,
    views=1,
    augmentation=None,
    rows_per_shard=None,
    batch_size=256,
    process_index=0,
):
    """Runs `teacher` on `data` once and keeps inputs, labels and outputs in shards.

    For training sets that do not fit in memory, or teachers too slow to run at every
    epoch: `data` is read batch by batch, and `TeacherShards(directory).dataset(...)`
    streams the result into `Distiller.fit`, which then runs the student only.

    - `top_k` keeps each example's `top_k` largest logits of the final output and one
      more number, the logit that the other classes share, so that the softmax keeps its
      mass at temperature 1 (for tasks with many classes: `top_k=5` of 1,000 classes
      stores 34 bytes an example instead of 4,000 (values, uint16 indices, one shared logit)).
    - `views` with `augmentation` stores that many augmented copies of each example, each
      with the teacher's outputs on that copy: consistent teaching, read from disk.

    Args:
        teacher: a Keras model (a Sequential model never called is built on `data`).
        data: a numpy array of inputs, a tuple `(x, y)` of arrays, or an iterable of
            batches (a `tf.data.Dataset`, a generator) yielding `x` or `(x, y)`. One input
            tensor per example; labels are integers (`tfkd.distill.UNLABELED` allowed).
        directory: the folder to write (created if needed).
        layers: names of teacher layers that feature losses read. Defaults to `()`.
        top_k: keep only this many logits of the final output, or `None` for all.
            Defaults to `None`.
        views: augmented copies of each example (needs `augmentation` above 1).
            Defaults to `1`.
        augmentation: a Keras layer applied (in training mode) to each view, or `None`.
            Integer inputs are rounded back to their dtype. Defaults to `None`.
        rows_per_shard: examples per shard, or `None` for about 64 MiB of inputs.
            Defaults to `None`.
        batch_size: batch size of the teacher's forward passes. Defaults to `256`.
        process_index: this process's index when several write into one folder.
            Defaults to `0`.

    Returns:
        A dict: `rows`, `shards`, `written` and `reused` (shards), `bytes` (written and
        reused), `seconds` and `teacher_seconds`.

    Example:

    ```python
    tfkd.distill.write_teacher_shards(teacher, (x_train, y_train), "cache/teacher")
    shards = tfkd.distill.TeacherShards("cache/teacher")
    distiller.fit(shards.dataset(batch_size=128), epochs=10)
    ```
    """
    settings = _shard_writer.check_write_arguments(
        layers, top_k, views, augmentation, rows_per_shard, batch_size, process_index
    )
    _validation.validate_model("teacher", teacher)
    directory = _checks.check_path(directory, "directory")
    os.makedirs(directory, exist_ok=True)
    manifest = os.path.join(directory, _shard_files.manifest_name(process_index))
    if os.path.exists(manifest):
        os.remove(manifest)  # rewritten when every shard of this run is in place
    batches = _shard_writer.batches(data)
    first = next(batches, None)
    if first is None:
        raise ValueError("`data` holds no examples. Received: an empty `data`.")
    batches = itertools.chain([first], batches)
    taps = _taps.TapModel(teacher, "teacher", list(layers), [first[0].shape[1:]])
    settings["teacher"] = _graph.model_sha256(teacher)
    settings["keys"] = [_taps.key(name) for name in taps.layer_names] + [_taps.OUTPUT]
    writer = _shard_writer.ShardWriter(directory, taps, settings, augmentation)
    rows = rows_per_shard or max(1, _SHARD_BYTES // max(1, first[0][:1].nbytes * views))
    for index, (x, y) in enumerate(_shard_writer.chunks(batches, rows)):
        writer.write(index, x, y)
    _shard_files.write_json(manifest, writer.manifest())
    return writer.summary()


class TeacherShards:
    """A finished `write_teacher_shards` folder, streamed into `Distiller.fit`.

    Opening reads the processes' lists of shards (`process-*.json`) and each shard's
    `shard.json`, and checks that they agree; the arrays are opened one shard at a time,
    memory-mapped, while batches are read, and checked against their `shard.json`.

    Args:
        directory: the folder `write_teacher_shards` wrote.

    Example:

    ```python
    shards = tfkd.distill.TeacherShards("cache/teacher")
    distiller.fit(shards.dataset(batch_size=128, seed=0), epochs=10)
    ```
    """

    def __init__(self, directory):
        self.directory = _checks.check_path(directory, "directory")
        manifests = _shard_files.read_manifests(self.directory)
        first = manifests[0]
        self.layout, self.views = first["layout"], first["views"]
        self.rows = sum(manifest["rows"] for manifest in manifests)
        self._shards = sorted(name for manifest in manifests for name in manifest["shards"])
        self._metas = {name: self._read_meta(name) for name in self._shards}
        self.keys = [key for key, _, _ in self.layout["outputs"]]
        self.has_labels = bool(self.layout["labels"])

    @property
    def nbytes(self):
        """The bytes of every shard's files."""
        folders = (os.path.join(self.directory, name) for name in self._shards)
        return sum(_shard_writer.folder_bytes(folder) for folder in folders)

    def steps(self, batch_size, process_count=1):
        """Full batches each of `process_count` processes reads in an epoch (the fewest)."""
        counts = [0] * process_count
        for position, name in enumerate(self._shards):
            counts[position % process_count] += self._metas[name]["rows"]
        return min(counts) // batch_size

    def batches(self, batch_size=128, shuffle=True, seed=None, process_index=0, process_count=1):
        """One epoch of numpy batches `(x_for_fit, y)` (or `x_for_fit` without labels),
        where `x_for_fit` packs the inputs with their teacher outputs as
        `with_teacher_outputs` does. With `shuffle`, the shards come in a random order and
        each shard's examples too. With several processes, each reads every
        `process_count`-th shard from `process_index` on, and all yield `steps(...)` full
        batches."""
        _checks.check_number("batch_size", batch_size, low=1, integer=True)
        _checks.check_number("process_count", process_count, low=1, integer=True)
        _checks.check_number(
            "process_index", process_index, low=0, high=process_count - 1, integer=True
        )
        rng = np.random.default_rng(seed) if shuffle else None
        names = self._shards[process_index::process_count]
        if rng is not None:
            names = [names[i] for i in rng.permutation(len(names))]
        limit = self.steps(batch_size, process_count) if process_count > 1 else None
        return self._epoch(names, batch_size, rng, limit)

    def dataset(self, batch_size=128, shuffle=True, seed=None, process_index=0, process_count=1):
        """A `tf.data.Dataset` of `batches(...)`, a new shuffle at each epoch (each pass).

        Returns:
            A dataset for `Distiller.fit`, prefetched.
        """
        import tensorflow as tf

        epochs = itertools.count()

        def generate():
            epoch_seed = None if seed is None else [seed, next(epochs)]
            yield from self.batches(batch_size, shuffle, epoch_seed, process_index, process_count)

        dataset = tf.data.Dataset.from_generator(generate, output_signature=self._signature(tf))
        count = self._batch_count(batch_size, process_count)
        return dataset.apply(tf.data.experimental.assert_cardinality(count)).prefetch(2)

    def _batch_count(self, batch_size, process_count):
        if process_count > 1:
            return self.steps(batch_size, process_count)
        return -(-self.rows // batch_size)

    def _signature(self, tf):
        shape, dtype = self.layout["x"]
        outputs = {
            key: tf.TensorSpec((None, *shape_), tf.float32)
            for key, shape_, _ in self.layout["outputs"]
        }
        inputs = {
            teacher_cache.STUDENT_INPUTS: tf.TensorSpec(
                (None, *shape), tf.as_dtype(np.dtype(dtype))
            ),
            teacher_cache.TEACHER_OUTPUTS: outputs,
        }
        if not self.has_labels:
            return inputs
        return inputs, tf.TensorSpec((None,), tf.int64)

    def _epoch(self, names, batch_size, rng, limit):
        pending, filled, produced = [], 0, 0
        for name in names:
            shard = _shard_files.OpenShard(self.directory, name, self._metas[name], self.layout)
            order = rng.permutation(shard.rows) if rng is not None else np.arange(shard.rows)
            position = 0
            while position < shard.rows:
                take = order[position : position + batch_size - filled]
                pending.append(shard.gather(np.sort(take)))
                position, filled = position + len(take), filled + len(take)
                if filled == batch_size:
                    yield self._packed(pending)
                    pending, filled, produced = [], 0, produced + 1
                    if produced == limit:
                        return
            del shard
        if pending and limit is None:
            yield self._packed(pending)

    def _packed(self, pieces):
        x = np.concatenate([piece[0] for piece in pieces])
        outputs = {key: np.concatenate([piece[2][key] for piece in pieces]) for key in self.keys}
        packed = {teacher_cache.STUDENT_INPUTS: x, teacher_cache.TEACHER_OUTPUTS: outputs}
        if not self.has_labels:
            return packed
        return packed, np.concatenate([piece[1] for piece in pieces]).astype(np.int64)

    def _read_meta(self, name):
        meta = _shard_files.shard_meta(self.directory, name)
        rows = None if meta is None else meta.get("rows")
        if not _checks.is_integer(rows) or rows < 1 or meta.get("layout") != self.layout:
            raise ValueError(
                f"The teacher cache shard {os.path.join(self.directory, name)} is missing or "
                "does not match its folder's settings. Write the cache again with "
                "tfkd.distill.write_teacher_shards."
            )
        return meta
