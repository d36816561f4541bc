"""`.keras` files the pipeline reads (`load` stages, model paths, a resumed run's stages) may
be hostile: none runs code, crashes the process or fills its memory (a config that asks for
more variables than the file's weights hold is refused before any is allocated), and each
bad file is a `ValueError` that names it; a real file loads as before."""

import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import forged_zip_sizes, peak_memory_growth, small_cnn
from tfkd.pipeline import Data, Load, Train, Transfer, _keras_file


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


def _with_units(real, path, units):
    """`real` with `units` in its last layer (the logits Dense)."""
    return _with_config(
        real, path, lambda c: c["config"]["layers"][-1]["config"].update(units=units)
    )


def test_a_real_file_loads_as_before(real):
    loaded = _keras_file.load_keras(real[0])  # after its variables were counted
    expected = keras.saving.load_model(real[0])
    x = np.random.default_rng(0).random((2, 8, 8, 1), dtype=np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected.predict(x, verbose=0))
    # The count built the same model first: no name or weight of this one moved.
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in expected.layers]
    paths = [weight.path for weight in expected.weights]
    assert [weight.path for weight in loaded.weights] == paths
    for got, want in zip(loaded.weights, expected.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(got), keras.ops.convert_to_numpy(want)
        )


@keras.saving.register_keras_serializable(package="tfkd_tests")
class UnnamedLayers(keras.Model):
    """A subclassed model whose layers Keras names as it makes them: `dense`, `dense_1`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(4)
        self.logits = keras.layers.Dense(3)

    def call(self, inputs):
        return self.logits(self.hidden(inputs))


def test_a_subclassed_model_is_named_as_keras_names_it(tmp_path):
    model = UnnamedLayers()
    model(np.zeros((1, 2), "float32"))
    model.save(tmp_path / "subclassed.keras")
    names = []
    for load in (_keras_file.load_keras, keras.saving.load_model):
        keras.utils.clear_session(free_memory=False)  # names count from `dense` again
        names.append([layer.name for layer in load(tmp_path / "subclassed.keras").layers])
    # The count made these layers once already, in a thread whose names are its own.
    assert names[0] == names[1] == ["dense", "dense_1"]


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
        _keras_file.load_keras(path)
    assert not marker.exists()
    # A config naming a function outside Keras (CVE-2025-1550's kind of file).
    call = {"module": "builtins", "class_name": "exec", "config": {"source": "x"}}
    module = _with_config(real, tmp_path / "module.keras", lambda c: _layer(c, call))
    with pytest.raises(ValueError, match="module.keras' cannot be read as a Keras model"):
        _keras_file.load_keras(module)


def test_files_that_would_exhaust_the_process_are_refused(real, tmp_path):
    members = dict(real[1])
    deep = _pack(tmp_path / "deep.keras", {**members, "config.json": "[" * 200_000})
    with pytest.raises(ValueError, match="deep.keras' cannot be read.*RecursionError"):
        _keras_file.load_keras(deep)
    # 65 MiB that deflate to about 65 KB: refused from the zip's declared sizes, unread.
    bomb = _pack(tmp_path / "bomb.keras", {**members, "model.weights.h5": bytes(65 * 2**20)})
    with pytest.raises(ValueError, match=r"'model.weights.h5' declares 68157440 bytes \(\d+ comp"):
        _keras_file.load_keras(bomb)
    # A small config that asks for 5 x 10^11 weights: refused from its size, unallocated.
    huge = _with_units(real, tmp_path / "huge.keras", 10**11)
    with pytest.raises(ValueError, match="huge.keras' cannot be read.*asks for 2000000000160 b"):
        _keras_file.load_keras(huge)
    spaces = b" " * (65 * 2**20)  # JSON whitespace: a config over 64 MiB, stored uncompressed
    large = _pack(tmp_path / "large.keras", {**members, "config.json": spaces}, zipfile.ZIP_STORED)
    with pytest.raises(ValueError, match="'config.json' declares 68157440 bytes"):
        _keras_file.load_keras(large)


def test_sizes_the_file_cannot_hold_are_refused(real, tmp_path):
    # A 4 KB file whose weights member claims 2 GB compressed and 4 GB inflated: its
    # config's 2 GiB Dense kernel was allowed, and the process crashed building it.
    members = {**real[1], "model.weights.h5": b"x" * 100}
    packed = _pack(tmp_path / "forged.keras", members)
    forged = forged_zip_sizes(packed, "model.weights.h5", 0x7FFFFFF0, 0xFFFFFFF0)
    with pytest.raises(ValueError, match=r"forged.keras' cannot be read.*declare \d+ compressed "):
        _keras_file.load_keras(forged)


def test_variables_past_what_the_weights_hold_are_refused_unallocated(tmp_path):
    # Compiled, so that its config has an optimizer too (which the load leaves out).
    model = small_cnn(4, "compiled")
    model.compile(optimizer="adam", loss="mse")
    model.save(tmp_path / "compiled.keras")
    with zipfile.ZipFile(tmp_path / "compiled.keras") as archive:
        compiled = None, {name: archive.read(name) for name in archive.namelist()}
    # 3 x 10^9 bytes of float32 weights in a 20 KB file: memory this process could get.
    wide = _with_units(compiled, tmp_path / "wide.keras", 15 * 10**7)
    with peak_memory_growth() as grown:
        with pytest.raises(
            ValueError,
            match=r"wide.keras' cannot be read.*asks for 3000000160 bytes of variables, and "
            r"its weights member 'model.weights.h5' holds \d+ bytes",
        ):
            _keras_file.load_keras(wide)
        with keras.StatelessScope():  # would allocate any variable the count left registered
            pass
    assert grown[0] < 500 * 2**20
    # Without a weights member (which Keras looks for after building the model).
    config_only = None, {"config.json": compiled[1]["config.json"]}
    unweighted = _with_units(config_only, tmp_path / "unweighted.keras", 15 * 10**7)
    with pytest.raises(ValueError, match="unweighted.keras' cannot.*'model.weights.h5' holds 0 b"):
        _keras_file.load_keras(unweighted)


def test_a_files_compile_config_is_not_read(tmp_path):
    # Its optimizer and metrics were built before any weight was read, and were never
    # counted: Adam with amsgrad, EMA and gradient accumulation makes five copies of the
    # trainable variables, an AUC of 10^7 thresholds a 10^7-item list and 160 MB.
    model = small_cnn(4, "compiled")
    optimizer = keras.optimizers.Adam(amsgrad=True, use_ema=True, gradient_accumulation_steps=2)
    model.compile(optimizer, "mse", metrics=[keras.metrics.AUC(num_thresholds=10**7)])
    path = tmp_path / "compiled.keras"
    model.save(path)
    with peak_memory_growth() as grown:
        loaded = _keras_file.load_keras(path)
    assert grown[0] < 100 * 2**20
    assert not loaded.compiled
    for got, want in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(got, want)


def test_a_config_the_count_cannot_build_is_refused_unallocated(real, tmp_path):
    # 400 MB of logits weights, then an output the model does not have: the count
    # failed there and let the file through, and the load made the weights, then failed.
    def edit(config):
        config["config"]["layers"][-1]["config"]["units"] = 25 * 10**6
        config["config"]["output_layers"] = [["logits", 5, 0]]

    path = _with_config(real, tmp_path / "fails_late.keras", edit)
    with peak_memory_growth() as grown:
        with pytest.raises(ValueError, match="fails_late.keras' cannot be read.*IndexError"):
            _keras_file.load_keras(path)
    assert grown[0] < 100 * 2**20


def _stateful_file(path, layer, edit=None):
    """A `.keras` file of a stateful RNN over batches of 2 sequences, its config edited;
    and the model saved."""
    model = keras.Sequential([keras.Input((5, 3), batch_size=2), layer])
    model.save(path)
    if edit is not None:
        with zipfile.ZipFile(path) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        _with_config((None, members), path, edit)
    return path, model


def _batch_size(config, size):
    config["config"]["layers"][0]["config"]["batch_shape"][0] = size
    config["config"]["layers"][1]["build_config"]["input_shape"][0] = size


# Loads each file given in a child process that can map at most 3 GB; prints the errors,
# and how far its peak memory grew.
_LOAD_CAPPED = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))
from tfkd.pipeline import _keras_file
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
errors = []
for path in sys.argv[1:]:
    try:
        _keras_file.load_keras(path)
    except ValueError as error:
        errors.append(str(error))
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
print(json.dumps([errors, grown]))
"""


