"""Bad configs fail before any work, with the file, line and key in the message."""

import json
import pathlib
import textwrap

import pytest

import tfkd
from tfkd.pipeline import ConfigError, load_config
from tfkd.pipeline.config import check_config
from tfkd.pipeline.pipeline import check_references

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


def test_relative_paths_through_a_linked_folder_are_the_target_folders(tmp_path):
    # `link/../data` is the link target's neighbour; the paths were collapsed as text to
    # `data/`: another file, or none ("File not found").
    import numpy as np

    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "real" / "data").mkdir()
    x, y = np.zeros((4, 8, 8, 1), "float32"), np.array([0, 1, 0, 1])
    np.savez(tmp_path / "real" / "data" / "small.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    (tmp_path / "real" / "sub" / "pipeline.yaml").write_text(
        f"data: {{npz: ../data/small.npz}}\nstages:\n  - {{stage: load, path: {TEACHER}}}\n"
    )
    (tmp_path / "link").symlink_to(tmp_path / "real" / "sub")
    config = load_config(tmp_path / "link" / "pipeline.yaml")
    assert pathlib.Path(config.data["npz"]).samefile(tmp_path / "real" / "data" / "small.npz")
    # A path that does not climb is normalized as before (the stages' digests keep it).
    np.savez(tmp_path / "real" / "sub" / "here.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    (tmp_path / "real" / "sub" / "here.yaml").write_text(
        f"data: {{npz: ./here.npz}}\nstages:\n  - {{stage: load, path: {TEACHER}}}\n"
    )
    config = load_config(tmp_path / "link" / "here.yaml")
    assert config.data["npz"] == str(tmp_path / "link" / "here.npz")


def test_a_bad_model_of_a_first_stage_is_one_error(tmp_path):
    # Before, a second, false one: "needs an incoming model ... Received: model=None".
    text = (
        "data: fashion_mnist\nstages:\n  - {stage: train, model: {architecture: cnn, filters: 8}}\n"
    )
    message = _error(tmp_path, text)
    assert "stages[0].model: `model.filters` must be" in message
    assert "needs an incoming model" not in message


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
    # 400 digits: an OverflowError from math.isfinite, with no file, line or key.
    message = _error(tmp_path, GOOD.replace("epochs: 1", "epochs: 1" + "0" * 400))
    assert "pipeline.yaml:10: stages[1].epochs: `epochs` must be a non-negative integer" in message
    message = _error(tmp_path, GOOD.replace("quantization: int8", "quantization: int4"))
    assert "pipeline.yaml:12: stages[2].quantization: Unknown quantization." in message
    assert "'int8'" in message


def test_every_bad_option_of_a_model_is_listed_at_once(tmp_path):
    # Before: only the first (`tfkd check` promises every config error at once).
    message = _error(
        tmp_path,
        GOOD.replace(
            "{architecture: cnn, filters: [8, 16]}",
            "{architecture: cnn, dense_units: 0, dropout: 1.5, batch_norm: 2, foo: 1}",
        ),
    )
    for part in ("['foo']", "batch_norm=2", "dense_units=0", "dropout=1.5"):
        assert part in message, part
    assert message.count("pipeline.yaml:") == 1  # one error, at the model's line


def test_unknown_and_missing_keys(tmp_path):
    message = _error(tmp_path, GOOD.replace("epochs: 1", "epoch: 1"))
    assert "pipeline.yaml:10: stages[1].epoch: unknown key for stage 'distill'." in message
    assert "'epochs'" in message
    message = _error(tmp_path, GOOD.replace("    teacher: teacher\n", ""))
    assert "stages[1]: missing required key(s) ['teacher'] for stage 'distill'." in message
    message = _error(tmp_path, GOOD.replace("data:", "dataset:"))
    assert "pipeline.yaml:1: dataset: unknown key." in message
    # Each accepted key once (the data's were listed with their aliases' duplicates).
    message = _error(tmp_path, GOOD.replace("data: {", "data: {source: x, ", 1))
    accepted = message.split("data.source: unknown key. Accepted keys: ")[1].split("]")[0]
    names = accepted.strip("[").split(", ")
    assert "'name'" in names and len(names) == len(set(names))


def test_references_must_name_earlier_stages(tmp_path):
    message = _error(tmp_path, GOOD.replace("teacher: teacher", "teacher: techer"))
    assert "pipeline.yaml:8: stages[1].teacher:" in message
    assert "Received: teacher='techer'. Earlier stages: ['teacher']" in message
    message = _error(tmp_path, GOOD.replace("name: distilled", "name: teacher"))
    assert "pipeline.yaml:7: stages[1].name: Two stages are named 'teacher'" in message
    # Two stages of one name: each error at its own stage (before: the first's bad teacher
    # at the second's line and index).
    message = _error(
        tmp_path,
        "data: {name: fashion_mnist}\nstages:\n"
        "  - {stage: train, model: {architecture: cnn}, epochs: 1}\n"
        "  - {stage: distill, teacher: nope, epochs: 1}\n"
        "  - {stage: distill, teacher: train, epochs: 1}\n",
    )
    assert "pipeline.yaml:4: stages[1].teacher: Stage 'distill'" in message
    assert "pipeline.yaml:5: stages[2].name: Two stages are named 'distill'" in message
    assert "stages[2].teacher" not in message


