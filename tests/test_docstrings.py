"""Every `>>>` example in tfkd's docstrings runs, as a doctest, and shows what it says.

Examples that need the reader's own data or files are fenced code blocks instead, so
that no example in the package is left unchecked (issue 17).
"""

import doctest
import importlib
import pkgutil

import keras
import numpy as np
import pytest

import tfkd


def _modules_with_examples():
    names = []
    for info in pkgutil.walk_packages(tfkd.__path__, "tfkd."):
        if info.name == "tfkd.__main__":
            continue
        module = importlib.import_module(info.name)
        if any(test.examples for test in _doctests(module)):
            names.append(info.name)
    return names


def _doctests(module):
    globs = {**vars(module), "tfkd": tfkd, "keras": keras, "np": np}
    found = doctest.DocTestFinder().find(module, globs=globs)
    # Only the module's own objects: imported ones are tested in their own module.
    return [test for test in found if test.name.startswith(module.__name__ + ".")]


MODULES = _modules_with_examples()


def test_the_examples_are_found():
    assert {"tfkd.models", "tfkd.prune.pruning", "tfkd.distill.losses"} <= set(MODULES)
    assert len(MODULES) >= 15


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = []
    for test in _doctests(importlib.import_module(name)):
        runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
    assert runner.tries > 0
