"""Bad preset folders and arguments are refused by `tfkd.transfer.load_preset`, naming
the argument and the folder, before keras-hub reads any file."""

import json
import os
import tempfile

from tests.bad_inputs._cases import Case, check, parametrize
from tfkd.transfer import load_preset


def _with_config(content, call=load_preset):
    """`call(folder)` on a folder whose `config.json` holds `content`."""
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "config.json"), "w") as file:
            file.write(content if isinstance(content, str) else json.dumps(content))
        return call(folder)


HOSTILE = {"module": "subprocess", "class_name": "Popen", "config": {}}

CASES = [
    Case(load_preset, lambda: load_preset(42), TypeError, "path", "42"),
    Case(load_preset, lambda: load_preset("no/such/preset"), FileNotFoundError, "path", "no/such"),
    Case(load_preset, lambda: _with_config("[1, 2"), ValueError, "path", "config.json"),
    Case(load_preset, lambda: _with_config(HOSTILE), ValueError, "path", "subprocess"),
    Case(
        load_preset,
        lambda: _with_config({"layers": [{"config": {"inner": HOSTILE}}]}),
        ValueError,
        "path",
        "subprocess",
    ),
    Case(
        load_preset,
        lambda: _with_config({}, lambda folder: load_preset(folder, backbone="yes")),
        TypeError,
        "backbone",
        "'yes'",
    ),
]


@parametrize(CASES)
def test_bad_input_is_refused(case):
    check(case)
