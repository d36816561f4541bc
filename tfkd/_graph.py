"""Model surgery, in one place: walking a model's layers, reading what its output layer
computes, copying and rebuilding Sequential and functional models layer by layer, and
stripping tfkd's wrappers, and digesting a model for caches and resume fingerprints (shared
by prune, quantize, distill, export and the pipeline)."""

import hashlib
import inspect
import json
import warnings

import keras
import numpy as np


def is_graph_model(model):
    """Whether `model` is Sequential or functional, so its graph can be rebuilt."""
    if isinstance(model, keras.Sequential):
        return True
    return any(cls.__name__ == "Functional" for cls in type(model).__mro__)


def require_graph_model(model, action, fix):
    """Raises a TypeError that says what to do when `model` cannot be rebuilt."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"{action} needs a Keras 3 model (keras.Model). Received: model of type "
            f"{type(model).__module__}.{type(model).__name__}. Pass a keras.Sequential, a "
            "functional keras.Model, or a model loaded with keras.saving.load_model."
        )
    if not is_graph_model(model):
        raise TypeError(
            f"{action} cannot rewire a subclassed model: its layers are connected by its "
            f"Python `call`. Received: model {model.name!r} of type {type(model).__name__}, "
            f"a subclass of keras.Model. {action} rebuilds Sequential or functional models. "
            f"{fix}"
        )


# Layers that return their input unchanged when not training (a model's pass-through at
# inference: pruning's channel graph and QAT's same-scale layers both see through them).
IDENTITY_AT_INFERENCE = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.SpatialDropout3D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.Identity,
)


def model_inputs(model):
    """`model`'s input tensors, flat; `[]` for a Sequential model never built or called."""
    if isinstance(model, keras.Sequential) and not model.built:
        return []
    return keras.tree.flatten(model.inputs)


def set_weights(layer, weights):
    """`layer.set_weights(weights)` (a layer or a model), then the state each Normalization
    in it derives from its variables (`finalize_state`), which Keras's
    `set_weights` leaves as it was: a copy of an adapted Normalization computed with the
    mean 0 and variance 0 of its build, its outputs off by 24 where they were up to 0.6
    (the copies of prune, cluster, quantize_aware and the pipeline)."""
    layer.set_weights(weights)
    inner = leaf_layers(layer, subclassed=True) if isinstance(layer, keras.Model) else []
    for each in [layer, *inner]:
        if isinstance(each, _ADAPTED_STATE) and each.built:
            each.finalize_state()


# Not Discretization: its bins are in its config, and its `finalize_state` recomputes them
# from an adapt summary a copy does not have (every bin lost).
_ADAPTED_STATE = (keras.layers.Normalization,)


def leaf_layers(model, subclassed=False, blocks=None):
    """The layers of `model`, descending into nested Sequential and functional models, each
    layer once (a layer shared by two nested models or blocks too).

    With `subclassed=True`, into nested subclassed models too, and (unless `blocks=False`)
    into the layers that a layer of the user's own class holds (a block of a subclassed
    model), or a wrapper not of tfkd (Keras's TimeDistributed), each after the layer that
    holds it: their layers can be read (a summary, the export's settling), but not
    rebuilt, so surgery leaves them out. tfkd's wrappers and the other layers of Keras,
    KerasHub and tfkd are not opened. Before, a `ClusteredLayer` in such a
    block was not found: the export failed, and the summaries left it out.
    """
    for _, layer in leaf_layer_paths(model, subclassed, blocks):
        yield layer


def leaf_layer_paths(model, subclassed=False, blocks=None):
    """`(path, layer)` for each layer of `leaf_layers(model, subclassed, blocks)`: `path`
    holds the names from `model`'s layers down to it ("branch/dense"), unique where two
    nested Sequential or functional models hold layers of one name (Keras keeps names
    unique inside each); a subclassed model or block may hold two layers of one name."""
    blocks = subclassed if blocks is None else blocks
    yield from _leaves(model.layers, subclassed, blocks, set(), "")


