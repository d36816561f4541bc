import keras
import pytest


@pytest.fixture(autouse=True)
def _seed_and_clear():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield
