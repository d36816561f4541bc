"""`cluster_weights`, `strip` and `summary`: weight clustering of whole Keras models."""

import keras
import numpy as np

from tfkd import _checks, _graph, _kernels
from tfkd.cluster import _kmeans as kmeans
from tfkd.cluster.layer import (
    ClusteredLayer,
    check_clusters,
    check_clusters_fit,
    output_channels,
)
from tfkd.quantize.layers import FoldedBatchNormalization, fold, foldable_batch_norms

_SUBCLASSED_FIX = (
    "Wrap the layers to cluster with tfkd.cluster.ClusteredLayer(layer, clusters) inside the "
    "model's __init__, or build the model with the functional API."
)


def cluster_weights(
    model,
    clusters=16,
    *,
    per_channel=False,
    preserve_sparsity=True,
    init="kmeans++",
    include=None,
    exclude=None,
    fold_batch_norm=False,
):
    """Returns a copy of `model` whose kernels share `clusters` trained values each.

    Each selected layer's kernel (a SeparableConv's pointwise kernel: its depthwise
    kernel keeps its values) is clustered by k-means on its current weights and
    wrapped in a `ClusteredLayer`; fine-tune the result with `fit` (or as a
    `tfkd.Distiller` student): the centroids and, straight through, the weights train, and
    the layer computes with each weight's nearest centroid.
    `strip` (and `tfkd.export_tflite`, which strips by itself) gives plain layers whose
    kernels hold at most `clusters` distinct values, which compress well (gzip) and map
    to look-up tables. Cluster a pruned model after `tfkd.prune.strip`: its zeros stay
    zero, as one of the `clusters` values. `model` itself is not changed.

    Args:
        model: a Sequential or functional Keras model. A layer of your own class is kept
            whole: a warning names the layers it holds that would be clustered; wrap them
            in `ClusteredLayer` in its code, or `exclude` it.
        clusters: values per kernel (per output channel with `per_channel`), >= 2.
            Defaults to `16`.
        per_channel: cluster each output channel on its own. Defaults to `False`.
        preserve_sparsity: keep zero weights at zero, as one of the `clusters` values
            (tfmot's sparsity-preserving clustering). Defaults to `True`.
        init: `"kmeans++"` or `"linear"`. Defaults to `"kmeans++"`.
        include: the layers to cluster, as in `tfkd.prune.prune`. Defaults to every
            Dense, convolution and Embedding layer.
        exclude: layers to leave as they are. Defaults to none.
        fold_batch_norm: first fold each BatchNormalization into the Dense or
            convolution before it (with its moving statistics, as inference computes
            it), and cluster the folded kernel: the one the `.tflite` file holds. The
            converter folds it anyway, one factor per output channel, so without this a
            kernel keeps `clusters` values per channel only; with it and
            `tfkd.export_tflite(..., per_channel=False)`, at most `clusters` int8 values
            per kernel. The normalization no longer trains. Defaults to `False`.

    Returns:
        A new Keras model with `ClusteredLayer`s, compiled as `model` was (as
        `keras.models.clone_model` makes it): compile it to choose its optimizer
        (README: Adam at 1e-4).

    Raises:
        TypeError: `model` is not Sequential or functional.
        ValueError: bad `clusters` (< 2, or more than a selected kernel's weights), a bad
            `init`, a model that is not built, quantization-aware or holding pruning
            wrappers, or a layer name that does not exist.

    Example:

    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> clustered = tfkd.cluster.cluster_weights(model, clusters=4)
    >>> len(np.unique(tfkd.cluster.strip(clustered).layers[0].get_weights()[0]))
    4
    """
    _graph.require_graph_model(model, "tfkd.cluster.cluster_weights", _SUBCLASSED_FIX)
    check_clusters(clusters)
    fold_batch_norm = _checks.check_flag("fold_batch_norm", fold_batch_norm)
    # Before the layers' checks, which read `per_channel` (a string read as True).
    per_channel = _checks.check_flag("per_channel", per_channel)
    preserve_sparsity = _checks.check_flag("preserve_sparsity", preserve_sparsity)
    if init not in kmeans.INITS:
        raise ValueError(f"`init` must be one of {kmeans.INITS}. Received: init={init!r}.")
    if not model.built:
        raise ValueError(
            "`model` is not built: clustering starts from its trained weights. Received: "
            f"model={model.name!r}, never called. Train it, or call it on data first."
        )
    _refuse_wrapped(model)
    # Before: k-means failed in numpy's words ("Probabilities contain NaN").
    _checks.check_finite_weights(model)
    _checks.check_float32_compute(model, "tfkd.cluster.cluster_weights", makes_layers=True)
    selected = clusterable_layers(model, include, exclude)
    check_layers_fit(selected, clusters, per_channel)
    selected_ids = {id(layer) for layer in selected}
    options = dict(per_channel=per_channel, preserve_sparsity=preserve_sparsity, init=init)
    folded = foldable_batch_norms(_graph.consumers(model)) if fold_batch_norm else {}
    folded_norms = {id(norm) for norm in folded.values()}

    def transform(layer):
        if id(layer) in folded_norms:
            return FoldedBatchNormalization(name=layer.name), lambda new: None
        norm = folded.get(layer)
        if id(layer) not in selected_ids and norm is None:
            return None
        new = _graph.copy_layer(layer) if norm is None else _with_bias(layer)
        if id(layer) not in selected_ids:
            return new, lambda new, old=layer: _set_folded(new, old, norm)
        wrapper = ClusteredLayer(new, clusters, **options)
        return wrapper, lambda new, old=layer: _take_weights(new, old, norm)

    return _graph.rebuild(model, transform)


