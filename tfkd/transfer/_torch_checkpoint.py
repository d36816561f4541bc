"""Reads a PyTorch state dict into numpy arrays, without torch and without running code.

`torch.save` writes one of two layouts:

- the zip layout (torch >= 1.6): `<folder>/data.pkl` pickles the dict and names each
  tensor's storage by key; the storage's raw bytes are in `<folder>/data/<key>`;
- the legacy layout (torch < 1.6, e.g. torchvision's 2018 checkpoints): four pickles in a
  row (magic number, protocol version, system info, the dict), a pickled list of storage
  keys, then each storage as an int64 element count followed by its raw bytes.

Either way the dict is a pickle, which can call any importable function while it loads
(`os.system`, ...). So every global it names is checked against the few that a state
dict of tensors needs, and tensors are rebuilt here from their storage, offset, size and
stride instead of by torch.

A pickle that calls nothing can still crash the process or exhaust its memory, so before
anything is unpickled its opcodes are checked (`tfkd._pickle_scan.check_pickle`): objects
nested deeper than 100 levels (a dict key that is a tuple nested a million deep makes
CPython overflow its C stack as it hashes it) and memo indexes far past those used are
refused. And what the tensors claim is bounded by what the file stores: names of one
tensor (tied weights, or one tensor named 100,000 times through the pickle's memo) share
one array, and the distinct tensors may take at most twice the bytes of the storages
plus 64 MiB.
"""

import collections
import io
import math
import os
import pickle
import re
import struct
import zipfile
import zlib
from typing import NamedTuple

import numpy as np

from tfkd import _hashing
from tfkd._pickle_scan import PickleRefused, check_pickle

# What a zip checkpoint's members may claim in all, decompressed: torch stores them
# uncompressed, so this only stops a file that claims far more than it holds.
_ZIP_EXPANSION = 4
_ZIP_MINIMUM_BUDGET = 1 << 26
# The arrays read may hold at most this many times the bytes of the file's storages, plus
# the slack. Names that share one tensor (tied weights) share its array and count once;
# distinct tensors may overlap in a storage (a weight and its transpose), but a file
# cannot ask for gigabytes by naming the same megabyte at a thousand offsets.
_OUTPUT_EXPANSION = 2
_OUTPUT_SLACK = 1 << 26
_MAX_DIMENSIONS = 64  # numpy's
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.pth?$")
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001

# torch's typed storages, by the name the pickle gives them (`torch.FloatStorage`, ...).
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType(NamedTuple):
    name: str
    dtype: np.dtype


class _StorageRef(NamedTuple):
    """`numel` elements of the root storage `key`, from element `offset` on."""

    key: str
    dtype: np.dtype
    offset: int
    numel: int


class _TensorRecord(NamedTuple):
    storage: _StorageRef
    storage_offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    # Storages of the legacy layout are read after the pickle, so tensors are built later.
    size, stride = tuple(size), tuple(stride)
    numbers = (storage_offset, *size, *stride)
    if not isinstance(storage, _StorageRef) or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in numbers
    ):
        raise TypeError(
            "a tensor needs a storage and integer offset, sizes and strides. Received: "
            f"{type(storage).__name__}, {storage_offset!r:.40}, {size!r:.80}, {stride!r:.80}"
        )
    if min(size, default=0) < 0:
        raise TypeError(f"a tensor's sizes are >= 0. Received: {size!r:.80}")
    return _TensorRecord(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    # Returning anything else would hand back an object the pickle can still add to,
    # which `check_pickle` counts as new.
    if not isinstance(data, _TensorRecord):
        raise TypeError(f"a parameter holds a tensor. Received: {type(data).__name__}")
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{
        ("torch", name): _StorageType(name, np.dtype(dtype))
        for name, dtype in _STORAGE_DTYPES.items()
    },
}


class _RefusedPickle(pickle.UnpicklingError):
    """A pickle that names something a state dict of tensors never needs."""


