"""Issue 16.9: every public entry point refuses bad input with a clear error.

Each test module of this folder defines `CASES`, a list of `Case`s: a public callable,
a call of it with one bad argument, the exception expected, and the argument and the
received value that the message must name. `test_coverage.py` checks that every name
in every `__all__` of tfkd has at least three cases (or is listed there as not callable).
"""

import dataclasses
import re
from collections.abc import Callable
from typing import Any

import pytest


@dataclasses.dataclass(frozen=True)
class Case:
    target: Any  # the public function or class the case is for
    call: Callable[[], Any]  # calls `target` (or a method of it) with one bad input
    error: type  # the exception expected
    argument: str  # the name the message must give
    received: str  # text that must be in the message: the value received, as shown

    @property
    def id(self):
        name = getattr(self.target, "__qualname__", repr(self.target))
        return f"{name}-{self.argument}-{self.received[:30]}"


def check(case):
    """`case.call()` raises `case.error`, naming the argument and the value received."""
    with pytest.raises(case.error) as raised:
        case.call()
    message = str(raised.value)
    assert re.search(rf"\b{re.escape(case.argument)}\b", message), (
        f"the message does not name `{case.argument}`: {message!r}"
    )
    assert case.received in message, (
        f"the message does not show the value received ({case.received!r}): {message!r}"
    )


def parametrize(cases):
    """`pytest.mark.parametrize` over `cases`, with readable ids."""
    return pytest.mark.parametrize("case", cases, ids=[case.id for case in cases])


# The running test's tmp_path (set by conftest.py's autouse fixture): `Case` calls are
# built when a module is imported, before any fixture, so they reach it through `tmp`.
_DIRECTORY = {}


def tmp(name):
    """`name` in the running test's tmp_path."""
    return _DIRECTORY["path"] / name