def test_unknown_architecture_and_data_set(tmp_path):
    message = _error(tmp_path, GOOD.replace("architecture: cnn", "architecture: resnet"))
    assert "pipeline.yaml:9: stages[1].student: Unknown architecture." in message
    message = _error(tmp_path, GOOD.replace("name: fashion_mnist", "name: cifar10"))
    assert "pipeline.yaml:1: data.name: Unknown data set. Received: name='cifar10'" in message


def test_code_cannot_run_from_a_config(tmp_path):
    text = GOOD.replace("epochs: 1", "epochs: !!python/object/apply:os.system ['touch x']")
    message = _error(tmp_path, text)
    assert (
        "pipeline.yaml:10: stages[1].epochs: tag 'tag:yaml.org,2002:python/object/apply:os.system'"
        in message
    )
    assert "data only" in message


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
    # An upper-case suffix is JSON too: before, read as YAML, whose tabs it refused.
    message = _error(tmp_path, json.dumps(config, indent="\t"), name="pipeline.JSON")
    assert "pipeline.JSON:12: stages[1].stage: Unknown stage" in message


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="Config file not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "first, key",
    [("{stage: train, epochs: 1}", "stages[0].model"), ("{stage: export}", "stages[0].from_stage")],
)
def test_a_first_stage_that_needs_an_incoming_model_is_a_config_error(first, key, tmp_path):
    path = _write(tmp_path, f"data: fashion_mnist\nstages:\n  - {first}\n")
    (error,) = check_config(path)  # before: accepted, and `tfkd run` failed in the stage
    assert error.startswith(f"{path}:3: {key}: Stage ") and "it comes first" in error
    with pytest.raises(ValueError, match="it comes first: no stage gives it one") as info:
        tfkd.Pipeline([tfkd.pipeline.Train(epochs=1)]).execute("mnist", tmp_path / "out")
    assert (info.value.stage, info.value.argument) == ("train", "model")
    assert not (tmp_path / "out").exists()
    nested = tfkd.Pipeline([tfkd.pipeline.Load(TEACHER, name="teacher"), tfkd.pipeline.Train()])
    check_references(tfkd.Pipeline([nested]))  # a model comes first: fine


def test_a_stage_name_longer_than_100_characters_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at most 100 characters .*of 101 characters") as info:
        tfkd.pipeline.Train(name="s" * 101)  # before: OSError "File name too long" mid-run
    assert info.value.argument == "name"
    assert tfkd.pipeline.Train(name="s" * 100).name == "s" * 100
    text = GOOD.replace("name: distilled", "name: " + "d" * 300)
    assert "stages[1].name: A stage name must be at most 100" in _error(tmp_path, text)


def test_exponent_floats_are_numbers(tmp_path):
    text = GOOD.replace("epochs: 1", "epochs: 1\n    learning_rate: 1e-3\n    temperature: 2E+0")
    distill = load_config(_write(tmp_path, text)).pipeline.stages[1]
    assert distill.learning_rate == 0.001 and distill.temperature == 2.0
    text = "data: fashion_mnist\nstages: [{stage: load, path: %s}, {stage: prune, pattern: 2:4}]\n"
    assert load_config(_write(tmp_path, text % TEACHER)).pipeline.stages[1].pattern == "2:4"


def test_leading_zeros_are_decimal_and_bad_tagged_values_are_config_errors(tmp_path):
    # YAML 1.1 reads `010` as octal 8 and fails on `028`; YAML 1.2 reads both as decimal.
    for written, epochs in (("010", 10), ("028", 28), ("+07", 7)):
        distill = load_config(_write(tmp_path, GOOD.replace("epochs: 1", f"epochs: {written}")))
        assert distill.pipeline.stages[1].epochs == epochs
    # An explicit tag on a value it cannot hold crashed the reader (ValueError, KeyError,
    # IndexError) instead of reporting the key; found by benchmarks/fuzz_inputs.py.
    for value, kind in (("!!int abc", "int"), ("!!bool maybe", "bool"), ("!!float", "float")):
        message = _error(tmp_path, GOOD.replace("epochs: 1", f"epochs: {value}"))
        assert "pipeline.yaml:10: stages[1].epochs:" in message, message
        assert f"cannot be read as the {kind} its tag asks." in message


def test_aliases_and_odd_types_are_config_errors(tmp_path):
    message = _error(tmp_path, "data: &a {name: fashion_mnist, self: *a}\nstages: []\n")
    assert "aliases (*name) are not supported" in message
    message = _error(tmp_path, "name: 123\n" + GOOD)
    assert "pipeline.yaml:1: name: `name` must be a string. Received: 123" in message
    message = _error(tmp_path, GOOD.replace("stage: distill", "stage: [distill]"))
    assert "pipeline.yaml:6: stages[1].stage: `stage` must be a stage name." in message
    message = _error(tmp_path, GOOD.replace("epochs: 1", "epochs: 1\n    learning_rate: .nan"))
    assert "stages[1].learning_rate: `learning_rate` must be a finite number > 0." in message