def _leaves(layers, subclassed, blocks, seen, prefix):
    for layer in layers:
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        path = prefix + layer.name
        if isinstance(layer, keras.Model) and (subclassed or is_graph_model(layer)):
            yield from _leaves(layer.layers, subclassed, blocks, seen, path + "/")
            continue
        yield path, layer
        if blocks and (_holds_own_layers(layer) or is_foreign_wrapper(layer)):
            held = layer._flatten_layers(include_self=False, recursive=False)
            yield from _leaves(held, subclassed, blocks, seen, path + "/")


def held_layers(layers):
    """{block: [(path, layer, maker)]} for each layer of the user's own class, and each
    wrapper not of tfkd (Keras's TimeDistributed), in `layers` (such as
    `leaf_layers(model)`): every layer it holds, inside its own blocks and models too,
    with its path of names from the block ("block/inner/dense") and the block whose code
    makes it (for a layer of a Keras model that a block holds, that block; for the layer
    a wrapper wraps, the wrapper). `rebuild` copies a block whole, from its config, so it
    cannot wrap what the block holds."""
    return {
        layer: list(_held(layer, layer.name, layer, {id(layer)}))
        for layer in layers
        if _holds_own_layers(layer) or is_foreign_wrapper(layer)
    }


def is_foreign_wrapper(layer):
    """Whether `layer` is a wrapper that is not tfkd's (Keras's TimeDistributed, or the
    user's own): tfkd keeps it whole, with the layer it wraps."""
    return isinstance(layer, keras.layers.Wrapper) and not _in_package(type(layer), "tfkd")


def is_tfkd_wrapper(layer):
    """Whether `layer` is one of tfkd's wrappers (pruning's, clustering's, QAT's)."""
    return isinstance(layer, keras.layers.Wrapper) and _in_package(type(layer), "tfkd")


def _held(container, path, maker, seen):
    for layer in container._flatten_layers(include_self=False, recursive=False):
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        inner_path = f"{path}/{layer.name}"
        yield inner_path, layer, maker
        if _holds_own_layers(layer) or is_foreign_wrapper(layer):
            yield from _held(layer, inner_path, layer, seen)
        elif isinstance(layer, keras.Model):  # a Keras model the block's code makes
            yield from _held(layer, inner_path, maker, seen)


# Packages whose layers' insides are theirs: a user's block is opened, theirs are not.
_LIBRARY_PACKAGES = ("keras", "keras_hub", "keras_cv", "keras_nlp", "keras_rs", "tfkd")


def _holds_own_layers(layer):
    return not isinstance(layer, keras.layers.Wrapper) and not is_library_class(type(layer))


def is_library_class(cls):
    """Whether class `cls` comes from Keras, KerasHub (and its kin) or tfkd, not the user."""
    return _in_package(cls, *_LIBRARY_PACKAGES)


def _in_package(cls, *packages):
    return cls.__module__.split(".")[0] in packages


def call_input_shapes(layer):
    """The shapes of the inputs `layer` reads, at every place a model's graph calls it (a
    shared layer has several; a model since thrown away counts too); `[]` for a layer
    never called in a graph.

    Keras's `layer.input` gives the first call's alone, and Keras 3 has no public way to
    read the others: this reads the layer's inbound nodes, which
    `tests/export/test_private_apis.py` checks.
    """
    nodes = getattr(layer, "_inbound_nodes", None) or []
    return [
        tuple(tensor.shape)
        for node in nodes
        for tensor in keras.tree.flatten(node.input_tensors)
        if hasattr(tensor, "shape")
    ]


def output_layer(model):
    """The layer that computes `model`'s single output, inside nested models too; None
    where the graph does not say (a subclassed model)."""
    if isinstance(model, keras.Sequential):
        layer = model.layers[-1] if model.layers else None
    else:
        try:
            layer = model.outputs[0]._keras_history[0]
        except (AttributeError, ValueError, IndexError, TypeError):
            return None
    if isinstance(layer, keras.Model):
        return output_layer(layer)
    return layer


def head_input_model(model):
    """A model from `model`'s inputs to the input of its last Dense layer (of its own, not
    inside a nested model): a classifier's features, such as a backbone's pooled features.
    Raises ValueError where there is no such layer or the graph does not say (a subclassed
    model)."""
    dense = []
    if is_graph_model(model) and model_inputs(model):
        dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense:
        raise ValueError(
            f"Features are read at the input of a model's last Dense layer, and model "
            f"{model.name!r} ({type(model).__name__}) has no Dense layer of its own in a graph "
            "that can be read. Received layers: "
            f"{[layer.name for layer in getattr(model, 'layers', [])][-5:]} (the last five). "
            "Use a Sequential or functional classifier that ends in a Dense layer."
        )
    return keras.Model(model.inputs, dense[-1].input, name=f"{model.name}_features")


