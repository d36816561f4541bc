"""Python 2 pickles of arrays (MNIST's) hold each array's data as a latin-1 string."""

import gzip
import struct
import tracemalloc

import numpy as np
import pytest

from tfkd.datasets import _pickle


def _python2_pickle(array, fortran=False):
    """`array` as Python 2's cPickle writes it (protocol 2): its data in a BINSTRING."""
    data = array.tobytes(order="F" if fortran else "C")
    shape = b"".join(b"J" + struct.pack("<i", size) for size in array.shape)
    dtype = b"cnumpy\ndtype\nq\x04U\x02f4K\x00K\x01\x87Rq\x05(K\x03U\x01<NNNJ\xff\xff\xff\xff"
    dtype += b"J\xff\xff\xff\xffK\x00tb"
    return (
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85"
        b"U\x01b\x87Rq\x03(K\x01("
        + shape
        + b"t"
        + dtype
        + (b"\x88" if fortran else b"\x89")
        + b"T"
        + struct.pack("<i", len(data))
        + data
        + b"tb."
    )


@pytest.mark.parametrize("fortran", [False, True])
def test_a_python2_pickle_loads_into_writable_c_ordered_arrays(tmp_path, fortran):
    array = np.random.default_rng(0).random((30, 7, 5)).astype("<f4")
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(_python2_pickle(array, fortran)))
    loaded = _pickle._load_gzipped_pickle(path)
    np.testing.assert_array_equal(loaded, array)
    assert loaded.dtype == np.dtype("<f4") and loaded.flags.c_contiguous
    assert loaded.flags.writeable


def test_a_string_of_array_data_is_not_copied_twice():
    # Encoding it whole, then copying the bytes into the array, took twice its size more
    # than the string (MNIST: 300 MB).
    array = np.random.default_rng(0).random((1024, 2048)).astype("<f4")  # 8 MiB
    text = array.tobytes().decode("latin1")
    dtype = _pickle._DtypeRequest("f4")
    dtype.__setstate__((3, "<", None, None, None, -1, -1, 0))
    tracemalloc.start()
    try:
        loaded = _pickle._array_from_bytes(text, dtype, array.shape)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(loaded, array)
    assert loaded.flags.writeable and loaded.flags.c_contiguous
    assert peak < array.nbytes + 3 * 2**20, peak  # the array, and a piece of 1 MiB at a time
