"""`ClusteredLayer`: a layer whose kernel takes only the values of a few trained centroids."""

import keras
import numpy as np
from keras import ops

from tfkd import _checks
from tfkd._wrapper import KernelWrapper, readable
from tfkd.cluster import _kmeans as kmeans


@keras.saving.register_keras_serializable(package="tfkd")
class ClusteredLayer(KernelWrapper):
    """Shares the weights of `layer`'s kernel among `clusters` values (k-means).

    When built (or when `assign_clusters()` is called, as `tfkd.cluster.cluster_weights`
    does once the trained weights are in), the kernel's values are clustered; from then
    on the layer computes with `centroids[assignments]`. In training, as in tfmot, each
    weight is assigned its nearest centroid again at every step; the centroids get the
    gradient of all their weights, and the weights themselves get theirs straight through,
    so a weight can move to another centroid. The layer always computes with centroid
    values, and the stripped kernel has at most `clusters` distinct values (per output
    channel with `per_channel`). Zeros of a pruned kernel stay zero with
    `preserve_sparsity`, as one of the `clusters` values. Wrapping layers yourself (in a
    subclassed model), `fit` needs no call on data first: the kernel is clustered when
    the layer's weights get their values, in numpy (where TensorFlow builds the layer
    inside `fit`'s traced step, in the graph, from evenly spread centroids);
    `tfkd.export_tflite` converts such a model as it is.

    Args:
        layer: a Dense, convolution or Embedding layer.
        clusters: how many shared values, >= 2. Defaults to `16`.
        per_channel: clusters of their own for each slice along the kernel's last axis
            (output channels). Defaults to `False`.
        preserve_sparsity: keep the kernel's zeros at zero; they are one of the
            clusters, held at zero while the others train. Defaults to `True`.
        init: `"kmeans++"` (seeded D^2 sampling) or `"linear"` (evenly spaced between the
            extremes). Defaults to `"kmeans++"`.
        **kwargs: passed to `keras.layers.Layer`; the name defaults to the layer's.
    """

    strippable = True
    action = "clustered"
    layer_kinds = " (Dense, a convolution or Embedding)"

    def __init__(
        self,
        layer,
        clusters=16,
        per_channel=False,
        preserve_sparsity=True,
        init="kmeans++",
        **kwargs,
    ):
        check_clusters(clusters)
        per_channel = _checks.check_flag("per_channel", per_channel)
        preserve_sparsity = _checks.check_flag("preserve_sparsity", preserve_sparsity)
        if init not in kmeans.INITS:
            raise ValueError(f"`init` must be one of {kmeans.INITS}. Received: init={init!r}.")
        super().__init__(layer, **kwargs)
        self.clusters = int(clusters)
        self.per_channel = bool(per_channel)
        self.preserve_sparsity = bool(preserve_sparsity)
        self.init = init
        self._clusters_pending = False

    def build_state(self, input_shape):
        kernel = self.raw_kernel()
        check_clusters_fit(self.layer, kernel.shape, self.clusters, self.per_channel)
        columns = output_channels(self.layer, kernel.shape)
        shape = (columns, self.clusters) if self.per_channel else (self.clusters,)
        self._clusters_pending = True  # until the mask's initializer can read the kernel
        self.centroids = self.add_weight(name="centroids", shape=shape, initializer="zeros")
        self.assignments = self.add_weight(
            name="assignments",
            shape=kernel.shape,
            initializer="zeros",
            trainable=False,
            dtype="int32",
        )
        # Created last: its initializer finds the other two with values to assign.
        self.sparsity_mask = self.add_weight(
            name="sparsity_mask",
            shape=kernel.shape,
            initializer=self._initial_mask,
            trainable=False,
        )

    def _initial_mask(self, shape, dtype=None):
        """Initializes `sparsity_mask` and clusters the kernel (numpy k-means) as the
        weights get their values: at once in an eager build, and in a symbolic one (Keras
        builds a subclassed model by tracing its `call`: at its first call, or in `fit`)
        when that trace is over, before `fit` traces its step. Before, a subclassed model
        that `fit` built trained with the centroids all zero: every weight 0."""
        kernel = readable(self.raw_kernel())
        if kernel is None:  # the trace's stand-in value, or TensorFlow builds it traced
            return ops.ones(shape, dtype)
        centroids, assignments, keep = self._clusters_of(kernel)
        self.centroids.assign(centroids)
        self.assignments.assign(assignments)
        self._clusters_pending = False
        return ops.cast(keep, dtype)

    def _cluster_pending(self):
        """Clusters the kernel where the build could not: at the first call on data, unless
        loaded weights brought centroids; in a traced step (TensorFlow builds a subclassed
        model given `build(input_shape)` inside the step of `fit`, `predict` or
        `evaluate`), in the graph."""
        centroids = readable(self.centroids)
        if centroids is None:
            self._cluster_in_graph()
            return
        if not centroids.any():
            self.assign_clusters()
        self._clusters_pending = False

    def settle(self):
        """Ends, eagerly, a clustering left pending where every step so far was traced (on
        TensorFlow, a subclassed model given `build(input_shape)`: the traced steps cluster
        in the graph, and keep the check): a trace that must not assign variables (an
        export's) then holds none. `tfkd.export_tflite` calls it."""
        if self._clusters_pending and self.built:
            self._cluster_pending()

    def _cluster_in_graph(self):
        """Clusters the kernel in `keras.ops` while the centroids are all zero, in the
        graph: once, at the first step that runs. Before, such a model trained with the
        centroids all zero: every weight 0, learning nothing."""
        weights = (self.centroids, self.assignments, self.sparsity_mask)
        kernel = ops.convert_to_tensor(self.raw_kernel())
        values = ops.cond(
            ops.all(ops.equal(self.centroids, 0)),
            lambda: self._traced_clusters(kernel),
            lambda: tuple(ops.convert_to_tensor(weight) for weight in weights),
        )
        for weight, value in zip(weights, values, strict=True):
            weight.assign(ops.cast(value, weight.dtype))

    def assign_clusters(self):
        """Clusters the wrapped layer's kernel as it is now."""
        centroids, assignments, keep = self._clusters_of(ops.convert_to_numpy(self.raw_kernel()))
        self.centroids.assign(centroids)
        self.assignments.assign(assignments)
        self.sparsity_mask.assign(keep)
        self._clusters_pending = False

    def _clusters_of(self, kernel):
        """`(centroids, assignments, sparsity mask)` of the numpy array `kernel`, k-means."""
        kernel = np.asarray(kernel, np.float32)
        keep = kernel != 0 if self.preserve_sparsity else np.ones(kernel.shape, bool)
        if not keep.any():
            keep = np.ones(kernel.shape, bool)
        columns = output_channels(self.layer, kernel.shape) if self.per_channel else 1
        slices = kernel.reshape(-1, columns)
        kept = keep.reshape(slices.shape)
        centroids = np.zeros((slices.shape[1], self.clusters), np.float32)
        assignments = np.zeros(slices.shape, np.int32)
        for column in range(slices.shape[1]):
            values = slices[kept[:, column], column]
            # Pruned zeros are one of the clusters: at most `clusters` values in all.
            zero = values.size > 0 and not kept[:, column].all()
            values = values if values.size else slices[:, column]
            centroids[column], _ = kmeans.kmeans(values, self.clusters, self.init, zero=zero)
            assignments[:, column] = kmeans.nearest(slices[:, column], centroids[column])
        centroids = centroids if self.per_channel else centroids[0]
        return centroids, assignments.reshape(kernel.shape), keep.astype(np.float32)

    def _traced_clusters(self, kernel):
        """`_clusters_of` in `keras.ops`, where the kernel has no value to read in numpy (a
        traced function): centroids spread evenly (`init="linear"`), then Lloyd's steps."""
        keep = ops.not_equal(kernel, 0) if self.preserve_sparsity else ops.ones_like(kernel)
        keep = ops.cast(keep, kernel.dtype)
        keep = ops.where(ops.any(keep > 0), keep, ops.ones_like(keep))
        columns = output_channels(self.layer, kernel.shape) if self.per_channel else 1
        centroids = kmeans.traced_kmeans(
            ops.reshape(kernel, (-1, columns)), ops.reshape(keep, (-1, columns)), self.clusters
        )
        centroids = centroids if self.per_channel else centroids[0]
        return centroids, nearest_centroids(kernel, centroids, self.per_channel), keep

    def kernel_mask(self):
        return self.sparsity_mask

    def held_centroids(self):
        """The centroids the layer computes with. Where the kernel (or, `per_channel`, an
        output channel) has pruned zeros, its centroid nearest zero is held at zero: the
        zeros are one of the `clusters` values, as in tfmot's sparsity-preserving
        clustering, however the other centroids train."""
        if not self.preserve_sparsity:
            return self.centroids
        centroids = ops.reshape(self.centroids, (-1, self.clusters))
        mask = ops.reshape(self.sparsity_mask, (-1, centroids.shape[0]))
        pruned = ops.cast(ops.less(ops.min(mask, axis=0), 1), centroids.dtype)
        nearest_zero = ops.one_hot(ops.argmin(ops.abs(centroids), axis=-1), self.clusters)
        held = centroids * (1 - pruned[:, None] * nearest_zero)
        return ops.reshape(held, self.centroids.shape)

    def masked_kernel(self, assignments=None):
        """The kernel the layer computes with: each weight its centroid's value."""
        if assignments is None:
            assignments = ops.convert_to_tensor(self.assignments)
        centroids = self.held_centroids()
        if self.per_channel:
            rows = ops.reshape(assignments, (-1, centroids.shape[0]))
            values = ops.take_along_axis(ops.transpose(centroids), rows, axis=0)
            values = ops.reshape(values, assignments.shape)
        else:
            values = ops.take(centroids, assignments)
        return ops.multiply(values, self.sparsity_mask)

    def call(self, inputs, training=False):
        from tfkd import _kernels

        if self._clusters_pending:
            self._cluster_pending()
        if not training:
            return _kernels.forward(self.layer, inputs, self.masked_kernel())
        # As tfmot does: each weight takes its nearest centroid's value, and the gradient
        # reaches the centroids (summed over their weights) and, straight through, the
        # weights themselves, which can so move to another centroid.
        kernel = ops.convert_to_tensor(self.raw_kernel())
        assignments = nearest_centroids(kernel, self.held_centroids(), self.per_channel)
        self.assignments.assign(assignments)
        clustered = self.masked_kernel(assignments)
        return _kernels.forward(
            self.layer,
            inputs,
            clustered
            + kernel * self.sparsity_mask
            - ops.stop_gradient(kernel * self.sparsity_mask),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            clusters=self.clusters,
            per_channel=self.per_channel,
            preserve_sparsity=self.preserve_sparsity,
            init=self.init,
        )
        return config


