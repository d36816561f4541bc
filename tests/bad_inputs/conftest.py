import pytest

from tests.bad_inputs import _cases


@pytest.fixture(autouse=True)
def _tmp_path(tmp_path):
    _cases._DIRECTORY["path"] = tmp_path
