"""Crafted pickles in place of a data set's files: refused with the file named, no crash.

Each file is loaded through `tfkd.datasets.load("animal_mnist")` in a subprocess, so a
crash (a segmentation fault from forged object pointers) fails the test instead of
killing the test run.
"""

import gzip
import json
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

_LOAD = textwrap.dedent(
    """
    import json, pathlib, sys
    from tfkd import _packages
    from tfkd.datasets import _pickle
    import tfkd
    assert hasattr(_packages, "package_dir")  # a renamed function would leave the real data
    _packages.package_dir = lambda package: pathlib.Path(sys.argv[1])
    try:
        tfkd.datasets.load("animal_mnist")
        print(json.dumps({"outcome": "loaded"}))
    except _pickle.PickleError as error:
        print(json.dumps({"outcome": "refused", "message": str(error)}))
    """
)


class _Reduce:
    """Pickles as `function(*args)` followed by BUILD `state`, whatever numpy would do."""

    def __init__(self, function, args, state=None):
        self.function, self.args, self.state = function, args, state

    def __reduce__(self):
        if self.state is None:
            return self.function, self.args
        return self.function, self.args, self.state


def _dtype(code, state):
    return _Reduce(np.dtype, (code, False, True), state)


def _array(shape, dtype, data):
    reconstruct = np._core.multiarray._reconstruct
    return _Reduce(reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, data))


def _plain_state(byte_order="|"):
    return (3, byte_order, None, None, None, -1, -1, 0)


# numpy's own object dtype, its "has objects" flags cleared by the BUILD state.
SETSTATE_TRICK = _array((10,), _dtype("O8", (3, "|", None, None, None, -1, -1, 0)), b"\x41" * 80)
# Each holds 10 "images", as many as the labels written next to it, so that a loader that
# accepted it would go on to index the array (and dereference forged pointers).
CRAFTED = {
    "setstate_trick": SETSTATE_TRICK,
    "object_field": np.array([(i,) for i in range(10)], dtype=[("a", "O")]),
    "subarray": _array(
        (10,),
        _dtype("V16", (3, "|", (_dtype("O8", _plain_state()), (2,)), None, None, 16, 1, 0)),
        b"\x41" * 160,
    ),
    "object_array": np.array([1, "two", None, 4.0, b"5", 6, 7, 8, 9, 10], dtype=object),
    "ndarray_strides": _Reduce(np.ndarray, ((1 << 40,), np.uint8, b"\x00", 0, (0,))),
    "short_data": _array((10, 28, 28), _dtype("u1", _plain_state()), b"\x00" * 100),
    "string_dtype": np.array(["cat", "dog"] * 5),
}


def _write_animal_mnist(directory, images, labels=None):
    folder = directory / "data" / "Animal_MNIST"
    folder.mkdir(parents=True)
    labels = np.zeros(10, dtype=np.int64) if labels is None else labels
    for name, value in (("animal_data", images), ("animal_label", labels)):
        with gzip.open(folder / f"{name}_version_3.gz", "wb") as file:
            file.write(value if isinstance(value, bytes) else pickle.dumps(value, protocol=2))
    return folder / "animal_data_version_3.gz"


def _load_in_subprocess(directory):
    # The loader is numpy's: Keras's numpy backend starts in half the time TensorFlow's takes.
    result = subprocess.run(
        [sys.executable, "-c", _LOAD, str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KERAS_BACKEND": "numpy"},
    )
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_setstate_trick_is_live_without_tfkd():
    """The standard unpickler really builds an object array from the file's bytes."""
    array = pickle.loads(pickle.dumps(SETSTATE_TRICK, protocol=2))
    assert array.dtype == np.dtype("O") and not array.dtype.hasobject  # forged
    # Reading an element would dereference 0x4141414141414141; it is not done here.


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_pickle_is_refused_with_the_file_named(tmp_path, name):
    path = _write_animal_mnist(tmp_path, CRAFTED[name])
    result = _load_in_subprocess(tmp_path)
    assert result["outcome"] == "refused", result
    assert str(path) in result["message"]


def test_a_real_pickle_still_loads(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (10000, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 1000)
    _write_animal_mnist(tmp_path, images, labels)
    assert _load_in_subprocess(tmp_path) == {"outcome": "loaded"}


# A dict whose key is a tuple nested a million deep: two bytes per level (TUPLE1), built
# without recursion, but hashing it as the dict's key overflowed the C stack (a
# segmentation fault) before the opcodes were checked.
DEEP_KEY = b"\x80\x02}" + b")" + b"\x85" * 1_000_000 + b"Ns."


def test_a_pickle_nested_a_million_deep_is_refused_from_its_opcodes(tmp_path):
    path = _write_animal_mnist(tmp_path, DEEP_KEY)
    result = _load_in_subprocess(tmp_path)
    assert result["outcome"] == "refused", result
    assert str(path) in result["message"] and "nests" in result["message"]


def _doubling_lists(levels):
    """A pickle of lists, each holding the one before twice (by the memo): 8 bytes a
    level, 2**levels lists once expanded."""
    opcodes = bytearray(b"\x80\x02(K\x01K\x01lq\x00")
    for level in range(1, levels):
        opcodes += b"(h%ch%clq%c" % (level - 1, level - 1, level)
    return bytes(opcodes + b".")


SHARED = {
    # 329 bytes: loading never finished (2**60 lists).
    "doubling_lists": _doubling_lists(60),
    # One 784-byte image 3,000 times: a small file, as many copies (9 GB from 34 KB).
    "one_image_many_times": pickle.dumps([np.zeros(784, np.uint8)] * 3000, protocol=2),
}


@pytest.mark.parametrize("name", sorted(SHARED))
def test_an_object_the_pickle_holds_twice_is_refused(tmp_path, name):
    path = _write_animal_mnist(tmp_path, SHARED[name])
    result = _load_in_subprocess(tmp_path)
    assert result["outcome"] == "refused", result
    assert str(path) in result["message"] and "more than once" in result["message"]