def activation_name(layer):
    """What `layer` ends with: `"relu"`, `"relu6"`, `"softmax"`, `"sigmoid"`, `"other"` or
    `None` (linear)."""
    if isinstance(layer, keras.layers.ReLU):
        plain = layer.negative_slope == 0 and layer.threshold == 0
        if plain and layer.max_value is None:
            return "relu"
        return "relu6" if plain and layer.max_value == 6 else "other"
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    name = getattr(activation, "__name__", "")
    if name == "linear" and not isinstance(layer, keras.layers.Activation):
        return None
    return name if name in ("relu", "relu6", "softmax", "sigmoid") else "other"


def final_activation(layer):
    """`activation_name` of `layer`, or of the layer a tfkd wrapper holds in `.layer`."""
    inner = getattr(layer, "layer", None)
    if isinstance(inner, keras.layers.Layer):
        layer = inner
    return activation_name(layer)


def applies_softmax(layer):
    """Whether `layer` (or the layer a tfkd wrapper holds) ends in a softmax."""
    return final_activation(layer) == "softmax"


def output_activation(model):
    """`final_activation` of the layer that computes `model`'s single output (saved
    models and keras.applications often output probabilities); `"unknown"` where the
    graph does not say (a subclassed model)."""
    layer = output_layer(model)
    return "unknown" if layer is None else final_activation(layer)


def ends_in_softmax(model):
    """Whether `model`'s single output comes from a softmax; None if unknown (subclassed)."""
    activation = output_activation(model)
    return None if activation == "unknown" else activation == "softmax"


def architecture(model):
    """What defines `model`'s computation besides its weights, as plain data: each layer's
    class, config, and the code of classes outside Keras (a changed preprocessing layer
    holds no weights)."""
    layers = []
    for layer in model._flatten_layers(include_self=True):
        cls = type(layer)
        try:
            config = layer.get_config()
        except (NotImplementedError, TypeError, ValueError):  # a subclass without a config
            config = None
        code = None
        if not cls.__module__.startswith("keras."):
            try:
                code = inspect.getsource(cls)
            except (OSError, TypeError):  # defined where no source is kept
                code = None
        layers.append([f"{cls.__module__}.{cls.__qualname__}", config, code])
    return layers


def model_sha256(model):
    """The SHA-256, as hex, of `model`'s `architecture` and weights (with their paths,
    dtypes and shapes): a changed layer, layer class or weight changes it."""
    digest = hashlib.sha256(json.dumps(architecture(model), default=repr).encode())
    for weight in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{weight.path}:{value.dtype.str}:{value.shape};".encode())
        digest.update(value.data)
    return digest.hexdigest()


def parameters(model):
    """The values `model` computes with, as numpy arrays: kernels, biases, BatchNorm statistics.

    For parameter counts. Layers with an `effective_weights()` method (tfkd's wrappers)
    give their weights as they use them (a pruned kernel masked) and leave out their
    bookkeeping: pruning masks and steps, activation ranges.
    """
    return [keras.ops.convert_to_numpy(value) for value in _parameters(model)]


def _parameters(model):
    for layer in model.layers:
        if hasattr(layer, "effective_weights"):
            yield from layer.effective_weights()
        elif isinstance(layer, keras.Model):
            yield from _parameters(layer)
        else:
            yield from layer.weights


def plain_operations(model):
    """The `keras.ops` calls in `model`'s graph that are not layers (`x + 3.0`), nested too."""
    if isinstance(model, keras.Sequential):
        return []
    found = []
    for operation in model.operations:
        if isinstance(operation, keras.Model) and is_graph_model(operation):
            found.extend(plain_operations(operation))
        elif not isinstance(operation, keras.layers.Layer):
            found.append(operation)
    return found


