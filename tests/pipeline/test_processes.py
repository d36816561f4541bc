"""A pipeline on several processes (`tfkd run --processes N`, issue 19): two JAX processes
on this machine train every stage in step, process 0 alone writes, a process that dies
fails the run at once with its log named, and a rerun resumes.

The processes run on 127.0.0.1 only, under a time limit, and stop by themselves.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from tfkd.pipeline import _processes

REPO = pathlib.Path(__file__).resolve().parents[2]
TIME_LIMIT = 3000  # seconds, to end a hung run of the two processes (about 90 here)

CONFIG = """\
name: two_processes
seed: 0
data: {name: fashion_mnist, labelled_per_class: 100}
stages:
  - stage: train
    name: scratch
    model: {architecture: cnn, filters: [4, 8], dense_units: 16}
    epochs: 1
    batch_size: 32
  - stage: distill
    name: distilled
    teacher: scratch
    student: {architecture: cnn, filters: [4, 8], dense_units: 16}
    epochs: 1
  - stage: export
    name: int8
    quantization: int8
"""


def _tfkd(*arguments, cwd):
    environment = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    for name in _processes.ENVIRONMENT:
        environment.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "tfkd", *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT,
    )


def _weights(path):
    return [np.asarray(w) for w in keras.saving.load_model(path).weights]


# Slow (`bash scripts/test.sh -m slow`): 140 s in CI; one process's failure and resume are
# test_cli.py's kill -9 test.
@pytest.mark.slow
def test_two_processes_run_the_pipeline_fail_together_and_resume(tmp_path):
    config = tmp_path / "two.yaml"
    config.write_text(CONFIG)
    output = tmp_path / "run"
    command = ("run", str(config), "--quick", "--processes", "2", "--output", str(output))
    # Process 1 cannot write its copy of the first stage (a file is where its folder goes):
    # it fails, and the run stops with it instead of waiting for it.
    (output / "processes").mkdir(parents=True)
    (output / "processes" / "process-1").write_text("in the way")
    failed = _tfkd(*command, cwd=tmp_path)
    assert failed.returncode != 0
    assert "process 1 of 2 failed" in failed.stderr, failed.stderr[-3000:]
    assert str(output / "processes" / "process-1.log") in failed.stderr
    assert not (output / "report.md").exists()

    (output / "processes" / "process-1").unlink()
    run = _tfkd(*command, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "tfkd: 2 processes finished" in run.stdout
    report = json.loads((output / "report.json").read_text())
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows) == ["scratch", "distilled", "int8"]
    assert rows["int8"]["format"] == "tflite" and rows["int8"]["accuracy"] > 0.3
    # Process 1 trained in step with process 0: its copies hold the same weights.
    for name in ("scratch", "distilled"):
        ours = _weights(output / "processes" / "process-1" / name / "model.keras")
        written = _weights(output / "stages" / name / "model.keras")
        assert len(ours) == len(written)
        for a, b in zip(ours, written):
            np.testing.assert_array_equal(a, b)
    log = (output / "processes" / "process-1.log").read_text()
    assert "[3/3] int8: written by process 0" in log
    assert not (output / "processes" / "process-1" / "int8").exists()  # not its to run

    again = _tfkd(*command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished earlier, reused") == 3


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"TFKD_PROCESS_COUNT": "2"}, "missing: TFKD_COORDINATOR, TFKD_PROCESS_ID"),
        (
            {"TFKD_COORDINATOR": "host", "TFKD_PROCESS_COUNT": "2", "TFKD_PROCESS_ID": "0"},
            "TFKD_COORDINATOR must be host:port",
        ),
        (
            {"TFKD_COORDINATOR": "h:1", "TFKD_PROCESS_COUNT": "two", "TFKD_PROCESS_ID": "0"},
            "TFKD_PROCESS_COUNT must be a whole number. Received: TFKD_PROCESS_COUNT='two'",
        ),
        (
            {"TFKD_COORDINATOR": "h:1", "TFKD_PROCESS_COUNT": "2", "TFKD_PROCESS_ID": "2"},
            "Received: TFKD_PROCESS_COUNT=2, TFKD_PROCESS_ID=2",
        ),
    ],
)
def test_environment_errors_name_the_variable(environ, message):
    with pytest.raises(ValueError) as error:
        _processes.Processes.from_environment(environ)
    assert message in str(error.value)


def test_environment_read():
    assert _processes.Processes.from_environment({}) is None
    processes = _processes.Processes.from_environment(
        {"TFKD_COORDINATOR": "10.0.0.1:1234", "TFKD_PROCESS_COUNT": "4", "TFKD_PROCESS_ID": "3"}
    )
    assert processes == _processes.Processes("10.0.0.1:1234", 4, 3)
    assert not processes.writes


def test_shard_gives_each_process_as_many_rows_of_every_batch():
    x, y = np.arange(11 * 2).reshape(11, 2), np.arange(11)
    shares = [_processes.Processes("h:1", 3, index).shard((x, y)) for index in range(3)]
    assert [len(share[1]) for share in shares] == [3, 3, 3]  # the last 2 rows dropped
    assert sorted(np.concatenate([share[1] for share in shares])) == list(range(9))
    for share in shares:
        np.testing.assert_array_equal(share[0][:, 1] // 2, share[1])
    processes = _processes.Processes("h:1", 2, 1)
    assert processes.local_batch_size(128) == 64
    with pytest.raises(ValueError, match="batch_size=33 on 2 processes"):
        processes.local_batch_size(33)


def test_cli_refuses_bad_process_counts(tmp_path):
    config = tmp_path / "two.yaml"
    config.write_text(CONFIG)
    zero = _tfkd("run", str(config), "--processes", "0", cwd=tmp_path)
    assert zero.returncode == 1
    assert "`--processes` must be at least 1. Received: --processes 0" in zero.stderr
    odd = _tfkd("run", str(config), "--processes", "3", "--output", "out", cwd=tmp_path)
    assert odd.returncode == 2 and not (tmp_path / "out").exists()  # no process started
    assert "two.yaml:9: stages[0].batch_size: `batch_size` must be a multiple" in odd.stderr
    assert "batch_size=32 on 3 processes" in odd.stderr
