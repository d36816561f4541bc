"""`tfkd.export.auto_quantize` (issue 20): the smallest file within an accuracy budget, among
the converter's and the LiteRT quantizer's, measured on held-out Fashion-MNIST images."""

import json

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import random_images, small_cnn, string_op_model
from tfkd.export import auto

TEACHER = "saved_models/fashion_mnist_cnn_teacher/model.keras"
CANDIDATES = ["int4_weight_only", "int4_mixed", "int8", "float16", "float32"]


@pytest.fixture(scope="module")
def teacher():
    (x, y), _ = tfkd.datasets.load("fashion_mnist")
    return keras.saving.load_model(TEACHER), x[-300:], y[-300:], x[:200]


# Slow (`bash scripts/test.sh -m slow`): 30 s in CI; test_litert_export.py runs quantization: auto
# from a config.
@pytest.mark.slow
def test_the_smallest_file_within_the_budget_is_kept(teacher, tmp_path):
    model, x_val, y_val, calibration = teacher
    path = tmp_path / "model.tflite"
    summary = auto.auto_quantize(
        model, path, x_val, y_val, calibration, candidates=CANDIDATES, latency_runs=5
    )
    measured = summary["candidates"]
    assert list(measured) == ["float32", "int4_weight_only", "int4_mixed", "int8", "float16"]
    reference = measured["float32"]["accuracy"]
    assert reference == summary["reference_accuracy"] > 0.9
    for entry in measured.values():
        assert entry["bytes"] > 0 and entry["latency_ms"] > 0
        assert entry["within_budget"] == (entry["accuracy"] >= reference - 0.005 - 1e-9)
    within = {name: entry for name, entry in measured.items() if entry["within_budget"]}
    assert summary["chosen"] == min(within, key=lambda name: within[name]["bytes"])
    assert (
        path.read_bytes()
        == (tmp_path / "model.candidates" / f"{summary['chosen']}.tflite").read_bytes()
    )
    assert json.loads((tmp_path / "model.auto.json").read_text())["chosen"] == summary["chosen"]
    # int4 weights are the smallest; the mixed file keeps a tenth of them at int8.
    assert measured["int4_weight_only"]["bytes"] < measured["int4_mixed"]["bytes"]
    assert measured["int4_mixed"]["bytes"] < measured["int8"]["bytes"]
    # A budget of 100 points takes the smallest file; of 0, none that loses accuracy. The
    # loose call measures the smallest candidate above and the largest, not all five again.
    loose = auto.auto_quantize(
        model,
        tmp_path / "loose.tflite",
        x_val,
        y_val,
        calibration,
        accuracy_budget=100,
        candidates=["int4_weight_only", "float32"],
        latency_runs=5,
    )
    assert loose["chosen"] == min(measured, key=lambda name: measured[name]["bytes"])
    strict = auto.auto_quantize(
        model,
        tmp_path / "strict.tflite",
        x_val,
        y_val,
        calibration,
        accuracy_budget=0,
        candidates=["int4_weight_only", "float32"],
        latency_runs=5,
    )
    if strict["candidates"]["int4_weight_only"]["accuracy"] < reference:
        assert strict["chosen"] == "float32"
    else:
        assert strict["chosen"] == "int4_weight_only"


def test_nan_validation_examples_are_refused_before_any_file_is_made(tmp_path):
    # Before: NaN rows of `x_val` were scored as class 0 in every candidate alike, and one
    # was chosen on them.
    x, y = random_images(16)
    x_val = x.copy()
    x_val[:4] = np.nan
    with pytest.raises(ValueError, match=r"`x_val` holds 256 NaN or infinite values"):
        auto.auto_quantize(
            small_cnn(4, "m"), tmp_path / "m.tflite", x_val, y, x, candidates=["int8"]
        )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("form", ["array", "generator"])
def test_nan_calibration_data_is_refused_before_any_file_is_made(tmp_path, form):
    # Before: every candidate failed on it, the float32 reference too, and the choice
    # ended in a KeyError ('accuracy').
    x, y = random_images(16)
    calibration = x.copy()
    calibration[12, 0, 0, 0] = np.nan
    data = calibration if form == "array" else (calibration[i : i + 8] for i in (0, 8))
    with pytest.raises(ValueError, match=r"`calibration_data` holds 1 NaN or infinite values"):
        auto.auto_quantize(
            small_cnn(4, "m"), tmp_path / "m.tflite", x, y, data, candidates=["int8"]
        )
    assert not list(tmp_path.iterdir())


def test_a_float32_reference_that_cannot_be_made_says_why(tmp_path):
    model = string_op_model()
    x = np.arange(1, 13, dtype="float32").reshape(4, 3)
    # Before: a KeyError ('accuracy') once every candidate was tried.
    with pytest.raises(ValueError, match=r"tf\.(AsString|StringToNumber)"):
        auto.auto_quantize(model, tmp_path / "m.tflite", x, [0, 1, 2, 0], x, candidates=["int8"])


def test_a_generator_of_calibration_batches_calibrates_every_candidate(tmp_path):
    # Before: the float32 reference read the generator's batches, and the int8 candidate
    # found it empty ("`representative_data` is empty").
    x, y = random_images(32)
    batches = (x[start : start + 8] for start in range(0, 32, 8))
    summary = auto.auto_quantize(
        small_cnn(4, "m"), tmp_path / "m.tflite", x, y, batches, candidates=["int8"], latency_runs=1
    )
    assert "error" not in summary["candidates"]["int8"], summary["candidates"]["int8"]
    ops = tfkd.export.ExportReport.from_file(tmp_path / "m.candidates" / "int8.tflite").ops
    assert ops["CONV_2D[int8]"] == 1


def test_misshapen_calibration_data_is_refused_by_its_name_before_any_file_is_made(tmp_path):
    # Before: the float32 reference failed on it, naming `representative_data`, an argument
    # of export_tflite that auto_quantize does not take.
    x, y = random_images(16)
    with pytest.raises(ValueError, match=r"`calibration_data` does not fit model input"):
        auto.auto_quantize(
            small_cnn(4, "m"), tmp_path / "m.tflite", x, y, x[:, :5, :5], candidates=["int8"]
        )
    assert not list(tmp_path.iterdir())
