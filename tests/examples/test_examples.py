"""Examples run top to bottom in their `--smoke` mode and print what they claim."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run_smoke(script, output_dir):
    result = subprocess.run(
        [sys.executable, f"examples/{script}", "--smoke", "--output-dir", str(output_dir)],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=3000,  # ends a hung run; smoke runs took minutes on slow, loaded machines
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_distill_fashion_mnist_smoke(tmp_path):
    result = _run_smoke("distill_fashion_mnist.py", tmp_path)
    assert "student, distilled" in result.stdout and "student, labels only" in result.stdout
    metadata = json.loads(
        (tmp_path / "fashion_mnist_student_distilled" / "metadata.json").read_text()
    )
    assert metadata["teacher_test_accuracy"] > 0.9
    assert 0.3 < metadata["test_accuracy"] <= 1.0
    assert (
        metadata["bytes"]
        == (tmp_path / "fashion_mnist_student_distilled" / "model.keras").stat().st_size
    )


def test_prune_fashion_mnist_smoke(tmp_path):
    result = _run_smoke("prune_fashion_mnist.py", tmp_path)
    assert "overall sparsity of prunable kernels: 0.80" in result.stdout
    for name in ("student_pruned_float32.tflite", "student_pruned_int8.tflite"):
        assert name in result.stdout and (tmp_path / name).stat().st_size > 0
    report = json.loads((tmp_path / "prune_report.json").read_text())
    assert report["student_pruned_int8.tflite"]["float_ops"] == []
    sparse = (tmp_path / "student_pruned_float32.tflite").stat().st_size
    assert sparse < 0.6 * (tmp_path / "student_dense_float32.tflite").stat().st_size


def test_quantize_fashion_mnist_smoke(tmp_path):
    result = _run_smoke("quantize_fashion_mnist.py", tmp_path)
    report = json.loads((tmp_path / "quantize_report.json").read_text())
    for name in ("student_ptq_int8.tflite", "student_qat_int8.tflite"):
        assert name in result.stdout
        assert report[name]["float_ops"] == []
        assert report[name]["bytes"] < 0.5 * report["student_float32.tflite"]["bytes"]
    # Both int8 files stay close to the float file on the same 1,000 test images.
    float_accuracy = report["student_float32.tflite"]["accuracy"]
    assert report["student_ptq_int8.tflite"]["accuracy"] > float_accuracy - 0.02
    assert report["student_qat_int8.tflite"]["accuracy"] > float_accuracy - 0.02


@pytest.mark.slow  # 162 s in CI (MobileNetV2 fine-tuned): `bash scripts/test.sh -m slow`
def test_transfer_fashion_mnist_smoke(tmp_path):
    result = _run_smoke("transfer_fashion_mnist.py", tmp_path)
    assert "MobileNetV2, fine-tuned (this run)" in result.stdout
    report = json.loads((tmp_path / "transfer_report.json").read_text())
    assert report["teacher 2 (bundled)"]["accuracy"] > 0.9
    # 512 images, 1 + 1 epochs: the ImageNet backbone already gives usable features.
    assert report["MobileNetV2, fine-tuned (this run)"]["accuracy"] > 0.5
    assert report["unfrozen_layers"] > 0
    assert (tmp_path / "student_distilled_int8.tflite").stat().st_size > 0


@pytest.mark.slow  # 218 s in CI (it fine-tunes MiniLM briefly): `bash scripts/test.sh -m slow`
def test_distill_minilm_tweets_smoke(tmp_path):
    result = _run_smoke("distill_minilm_tweets.py", tmp_path)
    assert "TF-IDF + logistic regression" in result.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    teacher, (seed,) = results["teacher"], results["seeds"]
    assert (
        teacher["parameters"] > 22_000_000 and teacher["keras_agreement"]["top1_agreement"] == 1.0
    )
    # Every student beats always answering the most common class (0.44 of the smoke test split).
    assert results["majority_class_rate"] > 0.4
    for key in ("scratch", "distilled", "distilled_unlabeled", "qat"):
        assert results["majority_class_rate"] + 0.05 < seed[key] <= 1.0, (key, seed[key])
    for key in ("int8_ptq", "int8_qat"):
        assert seed[key]["float_ops"] == []
        assert seed[key]["bytes"] * 20 < teacher["bytes"]
    # The teacher's outputs were cached: a second run reads them instead of running it.
    for split in ("train", "unlabeled", "test"):
        assert (tmp_path / f"teacher_outputs_{split}.npz").is_file()
    # The exported student runs with the vocabulary file and LiteRT only (no TensorFlow).
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, runpy; script = runpy.run_path('examples/tweets_tflite_predict.py');"
            "script['main']([sys.argv[1], sys.argv[2], 'thanks so much!']);"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported TF'",
            str(tmp_path / "student_int8.tflite"),
            str(tmp_path / "vocab.txt"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr[-2000:]
    assert check.stdout.split()[0] in ("negative", "neutral", "positive")
