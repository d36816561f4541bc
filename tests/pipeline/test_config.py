"""Bad configs fail before any work, with the file, line and key in the message."""

import json
import pathlib
import textwrap

import pytest

import tfkd
from tfkd.pipeline import ConfigError, load_config

REPO = pathlib.Path(__file__).resolve().parents[2]
TEACHER = REPO / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"

GOOD = f"""\
data: {{name: fashion_mnist, train_size: 600, test_size: 200}}
stages:
  - stage: load
    name: teacher
    path: {TEACHER}
  - stage: distill
    name: distilled
    teacher: teacher
    student: {{architecture: cnn, filters: [8, 16]}}
    epochs: 1
  - stage: export
    quantization: int8
"""


def _write(tmp_path, text, name="pipeline.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _error(tmp_path, text, name="pipeline.yaml"):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text, name))
    return str(info.value)


def test_good_config_builds_the_pipeline(tmp_path):
    config = load_config(_write(tmp_path, GOOD))
    assert [stage.name for stage in config.pipeline.stages] == ["teacher", "distilled", "export"]
    assert isinstance(config.pipeline.stages[1], tfkd.pipeline.Distill)
    assert config.pipeline.stages[1].student == {"architecture": "cnn", "filters": [8, 16]}
    assert config.data == {"name": "fashion_mnist", "train_size": 600, "test_size": 200}


def test_unknown_stage_lists_the_registered_ones(tmp_path):
    message = _error(tmp_path, GOOD.replace("stage: distill", "stage: distil"))
    assert "pipeline.yaml:6: stages[1].stage:" in message
    assert "Received: stage='distil'" in message and "Did you mean 'distill'?" in message
    assert "'export'" in message and "'quantize_aware'" in message


def test_missing_model_file_points_at_the_path(tmp_path):
    message = _error(tmp_path, GOOD.replace(str(TEACHER), "missing/teacher.keras"))
    assert "pipeline.yaml:5: stages[0].path: Model file not found." in message
    # relative paths are relative to the config file, and the message shows both
    assert str(tmp_path / "missing" / "teacher.keras") in message


def test_wrong_types_point_at_the_key(tmp_path):
    message = _error(tmp_path, GOOD.replace("epochs: 1", "epochs: two"))
    assert "pipeline.yaml:10: stages[1].epochs: expected an integer. Received: 'two' (str)" in (
        message
    )
    message = _error(tmp_path, GOOD.replace("epochs: 1", "epochs: 1.5"))
    assert "stages[1].epochs: expected an integer. Received: 1.5 (float)" in message
    message = _error(tmp_path, GOOD.replace("quantization: int8", "quantization: [int8]"))
    assert "pipeline.yaml:12: stages[2].quantization: expected a string or null" in message


def test_bad_values_point_at_the_key(tmp_path):
    message = _error(tmp_path, GOOD.replace("epochs: 1", "epochs: -3"))
    assert "pipeline.yaml:10: stages[1].epochs: `epochs` must be a non-negative integer" in message
    message = _error(tmp_path, GOOD.replace("quantization: int8", "quantization: int4"))
    assert "pipeline.yaml:12: stages[2].quantization: Unknown quantization." in message
    assert "'int8'" in message


def test_unknown_and_missing_keys(tmp_path):
    message = _error(tmp_path, GOOD.replace("epochs: 1", "epoch: 1"))
    assert "pipeline.yaml:10: stages[1].epoch: unknown key for stage 'distill'." in message
    assert "'epochs'" in message
    message = _error(tmp_path, GOOD.replace("    teacher: teacher\n", ""))
    assert "stages[1]: missing required key(s) ['teacher'] for stage 'distill'." in message
    message = _error(tmp_path, GOOD.replace("data:", "dataset:"))
    assert "pipeline.yaml:1: dataset: unknown key." in message


def test_references_must_name_earlier_stages(tmp_path):
    message = _error(tmp_path, GOOD.replace("teacher: teacher", "teacher: techer"))
    assert "pipeline.yaml:8: stages[1].teacher:" in message
    assert "Received: teacher='techer'. Earlier stages: ['teacher']" in message
    message = _error(tmp_path, GOOD.replace("name: distilled", "name: teacher"))
    assert "pipeline.yaml:7: stages[1].name: Two stages are named 'teacher'" in message


def test_unknown_architecture_and_data_set(tmp_path):
    message = _error(tmp_path, GOOD.replace("architecture: cnn", "architecture: resnet"))
    assert "pipeline.yaml:9: stages[1].student: Unknown architecture." in message
    message = _error(tmp_path, GOOD.replace("name: fashion_mnist", "name: cifar10"))
    assert "pipeline.yaml:1: data.name: Unknown data set. Received: 'cifar10'" in message


def test_code_cannot_run_from_a_config(tmp_path):
    marker = tmp_path / "ran"
    text = GOOD.replace("epochs: 1", f"epochs: !!python/object/apply:os.system ['touch {marker}']")
    message = _error(tmp_path, text)
    assert (
        "pipeline.yaml:10: stages[1].epochs: tag 'tag:yaml.org,2002:python/object/apply:os.system'"
        in message
    )
    assert "data only" in message
    assert not marker.exists()


def test_yaml_and_json_syntax_errors_give_the_line(tmp_path):
    message = _error(tmp_path, GOOD.replace("epochs: 1", "epochs: [1"))
    assert "pipeline.yaml:" in message and "invalid YAML" in message
    config = {"data": {"name": "fashion_mnist"}, "stages": [{"stage": "load", "path": "x"}]}
    text = json.dumps(config, indent=2).replace('"load",', '"load"')
    message = _error(tmp_path, text, name="pipeline.json")
    assert "pipeline.json:8: invalid JSON" in message


def test_json_config_errors_have_lines_too(tmp_path):
    config = {
        "data": {"name": "fashion_mnist"},
        "stages": [{"stage": "load", "name": "teacher", "path": str(TEACHER)}, {"stage": "prun"}],
    }
    message = _error(tmp_path, json.dumps(config, indent=2), name="pipeline.json")
    assert "pipeline.json:12: stages[1].stage: Unknown stage" in message


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="Config file not found"):
        load_config(tmp_path / "nope.yaml")