class CheckpointError(ValueError):
    """A file that is not a PyTorch checkpoint of a state dict; the message names it."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Admits only the globals of a state dict of tensors; storages come from `load_storage`."""

    def __init__(self, file, path, load_storage=None):
        super().__init__(file)
        self._path = path
        self._load_storage = load_storage

    def find_class(self, module, name):
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise _RefusedPickle(
                f"Refused to unpickle the global '{module}.{name}' in {self._path}: a "
                f"checkpoint may hold a state dict of tensors only. Received: "
                f"global='{module}.{name}'. Accepted: "
                f"{sorted('.'.join(key) for key in _ALLOWED_GLOBALS)}. Load only "
                "checkpoints you trust; save the model's `state_dict()`, not the model."
            )
        return target

    def persistent_load(self, saved_id):
        valid = isinstance(saved_id, tuple) and len(saved_id) >= 5
        if self._load_storage is None or not valid or not isinstance(saved_id[1], _StorageType):
            raise _RefusedPickle(
                f"Unexpected persistent id in {self._path}. Received: saved_id={saved_id!r}"
            )
        typename = _text(saved_id[0])
        if typename != "storage":
            raise _RefusedPickle(
                f"{self._path} refers to a '{typename}', not a tensor storage; only state "
                f"dicts of tensors are read. Received: saved_id={saved_id!r}"
            )
        return self._load_storage(saved_id[1].dtype, _text(saved_id[2]), int(saved_id[4]), saved_id)


def _unpickle(file, path, load_storage=None):
    # What the pickle would build is checked first: unpickling it may already crash.
    start = file.tell()
    try:
        check_pickle(file)
    except PickleRefused as e:
        raise _not_a_checkpoint(path, str(e)) from e
    file.seek(start)
    try:
        return _RestrictedUnpickler(file, path, load_storage).load()
    except UnicodeDecodeError as e:  # a storage key or name that is not ASCII
        raise _not_a_checkpoint(path, f"its pickle is corrupt ({e})") from e
    except (_RefusedPickle, CheckpointError):
        raise
    except Exception as e:  # a corrupt pickle fails in many ways: EOFError, KeyError, ...
        raise _not_a_checkpoint(path, f"its pickle is corrupt ({type(e).__name__}: {e})") from e


def _text(value):
    return value.decode("ascii", errors="replace") if isinstance(value, bytes) else str(value)


def read_state_dict(path) -> dict[str, np.ndarray]:
    """Reads a PyTorch checkpoint of a state dict into numpy arrays, without torch.

    Both layouts that `torch.save` writes are read: the zip layout (torch >= 1.6) and
    the legacy one. Only the globals a state dict of tensors needs are unpickled, so a
    checkpoint cannot run code.

    Args:
        path: path of a `.pth`/`.pt` file written by `torch.save(model.state_dict(), path)`.

    Returns:
        A dict from the state dict's names (e.g. `"features.0.0.weight"`) to new
        C-contiguous numpy arrays, in the checkpoint's order and dtypes (int64 for
        BatchNorm's `num_batches_tracked`). Names of the same tensor (tied weights)
        share one array, as they share memory in torch.

    Raises:
        ValueError: if the file is not a PyTorch checkpoint, is corrupt, or holds
            anything but a dict of tensors; if its pickle nests deeper than 100 levels
            (`tfkd._pickle_scan.MAX_DEPTH`); or if its distinct tensors would take
            more than twice the bytes of its storages plus 64 MiB.
        pickle.UnpicklingError: if the pickle names a global outside the allow-list.
    """
    path = os.fspath(path)
    _check_hash_in_name(path)
    if zipfile.is_zipfile(path):
        records, buffers, byteorder = _read_zip(path)
    else:
        records, buffers, byteorder = _read_legacy(path)
    return _arrays(path, records, buffers, byteorder)


def _check_hash_in_name(path):
    """A file named as torchvision names its checkpoints, `<name>-<hex>.pth` with the
    first hex digits of its SHA-256, must have that hash: the legacy layout has no
    checksum of its own, so this is what tells a changed byte from a changed weight."""
    match = _HASH_IN_NAME.search(os.path.basename(path))
    if match is None:
        return
    digest = _hashing.file_sha256(path)
    if not digest.startswith(match.group(1)):
        raise _not_a_checkpoint(
            path,
            f"its SHA-256 {digest[:16]}... does not start with the "
            f"{match.group(1)!r} its name gives (torchvision's convention): it is corrupt "
            "or was changed",
        )


def _not_a_checkpoint(path, reason):
    return CheckpointError(
        f"{path} is not a PyTorch checkpoint of a state dict: {reason}. Received: "
        f"path={path!r}. Accepted: a file written by `torch.save(model.state_dict(), path)`."
    )


