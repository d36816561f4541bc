"""`check_pickle` skips the bodies of strings and bytes, yet refuses exactly what it did when
`pickletools.genops` read its opcodes (the reference here, driving the same stack).

Both scan the same pickles: what Python's pickler writes at every protocol, the crafted
pickles of the other tests, and seeded random mutations of small pickles; each from a file
that can seek and one that cannot, with bodies skipped whole and in pieces of 7 bytes.
"""

import collections
import gzip
import io
import pickle
import pickletools
import random
import struct

import numpy as np
import pytest

from tests.datasets import test_hostile_pickles as hostile
from tests.test_pickle_scan import _random_value, _Unseekable
from tests.transfer import test_mobilenet_v2 as checkpoints
from tfkd import _pickle_scan
from tfkd._pickle_scan import MAX_DEPTH, PickleRefused, check_pickle


def _reference(file):
    """The scan as it was: genops decodes every argument, strings and bytes included."""
    stack = _pickle_scan._Stack(MAX_DEPTH)
    try:
        for count, (opcode, argument, _) in enumerate(pickletools.genops(file)):
            _pickle_scan._step(stack, opcode.name, argument, count)
    except PickleRefused:
        raise
    except (ValueError, EOFError, MemoryError, OverflowError) as error:
        raise PickleRefused(f"its pickle is corrupt ({error})") from error


def _outcome(scan, data, file_kind):
    """Where the scan left the file, or that it refused the pickle."""
    file = io.BytesIO(data) if file_kind is io.BytesIO else _Unseekable(data)
    try:
        scan(file)
    except PickleRefused:
        return "refused"
    return file.tell()


def _assert_same(pickles, monkeypatch):
    accepted = refused = 0
    for chunk in (_pickle_scan._CHUNK, 7):
        monkeypatch.setattr(_pickle_scan, "_CHUNK", chunk)
        for data in pickles:
            for file_kind in (io.BytesIO, _Unseekable):
                want = _outcome(_reference, data, file_kind)
                assert _outcome(check_pickle, data, file_kind) == want, (data[:200], chunk)
                accepted, refused = accepted + (want != "refused"), refused + (want == "refused")
    return accepted, refused


class _Point:
    def __init__(self, x):
        self.x = x


def _values():
    """Values whose pickles hold every kind of argument: lines, counted bodies, numbers."""
    text = ["", "a", "é" * 300, "\ud800 lone surrogate", "\x00\n'\"\\", "\U0001f600" * 70_000]
    numbers = [0, 1, -1, 255, 256, 65536, -(2**31), 2**31, 2**64, -(2**300), 1.5, -0.0, 1e300]
    binary = [b"", b"\x00\xff" * 200, bytes(range(256)) * 5000, bytearray(b"\x01" * 300)]
    nested = [
        {"k": [1, (2, 3)], 4: {5, 6}, "s": frozenset({7})},
        collections.OrderedDict(a=1),
        _Point([1, 2]),
        len,
        np.arange(300, dtype="<f4").reshape(10, 30),
    ]
    shared = [1]
    return text + numbers + binary + nested + [[shared, shared], (shared, [shared])]


def _dumps(value, protocol):
    if isinstance(value, np.ndarray) and protocol == 5:  # out of band: NEXT_BUFFER
        return pickle.dumps(value, protocol=5, buffer_callback=lambda buffer: False)
    return pickle.dumps(value, protocol=protocol)


PICKLED = [
    _dumps(value, protocol)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1)
    for value in _values()
]


def test_what_the_pickler_writes_is_scanned_as_genops_scans_it(monkeypatch):
    generator = random.Random(0)
    shallow = [pickle.dumps(_random_value(generator, 8, []), protocol=p) for p in range(6)] * 20
    assert _assert_same(PICKLED + shallow, monkeypatch)[0] == 2 * 2 * len(PICKLED + shallow)


