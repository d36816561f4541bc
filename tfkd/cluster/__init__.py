"""Weight clustering for Keras 3 models: kernels that share a few trained values."""

from tfkd.cluster.clustering import cluster_weights, strip, summary
from tfkd.cluster.layer import ClusteredLayer

__all__ = ["ClusteredLayer", "cluster_weights", "strip", "summary"]
