"""Reads a model's final output and named intermediate outputs in one pass.

Works for every kind of model users write: functional (also `keras.Model([i], [o])`),
Sequential (also never called: it is built on the other model's input shape), nested and
subclassed models (outputs only: their intermediate layers cannot be read).
"""

import keras

from tfkd import _graph, _kernels

OUTPUT = "output"


def key(layer_name):
    """The dict key under which a tap stores a layer's output."""
    return OUTPUT if layer_name is None else f"layer:{layer_name}"


def input_shapes(model):
    """The per-example shapes of `model`'s inputs (a list), or None when not yet known.

    Read from `model.inputs` (functional models, Sequential models with an `Input`
    or called once), else from the shape a subclassed model was built with.
    """
    try:
        return [tuple(tensor.shape[1:]) for tensor in model.inputs]
    except (AttributeError, ValueError, TypeError):
        pass
    try:
        shape = model.get_build_config()["input_shape"]
    except (AttributeError, KeyError, TypeError, NotImplementedError):
        return None
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
        return [tuple(item[1:]) for item in shape]
    return [tuple(shape[1:])] if isinstance(shape, (list, tuple)) else None


def single(outputs):
    """A one-element list or tuple of outputs (`keras.Model([i], [o])`) as its element."""
    if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
        return outputs[0]
    return outputs


def shows_logits(layer):
    """Whether `layer` (None: a layer the graph does not show) is a layer with a kernel (a
    Dense, a convolution, in a tfkd wrapper or not) and no activation: logits."""
    inner = getattr(layer, "layer", None)  # a tfkd wrapper's
    layer = inner if isinstance(inner, keras.layers.Layer) else layer
    if layer is None or _kernels.kernel_name(layer) is None:
        return False
    return _graph.activation_name(layer) is None


class TapModel:
    """Wraps `model` so one forward pass returns `{key(name): output}`.

    Args:
        model: A Keras model.
        role: `"teacher"` or `"student"`, for error messages.
        layer_names: Names of layers to read; `None` entries mean the output.
        shapes: Per-example input shapes (a list, one per input) that build the model if
            it has never been called.
    """

    def __init__(self, model, role, layer_names, shapes):
        self.model = model
        self.role = role
        self.layer_names = sorted({name for name in layer_names if name is not None})
        self.has_features = bool(self.layer_names)
        self.output_shape = _output_shape(model, role, shapes)
        self._layers = {name: self._get_layer(name) for name in self.layer_names}
        self._tapped = self._build_tapped() if self.has_features else None

    def __call__(self, inputs, training=False):
        if self._tapped is None:
            return {OUTPUT: single(self.model(inputs, training=training))}
        return dict(self._tapped(inputs, training=training))

    def predict(self, x, batch_size=256, verbose=0):
        if self._tapped is None:
            outputs = self.model.predict(x, batch_size=batch_size, verbose=verbose)
            return {OUTPUT: single(outputs)}
        return dict(self._tapped.predict(x, batch_size=batch_size, verbose=verbose))

    def shape(self, layer_name):
        """Output shape of the model (`None`) or of a named layer."""
        if layer_name is not None:
            return tuple(self._layers[layer_name].output.shape)
        if self.output_shape is None:
            raise ValueError(
                f"The {self.role} {self.model.name!r} has several outputs, so a loss cannot "
                f"compare its output. Received: {self.role} with outputs "
                f"{[tuple(t.shape) for t in self.model.outputs]}. Name the logits layer with "
                f"`{self.role}_layer_name=` on the loss, or distil a single-output model."
            )
        return self.output_shape

    def activation(self, layer_name):
        """The activation the output (`None`) or the named layer ends in, as
        `_graph.final_activation` names it; `"unknown"` for a subclassed model's output."""
        if layer_name is not None:
            return _graph.final_activation(self._layers[layer_name])
        return _graph.output_activation(self.model)

    def shows_logits(self, layer_name):
        """Whether the graph shows the output (`None`) or the named layer to be logits: a
        layer with a kernel (a Dense, a convolution) and no activation. Elsewhere (a
        subclassed model, a Lambda, a Reshape) only its values can tell (`_probe`)."""
        if layer_name is None:
            return shows_logits(_graph.output_layer(self.model))
        return shows_logits(self._layers[layer_name])

    def describe(self, layer_name):
        return "output" if layer_name is None else f"layer {layer_name!r}"

    def _get_layer(self, name):
        names = [layer.name for layer in self.model.layers]
        if name not in names:
            raise ValueError(
                f"The {self.role} has no layer named {name!r}. Received: "
                f"{self.role}_layer_name={name!r}. Layers of {self.model.name!r}: {names}."
            )
        return self.model.get_layer(name)

    def _build_tapped(self):
        try:
            inputs = self.model.inputs
            outputs = {OUTPUT: self.model.outputs[0]}
            outputs.update({key(name): layer.output for name, layer in self._layers.items()})
        except (AttributeError, ValueError) as error:
            raise ValueError(
                f"Feature distillation reads intermediate layers of the {self.role}, which "
                f"needs a Sequential or functional model. Received: {self.role} "
                f"{self.model.name!r} of type {type(self.model).__name__}. Rebuild it "
                "with keras.Input, or distill its outputs only (LogitsDistillation)."
            ) from error
        if self.role == "student" and len(self.model.outputs) > 1:
            raise ValueError(
                "A loss that reads a layer of the student (`student_layer_name`) needs a "
                f"student with one output, whose task loss the Distiller computes beside it. "
                f"Received: student {self.model.name!r} with {len(self.model.outputs)} "
                "outputs. Distil a single-output student, or read its outputs only."
            )
        return keras.Model(inputs, outputs, name=f"{self.model.name}_taps")


def _output_shape(model, role, shapes):
    """The per-batch output shape, or None for a model with several outputs."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    if outputs is None:
        # Sequential never called, or subclassed: a symbolic call builds it and gives
        # its outputs, without running any computation.
        if shapes is None:
            raise ValueError(
                f"The {role} {model.name!r} has never been called, so its input shape is "
                f"unknown, and the other model's is unknown too. Received: {role} of type "
                f"{type(model).__name__} that was never built. Start it with "
                "keras.Input(shape), or call it once on a batch."
            )
        symbolic = [keras.KerasTensor((None, *shape)) for shape in shapes]
        outputs = model(symbolic[0] if len(symbolic) == 1 else symbolic)
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    if len(outputs) != 1:
        return None
    return (None, *tuple(outputs[0].shape[1:]))
