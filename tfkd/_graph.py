"""Rebuilding Sequential and functional models layer by layer (shared by prune and quantize)."""

import keras


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


def model_inputs(model):
    """`model`'s input tensors, flat; `[]` for a Sequential model never built or called."""
    if isinstance(model, keras.Sequential) and not model.built:
        return []
    return keras.tree.flatten(model.inputs)


def leaf_layers(model):
    """The layers of `model`, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            yield from leaf_layers(layer)
        else:
            yield layer


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


def behind_augmentation(model, augmentation, input_shape):
    """A model that trains `model` on batches `augmentation` changes in each training
    step (its random layers are inactive in inference); the weights are `model`'s own,
    so fitting it trains `model`, which is left unchanged in structure."""
    if augmentation is None:
        return model
    inputs = keras.Input(tuple(input_shape), name="inputs")
    return keras.Model(inputs, model(augmentation(inputs)), name=f"{model.name}_augmented")


def copy_layer(layer):
    """A new, unbuilt layer with `layer`'s configuration."""
    return layer.__class__.from_config(layer.get_config())


def rebuild(model, transform):
    """A new model with each leaf layer replaced by `transform(layer)`.

    `transform` returns `(new_layer, set_weights)`, or `None` for a plain copy;
    `set_weights(new_layer)` runs once the new model is built. The input model and
    its variables are left untouched.
    """
    pending = []

    def clone_function(layer):
        if not isinstance(layer, keras.layers.Layer):  # a keras.ops call such as `x + 3.0`
            return copy_layer(layer)
        replaced = transform(layer)
        if replaced is None:
            new_layer = copy_layer(layer)
            replaced = (new_layer, lambda new, old=layer: new.set_weights(old.get_weights()))
        pending.append(replaced)
        return replaced[0]

    new_model = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    for new_layer, set_weights in pending:
        set_weights(new_layer)
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
