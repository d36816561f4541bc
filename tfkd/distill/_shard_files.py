"""The files of a sharded teacher-output cache (`teacher_shards`), and nothing else.

A shard is a folder `p{process}-s{index}` of `.npy` arrays (read memory-mapped, never
unpickled) and a `shard.json` that says what they are; it appears whole or not at all
(written under a temporary name, then renamed). A process that finished writes
`process-{index}.json`, the list of its shards. Everything read is checked against what
the JSON files promise, so a damaged or crafted file is refused with a `ValueError`
naming it instead of being used.
"""

import json
import os
import shutil
import tempfile

import numpy as np

from tfkd import _atomic, _checks

FORMAT = 1
_MAX_JSON_BYTES = 1 << 20


def shard_name(process_index, index):
    return f"p{process_index:03d}-s{index:06d}"


def manifest_name(process_index):
    return f"process-{process_index:03d}.json"


def output_file(position, part):
    """The file of the `position`-th teacher output (`part`: "full", or "values",
    "indices" and "rest" for one kept as its top k)."""
    return f"t{position}.{part}.npy"


def write_shard(directory, name, arrays, meta):
    """Writes `arrays` ({file name: array}) and `meta` as the shard folder `name`."""
    temporary = tempfile.mkdtemp(dir=directory, prefix=".tmp-")
    try:
        for file_name, array in arrays.items():
            np.save(os.path.join(temporary, file_name), np.ascontiguousarray(array))
        with open(os.path.join(temporary, "shard.json"), "w") as file:
            json.dump(meta, file)
        target = os.path.join(directory, name)
        if os.path.isdir(target):
            shutil.rmtree(target)  # a stale shard from other settings
        os.chmod(temporary, 0o777 & ~_atomic.umask())  # mkdtemp's is its owner's alone
        os.replace(temporary, target)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def write_json(path, value):
    _atomic.write_bytes(path, json.dumps(value, indent=1).encode())


def read_json(path):
    """A JSON object from `path`; a ValueError naming the file if it is not one."""
    try:
        if os.path.getsize(path) > _MAX_JSON_BYTES:
            raise ValueError(f"larger than {_MAX_JSON_BYTES} bytes")
        with open(path, encoding="utf-8") as file:
            value = json.load(file)
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as error:
        raise ValueError(f"The teacher cache file {path} cannot be read: {error}") from error
    if not isinstance(value, dict):
        raise ValueError(f"The teacher cache file {path} holds no JSON object.")
    return value


def shard_meta(directory, name):
    """The shard's `shard.json`, or None if the shard is missing or unreadable."""
    path = os.path.join(directory, name, "shard.json")
    if not os.path.isfile(path):
        return None
    try:
        meta = read_json(path)
    except ValueError:
        return None
    return meta if meta.get("format") == FORMAT else None


def open_array(directory, name, file_name, kinds, rows, shape=None):
    """The shard's array `file_name`, memory-mapped, checked to hold `rows` rows of a
    dtype of `kinds` (numpy's kind letters: "f", "iu") and, if given, rows of `shape`."""
    path = os.path.join(directory, name, file_name)
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"The teacher cache file {path} cannot be read: {error}") from error
    wrong_shape = shape is not None and tuple(array.shape[1:]) != tuple(shape)
    if array.dtype.kind not in kinds or array.ndim < 1 or len(array) != rows or wrong_shape:
        raise ValueError(
            f"The teacher cache file {path} does not hold what its shard.json says. "
            f"Received: dtype {array.dtype}, shape {array.shape}; expected {rows} rows"
            + (f" of shape {tuple(shape)}." if shape is not None else ".")
            + " Delete the cache folder and write it again."
        )
    return array


def encode_top_k(logits, k):
    """Keeps each row's `k` largest logits: `(values, indices, rest)`, where `rest` is
    the logit that, given to every other class, keeps the row's softmax mass at T=1."""
    logits = np.asarray(logits, dtype=np.float32)
    classes = logits.shape[-1]
    indices = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    values = np.take_along_axis(logits, indices, axis=-1)
    others = logits.copy()
    np.put_along_axis(others, indices, -np.inf, axis=-1)
    high = others.max(axis=-1, keepdims=True)
    log_mass = high[:, 0] + np.log(np.exp(others - high).sum(axis=-1))
    rest = log_mass - np.log(classes - k)
    return values, indices.astype(index_dtype(classes)), rest.astype(np.float32)


def decode_top_k(values, indices, rest, classes):
    """The full `(rows, classes)` logits from `encode_top_k`'s parts (a ValueError if an
    index is not a class)."""
    if len(indices) and (indices.min() < 0 or indices.max() >= classes):
        raise ValueError(
            f"A teacher cache holds a top-k class index outside [0, {classes}). Received: "
            f"indices from {indices.min()} to {indices.max()}. Delete the cache folder and "
            "write it again."
        )
    logits = np.repeat(np.asarray(rest, np.float32)[:, None], classes, axis=1)
    np.put_along_axis(logits, np.asarray(indices, np.int64), values, axis=1)
    return logits


