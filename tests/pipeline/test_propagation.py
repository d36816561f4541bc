"""`propagation:` on the distilling stages: the labels spread along a graph of the teacher's
features (`tfkd.distill.propagate_labels`), mixed into its cached outputs."""

import json
import pathlib

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import MODEL_KINDS, kind_input_shape, model_of_kind
from tfkd import _graph
from tfkd.pipeline import Data, Distill, Load, Prune, QuantizeAware
from tfkd.pipeline._distillation import with_propagated
from tfkd.pipeline.config import check_config

REPO = pathlib.Path(__file__).resolve().parents[2]
TEACHER = REPO / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
STUDENT = {"architecture": "cnn", "filters": [8, 16], "dense_units": 16}


@pytest.fixture(scope="module")
def data():
    return Data.load("fashion_mnist", train_size=400, test_size=100, labelled_per_class=5)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_the_loss_reads_exactly_the_mixture_at_the_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (6, 4))
    propagated = _softmax(rng.normal(0, 2, (6, 4)))
    for temperature in (1.0, 2.5):
        for weight in (0.5, 0.2, 1.0):
            expected = (1 - weight) * _softmax(logits / temperature) + weight * propagated
            mixed = with_propagated(logits, propagated, weight, temperature, False)
            np.testing.assert_allclose(_softmax(mixed / temperature), expected, atol=1e-6)
            # A softmax teacher's outputs: the loss reads log(p) as logits.
            probabilities = _softmax(logits)
            mixed = with_propagated(probabilities, propagated, weight, temperature, True)
            expected = (1 - weight) * _softmax(np.log(probabilities) / temperature)
            expected += weight * propagated
            np.testing.assert_allclose(mixed.sum(-1), 1.0, atol=1e-6)
            np.testing.assert_allclose(_softmax(np.log(mixed) / temperature), expected, atol=1e-5)
    # Weight 1: the propagated labels alone.
    alone = with_propagated(logits, propagated, 1.0, 1.0, False)
    np.testing.assert_allclose(_softmax(alone), propagated, atol=1e-6)


def test_settings_are_checked_when_the_stage_is_made():
    assert Distill("teacher", propagation=True).propagation == {
        "weight": 0.5,
        "neighbours": 10,
        "alpha": 0.9,
    }
    assert Distill("teacher", propagation={"weight": 1.0}).propagation["weight"] == 1.0
    assert Distill("teacher", propagation=False).propagation is None
    with pytest.raises(ValueError) as info:
        Distill("teacher", propagation={"weight": 0.0, "alpha": 1.0, "k": 3})
    message = str(info.value)
    assert "Bad `propagation`: unknown `propagation.k`" in message
    assert "`propagation.weight` must be in (0, 1]" in message
    assert "`propagation.alpha` must be in (0, 1)" in message
    assert "Received: propagation={'weight': 0.0, 'alpha': 1.0, 'k': 3}" in message
    with pytest.raises(ValueError, match=r"`propagation.neighbours` must be an integer, not 2.5"):
        Distill("teacher", propagation={"neighbours": 2.5})
    with pytest.raises(TypeError, match="must be true, false or a mapping"):
        Distill("teacher", propagation="yes")
    with pytest.raises(ValueError, match="needs `teacher`. Received: propagation="):
        QuantizeAware(propagation=True)
    with pytest.raises(ValueError, match="`mixup` runs the teacher at every step instead"):
        Prune(teacher="teacher", propagation=True, mixup=0.2)
    with pytest.raises(ValueError, match="Received: augmented_copies=1, propagation=True"):
        Distill("teacher", augmented_copies=1, propagation=True)
    # Off, the key leaves the fingerprint as it was; on, it changes it.
    assert "propagation" not in Distill("teacher").fingerprint()
    assert Distill("teacher", propagation=True).fingerprint()["propagation"] is True


def test_a_config_check_names_a_bad_propagation_and_its_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "data: {name: fashion_mnist, train_size: 200, labelled_per_class: 5}\n"
        "stages:\n"
        f"  - {{stage: load, name: teacher, path: {TEACHER}}}\n"
        "  - stage: distill\n"
        "    teacher: teacher\n"
        "    propagation: {weight: 2.0}\n"
    )
    assert check_config(path) == [
        f"{path}:6: stages[1].propagation: Bad `propagation`: `propagation.weight` must be in "
        "(0, 1]. Received: propagation={'weight': 2.0}"
    ]


