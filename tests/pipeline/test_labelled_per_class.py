"""`data: {labelled_per_class: N}`: every image kept, N labels a class (seeded, stratified);
stages without a teacher train on those, stages with one on every image."""

import json
import pathlib
import textwrap

import keras
import numpy as np
import pytest

import tfkd
from tfkd.pipeline import ConfigError, Data, Distill, Load, Prune, Train, Transfer, run_config
from tfkd.pipeline.config import check_config

REPO = pathlib.Path(__file__).resolve().parents[2]
TEACHER = REPO / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
STUDENT = {"architecture": "cnn", "filters": [8, 16]}


@pytest.fixture(scope="module")
def data():
    return Data.load("fashion_mnist", train_size=400, test_size=100, labelled_per_class=3)


def _write(tmp_path, data_line):
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        f"data: {data_line}\nstages:\n"
        "  - {stage: train, model: {architecture: cnn}, epochs: 1}\n"
    )
    return path


def test_exactly_n_labels_a_class_drawn_with_the_seed(data):
    hidden = data.with_labels_hidden(seed=0)
    kept = hidden.y_train != tfkd.distill.UNLABELED
    assert np.array_equal(np.bincount(hidden.y_train[kept], minlength=10), [3] * 10)
    assert np.array_equal(hidden.y_train[kept], data.y_train[kept])  # the true labels
    assert np.array_equal(hidden.x_train, data.x_train) and len(hidden.y_train) == 400
    assert np.array_equal(hidden.y_test, data.y_test)  # the test split keeps every label
    again = data.with_labels_hidden(seed=0)
    assert np.array_equal(again.y_train, hidden.y_train)
    other = data.with_labels_hidden(seed=1)
    assert not np.array_equal(other.y_train, hidden.y_train)
    assert np.array_equal(np.bincount(other.y_train[other.y_train >= 0]), [3] * 10)
    # a stage reruns when the labels it sees change
    more = data.subset(labelled_per_class=4).with_labels_hidden(seed=0)
    fingerprints = {hidden.fingerprint, other.fingerprint, more.fingerprint, data.fingerprint}
    assert len(fingerprints) == 4
    assert hidden.describe()["labelled_examples"] == 30
    assert hidden.describe()["labelled_per_class"] == 3


def test_the_pipeline_constant_is_the_distillers():
    from tfkd.pipeline import data as data_module

    # Written out there because reading a config imports no Keras.
    assert data_module.UNLABELED == tfkd.distill.UNLABELED


def test_bad_n_is_a_config_error_listed_by_check(tmp_path):
    for value, expected in (
        ("0", "`labelled_per_class` must be a positive integer"),
        ("2.5", "`labelled_per_class` must be a positive integer"),
        ("true", "`labelled_per_class` must be a positive integer"),
        ("'ten'", "`labelled_per_class` must be a positive integer"),
    ):
        errors = check_config(
            _write(tmp_path, f"{{name: fashion_mnist, labelled_per_class: {value}}}")
        )
        assert len(errors) == 1 and ":1: data.labelled_per_class: " in errors[0], errors
        assert expected in errors[0] and "Received: labelled_per_class=" in errors[0]
    errors = check_config(
        _write(tmp_path, "{name: fashion_mnist, train_size: 100, labelled_per_class: 11}")
    )
    assert "data.labelled_per_class: `labelled_per_class` asks for more labels" in errors[0]
    assert "11 per class x 10 classes > 100" in errors[0] and "Use at most 10" in errors[0]


def test_a_class_with_fewer_than_n_examples_fails_before_any_stage(tmp_path):
    # 100 examples, 10 per class on average, some classes fewer: only the data tells.
    path = _write(tmp_path, "{name: fashion_mnist, train_size: 100, labelled_per_class: 9}")
    assert check_config(path) == []
    with pytest.raises(ConfigError) as info:
        run_config(path, tmp_path / "out", tensorboard=False, log=lambda _: None)
    message = str(info.value)
    assert message.startswith(f"{path}:1: data.labelled_per_class: `labelled_per_class` exceeds")
    assert "Received: labelled_per_class=9" in message
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="exceeds the training examples of"):
        Data.load("fashion_mnist", train_size=100, labelled_per_class=9)


def test_quick_takes_the_subset_first_and_lowers_n_when_a_class_is_short():
    data = Data.load("fashion_mnist", labelled_per_class=150)
    quick = data.quick().with_labels_hidden(seed=0)
    assert len(quick.y_train) == 2000
    assert np.array_equal(np.bincount(quick.y_train[quick.y_train >= 0]), [150] * 10)
    assert quick.notes == []
    quick = Data.load("fashion_mnist", labelled_per_class=1000).quick()
    fewest = int(np.bincount(quick.y_train).min())
    assert quick.labelled_per_class == fewest < 1000
    assert quick.notes == [
        f"quick run: labelled_per_class=1000 lowered to {fewest}, the fewest examples of a "
        "class among the quick run's 2,000"
    ]
    assert tfkd.pipeline.Report([], quick.describe()).notes == [f"data: {quick.notes[0]}"]


