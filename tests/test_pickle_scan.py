"""`check_pickle` on what Python's own pickler writes, at every protocol.

It must pass every pickle of data that nests at most `MAX_DEPTH` deep (shared references
included) and refuse deeper ones, before anything is unpickled.
"""

import collections
import io
import pickle
import random
import tracemalloc

import pytest

from tfkd._pickle_scan import MAX_DEPTH, PickleRefused, check_pickle

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


def _nest(kind, depth):
    value = 0
    for _ in range(depth):
        value = {"k": value} if kind is dict else kind([value])
    return value


def _check(value, protocol):
    file = io.BytesIO(pickle.dumps(value, protocol=protocol) + b"after")
    check_pickle(file)
    assert file.read() == b"after"  # left after STOP, where the unpickler stops


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", [list, tuple, dict])
def test_the_depth_limit_is_exact_for_plain_containers(protocol, kind):
    _check(_nest(kind, MAX_DEPTH), protocol)
    with pytest.raises(PickleRefused, match=f"deeper than {MAX_DEPTH} levels"):
        _check(_nest(kind, MAX_DEPTH + 1), protocol)


def _random_value(generator, budget, made):
    """Nested lists, tuples, dicts, sets and OrderedDicts with attributes, some shared."""
    if budget == 0 or generator.random() < 0.2:
        return generator.choice([1, 2**70, -1.5, "text", b"bytes", None, True])
    if made and generator.random() < 0.15:
        return generator.choice(made)  # pickled once, then fetched from the memo
    items = [_random_value(generator, budget - 1, made) for _ in range(generator.randint(0, 3))]
    kind = generator.choice(["list", "tuple", "dict", "set", "ordered"])
    if kind in ("list", "tuple"):
        value = list(items) if kind == "list" else tuple(items)
    elif kind == "set":
        value = {item for item in items if isinstance(item, (int, float, str, bytes))}
    else:
        value = dict if kind == "dict" else collections.OrderedDict
        value = value((f"key{i}", item) for i, item in enumerate(items))
        if kind == "ordered":
            value.attribute = items[:1]  # pickled with BUILD, as torch's `_metadata`
    made.append(value)
    return value


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shallow_data_with_shared_references_passes(protocol):
    generator = random.Random(protocol)
    for _ in range(200):
        _check(_random_value(generator, 12, []), protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_structure_that_contains_itself_is_refused(protocol):
    loop = []
    loop.append(loop)
    with pytest.raises(PickleRefused, match="after placing it in another"):
        _check(loop, protocol)


@pytest.mark.parametrize(
    "pickled, message",
    [
        (b"\x80\x02K\x01r\x00\xe1\xf5\x05.", "memo entry 100000000 after 2 opcodes"),
        (b"\x80\x02K\x01h\x05.", r"memo entry 5 was never stored"),
        (b"\x80\x02K\x01K\x02K\x03s.", "changes a number, string or global"),
        (b"\x80\x02t.", "needs a MARK that is missing"),
        (b"\x80\x02(\x85.", "needs an object the stack lacks"),
        (b"\x80\x02]", "corrupt"),  # no STOP
        (b"\x80\x02\xff.", "corrupt"),  # no such opcode
    ],
)
def test_bad_pickles_are_refused_before_they_are_unpickled(pickled, message):
    with pytest.raises(PickleRefused, match=message):
        check_pickle(io.BytesIO(pickled))


class _Unseekable:
    """A gzip stream's reader, as the data sets read one: it cannot seek."""

    def __init__(self, data):
        file = io.BytesIO(data)
        self.read, self.readline, self.tell = file.read, file.readline, file.tell


def test_the_bodies_of_bytes_and_strings_are_skipped_not_copied():
    # genops made each into an object: scanning MNIST's pickle took 210 MB more.
    size = 32 * 2**20
    pickled = pickle.dumps([b"\x00" * size, "\x00" * size], protocol=4)
    for open_file in (io.BytesIO, _Unseekable):
        tracemalloc.start()
        try:
            check_pickle(open_file(pickled))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 3 * 2**20, (open_file, peak)  # a piece of 1 MiB at a time, at most
