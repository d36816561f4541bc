"""The `micro` stage: a trained student's int8 file bundled for microcontrollers."""

import json

import pytest

import tfkd
from tfkd.pipeline import Data, Export, Load, Micro, Train

STUDENT = {"architecture": "cnn", "filters": [8, 16]}


@pytest.fixture(scope="module")
def data():
    return Data.load("fashion_mnist", train_size=1024, test_size=200)


def test_micro_stage_writes_the_bundle_after_an_int8_export(data, tmp_path):
    stages = [
        Train(STUDENT, epochs=1, name="student"),
        Export(quantization="int8", name="int8"),
        Micro(c_name="student", samples=100, name="micro"),
    ]
    report = tfkd.Pipeline(stages).execute(data, tmp_path, tensorboard=False, verbose=0)
    rows = {row["name"]: row for row in report.rows}
    folder = tmp_path / "stages" / "micro"
    summary = json.loads((folder / "micro.json").read_text())
    assert summary["agreement"]["samples"] == 100 and summary["agreement"]["top1"] >= 0.99
    assert summary["flash_bytes"] == rows["int8"]["bytes"]
    assert "CONV_2D" in summary["ops"] and summary["arena_bytes"] > summary["measured_arena_bytes"]
    assert {"student_data.cc", "student_data.h", "student_ops.h"} <= {
        p.name for p in folder.iterdir()
    }
    assert rows["micro"]["accuracy"] == rows["int8"]["accuracy"]
    (note,) = [note for note in report.notes if note.startswith("micro: for TFLite Micro")]
    assert f"a tensor arena of {summary['arena_bytes']:,} bytes" in note
    assert "Notes:" in (tmp_path / "report.md").read_text()


def _refused_before_any_stage_runs(stages, data, tmp_path, error=ValueError):
    with pytest.raises(error) as caught:
        tfkd.Pipeline(stages).execute(data, tmp_path, tensorboard=False, verbose=0)
    assert caught.value.stage == "micro"
    assert not (tmp_path / "stages").exists()
    return caught.value


def test_micro_stage_needs_a_tflite_file(data, tmp_path):
    stages = [Train(STUDENT, epochs=1, name="student"), Micro(name="micro")]
    error = _refused_before_any_stage_runs(stages, data, tmp_path)
    assert "needs a .tflite file as input, and the stage before it gives a Keras model" in str(
        error
    )
    assert error.argument == "from_stage"


@pytest.mark.parametrize(
    "export, made",
    [
        ({"quantization": None}, "quantization=None"),
        ({"quantization": "dynamic"}, "quantization='dynamic'"),
        ({"recipe": "int8_weight_only"}, "recipe='int8_weight_only'"),
        # `auto` may keep int4 weights, computed in float: before, refused at `micro`
        # once the export had run.
        ({"quantization": "auto"}, "quantization='auto'"),
    ],
)
def test_micro_stage_refuses_a_float_export_before_any_stage_runs(data, tmp_path, export, made):
    stages = [
        Train(STUDENT, epochs=1, name="student"),
        Export(**export, name="float"),
        Micro(name="micro"),
    ]
    error = _refused_before_any_stage_runs(stages, data, tmp_path)
    assert f"computes in float ({made})" in str(error) and "quantization: int8" in str(error)


def test_micro_stage_refuses_a_loaded_float_file_before_any_stage_runs(data, tmp_path):
    import keras

    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    path = tmp_path / "float.tflite"
    tfkd.export_tflite(model, path)
    stages = [Load(str(path), name="loaded"), Micro(name="micro")]
    error = _refused_before_any_stage_runs(stages, data, tmp_path / "run")
    # Before: found when the stage ran, after the stages before it.
    assert f"Received: {str(path)!r}" in str(error)
    assert "compute in float: ['FULLY_CONNECTED'" in str(error)
    assert error.argument == "from_stage"


def test_micro_stage_without_tflite_micro_is_refused_before_any_stage_runs(
    data, tmp_path, monkeypatch
):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tflite_micro" else find_spec(name, *a),
    )
    stages = [
        Train(STUDENT, epochs=1, name="student"),
        Export(quantization="int8", name="int8"),
        Micro(name="micro"),
    ]
    error = _refused_before_any_stage_runs(stages, data, tmp_path, ImportError)
    assert "pip install tflite-micro" in str(error) and error.argument == "stage"


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"c_name": "my model"}, "c_name"),
        ({"arena_margin": -1}, "arena_margin"),
        ({"arena_limit": 0.5}, "arena_limit"),
        ({"samples": 0}, "samples"),
    ],
)
def test_bad_arguments_name_their_key(kwargs, argument):
    with pytest.raises((TypeError, ValueError), match=argument) as caught:
        Micro(**kwargs)
    assert caught.value.argument == argument
