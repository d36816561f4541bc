"""The copies tfkd makes of a model keep what an adapted Normalization computes.

Keras's `set_weights` sets its variables but not the mean and variance it computes with
(`finalize_state`): before, every copy's Normalization normalized with the mean 0 and the
variance 0 of its build, its outputs off by 24 where the model's were up to 0.6.
"""

import keras
import numpy as np

import tfkd
from tfkd import _graph


def test_the_copies_of_a_model_keep_its_adapted_normalization():
    x = np.random.default_rng(0).uniform(0, 255, size=(32, 8, 8, 3)).astype("float32")
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(x)
    model = keras.Sequential(
        [keras.Input((8, 8, 3)), norm, keras.layers.Conv2D(4, 3, activation="relu")]
        + [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)]
    )
    expected = keras.ops.convert_to_numpy(norm(x))
    assert np.abs(expected.mean(axis=(0, 1, 2))).max() < 1e-3  # normalized
    pruned = tfkd.prune.prune(model, 0.5)
    copies = {
        "prune": pruned,
        "strip": tfkd.prune.strip(pruned),
        "cluster_weights": tfkd.cluster.cluster_weights(model, 4),
        "copy_model": _graph.copy_model(model),
    }
    for name, copy in copies.items():
        (copied,) = [
            layer
            for layer in _graph.leaf_layers(copy)
            if isinstance(layer, keras.layers.Normalization)
        ]
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(copied(x)), expected, atol=1e-4, err_msg=name
        )
    # The whole pruned model (masks of ones before training) computes what the model does.
    np.testing.assert_allclose(
        pruned.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_the_copies_keep_an_adapted_discretization_s_bins():
    # Its bins are in its config; finalizing a copy's state (as for a Normalization)
    # recomputed them from an adapt summary the copy does not have: every bin lost.
    x = np.random.default_rng(0).uniform(5, 15, size=(64, 4)).astype("float32")
    bins = keras.layers.Discretization(num_bins=4)
    bins.adapt(x)
    inputs = keras.Input((4,))
    binned = keras.ops.cast(bins(inputs), "float32")
    model = keras.Model(inputs, keras.layers.Dense(3)(binned))
    copy = _graph.copy_model(model)
    (copied,) = [layer for layer in copy.layers if isinstance(layer, keras.layers.Discretization)]
    assert len(copied.bin_boundaries) == 3
    np.testing.assert_allclose(copy.predict(x, verbose=0), model.predict(x, verbose=0))