def test_quick_with_a_class_missing_from_its_subset_leaves_it_out_and_says_so(tmp_path):
    # Class 1 comes after the quick run's first 2,000 examples (data stored class by class):
    # before, n was lowered to 0 and refused as "must be a positive integer ... Received:
    # labelled_per_class=0", which the user never wrote.
    y_train = np.concatenate([np.arange(2000) % 2 * 2, [1] * 50])
    x_train = np.zeros((len(y_train), 8, 8), "uint8")
    np.savez(
        tmp_path / "late.npz",
        x_train=x_train,
        y_train=y_train,
        x_test=x_train[-6:],
        y_test=np.arange(6) % 3,
    )
    quick = Data.load(npz=tmp_path / "late.npz", labelled_per_class=5).quick()
    hidden = quick.with_labels_hidden().y_train
    kept = hidden[hidden != -1]
    assert sorted(np.bincount(kept, minlength=3).tolist()) == [0, 5, 5]
    assert any("no training example of class(es) [1]" in note for note in quick.notes)
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "data: {npz: late.npz, labelled_per_class: 5}\nstages:\n"
        "  - {stage: train, model: {architecture: cnn, filters: [4]}, epochs: 1}\n"
    )
    report = run_config(path, tmp_path / "out", quick=True, tensorboard=False, log=lambda _: None)
    assert "no training example of class(es) [1]" in report.markdown()


def test_data_without_a_training_label_is_refused_where_labels_are_needed(tmp_path):
    full = Data.load("fashion_mnist", train_size=256, test_size=64)
    unlabelled = np.full_like(full.y_train, -1)
    with pytest.raises(ValueError, match="the training data have no label .all 256") as info:
        Data(full.x_train, unlabelled, full.x_test, full.y_test, labelled_per_class=5)
    assert info.value.argument == "labelled_per_class"
    data = Data(full.x_train, unlabelled, full.x_test, full.y_test, num_classes=10)
    stages = [
        Load(TEACHER, name="teacher"),
        Distill("teacher", student=STUDENT, epochs=1),  # reads every example: fine
        Train(epochs=1, name="labels_only"),
    ]
    with pytest.raises(ValueError, match="trains on the labelled training examples, and") as e:
        tfkd.Pipeline(stages).execute(data, tmp_path, tensorboard=False, log=lambda _: None)
    assert (e.value.stage, e.value.argument) == ("labels_only", "data")
    assert not (tmp_path / "stages").exists()  # before: it trained on 0 examples
    # No epoch reads no example: one-shot clustering needs no label.
    tfkd.pipeline.Cluster(clusters=4, epochs=0)._check_before_run(data)
    with pytest.raises(ValueError, match="trains on the labelled training examples"):
        tfkd.pipeline.Cluster(clusters=4, epochs=1)._check_before_run(data)


def test_stages_without_a_teacher_train_on_the_labels_with_one_on_every_image(data, tmp_path):
    stages = [
        Load(TEACHER, name="teacher"),
        Train(STUDENT, epochs=1, batch_size=16, name="scratch"),
        Distill("teacher", student=STUDENT, epochs=1, batch_size=64, name="distilled"),
        Prune(epochs=1, batch_size=16, name="pruned"),  # no teacher: labels only
    ]
    lines = []
    report = tfkd.Pipeline(stages).execute(
        data, tmp_path, tensorboard=False, verbose=0, log=lines.append
    )
    details = {
        name: json.loads((tmp_path / "stages" / name / "entry.json").read_text())["details"]
        for name in ("scratch", "distilled", "pruned")
    }
    assert details["scratch"]["train_examples"] == details["scratch"]["labelled_examples"] == 30
    assert details["pruned"]["train_examples"] == 30
    assert details["distilled"]["train_examples"] == 400
    assert details["distilled"]["labelled_examples"] == 30
    assert np.isfinite(details["distilled"]["student_loss"]).all()
    assert any("computing teacher's outputs on 400 examples" in line for line in lines)
    assert "(400 train (30 labelled) / 100 test)" in lines[0]
    assert "400 training (30 labelled: 3 per class;" in report.markdown()
    assert report.data["labelled_examples"] == 30


def test_transfer_fine_tunes_on_the_labelled_examples(data, tmp_path, monkeypatch):
    seen = {}

    def fine_tune(base, num_classes, train, **kwargs):
        seen["labels"] = train[1]
        model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten()])
        model.add(keras.layers.Dense(num_classes))
        return model, keras.callbacks.History()

    backbone = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(2, 3)])
    backbone.save(tmp_path / "backbone.keras")
    monkeypatch.setattr(tfkd.transfer, "fine_tune", fine_tune)
    stages = [Transfer(str(tmp_path / "backbone.keras"), image_size=32, name="teacher")]
    tfkd.Pipeline(stages).execute(
        data, tmp_path / "run", tensorboard=False, verbose=0, log=lambda _: None
    )
    assert len(seen["labels"]) == 30 and np.all(seen["labels"] >= 0)


def test_the_data_key_is_read_from_a_config(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            data: {name: fashion_mnist, train_size: 300, labelled_per_class: 5}
            stages:
              - {stage: train, model: {architecture: cnn}, epochs: 1}
            """
        )
    )
    config = tfkd.pipeline.load_config(path)
    assert config.data == {"name": "fashion_mnist", "train_size": 300, "labelled_per_class": 5}