def index_dtype(classes):
    return np.uint8 if classes <= 256 else np.uint16 if classes <= 65536 else np.int32


def is_shard_name(name):
    """Whether `name` is a shard folder's name (never a path that leaves the folder)."""
    head, _, tail = name.partition("-s")
    return (
        len(head) == 4
        and head[0] == "p"
        and head[1:].isdigit()
        and len(tail) == 6
        and tail.isdigit()
    )


def valid_layout(layout):
    """Whether `layout` (from JSON) describes inputs, labels and outputs as tfkd writes it:
    `{"x": [shape, dtype], "labels": bool, "outputs": [[key, shape, top_k or None], ...]}`."""
    if not isinstance(layout, dict) or set(layout) != {"x", "labels", "outputs"}:
        return False
    x, outputs = layout["x"], layout["outputs"]
    if not (isinstance(x, list) and len(x) == 2 and _valid_shape(x[0]) and _numeric(x[1])):
        return False
    if not isinstance(layout["labels"], bool) or not isinstance(outputs, list) or not outputs:
        return False
    return all(_valid_output(output) for output in outputs)


def _valid_output(output):
    if not (isinstance(output, list) and len(output) == 3 and isinstance(output[0], str)):
        return False
    _, shape, top_k = output
    if not _valid_shape(shape):
        return False
    if top_k is None:
        return True
    return _is_count(top_k) and len(shape) == 1 and top_k < shape[0]


def _valid_shape(shape):
    return isinstance(shape, list) and len(shape) <= 8 and all(_is_count(size) for size in shape)


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31


def _numeric(dtype):
    try:
        return isinstance(dtype, str) and np.dtype(dtype).kind in "biuf"
    except (TypeError, ValueError):
        return False


class OpenShard:
    """One shard's arrays, memory-mapped and checked; `gather` reads rows of them."""

    def __init__(self, directory, name, meta, layout):
        self.rows = meta["rows"]
        shape, dtype = layout["x"]
        self.x = open_array(directory, name, "x.npy", "biuf", self.rows, shape)
        if np.dtype(dtype) != self.x.dtype:
            raise ValueError(f"The teacher cache shard {name} holds inputs of another dtype.")
        self.y = None
        if layout["labels"]:
            self.y = open_array(directory, name, "y.npy", "iu", self.rows)
        self.outputs = {}
        for position, (key, shape, top_k) in enumerate(layout["outputs"]):
            self.outputs[key] = self._open_output(directory, name, position, shape, top_k)

    def _open_output(self, directory, name, position, shape, top_k):
        def open_part(part, kinds, part_shape):
            file_name = output_file(position, part)
            return open_array(directory, name, file_name, kinds, self.rows, part_shape)

        if top_k is None:
            return open_part("full", "f", shape)
        return (
            open_part("values", "f", (top_k,)),
            open_part("indices", "iu", (top_k,)),
            open_part("rest", "f", ()),
            shape[0],
        )

    def gather(self, rows):
        outputs = {}
        for key, stored in self.outputs.items():
            if isinstance(stored, tuple):
                values, indices, rest, classes = stored
                outputs[key] = decode_top_k(values[rows], indices[rows], rest[rows], classes)
            else:
                outputs[key] = np.asarray(stored[rows], dtype=np.float32)
        y = None if self.y is None else np.asarray(self.y[rows])
        return np.asarray(self.x[rows]), y, outputs


def read_manifests(directory):
    """Every finished process's manifest, checked to agree; a ValueError if none."""
    names = (
        sorted(
            name
            for name in os.listdir(directory)
            if name.startswith("process-") and name.endswith(".json")
        )
        if os.path.isdir(directory)
        else []
    )
    if not names:
        raise ValueError(
            f"No finished teacher cache in {directory}: it has no process-*.json (written "
            "when write_teacher_shards ends). Received: directory="
            f"{directory!r}. Run tfkd.distill.write_teacher_shards first."
        )
    manifests = [read_json(os.path.join(directory, name)) for name in names]
    for name, manifest in zip(names, manifests):
        _check_manifest(os.path.join(directory, name), manifest, manifests[0])
    return manifests


def _check_manifest(path, manifest, first):
    shards = manifest.get("shards")
    valid = (
        manifest.get("format") == FORMAT
        and isinstance(shards, list)
        and all(isinstance(name, str) and is_shard_name(name) for name in shards)
        and _checks.is_integer(manifest.get("rows"))
        and _checks.is_integer(manifest.get("views"))
        and valid_layout(manifest.get("layout"))
    )
    if not valid:
        raise ValueError(
            f"The teacher cache file {path} is not a list of shards that tfkd wrote. "
            "Write the cache again with tfkd.distill.write_teacher_shards."
        )
    for field in ("teacher", "views", "layout"):
        if manifest.get(field) != first.get(field):
            raise ValueError(
                f"The processes of the teacher cache in {os.path.dirname(path)} wrote with "
                f"different settings ({field} differs in {path}). Write it again with one "
                "teacher and one set of arguments."
            )
