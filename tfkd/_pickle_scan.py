"""Checks from a pickle's opcodes alone that it builds nothing that can crash the process.

An allow-list of globals (`find_class`) stops a pickle from calling code, not from building
data that crashes the unpickler or whatever touches what it built. A few bytes of opcodes
can make a dict key that is a tuple nested a million deep, which overflows the C stack when
the dict hashes it (a segfault, not an exception), or a memo index of 10^9, for which the
unpickler allocates and clears a 16 GB memo. `check_pickle` reads the opcodes, which
builds nothing and does not recurse, and follows the unpickler's stack knowing of each
object only how deep it nests: one pass, at most one opcode per byte of the pickle.

The opcodes are read as `pickletools.genops` reads them, and what it refuses is refused,
but the bodies of strings, bytes and long integers are skipped, not made into objects:
genops made MNIST's 210 MB pickle into 210 MB of strings to scan it. A body's length is
checked against what the file holds before it is skipped, never allocated.
"""

import codecs
import io
import pickletools
import struct
import sys

# A torch state dict nests about 5 deep (the dict, a tensor's arguments, their size tuple,
# the `_metadata` dicts). C code recursing 100 levels is harmless.
MAX_DEPTH = 100

_LEAVES = frozenset(
    {
        *("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT"),
        *("STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"),
        *("UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "BYTEARRAY8"),
        *("NONE", "NEWTRUE", "NEWFALSE", "GLOBAL", "EXT1", "EXT2", "EXT4", "PERSID"),
        "NEXT_BUFFER",
    }
)
_EMPTY_CONTAINERS = frozenset({"EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "EMPTY_TUPLE"})
# Opcodes that build a new object from the items above the last MARK.
_BUILT_FROM_MARK = frozenset({"TUPLE", "LIST", "DICT", "FROZENSET", "OBJ", "INST"})
# ... or from the top items: a call's result may hold its arguments (`REDUCE` pops the
# callable and its argument tuple).
_BUILT_FROM_TOP = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3, "REDUCE": 2, "NEWOBJ": 2, "NEWOBJ_EX": 3}
# Opcodes that add the items above the last MARK, or the top items, to the object below.
_GROWN_FROM_MARK = frozenset({"APPENDS", "SETITEMS", "ADDITEMS"})
_GROWN_FROM_TOP = {"APPEND": 1, "SETITEM": 2, "BUILD": 1}
# Opcodes that replace the top items with a leaf (a global, a persistent object).
_REPLACED = {"STACK_GLOBAL": 2, "BINPERSID": 1}
_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_NOTHING = frozenset({"PROTO", "FRAME", "STOP", "READONLY_BUFFER"})


class PickleRefused(ValueError):
    """What is wrong with a pickle, as a phrase about "its pickle"; the caller names the file."""


class _Node:
    """An object the pickle builds: how deep it nests, and whether another holds it yet."""

    __slots__ = ("depth", "held")

    def __init__(self, depth):
        self.depth = depth
        self.held = False


# Numbers, strings, globals and storages: nothing is inside them, nothing can be added.
_LEAF = _Node(0)


class _Stack:
    """The unpickler's stack, marks and memo, with a `_Node` for each object."""

    def __init__(self, max_depth):
        self.items, self.marks, self.memo = [], [], {}
        self.max_depth = max_depth

    def pop(self, count):
        fence = self.marks[-1] if self.marks else 0
        if len(self.items) - fence < count:
            raise PickleRefused("its pickle is corrupt (an opcode needs an object the stack lacks)")
        popped = self.items[len(self.items) - count :]
        del self.items[len(self.items) - count :]
        return popped

    def top(self):
        if len(self.items) <= (self.marks[-1] if self.marks else 0):
            raise PickleRefused("its pickle is corrupt (an opcode needs an object the stack lacks)")
        return self.items[-1]

    def pop_mark(self):
        if not self.marks:
            raise PickleRefused("its pickle is corrupt (an opcode needs a MARK that is missing)")
        start = self.marks.pop()
        popped = self.items[start:]
        del self.items[start:]
        return popped

    def hold(self, nodes):
        """The depth of an object that holds `nodes`."""
        depth = 1 + max([node.depth for node in nodes], default=0)
        if depth > self.max_depth:
            raise PickleRefused(
                f"its pickle nests objects deeper than {self.max_depth} levels (a state "
                "dict nests about 5); so deep a structure can overflow the C stack"
            )
        for node in nodes:
            node.held = True
        return depth

    def grow(self, nodes):
        # Whatever holds the target was measured without what is added now, so a
        # target that another object holds may not get deeper (only a structure that
        # contains itself does that).
        target = self.top()
        if target is _LEAF:
            raise PickleRefused(
                "its pickle changes a number, string or global (adds items or sets attributes)"
            )
        depth = self.hold(nodes)
        if depth > target.depth and target.held:
            raise PickleRefused("its pickle adds to an object after placing it in another")
        target.depth = max(target.depth, depth)

    def put(self, index, count):
        # Picklers number memo entries 0, 1, 2...: an index past the opcodes read so far
        # only makes the unpickler allocate a memo that large.
        if not 0 <= index <= count:
            raise PickleRefused(f"its pickle stores memo entry {index} after {count} opcodes")
        self.memo[index] = self.top()

    def get(self, index):
        if index not in self.memo:
            raise PickleRefused(f"its pickle is corrupt (memo entry {index} was never stored)")
        self.items.append(self.memo[index])


def _step(stack, name, argument, count):
    if name in _LEAVES:
        stack.items.append(_LEAF)
    elif name in _PUTS:
        stack.put(argument, count)
    elif name in _GETS:
        stack.get(argument)
    elif name == "MARK":
        stack.marks.append(len(stack.items))
    elif name in _BUILT_FROM_TOP:
        stack.items.append(_Node(stack.hold(stack.pop(_BUILT_FROM_TOP[name]))))
    elif name in _BUILT_FROM_MARK:
        stack.items.append(_Node(stack.hold(stack.pop_mark())))
    elif name in _EMPTY_CONTAINERS:
        stack.items.append(_Node(1))
    elif name in _GROWN_FROM_TOP:
        stack.grow(stack.pop(_GROWN_FROM_TOP[name]))
    elif name in _GROWN_FROM_MARK:
        stack.grow(stack.pop_mark())
    elif name in _REPLACED:
        stack.pop(_REPLACED[name])
        stack.items.append(_LEAF)
    elif name == "MEMOIZE":
        stack.put(len(stack.memo), count)
    else:
        _step_stack_only(stack, name)


def _step_stack_only(stack, name):
    if name == "POP" and stack.marks and stack.marks[-1] == len(stack.items):
        stack.marks.pop()  # as the unpickler does: POP right after a MARK drops the mark
    elif name == "POP":
        stack.pop(1)
    elif name == "POP_MARK":
        stack.pop_mark()
    elif name == "DUP":
        stack.items.append(stack.top())
    elif name not in _NOTHING:
        raise PickleRefused(f"its pickle is corrupt (unknown opcode {name})")


# How much of a skipped body is read at once, where it is read (a file that cannot seek,
# a text body whose UTF-8 is checked).
_CHUNK = 1 << 20
# How a counted body's length is stored, by `pickletools`' name for where it comes from.
_COUNT_FORMATS = {
    pickletools.TAKEN_FROM_ARGUMENT1: "<B",
    pickletools.TAKEN_FROM_ARGUMENT4: "<i",
    pickletools.TAKEN_FROM_ARGUMENT4U: "<I",
    pickletools.TAKEN_FROM_ARGUMENT8U: "<Q",
}


def _read_exactly(file, size, what):
    data = file.read(size)
    if len(data) != size:
        raise PickleRefused(f"its pickle is corrupt (it ends inside {what})")
    return data


def _skip_read(file, size, text):
    # The bytes of a text body are decoded as genops decodes them (UTF-8 with lone
    # surrogates), piece by piece: what it refuses is refused.
    decoder = codecs.getincrementaldecoder("utf-8")("surrogatepass") if text else None
    while size:
        chunk = _read_exactly(file, min(size, _CHUNK), "a string or bytes")
        size -= len(chunk)
        if decoder:
            decoder.decode(chunk)
    if decoder:
        decoder.decode(b"", final=True)


def _skip_seek(file, size):
    # Its last byte is read: a length past the end is refused, not skipped.
    if size:
        try:
            file.seek(size - 1, io.SEEK_CUR)
        except (OSError, OverflowError) as error:  # a position past what the file can hold
            raise PickleRefused(f"its pickle is corrupt (a body of {size} bytes)") from error
        _read_exactly(file, 1, "a string or bytes")


def _skip_body(file, count_format, text):
    """Skips one counted body (string, bytes, long integer) after its length."""
    size = struct.unpack(
        count_format, _read_exactly(file, struct.calcsize(count_format), "a length")
    )[0]
    if not 0 <= size <= sys.maxsize:
        raise PickleRefused(f"its pickle is corrupt (a string or bytes of {size} bytes)")
    seekable = getattr(file, "seekable", None)
    if text or size <= _CHUNK or not (seekable and seekable()):
        _skip_read(file, size, text)
    else:
        _skip_seek(file, size)


def _reader(argument):
    """How to read an opcode's `argument` (a `pickletools.ArgumentDescriptor`)."""
    if argument is None:
        return None
    if argument.n in _COUNT_FORMATS:
        text = argument.name.startswith("unicodestring")
        return lambda file: _skip_body(file, _COUNT_FORMATS[argument.n], text)
    # Fixed-size numbers and protocol 0's lines: read, and checked, as genops does.
    return argument.reader


# By each opcode's byte: its name and the reader of its argument.
_OPCODES = {
    opcode.code.encode("latin-1"): (opcode.name, _reader(opcode.arg))
    for opcode in pickletools.opcodes
}


def _opcodes(file):
    """Each opcode's name and argument (`None` for a skipped body), up to STOP."""
    while True:
        code = file.read(1)
        if code not in _OPCODES:
            what = f"unknown opcode {code!r}" if code else "it ends before its STOP opcode"
            raise PickleRefused(f"its pickle is corrupt ({what})")
        name, reader = _OPCODES[code]
        yield name, reader(file) if reader else None
        if name == "STOP":
            return


def check_pickle(file, max_depth=MAX_DEPTH):
    """Reads one pickle's opcodes from `file` and checks what they would build.

    Args:
        file: a binary file positioned at the pickle's start; it is left after the
            pickle's STOP opcode.
        max_depth: how deep objects may nest. Defaults to `MAX_DEPTH`.

    Raises:
        PickleRefused: (a `ValueError`) saying what is wrong (the caller names the
            file), if the pickle is truncated or corrupt, nests objects deeper than
            `max_depth`, adds to an object after placing it in another (a structure
            that contains itself), changes a number, string or global, or stores a
            memo entry at an index past the opcodes read.
    """
    stack = _Stack(max_depth)
    try:
        for count, (name, argument) in enumerate(_opcodes(file)):
            _step(stack, name, argument, count)
    except PickleRefused:
        raise
    # pickletools' readers fail on a bad argument (a line that is not a number, text
    # that is not UTF-8) with a ValueError.
    except (ValueError, EOFError, MemoryError, OverflowError) as error:
        raise PickleRefused(f"its pickle is corrupt ({type(error).__name__}: {error})") from error