def test_values_that_fail_only_later_are_caught_now(tmp_path):
    prune = "  - {stage: prune, teacher: teacher, pattern: 4:2}\n"
    message = _error(tmp_path, GOOD.replace("  - stage: export\n", prune + "  - stage: export\n"))
    assert "stages[2].pattern: `pattern` must be 'unstructured' or 'N:M'" in message
    message = _error(tmp_path, GOOD + "    io_dtype: int16\n")
    assert "stages[2].io_dtype: `io_dtype` 'int16' does not go with quantization='int8'" in message
    message = _error(tmp_path, GOOD.replace("filters: [8, 16]", "filters: abc"))
    assert "stages[1].student: `student.filters` must be a non-empty list of positive" in message
    message = _error(tmp_path, GOOD.replace("filters: [8, 16]", "dropout: 7"))
    assert "`student.dropout` must be a number in [0, 1). Received: dropout=7" in message
    transfer = "data: fashion_mnist\nstages:\n  - {stage: transfer, unfreeze: -5}\n"
    message = _error(tmp_path, transfer)
    assert "pipeline.yaml:3: stages[0].unfreeze: `unfreeze` as a number of layers" in message
    message = _error(
        tmp_path, GOOD.replace("name: teacher\n", "name: teacher\n    from_stage: x\n")
    )
    assert "stages[0].from_stage: Stage 'teacher' (load) builds or loads its own model" in message


def test_every_error_is_reported_at_once_without_knock_on_errors(tmp_path):
    text = (
        GOOD.replace("name: fashion_mnist", "name: fashion_mnist, seed: 3")
        .replace("stage: distill", "stage: distil")  # a later stage still names it
        .replace("quantization: int8", "quantization: !!python/name:os.system ''")
        + "  - {stage: prune, from_stage: distilled, target_sparsity: 2, epochs: 1, epochs: 2}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    errors = info.value.errors
    assert [error.split(": ")[1] for error in errors] == [
        "data.seed",
        "stages[1].stage",
        "stages[2].quantization",
        "stages[3].epochs",
        "stages[3].target_sparsity",
    ]
    assert "this key appears twice" in errors[3]
    assert str(info.value) == "\n".join(errors)


@pytest.mark.parametrize("depth", [40, 5000])
@pytest.mark.parametrize("kind", ["yaml flow", "yaml block", "json"])
def test_deep_nesting_is_a_config_error_not_a_recursion_error(tmp_path, kind, depth):
    # Issue 16.3: PyYAML, json and the reader recurse once a level; 5,000 levels
    # raised RecursionError. 40 levels parse, and are refused by the reader.
    if kind == "yaml flow":
        text, name = "data: fashion_mnist\nstages: " + "[" * depth + "]" * depth + "\n", "c.yaml"
    elif kind == "yaml block":
        lines = [" " * level + "- " for level in range(depth)]
        text, name = "data: fashion_mnist\nstages:\n" + "\n".join(lines) + "1\n", "c.yaml"
    else:
        nested = "[" * depth + "]" * depth
        text, name = '{"data": "fashion_mnist", "stages": ' + nested + "}", "c.json"
    message = _error(tmp_path, text, name)
    assert f"{name}:" in message and "nested more than 32 levels deep" in message
    assert len(message) < 2000
    assert check_config(tmp_path / name)


def test_a_control_character_is_a_config_error_at_its_line(tmp_path):
    # Found by benchmarks/fuzz_inputs.py: PyYAML's ReaderError got through as itself.
    message = _error(tmp_path, GOOD.replace("epochs: 1", "epochs: 1\x00"))
    assert "pipeline.yaml:10: invalid YAML: special characters are not allowed" in message
    path = tmp_path / "latin1.yaml"
    path.write_bytes(GOOD.replace("stage: load", "stage: l\xf6ad").encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml:3: the config is not UTF-8 text"):
        load_config(path)


def test_an_application_weights_file_is_read_next_to_the_config_and_its_contents_fingerprinted(
    tmp_path,
):
    (tmp_path / "w.weights.h5").write_bytes(b"first")
    text = """\
        data: {name: fashion_mnist}
        stages:
          - stage: train
            model: {application: MobileNetV3Small, weights: w.weights.h5, image_size: 32}
        """
    stage = load_config(_write(tmp_path, text)).pipeline.stages[0]
    # before: read from the working directory, and a new file of that name reused the stage
    assert stage.model["weights"] == str(tmp_path / "w.weights.h5")
    first = stage.fingerprint()
    (tmp_path / "w.weights.h5").write_bytes(b"second")
    assert stage.fingerprint()["model_weights_sha256"] != first["model_weights_sha256"]
    imagenet = text.replace("w.weights.h5", "imagenet")
    stage = load_config(_write(tmp_path, imagenet)).pipeline.stages[0]
    assert "model_weights_sha256" not in stage.fingerprint()