def _read_zip(path):
    try:
        return _read_zip_members(path)
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        NotImplementedError,
        OSError,
        UnicodeError,
    ) as error:
        if isinstance(error, FileNotFoundError):
            raise
        # A changed byte fails the zip's CRC check; a bad header, its parsing.
        raise _not_a_checkpoint(path, f"the zip is corrupt ({error})") from error


def _read_zip_members(path):
    # Members are read whole, so what they may claim is bounded first: each storage as
    # many bytes as its tensor elements need, all of them at most this much.
    budget = max(_ZIP_EXPANSION * os.path.getsize(path), _ZIP_MINIMUM_BUDGET)
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        pickles = [name for name in names if name.endswith("data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise _not_a_checkpoint(path, "the zip has no `<folder>/data.pkl`")
        folder = pickles[0][: -len("data.pkl")]
        buffers = {}

        def load_storage(dtype, key, numel, saved_id):
            nonlocal budget
            member = f"{folder}data/{key}"
            if member not in names:
                raise _not_a_checkpoint(path, f"the storage '{member}' is missing")
            if key in buffers:
                return _StorageRef(key, dtype, 0, numel)
            size = archive.getinfo(member).file_size
            if numel < 0 or size != numel * dtype.itemsize or size > budget:
                raise _not_a_checkpoint(
                    path,
                    f"the storage '{member}' holds {size} bytes where {numel} elements of "
                    f"{dtype} are declared (or more than the file can hold)",
                )
            budget -= size
            buffers[key] = archive.read(member)
            return _StorageRef(key, dtype, 0, numel)

        byteorder = "little"
        if f"{folder}byteorder" in names:
            byteorder = archive.read(f"{folder}byteorder")[:16].decode("ascii").strip()
        # torch stores data.pkl uncompressed: no larger than the file, it takes time
        # linear in the file's size to check.
        if archive.getinfo(pickles[0]).file_size > os.path.getsize(path):
            raise _not_a_checkpoint(path, "its data.pkl is larger than the whole file")
        pickled = archive.read(pickles[0])  # whole: the zip checks its CRC at the end
        state = _unpickle(io.BytesIO(pickled), path, load_storage)
    return _tensor_records(path, state), buffers, byteorder


def _read_legacy(path):
    with open(path, "rb") as file:
        byteorder = _legacy_byteorder(path, file)
        roots = {}

        def load_storage(dtype, key, numel, saved_id):
            view = saved_id[5] if len(saved_id) > 5 else None
            roots.setdefault(key, (dtype, numel))
            if view is None:
                return _StorageRef(key, dtype, 0, numel)
            _, offset, view_numel = view
            return _StorageRef(key, dtype, int(offset), int(view_numel))

        state = _unpickle(file, path, load_storage)
        keys = _unpickle(file, path)
        if not isinstance(keys, list):
            raise _not_a_checkpoint(path, "the list of storages is missing")
        buffers = {_text(key): _read_legacy_storage(path, file, roots, _text(key)) for key in keys}
    return _tensor_records(path, state), buffers, byteorder


def _legacy_byteorder(path, file):
    """Checks the magic number and protocol; returns the byte order the file was written in."""
    not_torch = "it is neither a zip nor a legacy torch file"
    try:
        magic_number = _unpickle(file, path)
    except _RefusedPickle:
        raise
    except ValueError as e:
        raise _not_a_checkpoint(path, not_torch) from e
    if magic_number != _LEGACY_MAGIC_NUMBER:
        raise _not_a_checkpoint(path, not_torch)
    protocol_version = _unpickle(file, path)
    if protocol_version != _LEGACY_PROTOCOL_VERSION:
        raise _not_a_checkpoint(path, f"unknown legacy protocol version {protocol_version}")
    system_info = _unpickle(file, path)
    little_endian = isinstance(system_info, dict) and system_info.get("little_endian", True)
    return "little" if little_endian else "big"


def _read_legacy_storage(path, file, roots, key):
    if key not in roots:
        raise _not_a_checkpoint(path, f"the storage '{key}' is listed but never used")
    dtype, numel = roots[key]
    left = os.fstat(file.fileno()).st_size - file.tell()
    if not 0 <= numel * dtype.itemsize <= left:
        raise _not_a_checkpoint(path, f"the storage '{key}' claims more bytes than the file has")
    count = file.read(8)
    if len(count) != 8 or struct.unpack("<q", count)[0] != numel:
        raise _not_a_checkpoint(path, f"the storage '{key}' is truncated or corrupt")
    data = file.read(numel * dtype.itemsize)
    if len(data) != numel * dtype.itemsize:
        raise _not_a_checkpoint(path, f"the storage '{key}' is truncated")
    return data


def _tensor_records(path, state):
    if not isinstance(state, dict):
        raise _not_a_checkpoint(path, f"it holds a {type(state).__name__}, not a dict")
    names = [name for name in state if not isinstance(name, str)]
    if names:
        raise _not_a_checkpoint(path, f"the names {names[:5]!r:.200} are not strings")
    not_tensors = [name for name, value in state.items() if not isinstance(value, _TensorRecord)]
    if not_tensors:
        raise _not_a_checkpoint(path, f"the entries {not_tensors[:5]} are not tensors")
    return list(state.items())


def _arrays(path, records, buffers, byteorder):
    """The arrays of `records`, one per distinct tensor, checked before any is made."""
    tensors = {}  # a tensor record is its storage, offset, size and stride: equal, same data
    for name, record in records:
        if record not in tensors:
            tensors[record] = _check_tensor(path, name, record, buffers)
    claimed = sum(tensors.values())
    stored = sum(len(buffer) for buffer in buffers.values())
    if claimed > _OUTPUT_EXPANSION * stored + _OUTPUT_SLACK:
        raise _not_a_checkpoint(
            path,
            f"its tensors claim {claimed} bytes from storages of {stored} bytes (at most "
            f"{_OUTPUT_EXPANSION} times as many plus {_OUTPUT_SLACK >> 20} MiB are read): "
            "they name the same bytes over and over",
        )
    arrays = {}
    for record in tensors:
        arrays[record] = _to_array(record, buffers, byteorder)
    return {name: arrays[record] for name, record in records}


def _check_tensor(path, name, record, buffers):
    """Checks that `record` lies within its storage; returns its array's bytes."""
    storage = record.storage
    if storage.key not in buffers:
        raise _not_a_checkpoint(path, f"the storage of '{name}' is missing")
    size, stride = record.size, record.stride
    if len(size) != len(stride) or len(size) > _MAX_DIMENSIONS:
        raise _not_a_checkpoint(
            path,
            f"the tensor '{name}' has a size and stride that disagree or more than "
            f"{_MAX_DIMENSIONS} dimensions",
        )
    # numpy refuses what takes 2^63 bytes or more even when a size is 0.
    extent = math.prod(max(n, 1) for n in size) * storage.dtype.itemsize
    if max(extent, *map(abs, (storage.offset, record.storage_offset, *stride))) >= 1 << 63:
        raise _not_a_checkpoint(path, f"the tensor '{name}' has sizes past int64's range")
    if any(n == 0 for n in size):
        return 0
    whole = len(buffers[storage.key]) // storage.dtype.itemsize
    available = max(min(storage.offset + storage.numel, whole) - storage.offset, 0)
    if math.prod(size) > available:  # a stride-0 view can claim any size
        raise _not_a_checkpoint(
            path,
            f"the tensor '{name}' claims {math.prod(size)} elements from a storage of "
            f"{available}; broadcast (stride-0) tensors are not read",
        )
    last = record.storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if min(storage.offset, record.storage_offset, *stride) < 0 or last >= available:
        raise _not_a_checkpoint(path, f"the tensor '{name}' reaches past its storage")
    return math.prod(size) * storage.dtype.itemsize


def _to_array(record, buffers, byteorder):
    storage, size = record.storage, record.size
    if any(n == 0 for n in size):
        return np.zeros(size, dtype=storage.dtype)
    dtype = storage.dtype.newbyteorder("<" if byteorder == "little" else ">")
    buffer = buffers[storage.key]
    flat = np.frombuffer(buffer, dtype=dtype, count=len(buffer) // dtype.itemsize)
    flat = flat[storage.offset : storage.offset + storage.numel]
    strides = [s * dtype.itemsize for s in record.stride]
    view = np.lib.stride_tricks.as_strided(flat[record.storage_offset :], size, strides)
    return np.array(view, dtype=storage.dtype, order="C")  # ascontiguousarray makes 0-d 1-d
