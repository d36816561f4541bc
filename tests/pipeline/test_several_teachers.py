"""`teacher: [a, b]` on the distilling stages: each teacher's outputs computed once, joined as
`tfkd.distill.teacher_ensemble` joins them (the softened average at the stage's temperature)."""

import pathlib

import keras
import numpy as np
import pytest

import tfkd
from tfkd.pipeline import Data, Distill, Load, Prune, QuantizeAware, Train

REPO = pathlib.Path(__file__).resolve().parents[2]
TEACHER = REPO / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
STUDENT = {"architecture": "cnn", "filters": [8, 16], "dense_units": 16}


def _softened_average(logits, temperature):
    """numpy: T * log(mean_i softmax(z_i / T))."""
    probabilities = []
    for z in logits:
        e = np.exp(z / temperature - np.max(z / temperature, axis=-1, keepdims=True))
        probabilities.append(e / e.sum(-1, keepdims=True))
    return temperature * np.log(np.mean(probabilities, axis=0))


@pytest.fixture(scope="module")
def data():
    return Data.load("fashion_mnist", train_size=256, test_size=128)


def test_two_teachers_teach_their_softened_average(data, tmp_path, packed_outputs):
    packed = packed_outputs
    stages = [
        Load(TEACHER, name="teacher"),
        Train(STUDENT, epochs=2, batch_size=32, name="scratch"),
        Distill(
            ["teacher", "scratch"], student=STUDENT, epochs=1, temperature=2.0, name="distilled"
        ),
        Prune(teacher=["teacher", "scratch"], epochs=1, temperature=2.0, name="pruned"),
    ]
    lines = []
    report = tfkd.Pipeline(stages).execute(
        data, tmp_path, tensorboard=False, verbose=0, log=lines.append
    )
    assert [row["name"] for row in report.rows] == ["teacher", "scratch", "distilled", "pruned"]
    # Each teacher's outputs computed once for both stages.
    for name in ("teacher", "scratch"):
        assert sum(f"computing {name}'s outputs" in line for line in lines) == 1
    logits = [
        keras.saving.load_model(tmp_path / "stages" / name / "model.keras").predict(
            data.x_train, verbose=0
        )
        for name in ("teacher", "scratch")
    ]
    expected = _softened_average(logits, 2.0)
    assert len(packed) == 2
    for outputs in packed:
        np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4)
    # The ensemble is not the first teacher alone.
    assert np.abs(expected - logits[0]).max() > 0.1


def test_a_teacher_list_is_checked_when_the_stage_is_made():
    for teacher, message in (
        (["teacher"], "a list of two or more distinct names"),
        (["teacher", "teacher"], "a list of two or more distinct names"),
        (["teacher", 3], "a list of two or more distinct names"),
    ):
        with pytest.raises(ValueError, match=message) as error:
            Distill(teacher)
        assert f"teacher={teacher!r}" in str(error.value)
    with pytest.raises(ValueError, match="no layer 'conv3_relu' to read"):
        Distill(
            ["a", "b"],
            method="feature",
            method_arguments={"teacher_layer_name": "conv3_relu", "student_layer_name": "conv2"},
        )
    with pytest.raises(TypeError, match="`teacher` must be the name of an earlier stage"):
        QuantizeAware(teacher={"name": "a"})


def test_tfkd_check_names_a_listed_teacher_that_is_not_an_earlier_stage(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "data: {name: fashion_mnist, train_size: 64, test_size: 64}\n"
        "stages:\n"
        f"  - {{stage: load, name: teacher, path: {TEACHER}}}\n"
        "  - {stage: distill, teacher: [teacher, later], name: distilled}\n"
        "  - {stage: train, name: later}\n"
    )
    errors = tfkd.pipeline.config.check_config(path)
    assert len(errors) == 1 and "stages[1].teacher" in str(errors[0])
    assert "'later'" in str(errors[0])
    # The stage itself in its list: blamed on `teacher` (before: on `name`, the first key
    # whose value was the missing stage's name).
    path.write_text(path.read_text().replace("[teacher, later]", "[teacher, distilled]"))
    (error,) = tfkd.pipeline.config.check_config(path)
    assert "stages[1].teacher:" in error and "Received: teacher='distilled'" in error


def test_teacher_outputs_run_through_litert_or_fall_back_to_keras(data, tmp_path, monkeypatch):
    """On TensorFlow, a teacher's cached outputs come from its float32 `.tflite` (LiteRT);
    a teacher that does not convert is run by Keras instead, and the run says so."""
    teacher_cache = tfkd.distill.teacher_cache
    original, calls, packed = teacher_cache.litert_outputs, [], []

    def counted(model, x, verbose=0):
        calls.append(len(x))
        return original(model, x, verbose)

    def unconvertible(model, x, verbose=0):
        raise ValueError("op FancyOp is not supported\nthe converter's details")

    def spy(x, outputs):
        packed.append(outputs["output"])
        return tfkd.distill.teacher_cache.with_teacher_outputs(x, outputs)

    monkeypatch.setattr(tfkd.distill, "with_teacher_outputs", spy)
    expected = keras.saving.load_model(TEACHER).predict(data.x_train, verbose=0)
    on_tensorflow = keras.backend.backend() == "tensorflow"
    for run, litert in (("litert", counted), ("fallback", unconvertible)):
        monkeypatch.setattr(teacher_cache, "litert_outputs", litert)
        stages = [
            Load(TEACHER, name="teacher"),
            Distill("teacher", student=STUDENT, epochs=1, name="distilled"),
        ]
        lines = []
        tfkd.Pipeline(stages).execute(
            data, tmp_path / run, tensorboard=False, verbose=0, log=lines.append
        )
        np.testing.assert_allclose(packed[-1], expected, rtol=1e-4, atol=1e-4)
        fell_back = [line for line in lines if "through LiteRT failed" in line]
        if run == "litert":
            assert calls == ([len(data.x_train)] if on_tensorflow else []) and not fell_back
        else:
            assert len(fell_back) == on_tensorflow
    if on_tensorflow:
        assert fell_back[0].strip() == (
            "teacher through LiteRT failed (op FancyOp is not supported); using Keras"
        )
