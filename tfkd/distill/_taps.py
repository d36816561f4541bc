"""Reads a model's final output and named intermediate outputs in one pass."""

import keras

OUTPUT = "output"


def key(layer_name):
    """The dict key under which a tap stores a layer's output."""
    return OUTPUT if layer_name is None else f"layer:{layer_name}"


class TapModel:
    """Wraps `model` so one forward pass returns `{key(name): output}`.

    Args:
        model: A Keras model.
        role: `"teacher"` or `"student"`, for error messages.
        layer_names: Names of layers to read; `None` entries mean the output.
    """

    def __init__(self, model, role, layer_names):
        self.model = model
        self.role = role
        self.layer_names = sorted({name for name in layer_names if name is not None})
        self.has_features = bool(self.layer_names)
        self._layers = {name: self._get_layer(name) for name in self.layer_names}
        self._tapped = self._build_tapped() if self.has_features else None

    def __call__(self, inputs, training=False):
        if self._tapped is None:
            return {OUTPUT: self.model(inputs, training=training)}
        return dict(self._tapped(inputs, training=training))

    def predict(self, x, batch_size=256, verbose=0):
        if self._tapped is None:
            return {OUTPUT: self.model.predict(x, batch_size=batch_size, verbose=verbose)}
        return dict(self._tapped.predict(x, batch_size=batch_size, verbose=verbose))

    def shape(self, layer_name):
        """Output shape of the model (`None`) or of a named layer, or None if unknown."""
        if layer_name is not None:
            return tuple(self._layers[layer_name].output.shape)
        try:
            return tuple(self.model.output.shape)
        except (AttributeError, ValueError):
            return None

    def ends_in_softmax(self, layer_name):
        if layer_name is not None:
            layer = self._layers[layer_name]
        elif self.model.layers:
            layer = self.model.layers[-1]
        else:
            return False
        if isinstance(layer, keras.layers.Softmax):
            return True
        activation = getattr(layer, "activation", None)
        return activation is keras.activations.softmax

    def describe(self, layer_name):
        return "output" if layer_name is None else f"layer {layer_name!r}"

    def _get_layer(self, name):
        names = [layer.name for layer in self.model.layers]
        if name not in names:
            raise ValueError(
                f"The {self.role} has no layer named {name!r}. Received: "
                f"{self.role}_layer={name!r}. Layers of {self.model.name!r}: {names}."
            )
        return self.model.get_layer(name)

    def _build_tapped(self):
        try:
            inputs = self.model.inputs
            outputs = {OUTPUT: self.model.output}
            outputs.update({key(name): layer.output for name, layer in self._layers.items()})
        except (AttributeError, ValueError) as error:
            raise ValueError(
                f"Feature distillation reads intermediate layers of the {self.role}, which "
                f"needs a Sequential or functional model with defined inputs. Received: "
                f"{self.role} {self.model.name!r} of type {type(self.model).__name__}. Build it "
                "with keras.Input, or distill its outputs only (LogitsDistillation)."
            ) from error
        return keras.Model(inputs, outputs, name=f"{self.model.name}_taps")
