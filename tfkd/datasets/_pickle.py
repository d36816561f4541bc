"""Reads pickled numpy arrays without letting the file run code or forge objects.

A pickle can call any importable function while it loads (`os.system`, `eval`), and
even numpy's own reconstruction functions are unsafe on hostile input: pickle's BUILD
hands the file's state to `dtype.__setstate__`, which can turn an object dtype into one
that numpy no longer treats as holding objects, so an array then reads the file's bytes
as pointers. So numpy never sees the file's state here. Every global the file names is
mapped to a small stand-in of ours that records what the file asks for; the arrays are
then built with `np.frombuffer` from plain numeric dtypes only (bool, integers, floats,
complex), after checking that the bytes match the shape.
"""

import gzip
import io
import math
import os
import pickle
import zlib

import numpy as np

from tfkd._pickle_scan import check_pickle

# Dtype kinds an array may have: no objects, strings, structured or void types.
_NUMERIC_KINDS = "biufc"
_BYTE_ORDERS = ("<", ">", "|", "=")


class PickleError(pickle.UnpicklingError):
    """A data file that is not a pickle of plain numeric numpy arrays."""


class _Refused(PickleError):
    """Raised inside the stand-ins; re-raised with the file's path."""


class _DtypeRequest:
    """What the file's `numpy.dtype(code, align, copy)` and its BUILD state ask for."""

    def __init__(self, code, align=False, copy=False):
        if not isinstance(code, str):
            raise _Refused(f"a dtype code must be a string. Received: {code!r}")
        self.code, self.byte_order = code, "="

    def __setstate__(self, state):
        # (version, byte order, subarray, names, fields, itemsize, alignment, flags[, meta])
        if not isinstance(state, tuple) or len(state) < 5:
            raise _Refused(f"unexpected dtype state. Received: {state!r:.80}")
        byte_order, subarray, names, fields = state[1:5]
        if subarray is not None or names is not None or fields is not None:
            raise _Refused("structured and subarray dtypes are refused")
        if byte_order not in _BYTE_ORDERS:
            raise _Refused(f"unknown byte order. Received: {byte_order!r}")
        self.byte_order = byte_order

    def numpy(self):
        try:
            dtype = np.dtype(self.code)
        except TypeError as error:
            raise _Refused(f"unknown dtype code. Received: {self.code!r}") from error
        if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.hasobject:
            raise _Refused(
                f"only numeric dtypes ({_NUMERIC_KINDS}) are read. Received: dtype {dtype}"
            )
        if self.byte_order in "<>":
            dtype = dtype.newbyteorder(self.byte_order)
        return dtype


class _ArrayRequest:
    """What the file's `_reconstruct(ndarray, ...)` and its BUILD state ask for."""

    def __init__(self, cls=None, *args):
        if cls is not _NDARRAY:
            raise _Refused("only plain numpy.ndarray arrays are read")
        self.array = None

    def __setstate__(self, state):
        # (version, shape, dtype, is_fortran, raw bytes)
        if not isinstance(state, tuple) or len(state) != 5:
            raise _Refused(f"unexpected array state. Received: {state!r:.80}")
        _, shape, dtype, fortran, raw = state
        order = "F" if fortran else "C"
        self.array = _array_from_bytes(raw, dtype, shape, order)


# How much of a string is encoded at once.
_PIECE = 1 << 20


def _latin1_bytes(text):
    """`text.encode("latin1")`, a piece at a time, in an array of our own (encoding it
    whole, then copying it into an array, took twice its size more: MNIST, 300 MB)."""
    flat = np.empty(len(text), np.uint8)
    for start in range(0, len(text), _PIECE):
        flat[start : start + _PIECE] = np.frombuffer(
            text[start : start + _PIECE].encode("latin1"), np.uint8
        )
    return flat