def built_rank(layer):
    """The rank of the input `layer` was built on, or None before it was built (or built
    on several inputs)."""
    shape = (layer.get_build_config() or {}).get("input_shape") if layer.built else None
    if isinstance(shape, (list, tuple)) and all(isinstance(n, int | None) for n in shape):
        return len(shape)
    return None


def batch_norm_layers(layer):
    """The BatchNormalization layers in `layer`, inside nested models and wrappers too."""
    if isinstance(layer, keras.layers.BatchNormalization):
        yield layer
    for child in getattr(layer, "layers", None) or []:
        yield from batch_norm_layers(child)
    if isinstance(layer, keras.layers.Wrapper):
        yield from batch_norm_layers(layer.layer)


def behind_augmentation(model, augmentation, input_shape):
    """A model that trains `model` on batches `augmentation` changes in each training
    step (its random layers are inactive in inference); the weights are `model`'s own,
    so fitting it trains `model`, which is left unchanged in structure."""
    if augmentation is None:
        return model
    allow_jit(augmentation)
    inputs = keras.Input(tuple(input_shape), name="inputs")
    return keras.Model(inputs, model(augmentation(inputs)), name=f"{model.name}_augmented")


# Keras's random image layers that compile under `jax.jit` (see `allow_jit`).
_JIT_SAFE_AUGMENTATION = (
    keras.layers.RandomFlip,
    keras.layers.RandomTranslation,
    keras.layers.RandomRotation,
    keras.layers.RandomZoom,
)


def allow_jit(augmentation):
    """Lets a model that holds `augmentation` train under `jax.jit`; returns `augmentation`.

    Keras marks some preprocessing layers `supports_jit = False` (RandomTranslation,
    RandomRotation, RandomZoom, RandomCrop), and on JAX a model holding one then trains op
    by op, without `jax.jit`, which costs most on a GPU. Keras's random flip,
    translation, rotation and zoom are written in `keras.ops` and draw from a
    `SeedGenerator`, as `Dropout` does, so they compile: the same random stream and
    losses with and without jit. On JAX, when `augmentation` (a layer, or a Sequential or
    functional model of layers) holds only those layers and layers that support jit,
    it and they are marked `supports_jit = True`; otherwise, and on other backends,
    nothing changes (TensorFlow traces the step into a graph either way).
    """
    if augmentation is None or keras.backend.backend() != "jax":
        return augmentation
    if isinstance(augmentation, keras.Model):
        layers = list(leaf_layers(augmentation, subclassed=True))
    else:
        layers = [augmentation]
    if all(isinstance(layer, _JIT_SAFE_AUGMENTATION) or layer.supports_jit for layer in layers):
        for layer in [augmentation, *layers]:
            layer.supports_jit = True
    return augmentation


def copy_model(model, input_shape=None):
    """A new, uncompiled model with `model`'s architecture and weights; `model` is untouched.

    A Sequential model that was never built (no `keras.Input`, never called) has no
    weights yet: its copy is built for `input_shape` (without the batch axis) if given.
    Raises what `get_config` raises for a subclassed model that cannot serialize its
    arguments (`NotImplementedError`).
    """
    with keras.saving.custom_object_scope(_users_classes(model)):
        copy = type(model).from_config(model.get_config())
    if model.built:
        if not copy.built:  # a subclassed model: built on the shape the original was
            copy.build_from_config(model.get_build_config())
        set_weights(copy, model.get_weights())
    elif input_shape is not None:
        copy.build((None, *input_shape))
    return copy


def inference_copy(model):
    """`model` if it is not compiled, else an uncompiled copy with its weights: what is
    saved for inference, without the optimizer's state."""
    return copy_model(model) if model.compiled else model


def copy_layer(layer):
    """A new, unbuilt layer with `layer`'s configuration."""
    with keras.saving.custom_object_scope(_users_classes(layer)):
        return layer.__class__.from_config(layer.get_config())


def _users_classes(layer):
    """{name: class} of the user's own layer classes in `layer` (itself, and the layers it
    holds), so that a copy finds them by name from the config, registered or not: before,
    copying a model or a TimeDistributed that holds a block of an unregistered class
    raised Keras's "Could not locate class". A name two of the classes share is left to
    Keras's lookup."""
    found = {}
    held = layer._flatten_layers() if isinstance(layer, keras.layers.Layer) else [layer]
    for inner in held:  # besides layers, a keras.ops call in a functional model
        if not is_library_class(type(inner)):
            found.setdefault(type(inner).__name__, set()).add(type(inner))
    return {name: classes.pop() for name, classes in found.items() if len(classes) == 1}


