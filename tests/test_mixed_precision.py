"""Models that compute in float16 (a `mixed_float16` policy): clustering, quantization-aware
training and export take float32 models, and say so up front (before: a half-and-float
multiplication, a float16 fake-quantization, and a float export told to pass
select_tf_ops)."""

import keras
import numpy as np
import pytest

import tfkd


@pytest.fixture
def mixed():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(4)])
        model(np.zeros((1, 8), "float32"))
        yield model
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    "entry, call",
    [
        ("tfkd.cluster.cluster_weights", lambda m, path: tfkd.cluster.cluster_weights(m, 4)),
        ("tfkd.quantize.quantize_aware", lambda m, path: tfkd.quantize.quantize_aware(m)),
        ("export_tflite", lambda m, path: tfkd.export_tflite(m, path)),
    ],
)
def test_a_model_computing_in_float16_is_refused_naming_its_layers(mixed, tmp_path, entry, call):
    with pytest.raises(ValueError, match=rf"{entry} takes models that compute in float32.*'dense"):
        call(mixed, tmp_path / "m.tflite")
    assert not (tmp_path / "m.tflite").exists()


def test_a_float32_model_under_a_mixed_global_policy_is_refused_where_layers_are_made(mixed):
    keras.mixed_precision.set_global_policy("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    model(np.zeros((1, 8), "float32"))
    keras.mixed_precision.set_global_policy("mixed_float16")
    with pytest.raises(ValueError, match=r"quantize_aware makes new layers.*'mixed_float16'"):
        tfkd.quantize.quantize_aware(model)