def _array_from_bytes(raw, dtype, shape, order="C"):
    if isinstance(raw, pickle.PickleBuffer):
        raw = raw.raw()
    # A string (Python 2 pickles, read with encoding="latin1") is encoded into a buffer
    # of the array's own, which the array is built on, not copied.
    owned = isinstance(raw, str)
    if owned:
        raw = _latin1_bytes(raw)
    elif not isinstance(raw, (bytes, bytearray, memoryview)):
        raise _Refused(f"array data must be bytes. Received: {type(raw).__name__}")
    if not isinstance(dtype, _DtypeRequest):
        raise _Refused(f"an array needs a dtype. Received: {type(dtype).__name__}")
    dtype = dtype.numpy()
    if not isinstance(shape, tuple) or not all(
        isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in shape
    ):
        raise _Refused(f"an array shape is a tuple of sizes >= 0. Received: {shape!r:.80}")
    if math.prod(shape) * dtype.itemsize != len(raw):
        raise _Refused(
            f"the array's data does not fit its shape. Received: shape {shape}, dtype "
            f"{dtype}, {len(raw)} bytes"
        )
    array = np.frombuffer(raw if owned else bytes(raw), dtype=dtype).reshape(shape, order=order)
    return array if owned and array.flags.c_contiguous else array.copy()


def _scalar(dtype, raw):
    return _array_from_bytes(raw, dtype, ())[()]


def _frombuffer(buffer, dtype, shape, order):
    if isinstance(dtype, np.dtype):
        raise _Refused("a dtype must come from the file")
    return _array_from_bytes(buffer, dtype, shape, order)


def _encode(text, encoding="latin1"):
    if not isinstance(text, str) or encoding != "latin1":
        raise _Refused(f"unexpected bytes encoding. Received: {encoding!r}")
    return text.encode("latin1")


_NDARRAY = object()  # The class argument of `_reconstruct`; never called.

# Globals that pickles of numpy arrays name, by (module, name), and our stand-ins.
# Pickles written by numpy 1.x say `numpy.core`; numpy 2 says `numpy._core`.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DtypeRequest,
    **{
        (f"numpy.{core}.multiarray", name): function
        for core in ("core", "_core")
        for name, function in (("_reconstruct", _ArrayRequest), ("scalar", _scalar))
    },
    # Protocol 5 pickles of contiguous arrays.
    **{(f"numpy.{core}.numeric", "_frombuffer"): _frombuffer for core in ("core", "_core")},
    # Python 3 writes bytes in protocol 2 as `_codecs.encode(str, "latin1")`.
    ("_codecs", "encode"): _encode,
}


class _NumpyUnpickler(pickle.Unpickler):
    """An unpickler that maps the few globals numpy arrays need to safe stand-ins."""

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _Refused(
                f"Refused to unpickle the global '{module}.{name}': a data file "
                f"may hold numpy arrays only. Received: global='{module}.{name}'. "
                f"Accepted: {sorted('.'.join(key) for key in _ALLOWED_GLOBALS)}"
            )
        return _ALLOWED_GLOBALS[(module, name)]


def _arrays(value, seen=None):
    """`value` with every array request replaced by its array; anything else refused, and
    so is an array or a list held twice (`seen`: the ids of those met so far). A file of
    arrays holds each once; a pickle's memo can name one many times: a 329-byte file of
    lists each holding the one before twice asked for 2**60 of them (it never finished),
    and a list of one 3 KB array 3,000,000 times for 9 GB of them."""
    seen = set() if seen is None else seen
    if isinstance(value, (_ArrayRequest, list, tuple)) and value != ():
        if id(value) in seen:
            kind = "array" if isinstance(value, _ArrayRequest) else type(value).__name__
            raise _Refused(f"it holds one {kind} more than once: a data file holds each once")
        seen.add(id(value))
    if isinstance(value, _ArrayRequest):
        if value.array is None:
            raise _Refused("an array was named but never given its data")
        return value.array
    if isinstance(value, (list, tuple)):
        return type(value)(_arrays(item, seen) for item in value)
    if isinstance(value, (np.ndarray, np.generic, int, float, bytes, str, type(None))):
        return value
    raise _Refused(f"a data file holds arrays only. Received: {type(value).__name__}")


