"""`Distiller.predict_teacher(cache=...)`: computed once, reused, recomputed on any change."""

import io
import zipfile

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import small_cnn


def _must_not_run(*args, **kwargs):
    raise AssertionError("the teacher ran although its outputs are cached")


@pytest.fixture
def setup():
    x = np.random.RandomState(0).rand(40, 8, 8, 1).astype("float32")
    teacher = small_cnn(8, "teacher")
    distiller = tfkd.Distiller(teacher, small_cnn(4, "student"))
    return distiller, teacher, x


def test_second_call_reads_the_file_and_matches(setup, tmp_path, monkeypatch):
    distiller, teacher, x = setup
    path = tmp_path / "cache" / "teacher.npz"
    first = distiller.predict_teacher(x, cache=path)
    np.testing.assert_allclose(first["output"], teacher.predict(x, verbose=0), atol=1e-6)
    assert path.is_file()

    monkeypatch.setattr(distiller._teacher_taps, "predict", _must_not_run)
    second = distiller.predict_teacher(x, cache=path)
    np.testing.assert_array_equal(second["output"], first["output"])


def test_changed_inputs_weights_or_a_broken_file_recompute(setup, tmp_path):
    distiller, teacher, x = setup
    path = tmp_path / "teacher.npz"
    distiller.predict_teacher(x, cache=path)
    other = distiller.predict_teacher(x[:10] + 1.0, cache=path)
    np.testing.assert_allclose(other["output"], teacher.predict(x[:10] + 1.0, verbose=0), atol=1e-6)
    teacher.layers[-1].kernel.assign(teacher.layers[-1].kernel * 2.0)
    changed = distiller.predict_teacher(x[:10] + 1.0, cache=path)
    assert not np.allclose(changed["output"], other["output"])
    path.write_bytes(b"not an npz")
    np.testing.assert_allclose(
        distiller.predict_teacher(x, cache=path)["output"], teacher.predict(x, verbose=0), atol=1e-6
    )


def test_cached_outputs_train_like_live_ones(setup, tmp_path):
    distiller, _, x = setup
    y = np.arange(40) % 3
    cached = distiller.predict_teacher(x, cache=tmp_path / "t.npz")
    distiller.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = distiller.fit(tfkd.distill.with_teacher_outputs(x, cached), y, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_rejects_a_dataset_or_bad_path(setup):
    distiller, _, x = setup
    with pytest.raises(TypeError, match="cache="):
        distiller.predict_teacher(x, cache=3)


def _rescaling_teacher(scale):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Rescaling(scale, name="preprocess"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, kernel_initializer="ones", name="logits"),
        ],
        name="teacher",
    )


def test_a_changed_layer_without_weights_recomputes(tmp_path):
    # Issue 16.4: the key held the weights and inputs, not the architecture, so a
    # changed preprocessing layer (no weights) reused the old teacher's outputs.
    x = np.random.RandomState(0).rand(40, 8, 8, 1).astype("float32")
    path = tmp_path / "teacher.npz"
    old = tfkd.Distiller(_rescaling_teacher(1 / 255), small_cnn(4, "student"))
    old.predict_teacher(x, cache=path)
    teacher = _rescaling_teacher(2.0)
    new = tfkd.Distiller(teacher, small_cnn(4, "student")).predict_teacher(x, cache=path)
    np.testing.assert_allclose(new["output"], teacher.predict(x, verbose=0), rtol=1e-5)


@pytest.mark.parametrize("damage", ["rows", "nan", "integers"])
def test_a_file_with_the_right_key_but_bad_contents_recomputes(setup, tmp_path, damage):
    distiller, teacher, x = setup
    path = tmp_path / "teacher.npz"
    distiller.predict_teacher(x, cache=path)
    with np.load(path) as stored:
        stored = dict(stored)
    output = stored["output"]
    stored["output"] = {
        "rows": output[:-1],
        "nan": np.where(np.arange(len(output))[:, None] == 3, np.nan, output),
        "integers": np.zeros(output.shape, "int32"),
    }[damage]
    np.savez(path, **stored)
    np.testing.assert_allclose(
        distiller.predict_teacher(x, cache=path)["output"], teacher.predict(x, verbose=0), atol=1e-6
    )


def test_a_file_whose_header_declares_terabytes_recomputes(setup, tmp_path):
    # Before: np.load allocated what the header declared (a MemoryError, not caught).
    distiller, teacher, x = setup
    path = tmp_path / "teacher.npz"
    distiller.predict_teacher(x, cache=path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = io.BytesIO()
    shape = (len(x), 10**12)
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    members["output.npy"] = header.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    np.testing.assert_allclose(
        distiller.predict_teacher(x, cache=path)["output"], teacher.predict(x, verbose=0), atol=1e-6
    )


def test_teacher_outputs_without_a_distiller_share_its_file(setup, tmp_path, monkeypatch):
    distiller, teacher, x = setup
    path = tmp_path / "teacher.npz"
    alone = tfkd.distill.teacher_outputs(teacher, x, cache=path)
    np.testing.assert_allclose(alone["output"], teacher.predict(x, verbose=0), atol=1e-6)

    monkeypatch.setattr(distiller._teacher_taps, "predict", _must_not_run)
    np.testing.assert_array_equal(
        distiller.predict_teacher(x, cache=path)["output"], alone["output"]
    )


def test_teacher_outputs_read_layers_and_build_a_sequential_never_called(setup):
    _, teacher, x = setup
    features = teacher.layers[-2].name
    both = tfkd.distill.teacher_outputs(teacher, x, layers=[features])
    reader = keras.Model(teacher.inputs, teacher.layers[-2].output)
    np.testing.assert_allclose(both[f"layer:{features}"], reader.predict(x, verbose=0), atol=1e-6)
    never_called = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(3)])
    outputs = tfkd.distill.teacher_outputs(never_called, x)
    assert outputs["output"].shape == (40, 3)
    np.testing.assert_allclose(outputs["output"], never_called.predict(x, verbose=0), atol=1e-6)