def test_a_stateful_rnns_state_is_counted(tmp_path):
    # A stateful RNN's state is made from a value, which the count's stateless scope
    # refuses: it was let through uncounted, and the load made what the config asked.
    # 160 MB of state (10^7 sequences a batch), and 400 MB of LSTM weights, in 2 KB files.
    batch, _ = _stateful_file(
        tmp_path / "batch.keras",
        keras.layers.SimpleRNN(4, stateful=True),
        lambda c: _batch_size(c, 10**7),
    )
    units, _ = _stateful_file(
        tmp_path / "units.keras",
        keras.layers.GRU(4, stateful=True),
        lambda c: c["config"]["layers"][1]["config"].update(units=5000),
    )
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_CAPPED, str(batch), str(units)],
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    errors, grown = json.loads(result.stdout.strip().splitlines()[-1])
    weights = 4 * (3 * 4 + 4 * 4 + 4)  # SimpleRNN(4) on 3 features
    assert errors[0].startswith(
        f"{str(batch)!r} cannot be read as a Keras model (a `.keras` file): ValueError: its "
        f"config asks for {weights + 10**7 * 4 * 4} bytes of variables"
    )
    weights = 4 * (3 + 5000 + 2) * 3 * 5000  # GRU(5000): kernels and two biases
    assert "units.keras' cannot be read as a Keras model" in errors[1]
    assert f"asks for {weights + 2 * 5000 * 4} bytes of variables" in errors[1]
    assert grown < 100 * 2**20  # neither was made
    # Small stateful models load as before.
    x = np.random.default_rng(0).random((2, 5, 3), dtype=np.float32)
    for name, layer in {
        "lstm": keras.layers.LSTM(4, stateful=True),
        "bidirectional": keras.layers.Bidirectional(keras.layers.SimpleRNN(4, stateful=True)),
    }.items():
        path, model = _stateful_file(tmp_path / f"{name}.keras", layer)
        np.testing.assert_allclose(_keras_file.load_keras(path)(x), model(x), rtol=1e-6)
    # The state: 2 sequences x 4 units x 4 bytes (an LSTM has two: hidden and carry).
    config = zipfile.ZipFile(tmp_path / "lstm.keras").read("config.json")
    assert _keras_file._variable_bytes(config) == 4 * (3 * 16 + 4 * 16 + 16) + 2 * 2 * 4 * 4


