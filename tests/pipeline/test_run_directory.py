"""The output directory: one run at a time, resume keyed on library versions, and a report
that checks what it reads (issue 16, items 5 and 6)."""

import json
import pathlib
import subprocess
import sys

import pytest

import tfkd
from tfkd.pipeline import Data, Export, Load, Train, _store

REPO = pathlib.Path(__file__).resolve().parents[2]
TEACHER = REPO / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
STUDENT = {"architecture": "cnn", "filters": [4]}

# Holds the directory's lock as a run would, until its standard input closes.
_HOLDER = """
import sys
sys.path.insert(0, sys.argv[2])
from tfkd.pipeline import _store
with _store.Store(sys.argv[1]).locked():
    print("held", flush=True)
    sys.stdin.read()
"""


@pytest.fixture(scope="module")
def data():
    return Data.load("fashion_mnist", train_size=256, test_size=128)


def _execute(stages, data, directory):
    lines = []
    report = tfkd.Pipeline(stages).execute(
        data, directory, tensorboard=False, verbose=0, log=lines.append
    )
    return report, lines


def test_a_second_run_into_a_directory_in_use_is_refused(data, tmp_path):
    stages = [Load(TEACHER, name="teacher")]
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path), str(REPO)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(_store.DirectoryInUse) as info:
            _execute(stages, data, tmp_path)
        message = str(info.value)
        assert str(tmp_path) in message and f"process {holder.pid}" in message
        assert "--output" in message
        assert not (tmp_path / "stages").exists()  # refused before any stage ran
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0
    report, _ = _execute(stages, data, tmp_path)  # the lock went with its process
    assert [row["name"] for row in report.rows] == ["teacher"]


def test_the_same_process_cannot_run_twice_into_one_directory(data, tmp_path):
    with _store.Store(tmp_path).locked():
        with pytest.raises(_store.DirectoryInUse, match="is in use by another run"):
            _execute([Load(TEACHER, name="teacher")], data, tmp_path)


def test_other_library_versions_redo_the_stages(data, tmp_path, monkeypatch):
    stages = [Load(TEACHER, name="teacher"), Train(STUDENT, epochs=1, name="scratch")]
    _execute(stages, data, tmp_path)
    _, lines = _execute(stages, data, tmp_path)
    assert all("reused" in line for line in lines[1:3])
    recorded = json.loads((tmp_path / "config.json").read_text())["options"]["versions"]
    assert recorded["tfkd"] == tfkd.__version__ and recorded["keras"]
    monkeypatch.setattr(tfkd, "__version__", tfkd.__version__ + ".post1")
    _, lines = _execute(stages, data, tmp_path)
    started = [line for line in lines if line.endswith(": started")]
    assert started == ["[1/2] teacher (load): started", "[2/2] scratch (train): started"]


def test_report_leaves_out_changed_files_and_entries_of_another_config(data, tmp_path):
    stages = [
        Load(TEACHER, name="teacher"),
        Train(STUDENT, epochs=1, name="scratch"),
        Export(name="scratch_file"),
    ]
    _execute(stages, data, tmp_path)
    assert len(tfkd.pipeline.Report.load(tmp_path).rows) == 3
    # A file changed after it was measured: its figures no longer describe it.
    artifact = tmp_path / "stages" / "scratch_file" / "model.tflite"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    report = tfkd.pipeline.Report.load(tmp_path)
    assert [row["name"] for row in report.rows] == ["teacher", "scratch"]
    assert any(note.startswith("scratch_file: left out: its file") for note in report.notes)
    # A run with other arguments for scratch that stopped before scratch finished: the
    # entry left is from the earlier arguments.
    _execute(stages, data, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    changed = [stages[0], Train(STUDENT, epochs=2, name="scratch"), stages[2]]
    config["config_digests"]["scratch"] = _store.config_digest(changed[1].fingerprint(), str)
    (tmp_path / "config.json").write_text(json.dumps(config))
    report = tfkd.pipeline.Report.load(tmp_path)
    assert [row["name"] for row in report.rows] == ["teacher"]  # scratch_file read scratch
    assert any("scratch: left out: it finished under other arguments" in n for n in report.notes)


def test_a_stage_that_reruns_starts_from_an_empty_folder(tmp_path):
    # Before, only its entry and temporary files went: a micro stage rerun with another
    # `c_name` left the old C files beside the new, an export after `quantization: auto`
    # its candidates and its model.auto.json.
    store = _store.Store(tmp_path)
    folder = store.stage_directory("micro")
    (folder / "first.candidates").mkdir(parents=True)
    (folder / "first.candidates" / "int8.tflite").write_bytes(b"old")
    for name in ("first_data.cc", "entry.json", ".tmp-x.part"):
        (folder / name).write_text("old")
    assert store.begin("micro") == folder
    assert folder.is_dir() and not any(folder.iterdir())


@pytest.mark.parametrize(
    "edit",
    [
        lambda entry: [],
        lambda entry: {key: value for key, value in entry.items() if key != "name"},
        lambda entry: {**entry, "artifact": 5},
        lambda entry: {**entry, "bytes": "many"},
        lambda entry: {**entry, "upstream": []},
        lambda entry: {**entry, "accuracy": None},
        lambda entry: {**entry, "bytes": 0},
        lambda entry: {**entry, "latency_ms": None},
    ],
)
def test_an_edited_entry_reruns_its_stage_and_the_report_leaves_it_out(data, tmp_path, edit):
    # Before: a rerun and `tfkd report` stopped with Python's AttributeError, KeyError or
    # TypeError.
    stages = [Load(TEACHER, name="teacher"), Export(name="teacher_file")]
    _execute(stages, data, tmp_path)
    path = tmp_path / "stages" / "teacher_file" / "entry.json"
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    assert [row["name"] for row in tfkd.pipeline.Report.load(tmp_path).rows] == ["teacher"]
    _, lines = _execute(stages, data, tmp_path)
    assert "[2/2] teacher_file (export): started" in lines
    assert len(tfkd.pipeline.Report.load(tmp_path).rows) == 2


@pytest.mark.parametrize(
    "edit", [{"data": []}, {"config_digests": []}, {"stages": [1]}, {"data": {"name": "d"}}]
)
def test_an_edited_run_config_is_named_as_damaged(data, tmp_path, edit):
    _execute([Load(TEACHER, name="teacher")], data, tmp_path)
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(ValueError, match=r"config.json is damaged \(TypeError: .* another type"):
        tfkd.pipeline.Report.load(tmp_path)


def test_the_report_compares_accuracies_before_they_were_rounded():
    # 37 and 38 right of 60: 0.6167 and 0.6333 as rounded, +1.66 points between them;
    # before, the report showed that, where the macro-average row said +1.67.
    def entry(name, correct):
        return {
            "name": name,
            "stage": "train",
            "format": "keras",
            "parameters": 10,
            "nonzero_parameters": 10,
            "bytes": 100,
            "accuracy": round(correct / 60, 4),
            "classification": {"accuracy": correct / 60},
            "latency_ms": 1.0,
            "seconds": 1.0,
            "artifact": "model.keras",
        }

    report = tfkd.pipeline.Report([entry("first", 37), entry("second", 38)], {})
    assert report.rows[1]["accuracy_delta"] == pytest.approx(1 / 60, abs=1e-12)
    # A figure that does not match the rounded one (a damaged entry) is not taken.
    forged = entry("forged", 38) | {"classification": {"accuracy": 0.9}}
    report = tfkd.pipeline.Report([entry("first", 37), forged], {})
    assert report.rows[1]["accuracy_delta"] == pytest.approx(0.6333 - 37 / 60, abs=1e-12)