def clusterable_layers(model, include=None, exclude=None, warn=True):
    """The layers of `model` that `cluster_weights` clusters, as `include` and `exclude`
    pick them; with `warn`, a warning names those it leaves inside the user's blocks.
    Raises `ValueError` (or `TypeError`) for a selection that names no layer or leaves
    none."""
    from tfkd.prune.pruning import _select

    layers = list(_graph.leaf_layers(model))
    return _select(layers, include, exclude, "cluster", stacklevel=4, warn=warn)


def check_layers_fit(layers, clusters, per_channel=False):
    """Raises `ValueError` for a built layer with fewer weights (per output channel with
    `per_channel`) than `clusters`."""
    for layer in layers:
        if layer.built:
            check_clusters_fit(layer, _kernels.kernel(layer).shape, clusters, per_channel)


def _with_bias(layer):
    """A copy of `layer` that has a bias (a folded BatchNormalization's shift goes there)."""
    return type(layer).from_config({**layer.get_config(), "use_bias": True})


def _set_folded(new, layer, norm):
    """`new` (`layer` with a bias) gets `layer`'s weights with `norm` folded in."""
    weights = {variable.name: variable for variable in layer.weights}
    name = _kernels.kernel_name(layer)
    kernel, bias = fold(layer, norm, weights[name], weights.get("bias"))
    for variable in new.weights:
        value = {name: kernel, "bias": bias}.get(variable.name, weights.get(variable.name))
        variable.assign(value)


def _take_weights(wrapper, layer, norm=None):
    if not layer.built:
        return
    if norm is None:
        _graph.set_weights(wrapper.layer, layer.get_weights())
    else:
        _set_folded(wrapper.layer, layer, norm)
    wrapper.assign_clusters()


def _refuse_wrapped(model):
    for layer in _graph.leaf_layers(model):
        if _graph.is_tfkd_wrapper(layer):
            kind = type(layer).__name__
            fix = {
                "QuantizeWrapper": "Cluster the float model, then call "
                "tfkd.quantize.quantize_aware on the stripped result.",
                "PrunedLayer": "Call tfkd.prune.strip(model) first: clustering keeps its zeros.",
                "ClusteredLayer": "Call tfkd.cluster.strip(model) first.",
            }.get(kind, "Unwrap it first.")
            raise ValueError(
                f"`model` holds wrapped layer {layer.name!r} ({kind}), which clustering "
                f"cannot wrap again. Received: model={model.name!r}. {fix}"
            )


def strip(model):
    """Returns a copy of `model` with each `ClusteredLayer` replaced by its plain layer,
    whose kernel holds the clustered values. `tfkd.export_tflite` calls this itself.

    Args:
        model: a Sequential or functional Keras model.

    Returns:
        A new Keras model.
    """
    return _graph.strip(model)


def summary(model):
    """The number of distinct kernel values of each Dense, convolution and Embedding layer.

    Reads clustered (`ClusteredLayer`) and plain layers, in nested models too.

    Args:
        model: a Keras model.

    Returns:
        A list of dicts: `name`, `path` (the names from `model`'s layers down to the
        layer, "branch/dense" in a nested model), `type`, `parameters`, `unique_values`
        (in the whole kernel) and `most_unique_per_channel` (over its output channels).

    Raises:
        TypeError: `model` is not a Keras model.
    """
    _checks.check_keras_model(model)
    rows = []
    for path, layer in _graph.leaf_layer_paths(model, subclassed=True):
        in_use = _kernels.kernel_in_use(layer)
        if in_use is None:
            continue
        kernel = np.asarray(keras.ops.convert_to_numpy(in_use[1]))
        columns = kernel.reshape(-1, output_channels(in_use[0], kernel.shape))
        rows.append(
            {
                "name": layer.name,
                "path": path,
                "type": type(in_use[0]).__name__,
                "parameters": int(kernel.size),
                "unique_values": int(len(np.unique(kernel))),
                "most_unique_per_channel": int(
                    max(len(np.unique(columns[:, index])) for index in range(columns.shape[1]))
                ),
            }
        )
    return rows
