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
            f"{type(model).__module__}.{type(model).__name__}."
        )
    if not is_graph_model(model):
        raise TypeError(
            f"{action} rebuilds Sequential and functional models; {type(model).__name__!r} "
            f"is a subclassed model, whose layers it cannot rewire. {fix}"
        )


def leaf_layers(model):
    """The layers of `model`, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            yield from leaf_layers(layer)
        else:
            yield layer


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
