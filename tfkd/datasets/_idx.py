"""Reads gzipped IDX files, the format of the MNIST and Fashion-MNIST files."""

import gzip
import math
import os
import struct
import zlib

import numpy as np

from tfkd.datasets._pickle import _INFLATE_FREE, _INFLATION

# Type codes from the IDX specification; the MNIST family only uses uint8.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _parse_idx(data, path="<bytes>"):
    """Parses the bytes of an IDX file into an array shaped as its header says.

    The header is two zero bytes, a type code, the number of dimensions, then
    each dimension as a big-endian uint32.

    Args:
        data: the (decompressed) bytes of the file.
        path: where the bytes came from, for error messages.
            Defaults to `"<bytes>"`.

    Returns:
        A read-only numpy array in native byte order.

    Raises:
        ValueError: if the header is malformed or the payload size does not
            match the dimensions.
    """
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES:
        raise ValueError(
            "Not an IDX file: bad magic number. Received: "
            f"path={path!r}, first bytes={data[:4]!r}. Expected 0x0000 followed "
            "by a type code and the number of dimensions."
        )
    dtype, num_dims = _IDX_DTYPES[data[2]], data[3]
    header_size = 4 + 4 * num_dims
    if len(data) < header_size:
        raise ValueError(f"Truncated IDX header. Received: path={path!r}")
    shape = struct.unpack(f">{num_dims}I", data[4:header_size])
    expected_size = math.prod(shape) * dtype.itemsize
    if len(data) - header_size != expected_size:
        raise ValueError(
            f"IDX payload does not match its header. Received: path={path!r} with "
            f"{len(data) - header_size} bytes of data. Expected {expected_size} "
            f"bytes for shape {shape}. The file is truncated or corrupt."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _declared_bytes(head):
    """The bytes (header included) that an IDX file's `head` declares; None where the
    head is not a whole IDX header (`_parse_idx` says what is wrong)."""
    if len(head) < 4 or head[2] not in _IDX_DTYPES or len(head) < 4 + 4 * head[3]:
        return None
    shape = struct.unpack(f">{head[3]}I", head[4 : 4 + 4 * head[3]])
    return 4 + 4 * head[3] + math.prod(shape) * _IDX_DTYPES[head[2]].itemsize


def _read_idx_gz(path):
    """Reads a gzipped IDX file; see `_parse_idx`. The sizes its header declares are
    refused past 100 times the file's (at least 64 MiB), as a pickle's inflated bytes
    are, before the rest is read: a 3.8 MB file of zeros declaring 5,000,000 images
    filled 4.5 GB and ended in a MemoryError."""
    limit = max(_INFLATE_FREE, _INFLATION * os.path.getsize(path))
    try:
        with gzip.open(path, "rb") as file:
            data = file.read(4)
            data += file.read(4 * data[3] if len(data) == 4 else 0)
            declared = _declared_bytes(data)
            if declared is not None and declared > limit:
                raise ValueError(
                    f"Cannot read {str(path)!r}: its header declares {declared} bytes, more "
                    f"than {limit} for a file of its size. The file is corrupt or crafted; "
                    "reinstall the package that provides it."
                )
            data += file.read((limit if declared is None else declared) + 1 - len(data))
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error) as error:  # bad gzip stream or CRC
        raise ValueError(
            f"Cannot read {str(path)!r}: {error}. The file is corrupt or truncated; "
            "reinstall the package that provides it."
        ) from error
    return _parse_idx(data, path=str(path))
