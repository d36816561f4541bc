"""A small run of `benchmarks/fuzz_inputs.py` (issue 16.2): mutated copies of the real input
files load as before, load changed (formats without a checksum only), or raise the
reader's documented error; no crash, hang or other exception. The full run (1,000
mutations a file) is the script's default: `python benchmarks/fuzz_inputs.py`."""

import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TARGETS = ["config", "idx", "animal_mnist_pickle", "checkpoint_unnamed", "csv", "vocabulary"]
TARGETS += ["keras", "keras_weights"]  # the pipeline's `.keras` reader, and behind its zip


def _fuzz(targets, mutations, tmp_path):
    output = tmp_path / "fuzz.json"
    command = [sys.executable, str(REPO / "benchmarks" / "fuzz_inputs.py")]
    command += ["--mutations", str(mutations), "--targets", *targets, "--output", str(output)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = json.loads(output.read_text())["targets"]
    assert sorted(results) == sorted(targets)
    for name, result in results.items():
        outcomes = result["outcomes"]
        assert result["failures"] == [], name
        total = sum(outcomes.get(kind, 0) for kind in ("same", "changed", "error"))
        assert total == mutations, name
        assert outcomes.get("error", 0) > 0, name  # the mutations reach the checks
        assert 0 < result["peak_rss_mb"] < 3072, name


# Slow (`bash scripts/test.sh -m slow`): 50 s in CI; each reader's crafted files have tests of
# their own.
@pytest.mark.slow
def test_a_few_mutations_of_a_config_an_idx_and_a_keras_file_are_refused_cleanly(tmp_path):
    # The script and its workers in the default run (about 22 s here): three readers,
    # four seeded mutations each (all refused, by ConfigError and ValueError).
    _fuzz(["config", "idx", "keras"], 4, tmp_path)


# Slow (`bash scripts/test.sh -m slow`): 153 s in CI, most of it its workers' imports; the
# test above runs the script on three of its readers in the default run.
@pytest.mark.slow
def test_mutated_input_files_are_read_or_refused_cleanly(tmp_path):
    _fuzz(TARGETS, 12, tmp_path)