def test_every_label_known_is_refused_before_any_stage_runs(tmp_path):
    full = Data.load("fashion_mnist", train_size=200, test_size=50)
    stages = [Load(TEACHER, name="teacher"), Distill("teacher", epochs=1, propagation=True)]
    with pytest.raises(ValueError, match="every one of the 200 training examples has a label"):
        tfkd.Pipeline(stages).execute(full, tmp_path, tensorboard=False, verbose=0)
    assert not (tmp_path / "stages").exists()


def test_more_neighbours_than_examples_are_refused_before_any_stage_runs(data, tmp_path):
    stages = [
        Load(TEACHER, name="teacher"),
        Distill("teacher", epochs=1, propagation={"neighbours": 400}, name="distilled"),
    ]
    with pytest.raises(ValueError, match="must be at most 399 .the 400 training") as info:
        tfkd.Pipeline(stages).execute(data, tmp_path, tensorboard=False, verbose=0)
    assert (info.value.stage, info.value.argument) == ("distilled", "propagation")
    assert not (tmp_path / "stages").exists()  # before: the teacher ran first


# Slow (`bash scripts/test.sh -m slow`): 37 s in CI; the other propagation tests run it in a
# stage.
@pytest.mark.slow
def test_the_stages_distil_from_the_mixture_computed_once(data, tmp_path, packed_outputs):
    packed = packed_outputs
    settings = {"weight": 0.7, "neighbours": 5}
    stages = [
        Load(TEACHER, name="teacher"),
        Distill(
            "teacher",
            student=STUDENT,
            epochs=1,
            batch_size=64,
            temperature=2.0,
            propagation=settings,
            name="distilled",
        ),
        Prune(teacher="teacher", epochs=1, temperature=2.0, propagation=settings, name="pruned"),
    ]
    lines = []
    report = tfkd.Pipeline(stages).execute(
        data, tmp_path, tensorboard=False, verbose=0, log=lines.append
    )
    assert [row["name"] for row in report.rows] == ["teacher", "distilled", "pruned"]
    teacher = keras.saving.load_model(TEACHER)
    features = _graph.head_input_model(teacher).predict(data.x_train, verbose=0)
    assert features.shape == (400, teacher.get_layer("logits").input.shape[-1])
    labels = data.with_labels_hidden(seed=0).y_train  # as the pipeline hides them (seed 0)
    propagated = tfkd.distill.propagate_labels(features, labels, 10, neighbours=5)
    logits = teacher.predict(data.x_train, verbose=0)
    expected = with_propagated(logits, propagated, 0.7, 2.0, False)
    assert len(packed) == 2
    for outputs in packed:
        np.testing.assert_allclose(outputs, expected, rtol=1e-3, atol=1e-3)
    # The labelled examples keep their labels as the propagated part; the mixture is not
    # the teacher's outputs.
    labelled = labels != tfkd.distill.UNLABELED
    assert labelled.sum() == 50
    assert (propagated[labelled].argmax(-1) == labels[labelled]).all()
    assert np.abs(expected - logits).max() > 0.1
    # Features and propagated labels computed once for both stages, and cached.
    assert sum("computing teacher's features on 400 examples" in line for line in lines) == 1
    assert sum("propagating the labels along" in line for line in lines) == 1
    assert any("labels propagated to 350 examples" in line for line in lines)
    assert len(list((tmp_path / "cache").glob("outputs-teacher-*-propagated-5-0.9.npz"))) == 1
    # The report holds the propagation's seconds and what it did: the share of the
    # unlabelled examples whose propagated top class is the teacher's, as numpy finds it.
    agreement = np.mean(propagated[~labelled].argmax(-1) == logits[~labelled].argmax(-1))
    # And the share of the 50 known labels that propagation from the other 4 folds gets right.
    held_out = tfkd.distill.LabelGraph(features, neighbours=5).held_out_labels(
        labels, 10, folds=5, seed=0
    )
    held_out_accuracy = np.mean(held_out[labelled] == labels[labelled])
    assert 0.2 < held_out_accuracy < 1  # 50 labels, 10 classes: neither chance nor a leak
    written = tfkd.pipeline.Report.load(tmp_path)
    distilled, pruned = written.rows[1], written.rows[2]
    parts = distilled["teacher_seconds_by_part"]
    assert set(parts) == {"outputs", "features", "propagation"}
    # Rounded to 0.01 s: propagation took 0.05 s here, under 0.005 s on a faster machine
    # (before: each `> 0`, which would fail there); the outputs and features took 1 s each.
    assert min(parts.values()) >= 0 and sum(parts.values()) > 0
    assert sum(parts.values()) == pytest.approx(distilled["teacher_seconds"], abs=0.02)
    assert "teacher_seconds_by_part" not in pruned and pruned["teacher_seconds"] == 0
    for name in ("distilled", "pruned"):
        entry = json.loads((tmp_path / "stages" / name / "entry.json").read_text())
        done = entry["details"]["propagation"]
        agreed, right = done.pop("teacher_agreement"), done.pop("held_out_accuracy")
        assert done == {"weight": 0.7, "neighbours": 5, "alpha": 0.9, "examples": 350}
        assert agreed == pytest.approx(agreement, abs=1e-4)
        assert right == pytest.approx(held_out_accuracy, abs=1e-4)
        note = (
            f"{name}: labels propagated to 350 examples (weight 0.7, 5 neighbours, alpha 0.9); "
            f"the teacher's top class agrees on {agreement:.1%} of them; propagated from the "
            f"other folds' labels, {held_out_accuracy:.1%} of the known labels are right"
        )
        assert note in written.notes
    # Another stage with another weight, in a later run, reads them from the cache.
    later = Distill("teacher", student=STUDENT, epochs=1, propagation={**settings, "weight": 0.3})
    lines.clear()
    tfkd.Pipeline([stages[0], later]).execute(
        data, tmp_path, tensorboard=False, verbose=0, log=lines.append
    )
    assert not any("computing teacher's features" in line for line in lines)
    assert not any("propagating the labels along" in line for line in lines)
    assert any("labels propagated to 350 examples" in line for line in lines)


