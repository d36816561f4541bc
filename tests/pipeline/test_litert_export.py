"""The `export` stage with a LiteRT quantizer recipe (issue 20): from a config, an int4
weight-only file with the first layer kept at int8, its error report beside it."""

import json

import numpy as np
import pytest

import tfkd
from tfkd.pipeline import Export
from tfkd.pipeline.config import ConfigError, load_config, run_config
from tfkd.pipeline.data import spread_rows

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


def _sorted_by_class(x, y, count):
    """Sandals, sneakers and boots as classes 0, 1, 2, stored class by class; class 0's
    images dimmed to a fifth, so that ranges calibrated on it alone clip the others."""
    xs, ys = [], []
    for new, old in enumerate([5, 7, 9]):
        images = x[np.flatnonzero(y == old)[:count]].astype("float32")
        xs.append(np.round(images * (0.2 if new == 0 else 1.0)).astype("uint8"))
        ys.append(np.full(len(images), new))
    return np.concatenate(xs), np.concatenate(ys)


def test_a_split_stored_class_by_class_calibrates_on_every_class(tmp_path, monkeypatch):
    # The export calibrated on the first 500 training images: of class 0 alone here, its
    # int8 file scored 0.3333 (chance) where the float model scored 0.9583, the agreement
    # check passing on the same images. Then, with calibration_samples over 500, the
    # export still read 500 of the rows, sorted: class 0's again.
    given = []
    export = tfkd.export.export_tflite
    monkeypatch.setattr(
        tfkd.export, "export_tflite", lambda *a, **k: given.append(k) or export(*a, **k)
    )
    (x, y), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    x, y = _sorted_by_class(x, y, 400)
    x_test, y_test = _sorted_by_class(x_test, y_test, 100)
    np.savez(tmp_path / "sorted.npz", x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    config = tmp_path / "sorted.yaml"
    config.write_text(
        "data: {npz: sorted.npz}\nstages:\n"
        "  - {stage: train, name: cnn, model: {architecture: cnn, filters: [8, 16],"
        " dense_units: 32}, epochs: 2, batch_size: 64}\n"
        "  - {stage: export, name: int8, quantization: int8, calibration_samples: 900}\n"
    )
    report = run_config(config, tmp_path / "run", tensorboard=False, log=lambda line: None)
    rows = {row["name"]: row for row in report.rows}
    assert rows["cnn"]["accuracy"] > 0.85
    assert rows["int8"]["accuracy"] > rows["cnn"]["accuracy"] - 0.03
    assert "int8: calibration and check inputs: 900 examples drawn from every class" in " ".join(
        report.notes
    )
    label = {image.tobytes(): c for image, c in zip(x[..., None].astype("float32"), y)}
    calibration = given[0]["representative_data"]
    read = [label[np.asarray(image, "float32").tobytes()] for image in calibration]
    assert given[0]["calibration_samples"] == 900 and np.bincount(read).tolist() == [300] * 3
    assert sorted(set(read[:32])) == [0, 1, 2]  # the agreement check's


def test_spread_rows_cover_every_class_and_keep_first_and_last_apart():
    labels = np.repeat([2, 0, 1], [50, 30, 20])
    first, note = spread_rows(labels, 10)
    last, _ = spread_rows(labels, 10, last=True)
    assert np.bincount(labels[first]).tolist() == [3, 2, 5] == np.bincount(labels[last]).tolist()
    assert not set(first) & set(last) and "stored class by class" in note
    mixed = np.tile([0, 1, 2], 10)
    rows, note = spread_rows(mixed, 4)
    assert rows.tolist() == [0, 1, 2, 3] and note is None
    assert spread_rows(mixed, 4, last=True)[0].tolist() == [26, 27, 28, 29]