# What `rebuild`'s transform returns for a layer to leave out.
LEAVE_OUT = object()


def strip(model):
    """A copy of `model` with each tfkd wrapper that marks itself `strippable` (pruning's)
    replaced by a plain copy of the layer it wraps, holding the weights the wrapper
    computes with (`effective_weights()`: the pruned kernel with its zeros), and each
    placeholder that marks itself `left_out_when_stripped` (a folded BatchNormalization)
    left out (see `rebuild`). A wrapper with a `strip_model(model)` method (channel
    pruning's) rewrites the whole model first."""
    require_graph_model(
        model,
        "tfkd.prune.strip",
        "Read each PrunedLayer's `pruned_kernel()` into a dense copy of the model instead.",
    )

    surgeon = next((layer for layer in leaf_layers(model) if hasattr(layer, "strip_model")), None)
    if surgeon is not None:  # a wrapper whose removal reshapes the model (channel pruning)
        model = surgeon.strip_model(model)

    def transform(layer):
        if getattr(layer, "left_out_when_stripped", False):
            # Before, the placeholder stayed: the stripped model needed tfkd to load.
            return LEAVE_OUT
        if not getattr(layer, "strippable", False):
            return None
        return copy_layer(layer.layer), lambda new, old=layer: _set_effective_weights(new, old)

    return rebuild(model, transform)


def _warn_never_pruned(model):
    """Warns about the pruning wrappers whose step is still 0 (nothing pruned), and those
    stopped before their schedule's end at a lower sparsity than its target. A subclassed
    model whose `call` takes no `training` argument never passes `training=True` to the
    wrappers inside it, so they never pruned, and it exported as if pruned, with no word;
    an `EarlyStopping(restore_best_weights=True)` or a best-only checkpoint restores the
    steps and masks of an epoch before the schedule's end (0.68 of a 0.9 target), and
    that exported as if pruned as asked."""
    never, short = [], []
    for layer in leaf_layers(model, subclassed=True):
        if not hasattr(layer, "pruning_step"):
            continue
        step = int(keras.ops.convert_to_numpy(layer.pruning_step))
        end = getattr(getattr(layer, "schedule", None), "end_step", None)
        if step == 0:
            never.append(layer.name)
        elif end is not None and step < end:
            reached, target = (
                float(keras.ops.convert_to_numpy(layer.schedule(value))) for value in (step, end)
            )
            if reached < target - 0.005:
                short.append(f"{layer.name} (step {step} of {end}: {reached:.2f} of {target:.2f})")
    if never:
        warnings.warn(
            f"Pruned layers {never} never took a training step, so they hold no pruned "
            "zeros. Train the model first; a subclassed model's `call` must take "
            "`training` and pass it to them (`def call(self, x, training=None)`).",
            stacklevel=4,
        )
    if short:
        warnings.warn(
            f"Pruned layers stopped before their schedule's end, at a lower sparsity than "
            f"its target: {', '.join(short)}. Train on to the schedule's end_step; an "
            "EarlyStopping(restore_best_weights=True) or a best-only checkpoint restores "
            "an earlier step, and the masks of that step.",
            stacklevel=4,
        )


def strip_if_wrapped(model):
    """`strip(model)` when it holds a strippable wrapper, else `model` itself. A subclassed
    model, which `strip` cannot rewire, is returned as it is, each wrapper settled
    (`ClusteredLayer.settle`): the converter freezes each wrapper's variables and folds the
    kernel it computes (pruned, clustered) into a constant, so the file holds the same
    plain layer."""
    _warn_never_pruned(model)
    if not is_graph_model(model):
        for layer in leaf_layers(model, subclassed=True):
            if getattr(layer, "strippable", False) and hasattr(layer, "settle"):
                layer.settle()  # what a traced step left pending, done before the trace
        return model
    if any(
        getattr(layer, "strippable", False) or hasattr(layer, "strip_model")
        for layer in leaf_layers(model)
    ):
        return strip(model)
    return model