def test_one_known_label_propagates_without_a_check_on_the_known_labels(data, tmp_path):
    # Folds need 2 labelled examples; with one, the stage still runs, and says no share.
    y_train = np.full(len(data.y_train), tfkd.distill.UNLABELED)
    y_train[0] = data.y_train[0]
    one = Data(data.x_train, y_train, data.x_test, data.y_test, num_classes=10)
    stages = [
        Load(TEACHER, name="teacher"),
        Distill("teacher", student=STUDENT, epochs=1, propagation=True, name="distilled"),
    ]
    report = tfkd.Pipeline(stages).execute(one, tmp_path, tensorboard=False, verbose=0)
    entry = json.loads((tmp_path / "stages" / "distilled" / "entry.json").read_text())
    done = entry["details"]["propagation"]
    assert done["held_out_accuracy"] is None and done["examples"] == 399
    (note,) = [note for note in report.notes if note.startswith("distilled:")]
    assert note.endswith("of them") and "known labels" not in note


def test_a_teacher_without_a_dense_layer_is_named_in_the_error(data, tmp_path):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(10, 3)(keras.layers.Rescaling(1 / 255)(inputs))
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    path = tmp_path / "no_dense.keras"
    keras.Model(inputs, outputs, name="no_dense").save(path)
    stages = [
        Load(path, name="teacher"),
        Distill("teacher", student=STUDENT, epochs=1, propagation=True),
    ]
    # Before any stage runs: before, after the stages before it (as a StageError).
    with pytest.raises(ValueError, match="`propagation` reads the features of teacher") as e:
        tfkd.Pipeline(stages).execute(data, tmp_path, tensorboard=False, verbose=0)
    assert (e.value.stage, e.value.argument) == ("distill", "propagation")
    assert not (tmp_path / "stages").exists()


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_head_input_model_reads_the_input_of_the_last_dense_layer(kind, tmp_path):
    model = model_of_kind(kind, tmp_path, width=4, input_shape=kind_input_shape(kind))
    x = np.random.default_rng(1).random((5, *kind_input_shape(kind))).astype("float32")
    if kind in ("nested", "subclassed", "sequential_never_called", "applications"):
        # The Dense inside a nested model, no graph to read, or no Dense (MobileNetV3's
        # head is a 1x1 convolution): refused with what to use instead.
        with pytest.raises(ValueError, match="Use a Sequential or functional classifier that"):
            _graph.head_input_model(model)
        return
    head = _graph.head_input_model(model)
    pooled = keras.Model(model.inputs, model.get_layer("features").output)
    np.testing.assert_allclose(head.predict(x, verbose=0), pooled.predict(x, verbose=0))
    assert head.output.shape[-1] == 4
