"""`.keras` files the pipeline reads (`load` stages, model paths, a resumed run's stages) may
be hostile: none runs code or crashes the process, and each bad file is a `ValueError` that
names it; a real file loads as before. (Layer sizes that fit in memory but fill it are not
bounded: see `_store.load_keras`.)"""

import json
import zipfile

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import small_cnn
from tfkd.pipeline import Data, Load, Train, Transfer, _store


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A real `.keras` file: its path and its members."""
    path = tmp_path_factory.mktemp("real") / "real.keras"
    small_cnn(4, "real").save(path)
    with zipfile.ZipFile(path) as archive:
        return path, {name: archive.read(name) for name in archive.namelist()}


def _pack(path, members, compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _with_config(real, path, edit):
    members = dict(real[1])
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config)
    return _pack(path, members)


def _layer(config, layer):
    config["config"]["layers"].append(layer)


def test_a_real_file_loads_as_before(real):
    loaded = _store.load_keras(real[0])
    x = np.random.default_rng(0).random((2, 8, 8, 1), dtype=np.float32)
    expected = keras.saving.load_model(real[0]).predict(x, verbose=0)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)


def _lambda_file(path, marker):
    """A `.keras` file whose Lambda layer writes `marker` when Keras rebuilds the model."""
    write = f"open({str(marker)!r}, 'w').write('ran')"
    code = keras.layers.Lambda(lambda x: (exec(write), x)[1], name="code")
    keras.Sequential([keras.Input((4,)), code, keras.layers.Dense(2)]).save(path)
    marker.unlink()  # written when the layer was built
    return path


def test_no_file_runs_code(real, tmp_path):
    marker = tmp_path / "ran"
    path = _lambda_file(tmp_path / "lambda.keras", marker)
    keras.saving.load_model(path, safe_mode=False)
    assert marker.exists()  # the file is live: unsafe loading runs its code
    marker.unlink()
    with pytest.raises(ValueError, match="lambda.keras' cannot be read.*Lambda"):
        _store.load_keras(path)
    assert not marker.exists()
    # A config naming a function outside Keras (CVE-2025-1550's kind of file).
    call = {"module": "builtins", "class_name": "exec", "config": {"source": "x"}}
    module = _with_config(real, tmp_path / "module.keras", lambda c: _layer(c, call))
    with pytest.raises(ValueError, match="module.keras' cannot be read as a Keras model"):
        _store.load_keras(module)


def test_files_that_would_exhaust_the_process_are_refused(real, tmp_path):
    members = dict(real[1])
    deep = _pack(tmp_path / "deep.keras", {**members, "config.json": "[" * 200_000})
    with pytest.raises(ValueError, match="deep.keras' cannot be read.*RecursionError"):
        _store.load_keras(deep)
    # 65 MiB that deflate to about 65 KB: refused from the zip's declared sizes, unread.
    bomb = _pack(tmp_path / "bomb.keras", {**members, "model.weights.h5": bytes(65 * 2**20)})
    with pytest.raises(ValueError, match=r"'model.weights.h5' declares 68157440 bytes \(\d+ comp"):
        _store.load_keras(bomb)
    # A small config that asks for 4 x 10^11 weights: memory that cannot be had.
    huge = lambda c: c["config"]["layers"][-1]["config"].__setitem__("units", 10**11)  # noqa: E731
    with pytest.raises(
        ValueError, match="huge.keras' cannot be read.*(ResourceExhausted|MemoryError|memory)"
    ):
        _store.load_keras(_with_config(real, tmp_path / "huge.keras", huge))
    spaces = b" " * (65 * 2**20)  # JSON whitespace: a config over 64 MiB, stored uncompressed
    large = _pack(tmp_path / "large.keras", {**members, "config.json": spaces}, zipfile.ZIP_STORED)
    with pytest.raises(ValueError, match="'config.json' declares 68157440 bytes"):
        _store.load_keras(large)


def test_corrupt_weights_and_zips_name_the_file(real, tmp_path):
    members = dict(real[1])
    weights = members["model.weights.h5"]
    cut = _pack(
        tmp_path / "cut.keras", {**members, "model.weights.h5": weights[: len(weights) // 2]}
    )
    with pytest.raises(ValueError, match="cut.keras' cannot be read as a Keras model"):
        _store.load_keras(cut)
    flipped = bytearray(real[0].read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF  # inside the weights: the zip's CRC-32 catches it
    (tmp_path / "flipped.keras").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="flipped.keras' cannot be read.*BadZipFile"):
        _store.load_keras(tmp_path / "flipped.keras")
    # An output that names a node the layer does not have (Keras: IndexError).
    edit = lambda c: c["config"].__setitem__("output_layers", [["logits", 5, 0]])  # noqa: E731
    nodes = _with_config(real, tmp_path / "nodes.keras", edit)
    with pytest.raises(ValueError, match="nodes.keras' cannot be read.*IndexError"):
        _store.load_keras(nodes)
    no_config = _pack(tmp_path / "no_config.keras", {"model.weights.h5": weights})
    with pytest.raises(ValueError, match="no_config.keras' cannot be read.*KeyError"):
        _store.load_keras(no_config)


@pytest.mark.parametrize("kind", ["load", "transfer"])
def test_a_hostile_file_is_refused_before_any_stage_runs(kind, tmp_path):
    marker = tmp_path / "ran"
    path = str(_lambda_file(tmp_path / "teacher.keras", marker))
    x = np.random.default_rng(0).random((64, 8, 8, 1), dtype=np.float32)
    data = Data(x, np.arange(64) % 3, x[:16], np.arange(16) % 3)
    stage = Load(path, name="teacher") if kind == "load" else Transfer(path, name="teacher")
    stages = [Train(model=small_cnn(4, "student"), epochs=1), stage]
    with pytest.raises(ValueError, match="Lambda") as info:
        tfkd.Pipeline(stages).execute(data, tmp_path / "run", verbose=0, log=lambda _: None)
    argument = "path" if kind == "load" else "backbone"
    assert (info.value.stage, info.value.argument) == ("teacher", argument)
    assert not marker.exists()
    assert not (tmp_path / "run" / "stages").exists()
