import keras
import pytest


@pytest.fixture(autouse=True)
def _seed_and_clear():
    # free_memory=False: a full garbage collection with TensorFlow loaded takes 0.3 to
    # 2.5 s, and ran before each of the suite's ~1,000 tests; Python's own collector
    # still frees what the tests leave.
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    yield
