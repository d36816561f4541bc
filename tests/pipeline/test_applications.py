"""Models from `keras.applications` as pipeline specs (issue 18): built for the data,
trained, exported to int8, and refused early when the spec is wrong."""

import keras
import numpy as np
import pytest

import tfkd
from tfkd.pipeline import ConfigError, Data, Export, Train, load_config
from tfkd.pipeline.architectures import application, check_spec

SMALL = {
    "application": "MobileNetV3Small",
    "weights": None,
    "minimalistic": True,
    "image_size": 32,
    "alpha": 0.75,
}


def test_an_application_spec_builds_a_logits_classifier_for_the_data():
    model = application(SMALL, (28, 28, 1), 10, seed=0)
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)
    assert model.get_layer("logits").activation is keras.activations.linear
    again = application(SMALL, (28, 28, 1), 10, seed=0)
    x = np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), again.predict(x, verbose=0))


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"application": 3}, "must name a keras.applications constructor"),
        ({"application": "MobileNetV3Small", "image_size": 16}, "must be an integer >= 32"),
        ({"application": "MobileNetV3Small", "weights": 1}, "must be null"),
        ({"application": "ResNet", "architecture": "cnn"}, "with one of `architecture`"),
    ],
)
def test_a_bad_application_spec_is_refused_without_keras(spec, message):
    with pytest.raises((TypeError, ValueError), match=message):
        check_spec(spec, "student")


@pytest.mark.slow  # 48-63 s in CI; `bash scripts/test.sh -m slow`. Exporting an application
# to int8 stays in CI through tests/test_model_kinds.py (export_tflite-applications).
def test_an_application_student_trains_and_exports_to_int8(tmp_path):
    data = Data.load("fashion_mnist", train_size=256, test_size=64)
    stages = [
        Train(SMALL, epochs=1, batch_size=64, name="small"),
        Export(quantization="int8", calibration_samples=64, name="int8"),
    ]
    report = tfkd.Pipeline(stages).execute(
        data, tmp_path, tensorboard=False, verbose=0, log=lambda _: None
    )
    small, int8 = report.rows
    assert small["parameters"] == application(SMALL, (28, 28, 1), 10).count_params()
    assert int8["format"] == "tflite" and int8["bytes"] < small["bytes"] / 3
    assert abs(int8["accuracy"] - small["accuracy"]) <= 0.05


def test_arguments_the_constructor_refuses_are_a_config_error_before_any_stage(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "data: {name: fashion_mnist, train_size: 256, test_size: 64}\n"
        "stages:\n"
        "  - {stage: train, name: first, model: {architecture: cnn, filters: [4]}, epochs: 1}\n"
        "  - stage: distill\n"
        "    teacher: first\n"
        "    student: {application: MobileNetV3Small, weights: null, depth: 3}\n"
    )
    assert load_config(config)  # what needs Keras is checked when the run starts
    with pytest.raises(ConfigError, match=r"bad.yaml:6: stages\[1\].student: .*depth"):
        tfkd.pipeline.run_config(config, tmp_path / "run", log=lambda _: None)
    assert not (tmp_path / "run" / "stages" / "first").exists()


def test_weights_that_cannot_be_downloaded_are_refused_naming_them(monkeypatch):
    # Before: `tfkd: error: Exception: URL fetch failure ...`, naming no key.
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example.invalid: no network")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(ValueError, match=r"could not get its 'imagenet' weights.*weights: null"):
        application({**SMALL, "weights": "imagenet", "alpha": 1.0}, (28, 28, 1), 10)
