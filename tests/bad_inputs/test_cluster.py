"""Bad inputs to `tfkd.cluster` fail early, naming the argument and value."""

import keras
import numpy as np

from tests.bad_inputs._cases import Case, check, parametrize
from tfkd import cluster, pipeline, quantize


def _model():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")], name="tiny")


def _subclassed():
    class Subclassed(keras.Model):
        def call(self, inputs):
            return inputs

    return Subclassed(name="sub")


def _dense():
    return keras.layers.Dense(2)


CASES = [
    Case(cluster.ClusteredLayer, lambda: cluster.ClusteredLayer("d"), TypeError, "layer", "'d'"),
    Case(
        cluster.ClusteredLayer,
        lambda: cluster.ClusteredLayer(_dense(), clusters=1),
        ValueError,
        "clusters",
        "1",
    ),
    Case(
        cluster.ClusteredLayer,
        lambda: cluster.ClusteredLayer(_dense(), per_channel="yes"),
        TypeError,
        "per_channel",
        "'yes'",
    ),
    Case(
        cluster.ClusteredLayer,
        lambda: cluster.ClusteredLayer(_dense(), init="random"),
        ValueError,
        "init",
        "'random'",
    ),
    Case(
        cluster.cluster_weights,
        lambda: cluster.cluster_weights(_model(), clusters=1),
        ValueError,
        "clusters",
        "1",
    ),
    Case(
        cluster.cluster_weights,
        lambda: cluster.cluster_weights(_model(), clusters=9),
        ValueError,
        "clusters",
        "9",
    ),
    Case(  # before: any string read as True, and the error was about `clusters`
        cluster.cluster_weights,
        lambda: cluster.cluster_weights(_model(), clusters=9, per_channel="yes"),
        TypeError,
        "per_channel",
        "'yes'",
    ),
    Case(
        cluster.cluster_weights,
        lambda: cluster.cluster_weights(_model(), 4, preserve_sparsity="no"),
        TypeError,
        "preserve_sparsity",
        "'no'",
    ),
    Case(
        cluster.cluster_weights,
        lambda: cluster.cluster_weights(_model(), clusters=2.5),
        ValueError,
        "clusters",
        "2.5",
    ),
    Case(
        cluster.cluster_weights,
        lambda: cluster.cluster_weights(quantize.quantize_aware(_model()), 4),
        ValueError,
        "model",
        "'tiny",
    ),
    Case(
        cluster.cluster_weights,
        lambda: cluster.cluster_weights(_model(), 4, include=["nope"]),
        ValueError,
        "include",
        "['nope']",
    ),
    Case(pipeline.Cluster, lambda: pipeline.Cluster(clusters=1), ValueError, "clusters", "1"),
    Case(pipeline.Cluster, lambda: pipeline.Cluster(clusters="8"), TypeError, "clusters", "'8'"),
    Case(
        pipeline.Cluster,
        lambda: pipeline.Cluster(per_channel="no"),
        TypeError,
        "per_channel",
        "'no'",
    ),
    Case(
        pipeline.Cluster,
        lambda: pipeline.Cluster(fold_batch_norm=1),
        TypeError,
        "fold_batch_norm",
        "=1",
    ),
    Case(
        cluster.cluster_weights,
        lambda: cluster.cluster_weights(_model(), 4, fold_batch_norm="yes"),
        TypeError,
        "fold_batch_norm",
        "'yes'",
    ),
    Case(
        cluster.cluster_weights,
        lambda: cluster.cluster_weights(keras.Sequential([_dense()], name="unbuilt"), 4),
        ValueError,
        "model",
        "'unbuilt'",
    ),
    Case(cluster.strip, lambda: cluster.strip("m"), TypeError, "model", "str"),
    Case(cluster.strip, lambda: cluster.strip(None), TypeError, "model", "NoneType"),
    Case(cluster.strip, lambda: cluster.strip(_subclassed()), TypeError, "model", "'sub'"),
    Case(cluster.summary, lambda: cluster.summary("m"), TypeError, "model", "str"),
    Case(cluster.summary, lambda: cluster.summary(None), TypeError, "model", "NoneType"),
    Case(cluster.summary, lambda: cluster.summary(3), TypeError, "model", "int"),
]


@parametrize(CASES)
def test_bad_input_is_refused(case):
    check(case)


def test_numpy_scalars_pass_where_numbers_do():
    clustered = cluster.cluster_weights(_model(), np.int64(2), per_channel=np.bool_(False))
    assert clustered.get_layer("dense").clusters == 2