def test_corrupt_weights_and_zips_name_the_file(real, tmp_path):
    members = dict(real[1])
    weights = members["model.weights.h5"]
    cut = _pack(
        tmp_path / "cut.keras", {**members, "model.weights.h5": weights[: len(weights) // 2]}
    )
    with pytest.raises(ValueError, match="cut.keras' cannot be read as a Keras model"):
        _keras_file.load_keras(cut)
    flipped = bytearray(real[0].read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF  # inside the weights: the zip's CRC-32 catches it
    (tmp_path / "flipped.keras").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="flipped.keras' cannot be read.*BadZipFile"):
        _keras_file.load_keras(tmp_path / "flipped.keras")
    # An output that names a node the layer does not have (Keras: IndexError).
    edit = lambda c: c["config"].__setitem__("output_layers", [["logits", 5, 0]])  # noqa: E731
    nodes = _with_config(real, tmp_path / "nodes.keras", edit)
    with pytest.raises(ValueError, match="nodes.keras' cannot be read.*IndexError"):
        _keras_file.load_keras(nodes)
    no_config = _pack(tmp_path / "no_config.keras", {"model.weights.h5": weights})
    with pytest.raises(ValueError, match="no_config.keras' cannot be read.*KeyError"):
        _keras_file.load_keras(no_config)


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


def test_a_run_loads_a_file_once_for_its_checks_and_counts_it_once(tmp_path, monkeypatch):
    # The load stage's check, the QAT stage's check of the model it receives, and the
    # load stage's run each loaded the file and counted its variables.
    path = tmp_path / "teacher.keras"
    small_cnn(4, "teacher").save(path)
    loads, counts = [], []
    load, count = keras.saving.load_model, _keras_file._count_variables
    monkeypatch.setattr(
        keras.saving, "load_model", lambda *a, **k: loads.append(1) or load(*a, **k)
    )
    monkeypatch.setattr(_keras_file, "_count_variables", lambda c: counts.append(1) or count(c))
    x = np.random.default_rng(0).random((64, 8, 8, 1), dtype=np.float32)
    data = Data(x, np.arange(64) % 3, x[:16], np.arange(16) % 3)
    stages = [Load(str(path), name="teacher"), tfkd.pipeline.get_stage("quantize_aware")(epochs=1)]
    tfkd.Pipeline(stages).execute(data, tmp_path / "run", verbose=0, log=lambda _: None)
    assert (len(loads), len(counts)) == (2, 1)  # the checks' model, and the stage's own