# How far a `.gz` data file may inflate: MNIST's pickle inflates 13-fold; DEFLATE's
# limit is about 1,000-fold, which a file of zeros reaches (the length a pickle declares
# for its bytes is checked against it before they are read, and allocated).
_INFLATION = 100
_INFLATE_FREE = 64 * 2**20


class _Bounded:
    """A binary file read through `read` and `readline` that refuses to read past `limit`
    bytes, before reading (a pickle's declared length is read in one call)."""

    def __init__(self, file, limit):
        self._file, self._limit, self._read = file, limit, 0

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self._file.close()

    def read(self, size=-1):
        left = self._limit - self._read
        if size is None or size < 0 or size > left:
            data = self._file.read(left + 1)
            if len(data) > left:
                raise _Refused(f"it inflates past {self._limit} bytes (the limit for its size)")
        else:
            data = self._file.read(size)
        self._read += len(data)
        return data

    def readline(self, size=-1):
        line = self._file.readline(self._limit - self._read + 1)
        self._read += len(line)
        if self._read > self._limit:
            raise _Refused(f"it inflates past {self._limit} bytes (the limit for its size)")
        return line


# Up to this many inflated bytes, a data file is inflated once, and checked and
# unpickled from that copy (MNIST's: 210 MB, inflated in 0.6 s), which is held while the
# arrays are built; a larger one is inflated twice instead, never held whole.
_MOST_BUFFERED = 256 * 2**20


def _inflated(path, limit):
    """The `.gz` file's inflated bytes (its CRC checked), if they fit in `_MOST_BUFFERED`,
    else `None`."""
    most = min(limit, _MOST_BUFFERED)
    with gzip.open(path, "rb") as file:
        inflated = _Bounded(file, limit).read(most + 1)
    return inflated if len(inflated) <= most else None


def _unpickle_checked(open_file):
    """The arrays in the pickle that `open_file()` opens (twice), its opcodes checked
    first."""
    with open_file() as file:
        check_pickle(file)
    with open_file() as file:
        # latin1 is how numpy recommends reading Python 2 pickles of arrays.
        value = _arrays(_NumpyUnpickler(file, encoding="latin1").load())
        # The unpickler stops at the pickle's end; gzip checks its CRC only at the
        # stream's, so read to it: a changed byte is an error, not changed data.
        if file.read(1):
            raise _Refused("data follows the pickle")
    return value


def _load_gzipped_pickle(path):
    """Loads a gzipped pickle of numeric numpy arrays (Python 2 pickles included).

    Args:
        path: path of the `.gz` file.

    Returns:
        The unpickled object: numpy arrays, possibly nested in tuples/lists.

    Raises:
        PickleError: (a `pickle.UnpicklingError`) naming the file, if it is not a
            gzipped pickle of numeric numpy arrays: it names another global, an
            object, string or structured dtype, data that does not fit its shape,
            or is truncated or corrupt.
    """
    limit = _INFLATION * os.path.getsize(path) + _INFLATE_FREE
    try:
        # The opcodes first (`check_pickle`: no key nested a million deep, no memo of
        # 10^9 entries), then the arrays, each pass on at most `limit` inflated bytes:
        # from one inflated copy if it fits in `_MOST_BUFFERED`, else inflated twice.
        inflated = _inflated(path, limit)
        if inflated is not None:
            return _unpickle_checked(lambda: io.BytesIO(inflated))
        return _unpickle_checked(lambda: _Bounded(gzip.open(path, "rb"), limit))
    except (
        pickle.UnpicklingError,
        EOFError,
        OSError,
        zlib.error,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
        RecursionError,
    ) as error:
        raise PickleError(
            f"Cannot read {str(path)!r}: {error}. The file is corrupt or not what it "
            "claims to be; reinstall the package that provides it."
        ) from error