def _count_litert_runs(monkeypatch):
    """Counts `TFLiteModel.predict` calls (how `runtime="litert"` runs the teacher)."""
    runs = []
    original = tfkd.export.TFLiteModel.predict

    def counted(self, x, *args, **kwargs):
        runs.append(len(x))
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(tfkd.export.TFLiteModel, "predict", counted)
    return runs


# Heavy: its time on JAX and PyTorch is the TensorFlow export subprocess's.
@pytest.mark.heavy
def test_litert_runtime_matches_keras_and_shares_the_file(setup, tmp_path, monkeypatch):
    distiller, teacher, x = setup
    runs = _count_litert_runs(monkeypatch)
    path = tmp_path / "teacher.npz"
    through_litert = tfkd.distill.teacher_outputs(teacher, x, cache=path, runtime="litert")
    assert runs == [len(x)]
    expected = teacher.predict(x, verbose=0)
    np.testing.assert_allclose(through_litert["output"], expected, atol=1e-5)
    from_distiller = distiller.predict_teacher(x[:10], runtime="litert")
    assert runs == [len(x), 10]
    np.testing.assert_allclose(from_distiller["output"], expected[:10], atol=1e-5)

    # The file is the one Keras would have written: the Distiller reads it as its own.
    monkeypatch.setattr(distiller._teacher_taps, "predict", _must_not_run)
    np.testing.assert_array_equal(
        distiller.predict_teacher(x, cache=path)["output"], through_litert["output"]
    )


# On TensorFlow only: an export subprocess, 31 s on JAX and 15 on PyTorch; the LiteRT
# runtime stays on every backend through the test above.
@pytest.mark.heavy
def test_litert_runtime_builds_a_sequential_never_called(setup, monkeypatch):
    _, _, x = setup
    runs = _count_litert_runs(monkeypatch)
    never_called = keras.Sequential(
        [
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    outputs = tfkd.distill.teacher_outputs(never_called, x, runtime="litert")
    assert runs == [len(x)] and outputs["output"].shape == (40, 3)
    np.testing.assert_allclose(outputs["output"], never_called.predict(x, verbose=0), atol=1e-5)
    # Through a Distiller whose teacher is a Sequential never called (built on the student's
    # input shape).
    teacher = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(3)])
    distilled = tfkd.Distiller(teacher, small_cnn(4, "student")).predict_teacher(
        x, runtime="litert"
    )
    assert runs == [len(x), len(x)]
    np.testing.assert_allclose(distilled["output"], teacher.predict(x, verbose=0), atol=1e-5)


@pytest.mark.heavy  # on TensorFlow only: an export subprocess: 16 s on JAX
def test_litert_runtime_rejects_what_it_cannot_compute(setup):
    distiller, teacher, x = setup
    with pytest.raises(ValueError, match=r"`runtime` must be one of .*runtime='onnx'"):
        tfkd.distill.teacher_outputs(teacher, x, runtime="onnx")
    with pytest.raises(ValueError, match=r"`runtime` must be one of .*runtime='onnx'"):
        distiller.predict_teacher(x, runtime="onnx")
    # A Distiller whose loss reads a teacher layer needs it, which LiteRT does not give.
    with_features = tfkd.Distiller(
        teacher,
        small_cnn(4, "student"),
        distillation_losses=[tfkd.FeatureDistillation("features", "features")],
    )
    with pytest.raises(ValueError, match=r"final output .*layers=\['features'\]"):
        with_features.predict_teacher(x, runtime="litert")
    with pytest.raises(ValueError, match=r"final output .*layers=\['features'\]"):
        tfkd.distill.teacher_outputs(teacher, x, layers=["features"], runtime="litert")
    with pytest.raises(ValueError, match="x of type dict"):
        tfkd.distill.teacher_outputs(teacher, {"image": x}, runtime="litert")
    inputs = keras.Input((8, 8, 1))
    features = keras.layers.GlobalAveragePooling2D()(inputs)
    two_heads = keras.Model(
        inputs, [keras.layers.Dense(3)(features), keras.layers.Dense(2)(features)]
    )
    with pytest.raises(ValueError, match="one output; this one has 2"):
        tfkd.distill.teacher_outputs(two_heads, x, runtime="litert")
