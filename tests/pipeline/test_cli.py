"""The `tfkd` command: help, config errors, the default config's quick run, kill -9 and resume."""

import hashlib
import json
import os
import pathlib
import signal
import subprocess
import sys

import keras
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]
TEACHER = REPO / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


# A bound on one `tfkd` command, there to end a hung one, not to time it: the default
# config's quick run took over 600 s on a slow 2-core machine beside three other test jobs.
COMMAND_TIME_LIMIT = 3000


def _tfkd(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "tfkd", *map(str, args)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIME_LIMIT,
    )


def test_help_lists_commands_and_stages():
    result = _tfkd("--help")
    assert result.returncode == 0
    assert "run" in result.stdout and "report" in result.stdout and "--quick" in result.stdout
    result = _tfkd("run", "--help")
    assert result.returncode == 0
    for stage in ("transfer", "distill", "prune", "quantize_aware", "export"):
        assert f"{stage}:" in result.stdout


def test_stage_summaries_are_whole_sentences():
    """`tfkd run --help` lists each stage's first sentence, even when it wraps in the
    docstring (it once stopped at the line's end: "micro: ... and;")."""
    from tfkd.pipeline.config import available_stages

    summaries = available_stages()
    assert {"load", "train", "transfer", "distill", "micro", "cluster"} <= set(summaries)
    for name, summary in summaries.items():
        assert summary.endswith("."), (name, summary)
        assert "\n" not in summary and "  " not in summary, (name, summary)
    assert summaries["load"] == (
        "Loads a model: a `.keras` file, a `.tflite` file (as a `tfkd.TFLiteModel`), or a "
        "keras-hub classifier preset folder (`tfkd.transfer.load_preset`)."
    )


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
    assert "Finished in " in result.stdout
    report = json.loads((output / "report.json").read_text())
    names = [row["name"] for row in report["rows"]]
    assert names == [
        "teacher",
        "teacher_tflite",
        "scratch",
        "distilled",
        "pruned",
        "qat",
        "int8",
        "micro",
    ]
    rows = {row["name"]: row for row in report["rows"]}
    micro = json.loads((output / "stages" / "micro" / "micro.json").read_text())
    assert micro["flash_bytes"] == rows["int8"]["bytes"] and micro["agreement"]["top1"] >= 0.99
    assert report["data"]["labelled_per_class"] == 100
    assert report["data"]["labelled_examples"] == 1000
    # The ImageNet MobileNetV2 after one head and one fine-tuning epoch on 1,000 labelled
    # images (0.816 and 0.810 on two machines), the float file equal to it.
    assert rows["teacher"]["accuracy"] > 0.7
    assert rows["teacher_tflite"]["accuracy"] == rows["teacher"]["accuracy"]
    assert rows["int8"]["bytes"] * 30 < rows["teacher_tflite"]["bytes"]
    # One epoch each: scratch sees the 1,000 labelled images (0.556 and 0.660 on two
    # machines), the stages with the teacher all 2,000, the distill stage from the scratch
    # student's weights (0.720; 0.668-0.722 when it started from new ones), pruned 0.714,
    # qat and int8 0.718: well above chance (0.1).
    for name in ("scratch", "distilled", "pruned", "qat", "int8"):
        assert rows[name]["accuracy"] > 0.45, (name, rows[name]["accuracy"])
    for name, examples in (("scratch", 1000), ("distilled", 2000)):
        entry = json.loads((output / "stages" / name / "entry.json").read_text())
        assert entry["details"]["train_examples"] == examples
        assert entry["details"]["labelled_examples"] == 1000
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
        "  - stage: train\n"
        "    name: scratch\n"
        "    model: {architecture: cnn, filters: [8, 16]}\n"
        "    epochs: 2\n"
        "  - stage: distill\n"
        "    name: distilled\n"
        "    teacher: teacher\n"
        "    student: {architecture: cnn, filters: [8, 16]}\n"
        "    epochs: 4\n"
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
    # Killed once the third stage has trained an epoch: 3 of its 4 epochs, its evaluation and
    # its files are still to come (scratch's 2 epochs print "Epoch 2/2", not the trigger).
    for line in process.stdout:
        seen.append(line)
        if "Epoch 2/4" in line and any("distilled (distill): started" in s for s in seen):
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
    assert "Epoch 4/4" in result.stdout
    assert (_sha256(scratch), scratch.stat().st_mtime_ns) == before
    assert not list(output.rglob(".tmp-*"))
    for name in ("scratch", "distilled"):
        entry = json.loads((stages / name / "entry.json").read_text())
        assert entry["sha256"] == _sha256(stages / name / "model.keras")
        keras.saving.load_model(stages / name / "model.keras")
    report = json.loads((output / "report.json").read_text())
    assert [row["name"] for row in report["rows"]] == ["teacher", "scratch", "distilled"]


