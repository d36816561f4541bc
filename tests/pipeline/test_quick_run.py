"""A smoke run (`--quick`: one epoch of 2,000 examples, 16 steps a stage) shows sensible
figures: BatchNormalization's moving statistics catch up, and pruning is gradual."""

import pathlib

import keras
import numpy as np
import pytest

import tfkd
from tfkd.pipeline import Data, Distill, Export, Load, Prune, QuantizeAware, Train

REPO = pathlib.Path(__file__).resolve().parents[2]
TEACHER = REPO / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
# The student of examples/pipeline_fashion_mnist_all_labels.yaml (every label, a loaded teacher).
STUDENT = {"architecture": "cnn", "filters": [24, 48, 96], "dense_units": 128, "dropout": 0.3}


# About 25 s (90 s on JAX); test_cli.py's quick run checks the default (few-labels) config.
@pytest.mark.slow
def test_a_quick_run_of_the_all_labels_config_scores_well_above_chance(tmp_path):
    data = Data.load("fashion_mnist", train_size=2000, test_size=500)
    stages = [
        Load(TEACHER, name="teacher"),
        Train(STUDENT, epochs=8, name="scratch"),
        Distill("teacher", student=STUDENT, epochs=8, name="distilled"),
        Prune(target_sparsity=0.5, teacher="teacher", epochs=3, name="pruned"),
        QuantizeAware(teacher="teacher", epochs=2, name="qat"),
        Export(quantization="int8", name="int8"),
    ]
    report = tfkd.Pipeline(stages).execute(
        data, tmp_path, quick=True, tensorboard=False, verbose=0, log=lambda _: None
    )
    accuracy = {row["name"]: row["accuracy"] for row in report.rows}
    # Before (moving statistics near their initial values after 16 steps at momentum 0.99):
    # scratch 0.496, distilled 0.498, pruned 0.156, qat 0.236, int8 0.232; after: 0.67-0.74.
    for name in ("scratch", "distilled", "pruned", "qat", "int8"):
        assert accuracy[name] > 0.55, accuracy
    pruned = next(row for row in report.rows if row["name"] == "pruned")
    distilled = next(row for row in report.rows if row["name"] == "distilled")
    assert pruned["nonzero_parameters"] < 0.6 * distilled["nonzero_parameters"]


def test_batch_norm_statistics_are_those_of_the_trained_weights(tmp_path):
    # Issue 18 found it: Animal-MNIST's first convolution varies little (batch variance
    # about 0.003), and the moving variance kept much of its initial 1 after 6 epochs:
    # the CNN scored 0.10 (chance) in inference against 0.97 in training.
    data = Data.load("animal_mnist", train_size=2000, test_size=500)
    model = {"architecture": "cnn", "filters": [32, 64, 128]}
    report = tfkd.Pipeline([Train(model, epochs=3, name="cnn")]).execute(
        data, tmp_path, tensorboard=False, verbose=0, log=lambda _: None
    )
    assert report.rows[0]["accuracy"] > 0.5, report.rows[0]["accuracy"]
    trained = keras.saving.load_model(tmp_path / "stages" / "cnn" / "model.keras")
    batch = data.x_train[:256]
    layer = trained.get_layer("conv1_bn")
    inputs = (
        keras.Model(trained.input, layer.input)(batch).numpy().reshape(-1, layer.input.shape[-1])
    )
    np.testing.assert_allclose(layer.moving_variance.numpy(), inputs.var(0), rtol=0.5, atol=1e-4)