def _set_effective_weights(new_layer, wrapper):
    set_weights(new_layer, [keras.ops.convert_to_numpy(w) for w in wrapper.effective_weights()])


def rebuild(model, transform):
    """A new model with each leaf layer replaced by `transform(layer)`.

    `transform` returns `(new_layer, set_weights)`, `None` for a plain copy, or
    `LEAVE_OUT` for a layer that returns its input (its input goes on in its place;
    a Sequential model, which lists its layers, gets a Keras `Identity` there);
    `set_weights(new_layer)` runs once the new model is built. The input model and
    its variables are left untouched.
    """
    pending = []
    left_out = set()

    def clone_function(layer):
        if not isinstance(layer, keras.layers.Layer):  # a keras.ops call such as `x + 3.0`
            return copy_layer(layer)
        replaced = transform(layer)
        if replaced is LEAVE_OUT:
            identity = keras.layers.Identity(name=layer.name)
            left_out.add(identity)
            return identity
        if replaced is None:
            new_layer = copy_layer(layer)
            replaced = (new_layer, lambda new, old=layer: set_weights(new, old.get_weights()))
        pending.append(replaced)
        return replaced[0]

    def call_function(layer, *args, **kwargs):
        return args[0] if layer in left_out else layer(*args, **kwargs)

    new_model = keras.models.clone_model(
        model,
        clone_function=clone_function,
        # Keras takes no call_function for Sequential models (nested ones go without).
        call_function=None if isinstance(model, keras.Sequential) else call_function,
        recursive=True,
    )
    for new_layer, copy_weights in pending:
        copy_weights(new_layer)
    return new_model


# Stands, in `consumers`, for "this tensor leaves the model".
MODEL_OUTPUT = "model output"


def consumers(model):
    """`{layer: [layers that take its output]}` over `model` and its nested graph models.

    Read from the models' configs. A layer whose output is also an output of its
    (nested) model lists `MODEL_OUTPUT` among its consumers.
    """
    found = {}
    for layer, users in _own_consumers(model).items():
        found[layer] = users
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            found.update(consumers(layer))
    return found


def input_consumers(model):
    """The leaf layers that read `model`'s inputs, descending into nested graph models."""
    readers = []
    for layer in _own_consumers(model, inputs=True):
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            readers.extend(input_consumers(layer))
        else:
            readers.append(layer)
    return readers


def _own_consumers(model, inputs=False):
    if isinstance(model, keras.Sequential):
        layers = list(model.layers)
        if inputs:
            return layers[:1]
        users = {layer: layers[index + 1 : index + 2] for index, layer in enumerate(layers)}
        if layers:
            users[layers[-1]] = [MODEL_OUTPUT]
        return users
    config = model.get_config()
    # `operations` also holds the keras.ops calls (`x + 3.0`) that `layers` leaves out.
    by_name = {layer.name: layer for layer in model.operations}
    input_names = {entry[0] for entry in _flatten_names(config["input_layers"])}
    users = {layer: [] for layer in model.operations}
    readers = []
    for entry in config["layers"]:
        layer = by_name.get(entry["name"])
        if layer is None:  # an InputLayer
            continue
        for producer in _history_names(entry.get("inbound_nodes", [])):
            if producer in input_names:
                readers.append(layer)
            elif layer not in users[by_name[producer]]:
                users[by_name[producer]].append(layer)
    if inputs:
        return list(dict.fromkeys(readers))
    for name, *_ in _flatten_names(config["output_layers"]):
        if name in by_name:
            users[by_name[name]].append(MODEL_OUTPUT)
    return users


def _flatten_names(structure):
    if isinstance(structure, (list, tuple)) and structure and isinstance(structure[0], str):
        return [structure]
    if isinstance(structure, dict):
        structure = list(structure.values())
    return [entry for item in structure for entry in _flatten_names(item)]


def _history_names(structure):
    if isinstance(structure, dict):
        if "keras_history" in structure.get("config", {}):
            return [structure["config"]["keras_history"][0]]
        structure = list(structure.values())
    if isinstance(structure, (list, tuple)):
        return [name for item in structure for name in _history_names(item)]
    return []
