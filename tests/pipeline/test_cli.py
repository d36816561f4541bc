"""The `tfkd` command: help, config errors, the default config's quick run, kill -9 and resume."""

import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys

import keras

REPO = pathlib.Path(__file__).resolve().parents[2]
TEACHER = REPO / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def _tfkd(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "tfkd", *map(str, args)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_help_lists_commands_and_stages():
    result = _tfkd("--help")
    assert result.returncode == 0
    assert "run" in result.stdout and "report" in result.stdout and "--quick" in result.stdout
    result = _tfkd("run", "--help")
    assert result.returncode == 0
    for stage in ("transfer", "distill", "prune", "quantize_aware", "export"):
        assert f"{stage}:" in result.stdout


def test_config_error_exits_2_with_the_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("data: {name: fashion_mnist}\nstages:\n  - {stage: shrink}\n")
    result = _tfkd("run", config, "--output", tmp_path / "out")
    assert result.returncode == 2
    assert f"tfkd: config error: {config}:3: stages[0].stage: Unknown stage." in result.stderr
    assert not (tmp_path / "out").exists()


def test_report_of_a_directory_that_is_no_run(tmp_path):
    result = _tfkd("report", tmp_path)
    assert result.returncode == 2
    assert f"Not a tfkd pipeline output directory (no config.json). Received: {tmp_path}" in (
        result.stderr
    )


def test_default_config_quick_run_and_report_command(tmp_path):
    output = tmp_path / "quick"
    result = _tfkd("run", "examples/pipeline_fashion_mnist.yaml", "--quick", "--output", output)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Report: {output / 'report.md'}" in result.stdout
    report = json.loads((output / "report.json").read_text())
    names = [row["name"] for row in report["rows"]]
    assert names == ["teacher", "teacher_tflite", "scratch", "distilled", "pruned", "qat", "int8"]
    rows = {row["name"]: row for row in report["rows"]}
    assert rows["teacher"]["accuracy"] > 0.9 and rows["teacher_tflite"]["accuracy"] > 0.9
    assert rows["int8"]["bytes"] * 10 < rows["teacher_tflite"]["bytes"]
    assert any((output / "logs" / "distilled").rglob("events.out.tfevents.*"))
    (output / "report.md").unlink()
    result = _tfkd("report", output)
    assert result.returncode == 0 and "| int8 | export | tflite |" in result.stdout
    assert (output / "report.md").is_file()


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_kill_9_mid_stage_then_rerun_resumes(tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "data: {name: fashion_mnist, train_size: 4000, test_size: 500}\n"
        "stages:\n"
        f"  - {{stage: load, name: teacher, path: {TEACHER}}}\n"
        "  - {stage: train, name: scratch, model: {architecture: cnn, filters: [8, 16]}}\n"
        "  - stage: distill\n"
        "    name: distilled\n"
        "    teacher: teacher\n"
        "    student: {architecture: cnn, filters: [8, 16]}\n"
        "    epochs: 12\n"
    )
    output = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "tfkd", "run", str(config), "--output", str(output)],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    for line in process.stdout:  # kill once the third stage has trained an epoch
        seen.append(line)
        if "Epoch 2/12" in line and any("distilled (distill): started" in s for s in seen):
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    stages = output / "stages"
    assert (stages / "teacher" / "entry.json").is_file()
    assert (stages / "scratch" / "entry.json").is_file()
    assert not (stages / "distilled" / "entry.json").exists()
    scratch = stages / "scratch" / "model.keras"
    before = (_sha256(scratch), scratch.stat().st_mtime_ns)

    result = _tfkd("run", config, "--output", output)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[1/3] teacher: finished earlier, reused." in result.stdout
    assert "[2/3] scratch: finished earlier, reused." in result.stdout
    assert "[3/3] distilled (distill): started" in result.stdout
    assert "Epoch 12/12" in result.stdout
    assert (_sha256(scratch), scratch.stat().st_mtime_ns) == before
    assert not list(output.rglob(".tmp-*"))
    for name in ("scratch", "distilled"):
        entry = json.loads((stages / name / "entry.json").read_text())
        assert entry["sha256"] == _sha256(stages / name / "model.keras")
        keras.saving.load_model(stages / name / "model.keras")
    report = json.loads((output / "report.json").read_text())
    assert [row["name"] for row in report["rows"]] == ["teacher", "scratch", "distilled"]
