"""The `export` stage with a LiteRT quantizer recipe (issue 20): from a config, an int4
weight-only file with the first layer kept at int8, its error report beside it."""

import json

import pytest

import tfkd
from tfkd.pipeline import Export
from tfkd.pipeline.config import ConfigError, load_config, run_config

CONFIG = """\
name: litert
data: {name: fashion_mnist, train_size: 1024, test_size: 200}
stages:
  - {stage: train, name: student, model: {architecture: cnn, filters: [32, 64]}, epochs: 4}
  - stage: export
    name: int4
    recipe: int4_weight_only
    overrides: [{layers: conv1_, recipe: int8_weight_only}]
  - {stage: export, name: int8, from_stage: student, quantization: int8}
  - stage: export
    name: auto
    from_stage: student
    quantization: auto
    accuracy_budget: 1.0
    validation_samples: 300
"""


def test_a_config_exports_with_a_quantizer_recipe(tmp_path):
    config = tmp_path / "litert.yaml"
    config.write_text(CONFIG)
    report = run_config(config, tmp_path / "run", tensorboard=False, log=lambda line: None)
    rows = {row["name"]: row for row in report.rows}
    assert rows["int4"]["format"] == "tflite"
    assert rows["int4"]["bytes"] < 0.7 * rows["int8"]["bytes"]
    assert rows["int8"]["accuracy"] > 0.5
    assert rows["int4"]["accuracy"] > rows["int8"]["accuracy"] - 0.03
    errors = json.loads((tmp_path / "run" / "stages" / "int4" / "model.errors.json").read_text())
    assert errors["recipe"] == "int4_weight_only" and errors["overrides"][0]["layers"] == "conv1_"
    assert errors["outputs"][0]["cosine"] > 0.95
    entry = json.loads((tmp_path / "run" / "stages" / "int4" / "entry.json").read_text())
    assert entry["details"]["quantization"] == "litert_quantizer:int4_weight_only"
    # quantization: auto keeps the smallest candidate within 1 point on held-out examples.
    auto = json.loads((tmp_path / "run" / "stages" / "auto" / "model.auto.json").read_text())
    chosen = auto["candidates"][auto["chosen"]]
    assert auto["validation_examples"] == 300 and chosen["within_budget"]
    assert rows["auto"]["bytes"] == chosen["bytes"] <= rows["int8"]["bytes"]
    assert any(
        note.startswith(f"auto: quantization: auto kept {auto['chosen']} (")
        for note in report.notes
    )


@pytest.mark.parametrize(
    "kwargs, argument, text",
    [
        ({"recipe": "int3"}, "recipe", "recipe='int3'"),
        ({"recipe": "int8_weight_only", "quantization": "int8"}, "recipe", "not both"),
        ({"recipe": "int4_weight_only", "overrides": [{"layers": "("}]}, "overrides", "'('"),
        ({"recipe": "dynamic_int8", "io_dtype": "int8"}, "io_dtype", "io_dtype='int8'"),
        ({"quantization": "auto", "accuracy_budget": -1}, "accuracy_budget", "-1"),
        ({"quantization": "auto", "io_dtype": "int8"}, "quantization", "io_dtype='int8'"),
        ({"quantization": "auto", "validation_samples": 0}, "validation_samples", "0"),
        ({"quantization": "auto", "overrides": []}, "quantization", "overrides=[]"),
        # Read by `auto` only: refused elsewhere rather than ignored.
        ({"quantization": "int8", "accuracy_budget": 2.0}, "accuracy_budget", "auto` only"),
        ({"recipe": "static_int8", "validation_samples": 200}, "validation_samples", "=200"),
    ],
)
def test_bad_recipe_arguments_name_their_key(kwargs, argument, text):
    with pytest.raises((TypeError, ValueError)) as caught:
        Export(**kwargs)
    assert caught.value.argument == argument and text in str(caught.value)


def test_config_errors_point_at_the_recipe(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(CONFIG.replace("recipe: int4_weight_only", "recipe: int5"))
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert "bad.yaml:7: stages[1].recipe: Unknown recipe. Received: recipe='int5'" in str(
        caught.value
    )
    assert tfkd.export.litert_quantize  # the public function the stage uses