def nearest_centroids(kernel, centroids, per_channel=False):
    """The index of the nearest centroid of each weight of `kernel` (`keras.ops`);
    `centroids` is `(clusters,)`, or `(output channels, clusters)` with `per_channel`."""
    if not per_channel:
        return ops.cast(ops.argmin(ops.abs(kernel[..., None] - centroids), axis=-1), "int32")
    rows = ops.reshape(kernel, (-1, centroids.shape[0]))
    distances = ops.abs(rows[:, :, None] - centroids[None])
    return ops.cast(ops.reshape(ops.argmin(distances, axis=-1), kernel.shape), "int32")


def check_clusters(clusters):
    if not _checks.is_integer(clusters) or clusters < 2:
        raise ValueError(
            "`clusters` must be an integer >= 2: the number of values each kernel keeps. "
            f"Received: clusters={clusters!r}."
        )


def output_channels(layer, shape):
    """How many output channels `layer`'s kernel of `shape` makes: its last axis, or for a
    depthwise kernel `(..., channels, multiplier)` the last two (channels-last order)."""
    depthwise = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
    return shape[-2] * shape[-1] if isinstance(layer, depthwise) else shape[-1]


def check_clusters_fit(layer, shape, clusters, per_channel):
    """Raises when `layer`'s kernel has fewer weights (per channel) than `clusters`."""
    size = int(np.prod(shape))
    size = size // output_channels(layer, shape) if per_channel else size
    if clusters > size:
        where = "per output channel" if per_channel else "in its kernel"
        raise ValueError(
            f"`clusters` is larger than the number of weights of layer {layer.name!r}: "
            f"{size} {where}. Received: clusters={clusters}. Use fewer clusters, or exclude "
            f"the layer with `exclude=[{layer.name!r}]`."
        )