def test_help_check_and_report_import_no_keras(tmp_path):
    """`--help`, `check` and `report` answer at once: before, they imported TensorFlow
    first (4 s here, 12 s on a loaded machine)."""
    run = tmp_path / "run"
    run.mkdir()
    data = {"name": "x", "train_examples": 1, "test_examples": 1, "input_shape": [1]}
    (run / "config.json").write_text(json.dumps({"stages": [], "data": data}))
    channels = tmp_path / "channels.yaml"  # before: prune_channels imported Keras (8 s)
    channels.write_text(
        "data: fashion_mnist\nstages:\n"
        "  - {stage: train, model: {architecture: cnn}}\n"
        "  - {stage: prune_channels, importance: l2}\n"
    )
    for arguments in (
        ["--help"],
        ["check", "examples/pipeline_fashion_mnist.yaml"],
        ["check", channels],
        ["report", run],
    ):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "tfkd", *map(str, arguments)],
            cwd=REPO,
            env=ENV,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
        assert "tfkd.cli" in imported
        assert not imported & {"keras", "tensorflow", "jax"}, arguments


def test_check_lists_every_error_at_once(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(
        "data: {name: fashion_mnst}\n"
        "stages:\n"
        "  - {stage: train, name: scratch, model: {architecture: cnn}, epochs: -1}\n"
        "  - {stage: prune, target_sparsity: 1.5, pattern: 2-4, exclude: [conv1]}\n"
        "  - {stage: export, quantization: int4, io_dtype: int8, fast: true}\n"
    )
    result = _tfkd("check", config)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"tfkd: config error: {config}:1: data.name: Unknown data set. Received: name="
        "'fashion_mnst'. Available: ['animal_mnist', 'fashion_mnist', 'mnist']",
        f"tfkd: config error: {config}:3: stages[0].epochs: `epochs` must be a non-negative "
        "integer. Received: epochs=-1",
        f"tfkd: config error: {config}:4: stages[1].target_sparsity: `target_sparsity` must be "
        "in [0, 1). Received: target_sparsity=1.5",
        f"tfkd: config error: {config}:4: stages[1].pattern: `pattern` must be 'unstructured' "
        "or 'N:M' with 0 < N < M (e.g. '2:4'). Received: pattern='2-4'",
        f"tfkd: config error: {config}:5: stages[2].fast: unknown key for stage 'export'. "
        "Accepted keys: ['accuracy_budget', 'calibration_samples', 'from_stage', 'io_dtype', "
        "'name', 'overrides', 'per_channel', 'quantization', 'recipe', 'validation_samples']",
        # io_dtype is not blamed for the bad quantization it is checked against
        f"tfkd: config error: {config}:5: stages[2].quantization: Unknown quantization. "
        "Received: quantization='int4'. Accepted: [None, 'dynamic', 'float16', 'int8', "
        "'int16x8', 'auto'] (or a LiteRT quantizer `recipe`)",
        f"tfkd: 6 errors in {config}.",
    ]
    for example in ("pipeline_fashion_mnist.yaml", "pipeline_fashion_mnist_all_labels.yaml"):
        result = _tfkd("check", f"examples/{example}")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"examples/{example}: no errors.")


def test_a_failing_stage_prints_one_line_and_the_traceback_only_with_debug(tmp_path):
    # A model that fits the data, so the checks before the run pass, with NaN weights: its
    # training fails when the stage runs.
    broken = tmp_path / "nan.keras"
    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    model.set_weights([np.full(w.shape, np.nan, "float32") for w in model.get_weights()])
    model.save(broken)
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        "data: {name: fashion_mnist, train_size: 64, test_size: 64}\n"
        f"stages:\n  - {{stage: train, name: trained, model: {{path: {broken}}}, epochs: 1}}\n"
    )
    result = _tfkd("run", config, "--output", tmp_path / "out")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("tfkd: ")]
    assert len(lines) == 2, result.stderr[-3000:]
    assert lines[0].startswith("tfkd: Stage 'trained' (train) failed: FloatingPointError: ")
    assert lines[0].endswith("fix the cause and rerun to resume from this stage.")
    assert lines[1] == "tfkd: add --debug to see the traceback."
    assert "Traceback" not in result.stderr
    result = _tfkd("run", config, "--output", tmp_path / "out", "--debug")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "StageError: Stage 'trained' (train) failed" in result.stderr
