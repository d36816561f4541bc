"""The pipeline from Python: every stage, the report, resume, invalidation, custom stages."""

import json
import pathlib
import shutil

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import assert_config_round_trip, assert_tflite_agrees
from tfkd.pipeline import Data, Distill, Export, Load, Prune, QuantizeAware, Train

REPO = pathlib.Path(__file__).resolve().parents[2]
TEACHER = REPO / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
STUDENT = {"architecture": "cnn", "filters": [8, 16]}


@pytest.fixture(scope="module")
def data():
    return Data.load("fashion_mnist", train_size=1024, test_size=256)


def _stages(sparsity=0.5):
    return [
        Load(TEACHER, name="teacher"),
        Train(STUDENT, epochs=1, name="scratch"),
        Distill("teacher", student=STUDENT, epochs=1, name="distilled"),
        Prune(target_sparsity=sparsity, epochs=1, teacher="teacher", name="pruned"),
        QuantizeAware(epochs=1, teacher="teacher", name="qat"),
        Export(quantization="int8", name="int8"),
    ]


def _execute(pipeline, data, directory):
    lines = []
    report = pipeline.execute(data, directory, tensorboard=False, verbose=0, log=lines.append)
    return report, lines


def test_full_chain_writes_models_report_and_agrees_with_keras(data, tmp_path):
    report, lines = _execute(tfkd.Pipeline(_stages()), data, tmp_path)
    rows = {row["name"]: row for row in report.rows}
    assert list(rows) == ["teacher", "scratch", "distilled", "pruned", "qat", "int8"]
    assert rows["teacher"]["accuracy"] > 0.9  # the bundled teacher on real test images
    assert rows["int8"]["format"] == "tflite" and rows["qat"]["format"] == "keras"
    # the int8 file, run by LiteRT, scores what the QAT Keras model scores
    assert abs(rows["int8"]["accuracy"] - rows["qat"]["accuracy"]) <= 0.02
    assert (
        rows["int8"]["parameters"] == rows["qat"]["parameters"] == rows["distilled"]["parameters"]
    )
    assert rows["pruned"]["nonzero_parameters"] < 0.75 * rows["distilled"]["nonzero_parameters"]
    assert rows["int8"]["bytes"] < rows["distilled"]["bytes"] / 4
    for name in rows:
        entry = json.loads((tmp_path / "stages" / name / "entry.json").read_text())
        assert (tmp_path / "stages" / name / entry["artifact"]).stat().st_size == entry["bytes"]
    pruned = keras.saving.load_model(tmp_path / "stages" / "pruned" / "model.keras")
    kernel = keras.ops.convert_to_numpy(pruned.get_layer("conv2").kernel)
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.01)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert [row["name"] for row in saved["rows"]] == list(rows)
    assert "| int8 | export | tflite |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stage_lines = [line for line in lines if line.startswith("[")]
    assert len(stage_lines) == 12 and all(
        "started" in line or "done in" in line for line in stage_lines
    )
    assert any("computing teacher's outputs on 1,024 examples" in line for line in lines)
    # Per class (issue 18): the int8 file's figures are its LiteRT predictions' own.
    int8 = tfkd.TFLiteModel(tmp_path / rows["int8"]["artifact"])
    predictions = int8.predict(data.x_test).argmax(-1)
    expected = tfkd.metrics.classification_report(
        data.y_test, predictions, class_names=data.class_names
    )
    assert rows["int8"]["classification"] == expected
    assert rows["int8"]["classification"]["classes"][9]["name"] == "Ankle boot"
    assert rows["teacher"]["classification"]["macro"]["f1"] > 0.85
    markdown = (tmp_path / "report.md").read_text()
    assert "## Per class: int8 against teacher" in markdown
    assert "| Ankle boot | " in markdown and "Classes that lost the most recall:" in markdown
    assert (tmp_path / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Slow (`bash scripts/test.sh -m slow`): 226 s in CI; resume stays in the default run:
# test_a_redone_stage_reruns_its_dependents..., the kill -9 test
@pytest.mark.slow
def test_rerun_reuses_everything_and_a_change_reruns_only_what_depends_on_it(data, tmp_path):
    _execute(tfkd.Pipeline(_stages()), data, tmp_path)
    stamps = {path: path.stat().st_mtime_ns for path in (tmp_path / "stages").glob("*/*")}
    report, lines = _execute(tfkd.Pipeline(_stages()), data, tmp_path)
    assert sum("finished earlier, reused" in line for line in lines) == 6
    assert stamps == {path: path.stat().st_mtime_ns for path in (tmp_path / "stages").glob("*/*")}

    report, lines = _execute(tfkd.Pipeline(_stages(sparsity=0.25)), data, tmp_path)
    reused = [line.split()[1][:-1] for line in lines if "reused" in line]
    rerun = [line.split()[1][:-1] for line in lines if "done in" in line]
    assert reused == ["teacher", "scratch", "distilled"]
    assert rerun == ["pruned", "qat", "int8"]
    assert report.rows[3]["nonzero_parameters"] > 0.6 * report.rows[2]["nonzero_parameters"]


def test_a_corrupted_artifact_is_redone(data, tmp_path):
    stages = [Load(TEACHER, name="teacher"), Train(STUDENT, epochs=1, name="scratch")]
    _execute(tfkd.Pipeline(stages), data, tmp_path)
    (tmp_path / "stages" / "scratch" / "model.keras").write_bytes(b"half a file")
    _, lines = _execute(tfkd.Pipeline(stages), data, tmp_path)
    assert "teacher: finished earlier, reused" in lines[1]
    assert "scratch (train): started" in lines[2]


@pytest.mark.heavy
def test_nested_pipeline_and_from_stage(data, tmp_path):
    compress = tfkd.Pipeline(
        [Prune(target_sparsity=0.5, epochs=1, name="pruned"), Export(name="float_file")],
        name="compress",
    )
    stages = [
        Load(TEACHER, name="teacher"),
        Train(STUDENT, epochs=1, name="scratch"),
        compress,
        Export(quantization="dynamic", from_stage="scratch", name="dynamic_file"),
    ]
    report, _ = _execute(tfkd.Pipeline(stages), data, tmp_path)
    entries = {
        row["name"]: json.loads((tmp_path / "stages" / row["name"] / "entry.json").read_text())
        for row in report.rows
    }
    assert list(entries) == ["teacher", "scratch", "pruned", "float_file", "dynamic_file"]
    assert entries["pruned"]["input"] == "scratch"
    assert entries["dynamic_file"]["input"] == "scratch"


@tfkd.pipeline.register_stage("test_halve_logits")
class HalveLogits(tfkd.pipeline.Stage):
    """A custom stage: divides the logits by `factor` (accuracy unchanged)."""

    def __init__(self, factor: float = 2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def run(self, model, context):
        outputs = keras.layers.Rescaling(1.0 / self.factor)(model.output)
        return keras.Model(model.input, outputs), {"factor": self.factor}


def test_custom_stage_from_a_config(data, tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "data: {name: fashion_mnist, train_size: 512, test_size: 256}\n"
        f"stages:\n  - {{stage: load, path: {TEACHER}}}\n"
        "  - {stage: test_halve_logits, factor: 4}\n"
    )
    report = tfkd.pipeline.run_config(
        config, tmp_path / "out", tensorboard=False, log=lambda _: None
    )
    assert report.rows[1]["name"] == "test_halve_logits"
    assert report.rows[1]["accuracy"] == report.rows[0]["accuracy"]
    entry = json.loads((tmp_path / "out/stages/test_halve_logits/entry.json").read_text())
    assert entry["details"] == {"factor": 4}
    with pytest.raises(ValueError, match="already registered as 'load'"):
        tfkd.pipeline.register_stage("load")(HalveLogits)


def test_nan_loss_stops_the_stage_and_keeps_the_finished_ones(tmp_path):
    x = np.random.default_rng(0).uniform(0, 255, (256, 28, 28, 1)).astype("float32")
    x[5] = np.nan  # a whole image: some backends' max pooling skips a lone NaN
    data = Data(x, np.arange(256) % 10, x[:64], np.arange(64) % 10)
    stages = [Load(TEACHER, name="teacher"), Train(STUDENT, epochs=1, name="scratch")]
    # TensorFlow: the loss is NaN and fit stops; JAX: Keras's sparse cross-entropy hides NaN
    # logits, and the check of the trained weights catches it.
    with pytest.raises(RuntimeError, match="Stage 'scratch' .* non-finite") as info:
        _execute(tfkd.Pipeline(stages), data, tmp_path)
    assert isinstance(info.value.__cause__, FloatingPointError)
    assert (tmp_path / "stages" / "teacher" / "entry.json").is_file()
    assert not (tmp_path / "stages" / "scratch" / "entry.json").exists()


def test_python_api_validates_early(data, tmp_path):
    with pytest.raises(ValueError, match="Model file not found. Received: path='nope.keras'"):
        Load("nope.keras")
    with pytest.raises(
        ValueError, match=r"`target_sparsity` must be in \[0, 1\). Received: target_sparsity=1.5"
    ):
        Prune(target_sparsity=1.5)
    with pytest.raises(TypeError, match="must be a `tfkd.pipeline.Stage`"):
        tfkd.Pipeline(["load"])
    pipeline = tfkd.Pipeline([Train(STUDENT, epochs=1), Distill("teacher", epochs=1)])
    with pytest.raises(
        ValueError, match=r"`teacher` must name an earlier stage. Received: teacher='teacher'"
    ):
        pipeline.execute(data, tmp_path)
    assert not (tmp_path / "stages").exists()


def test_a_cnn_that_pools_more_than_the_images_allow_fails_before_any_stage_runs(data, tmp_path):
    # 28 -> 14 -> 7 -> 3 -> 1: four 2x2 poolings, and 6 blocks pool 5 times
    deep = {"architecture": "cnn", "filters": [4] * 6}
    stages = [Train(STUDENT, epochs=1, name="scratch"), Train(deep, epochs=1, name="deep")]
    with pytest.raises(ValueError, match=r"`model.filters` makes 6 blocks.* pooled 4 times") as e:
        tfkd.Pipeline(stages).execute(data, tmp_path, log=lambda _: None)
    assert (e.value.stage, e.value.argument) == ("deep", "model")
    assert not (tmp_path / "stages").exists()  # before: a Keras pooling error after scratch
    for fits in ({**deep, "filters": [4] * 5}, {**deep, "pool_every": 2}):
        tfkd.pipeline.architectures.check_buildable(fits, data, "model")
    with pytest.raises(ValueError, match="pool the images 5 times"):  # and from Python
        tfkd.models.cnn((28, 28, 1), 10, filters=[4] * 5, dense_units=8)


def test_a_batch_size_past_the_largest_int32_is_refused_when_the_stage_is_made():
    with pytest.raises(ValueError, match=r"at most 2\*\*31 - 1 .*Received: batch_size=10{20}") as e:
        Train(STUDENT, batch_size=10**20)  # before: an OverflowError when the stage ran
    assert e.value.argument == "batch_size"
    assert Train(STUDENT, batch_size=2**31 - 1).batch_size == 2**31 - 1


@pytest.mark.slow  # 61 s in CI; the default config's quick run (test_cli.py) runs this stage
def test_transfer_stage_fine_tunes_the_pretrained_backbone(tmp_path):
    data = Data.load("fashion_mnist", train_size=512, test_size=256)
    stages = [
        tfkd.pipeline.Transfer(
            image_size=32, head_epochs=2, head_learning_rate=3e-3, fine_tune_epochs=1, batch_size=64
        ),
        Export(name="teacher_file"),
    ]
    report, _ = _execute(tfkd.Pipeline(stages), data, tmp_path)
    transfer_row, _ = report.rows
    assert transfer_row["parameters"] > 2_000_000  # MobileNetV2 and a 10-class head
    entry = json.loads((tmp_path / "stages" / "transfer" / "entry.json").read_text())
    assert len(entry["details"]["train_accuracy"]) == 3  # head epochs, then fine-tune epoch
    assert transfer_row["accuracy"] > 0.25  # 24 steps at 32x32 pixels; chance is 0.1
    # The model is barely past chance, so its top-1 flips on tiny differences: compare the
    # float file's outputs with the stage's model, not two accuracies.
    model = keras.saving.load_model(tmp_path / "stages" / "transfer" / "model.keras")
    tflite_path = tmp_path / "stages" / "teacher_file" / "model.tflite"
    assert_tflite_agrees(model, tflite_path, data.x_test)


@pytest.mark.parametrize(
    "decay, halfway", [("constant", 1e-4), ("linear", 0.5e-4), ("cosine", 0.5e-4)]
)
def test_transfer_fine_tuning_learning_rate_decays_over_its_steps(decay, halfway):
    stage = tfkd.pipeline.Transfer(fine_tune_learning_rate=1e-4, fine_tune_decay=decay)
    labels = np.zeros(1000, "int32")  # 8 batches of the default 128 an epoch: 40 steps
    rate = stage._fine_tune_rate(5, (np.zeros((1000, 28, 28, 1)), labels))
    values = [float(rate(step)) if callable(rate) else rate for step in (0, 10, 20, 40)]
    np.testing.assert_allclose(
        [values[0], values[2], values[3]],
        [1e-4, halfway, 0.0 if decay != "constant" else 1e-4],
        atol=1e-9,
    )
    if decay == "cosine":  # a cosine stays above the straight line before halfway
        assert values[1] == pytest.approx(1e-4 * (1 + np.cos(np.pi / 4)) / 2)
    assert_config_round_trip(stage)


@pytest.mark.parametrize(
    "argument, value",
    [("unfreeze", 20), ("fine_tune_learning_rate", 1e-3), ("fine_tune_decay", "cosine")],
)
def test_transfer_refuses_fine_tuning_keys_when_it_does_not_fine_tune(argument, value):
    with pytest.raises(ValueError, match=f"Received: {argument}={value!r}, fine_tune_epochs=0"):
        tfkd.pipeline.Transfer(fine_tune_epochs=0, **{argument: value})
    assert getattr(tfkd.pipeline.Transfer(fine_tune_epochs=1, **{argument: value}), argument) == (
        value
    )


def test_config_round_trip_of_stages_and_nested_pipelines():
    inner = tfkd.Pipeline([Prune(target_sparsity=0.25, epochs=1, name="pruned")], name="inner")
    pipeline = tfkd.Pipeline([*_stages()[:3], inner, Export(name="float_file")])
    rebuilt = assert_config_round_trip(pipeline)
    assert [stage.name for stage in rebuilt.leaves()] == [
        "teacher",
        "scratch",
        "distilled",
        "pruned",
        "float_file",
    ]
    assert (
        rebuilt.stages[2].student == STUDENT and rebuilt.stages[3].stages[0].target_sparsity == 0.25
    )
    for stage in _stages():
        assert_config_round_trip(stage)


def test_distill_on_teacher_labelled_augmented_copies(data, tmp_path):
    stages = [
        Load(TEACHER, name="teacher"),
        Distill("teacher", student=STUDENT, epochs=1, augmented_copies=2, batch_size=256),
    ]
    report, lines = _execute(tfkd.Pipeline(stages), data, tmp_path)
    computed = [line.strip() for line in lines if "computing" in line]
    assert computed == [
        "computing teacher's outputs on 1,024 examples",
        "computing teacher's outputs on 2,048 examples",
    ]
    cached = sorted(path.name for path in (tmp_path / "cache").iterdir())
    assert len(cached) == 2 and cached[0].endswith("-augmented2-seed0.npz")
    entry = json.loads((tmp_path / "stages" / "distill" / "entry.json").read_text())
    assert entry["details"]["epochs"] == 1 and len(report.rows) == 2
    # The stage's time spent on the teacher is recorded: part of its seconds, 0 elsewhere,
    # and 0 when the outputs come from the run's cache.
    spent = {row["name"]: (row["teacher_seconds"], row["seconds"]) for row in report.rows}
    assert spent["teacher"][0] == 0 and 0 < spent["distill"][0] < spent["distill"][1]
    assert sum("teacher's outputs took" in line for line in lines) == 2
    stages[1] = Distill("teacher", student=STUDENT, epochs=2, augmented_copies=2, batch_size=256)
    report, lines = _execute(tfkd.Pipeline(stages), data, tmp_path)
    assert report.rows[1]["teacher_seconds"] == 0 and report.rows[1]["seconds"] > 0
    assert not any("computing" in line for line in lines)


@pytest.mark.heavy
def test_a_redone_stage_reruns_its_dependents_and_the_report_drops_stale_rows(data, tmp_path):
    stages = [
        Load(TEACHER, name="teacher"),
        Train(STUDENT, epochs=1, name="scratch"),
        Export(name="scratch_file"),
    ]
    _execute(tfkd.Pipeline(stages), data, tmp_path)
    # scratch is redone with the same arguments (as after a kill, then a revert of a change)
    (tmp_path / "stages" / "scratch" / "entry.json").unlink()
    report = tfkd.pipeline.Report.load(tmp_path)
    assert [row["name"] for row in report.rows] == ["teacher"]  # scratch_file is stale now
    # ... and says so (before: left out with no note).
    assert [note for note in report.notes if note.startswith("scratch_file")] == [
        "scratch_file: left out: its input scratch has not finished since (a rerun stopped "
        "there). Rerun the pipeline to redo it."
    ]
    _, lines = _execute(tfkd.Pipeline(stages), data, tmp_path)
    assert "scratch (train): started" in lines[2] and "scratch_file (export): started" in lines[4]
    # A row left out for its own file also leaves out those after it, saying which.
    with open(tmp_path / "stages" / "scratch" / "model.keras", "ab") as file:
        file.write(b"0")
    notes = tfkd.pipeline.Report.load(tmp_path).notes
    assert [note.split(": left out: ")[0] for note in notes] == ["scratch", "scratch_file"]
    assert "its input scratch is left out of this report too (see its note)" in notes[1]


def test_a_resumed_run_trains_what_an_uninterrupted_run_trains(data, tmp_path):
    # Each stage starts from the run's seed. Before, the layers a stage built (the
    # student's dropout) drew their random seeds after whatever had run earlier in the
    # process: a run resumed after `scratch`, or one that read the teacher's outputs from
    # its cache, trained another student (weights off by 0.08 to 0.21).
    student = {**STUDENT, "dropout": 0.3}
    stages = [
        Load(TEACHER, name="teacher"),
        Train(student, epochs=1, name="scratch"),
        Distill("teacher", epochs=2, name="distilled"),  # trains on from `scratch`
    ]
    _execute(tfkd.Pipeline(stages), data, tmp_path / "whole")
    _execute(tfkd.Pipeline(stages[:2]), data, tmp_path / "resumed")
    _, lines = _execute(tfkd.Pipeline(stages), data, tmp_path / "resumed")
    assert sum("finished earlier, reused" in line for line in lines) == 2
    assert any("computing teacher's outputs" in line for line in lines)
    shutil.copytree(tmp_path / "whole", tmp_path / "cached")
    (tmp_path / "cached" / "stages" / "distilled" / "entry.json").unlink()
    _, lines = _execute(tfkd.Pipeline(stages), data, tmp_path / "cached")
    assert "distilled (distill): started" in lines[3]
    assert not any("computing" in line for line in lines)  # read from the cache

    def weights(run, stage="distilled"):
        model = keras.saving.load_model(tmp_path / run / "stages" / stage / "model.keras")
        return np.concatenate([np.ravel(w) for w in model.get_weights()])

    whole = weights("whole")
    assert np.abs(whole - weights("whole", "scratch")).max() > 0.01  # the stage trained
    np.testing.assert_allclose(weights("resumed"), whole, atol=1e-5)
    np.testing.assert_allclose(weights("cached"), whole, atol=1e-5)


def test_a_changed_model_file_reruns_the_stage(data, tmp_path):
    student_file = tmp_path / "student.keras"
    tfkd.models.cnn((28, 28, 1), 10, filters=(8,)).save(student_file)
    stages = [Train({"path": str(student_file)}, epochs=1, name="trained")]
    _execute(tfkd.Pipeline(stages), data, tmp_path / "out")
    _, lines = _execute(tfkd.Pipeline(stages), data, tmp_path / "out")
    assert "reused" in lines[1]
    tfkd.models.cnn((28, 28, 1), 10, filters=(8,), seed=1).save(student_file)
    _, lines = _execute(tfkd.Pipeline(stages), data, tmp_path / "out")
    assert "trained (train): started" in lines[1]


def test_a_stage_after_a_nested_pipeline_is_in_the_report_with_its_parameters(data, tmp_path):
    # Before: `tfkd report` left out every stage reading a nested pipeline ("its input sub
    # has not finished since"), and the run's own row of an export from one had no
    # parameters (looked up under the pipeline's name).
    inner = tfkd.Pipeline([Train(STUDENT, epochs=1, name="scratch")], name="sub")
    stages = [Load(TEACHER, name="teacher"), inner, Export(from_stage="sub", name="exported")]
    report, _ = _execute(tfkd.Pipeline(stages), data, tmp_path)
    rows = {row["name"]: row for row in report.rows}
    assert rows["exported"]["parameters"] == rows["scratch"]["parameters"] > 0
    loaded = tfkd.pipeline.report.Report.load(tmp_path)
    assert [row["name"] for row in loaded.rows] == ["teacher", "scratch", "exported"]
    assert not [note for note in loaded.notes if "left out" in note]


def test_nested_pipeline_from_stage_and_its_name_as_a_reference(data, tmp_path):
    inner = tfkd.Pipeline([Export(name="inner_file")], name="inner", from_stage="teacher")
    stages = [Load(TEACHER, name="teacher"), Train(STUDENT, epochs=1, name="scratch"), inner]
    _execute(tfkd.Pipeline(stages), data, tmp_path)
    entry = json.loads((tmp_path / "stages" / "inner_file" / "entry.json").read_text())
    assert entry["input"] == "teacher"
    # inner's output is a .tflite: refused before any stage runs, as the pipeline's output
    after = Export(quantization="dynamic", from_stage="inner", name="after")
    with pytest.raises(ValueError, match="Stage 'after' .* needs a Keras model as input") as info:
        _execute(tfkd.Pipeline([*stages, after]), data, tmp_path / "again")
    assert (info.value.stage, info.value.argument) == ("after", "from_stage")
    assert not (tmp_path / "again" / "stages").exists()
    bad = tfkd.Pipeline(
        [Load(TEACHER, name="teacher"), tfkd.Pipeline([Export(from_stage="inner")], name="inner")]
    )
    with pytest.raises(ValueError, match="`from_stage` must name an earlier stage"):
        bad.execute(data, tmp_path / "bad")


@tfkd.pipeline.register_stage("test_bad_details")
class BadDetails(tfkd.pipeline.Stage):
    def run(self, model, context):
        return model, None


def test_a_stage_returning_bad_details_fails_clearly(data, tmp_path):
    stages = [Load(TEACHER, name="teacher"), BadDetails()]
    with pytest.raises(RuntimeError, match="must return a Keras model .* Received: tuple"):
        _execute(tfkd.Pipeline(stages), data, tmp_path)


def test_the_teacher_cache_is_checked_before_it_is_used(data, tmp_path):
    # Issue 16.4: a cache file of the right length was used whatever it held.
    stages = [Load(TEACHER, name="teacher"), Distill("teacher", student=STUDENT, epochs=1)]
    _execute(tfkd.Pipeline(stages), data, tmp_path)
    (path,) = (tmp_path / "cache").iterdir()
    with np.load(path) as stored:
        stored = dict(stored)
    expected = stored["output"].copy()
    stored["output"] = np.full_like(expected, np.nan)
    np.savez(path, **stored)
    stages[1] = Distill("teacher", student=STUDENT, epochs=2)  # reruns the stage only
    _, lines = _execute(tfkd.Pipeline(stages), data, tmp_path)
    assert [line.strip() for line in lines if "computing" in line] == [
        "computing teacher's outputs on 1,024 examples"
    ]
    with np.load(path) as stored:
        np.testing.assert_allclose(stored["output"], expected, atol=1e-4)


@tfkd.pipeline.register_stage("test_record_context")
class RecordContext(tfkd.pipeline.Stage):
    """Keeps the context it ran with, and fails to change it."""

    seen = []

    def run(self, model, context):
        with pytest.raises(AttributeError):
            context.directory = pathlib.Path("elsewhere")
        with pytest.raises(AttributeError):
            context.seed = 1
        RecordContext.seen.append(context)
        return model, {"directory": context.directory.name}


def test_each_stage_gets_a_read_only_context_of_its_own(data, tmp_path):
    RecordContext.seen.clear()
    inner = tfkd.Pipeline([RecordContext(name="inner_record")], name="inner")
    stages = [Load(TEACHER, name="teacher"), RecordContext(name="first"), inner]
    pipeline = tfkd.Pipeline(stages)
    report = pipeline.execute(data, tmp_path, seed=3, tensorboard=False, verbose=0, log=print)
    first, second = RecordContext.seen
    assert first is not second
    assert [first.directory.name, second.directory.name] == ["first", "inner_record"]
    assert first.log_directory != second.log_directory
    assert first.seed == second.seed == 3 and first.data is second.data
    details = [
        json.loads((tmp_path / "stages" / name / "entry.json").read_text())["details"]
        for name in ("first", "inner_record")
    ]
    assert details == [{"directory": "first"}, {"directory": "inner_record"}]
    assert [row["name"] for row in report.rows] == ["teacher", "first", "inner_record"]
