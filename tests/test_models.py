"""`tfkd.models`: the small CNN builds the bundled teacher's exact architecture, and
`compile_classifier` trains every kind of model users write."""

import json
import os
import pathlib

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import kind_input_shape, model_of_kind

TEACHER = pathlib.Path(__file__).resolve().parents[1] / "saved_models" / "fashion_mnist_cnn_teacher"


def test_cnn_builds_the_bundled_teachers_architecture():
    saved = keras.saving.load_model(TEACHER / "model.keras", compile=False)
    built = tfkd.models.cnn(
        (28, 28, 1), 10, filters=(32, 32, 64, 64, 160), pool_every=2, dropout=0.3
    )
    assert [layer.name for layer in built.layers] == [layer.name for layer in saved.layers]
    assert [type(layer) for layer in built.layers] == [type(layer) for layer in saved.layers]
    assert [w.shape for w in built.weights] == [w.shape for w in saved.weights]
    assert built.count_params() == 159_978
    built.set_weights(saved.get_weights())
    x = np.random.RandomState(0).randint(0, 256, (8, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(built.predict(x, verbose=0), saved.predict(x, verbose=0), atol=1e-5)


def test_cnn_is_seeded():
    first, second = tfkd.models.cnn((8, 8, 1), 3, seed=4), tfkd.models.cnn((8, 8, 1), 3, seed=4)
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    other = tfkd.models.cnn((8, 8, 1), 3, seed=5)
    assert not np.array_equal(first.get_weights()[0], other.get_weights()[0])


@pytest.mark.parametrize(
    "kind",
    [
        "sequential_never_called",
        "sequential_called",
        "functional",
        "nested",
        "subclassed",
        "loaded_keras_file",
    ],
)
def test_compile_classifier_trains_every_model_kind(kind, tmp_path):
    model = model_of_kind(kind, tmp_path)
    shape = kind_input_shape(kind)
    rng = np.random.RandomState(0)
    x, y = rng.rand(64, *shape).astype("float32"), rng.randint(0, 3, 64)
    assert tfkd.models.compile_classifier(model, 1e-2) is model
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert 0.0 <= history.history["accuracy"][-1] <= 1.0


def test_save_writes_an_uncompiled_copy_and_its_metadata_atomically(tmp_path):
    model = tfkd.models.compile_classifier(tfkd.models.cnn((28, 28, 1), 10, filters=(4,)))
    x = np.random.RandomState(0).uniform(0, 255, (32, 28, 28, 1)).astype("float32")
    model.fit(x, np.arange(32) % 10, epochs=1, verbose=0)  # Adam now has moments
    path = tmp_path / "student" / "model.keras"
    metadata = tfkd.models.save(model, path, {"accuracy": 0.5})
    assert metadata == {"accuracy": 0.5, "bytes": path.stat().st_size}
    written = json.loads((path.parent / "metadata.json").read_text())
    assert written == metadata
    loaded = keras.saving.load_model(path)
    assert not loaded.compiled  # no optimizer state in the file
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert model.compiled  # the model itself is untouched
    before = path.read_bytes(), (path.parent / "metadata.json").read_bytes()
    with pytest.raises(TypeError, match="`metadata` must be JSON-serialisable"):
        tfkd.models.save(model, path, {"array": np.zeros(2)})
    with pytest.raises(ValueError, match=r"`path` must end in `.keras`. Received: path='m.h5'"):
        tfkd.models.save(model, "m.h5")
    with pytest.raises(TypeError, match="`model` must be a Keras model"):
        tfkd.models.save("model", path)
    assert (path.read_bytes(), (path.parent / "metadata.json").read_bytes()) == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["metadata.json", "model.keras"]
    # Readable as open() makes files (0644 under umask 022), not its owner's alone (0600,
    # mkstemp's): a run folder shared by several accounts needed a chmod.
    mode = 0o666 & ~tfkd._atomic.umask()
    assert tfkd._atomic.umask() == os.umask(os.umask(0o022))
    for written_file in path.parent.iterdir():
        assert written_file.stat().st_mode & 0o777 == mode, written_file


def test_save_refuses_a_never_called_sequential_and_saves_it_once_called(tmp_path):
    model = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="never built or called"):
        tfkd.models.save(model, tmp_path / "model.keras")
    assert not (tmp_path / "model.keras").exists()
    x = np.ones((2, 4, 4, 1), "float32")
    model(x)
    tfkd.models.save(tfkd.models.compile_classifier(model), tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