def _crafted():
    crafted = [pickle.dumps(value, protocol=2) for value in hostile.CRAFTED.values()]
    crafted += [hostile.DEEP_KEY, *checkpoints.DEEP_PICKLES.values()]
    tensor = checkpoints._tensor("0", "FloatStorage", 1, 0, (1,), (1,))
    crafted.append(checkpoints._state_pickle(("w", tensor), ("v", tensor)))
    crafted += [
        b"\x80\x02K\x01r\x00\xe1\xf5\x05.",  # a memo index of 10^8
        b"\x80\x02}r" + struct.pack("<I", 20_000_000) + b".",
        b"\x80\x02K\x01K\x02K\x03s.",  # SETITEM on a number
        b"\x80\x02t.",  # TUPLE without a MARK
        b"\x80\x02]",  # no STOP
        b"\x80\x02\xff.",  # no such opcode
    ]
    loop = []
    loop.append(loop)
    return crafted + [pickle.dumps(loop, protocol=p) for p in range(6)]


def _lengths_past_the_end():
    """Each counted body, declaring more bytes than follow; and lines and numbers cut short."""
    pickles = [b"T\xff\xff\xff\xff.", b"T\xff\xff\xff\x7f.", b"\x8e" + b"\xff" * 8 + b"."]
    for code, count in ((b"U", "<B"), (b"C", "<B"), (b"\x8c", "<B"), (b"T", "<i")):
        pickles += [code + struct.pack(count, 9) + b"abc.", code + struct.pack(count, 2) + b"ab."]
    for code in (b"B", b"X", b"\x8e", b"\x8d", b"\x96", b"\x8a", b"\x8b"):
        count = {b"\x8a": "<B", b"\x8b": "<i", b"B": "<I", b"X": "<I"}.get(code, "<Q")
        for size in (3, 4, 2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 1):
            if size < 2 ** (8 * struct.calcsize(count) - (count == "<i")):
                pickles.append(code + struct.pack(count, size) + b"\xed\xa0\x80.")
    return pickles + [b"I12", b"S'abc'\n", b"X\x02\x00\x00\x00\xc3", b"\x95\x01\x00", b"J\x01"]


def test_crafted_pickles_and_bad_lengths_are_refused_as_genops_refuses_them(monkeypatch):
    accepted, refused = _assert_same(_crafted() + _lengths_past_the_end(), monkeypatch)
    assert accepted and refused


def _mutated(data, generator):
    data = bytearray(data)
    where = generator.randrange(len(data))
    kind = generator.randrange(5)
    if kind == 0:
        data[where] ^= 1 << generator.randrange(8)
    elif kind == 1:
        data[where] = generator.choice([0, 1, 0x7F, 0x80, 0xFF, generator.randrange(256)])
    elif kind == 2:
        del data[where:]
    elif kind == 3:
        data[where:where] = bytes(generator.randrange(256) for _ in range(generator.randint(1, 4)))
    else:
        del data[where : where + generator.randint(1, 4)]
    return bytes(data)


@pytest.mark.parametrize("seed", range(3))
def test_random_mutations_are_refused_or_accepted_as_genops_does(seed, monkeypatch):
    generator = random.Random(seed)
    small = [data for data in PICKLED + _crafted() if len(data) < 2000]
    mutated = [_mutated(generator.choice(small), generator) for _ in range(1500)]
    accepted, refused = _assert_same(mutated, monkeypatch)
    assert accepted > 100 and refused > 100, (accepted, refused)


def test_a_real_data_file_is_accepted_as_genops_accepts_it(monkeypatch):
    from tfkd.datasets import _sources

    with gzip.open(_sources._locate_animal_mnist()[0], "rb") as file:
        inflated = file.read()
    assert len(inflated) > 4 * _pickle_scan._CHUNK  # a body skipped by seeking, and in pieces
    assert _assert_same([inflated], monkeypatch) == (4, 0)
