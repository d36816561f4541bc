"""`KernelWrapper`: the base of tfkd's layer wrappers, pruning's `PrunedLayer` and QAT's
`QuantizeWrapper`, which run a layer with a transformed kernel."""

import keras
import numpy as np
from keras import ops

from tfkd import _kernels


class KernelWrapper(keras.layers.Wrapper):
    """Runs `layer` with a kernel that the subclass transforms in `call`.

    The base checks the layer, names the wrapper after it, builds it, finds its kernel,
    applies the kernel's 0/1 mask (the one hook, `kernel_mask()`: pruning's mask, or
    the zeros QAT keeps), gives the weights as the wrapper computes with them, and
    rebuilds the wrapper from its config. Subclasses add their own state in
    `build_state` and their own arguments in `from_config_arguments`.

    Class attributes:
        action: what the wrapper does to a layer, for errors (`"pruned"`).
        layer_kinds: the layers it takes, for errors (`" (Dense, a convolution ...)"`).
        requires_kernel: whether a layer without a kernel tfkd can transform is refused
            (pruning) or run as it is (QAT runs activations and pooling too).
    """

    action = "wrapped"
    layer_kinds = ""
    requires_kernel = True

    def __init__(self, layer, **kwargs):
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                f"`layer` must be a Keras layer{self.layer_kinds}. "
                f"Received: layer={layer!r:.80} of type {type(layer).__name__}."
            )
        self._kernel_name = _kernels.kernel_name(layer)
        if self.requires_kernel or self._kernel_name is not None:
            reason = self.unsupported_reason(layer)
            if reason is not None:
                raise TypeError(f"Layer {layer.name!r} cannot be {self.action}: {reason}.")
        kwargs.setdefault("name", layer.name)
        # A frozen layer makes a frozen wrapper: unfreezing the wrapper then unfreezes it
        # (on TensorFlow, Keras skips setting `trainable` to the value it already has).
        kwargs.setdefault("trainable", layer.trainable)
        super().__init__(layer, **kwargs)

    def unsupported_reason(self, layer):
        """Why `layer`'s kernel cannot be transformed, or None."""
        return _kernels.unsupported_reason(layer)

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.build_state(input_shape)
        self.built = True

    def build_state(self, input_shape):
        """Adds the subclass's own weights, once the wrapped layer is built."""

    def raw_kernel(self):
        """The wrapped layer's kernel variable, as it is stored."""
        return getattr(self.layer, self._kernel_name)

    def frozen(self):
        """Whether the wrapper or its layer is frozen (`is_frozen`): training calls then
        keep the wrapper's state (a pruning mask, activation ranges) as they are, as
        BatchNormalization keeps its statistics."""
        return is_frozen(self)

    def kernel_mask(self):
        """The hook: the 0/1 mask of the kernel's weights kept, or None for none."""
        return None

    def masked_kernel(self):
        """The kernel with its mask applied: the float kernel the wrapper computes from."""
        mask = self.kernel_mask()
        kernel = self.raw_kernel()
        return kernel if mask is None else ops.multiply(kernel, mask)

    def kernel_in_use(self):
        """`(wrapped layer, masked kernel)`, for `tfkd._kernels.kernel_in_use`; None before
        the wrapper is built or for a layer without a kernel."""
        if not self.built or self._kernel_name is None:
            return None
        return self.layer, self.masked_kernel()

    def effective_weights(self):
        """The weights the wrapper computes with: the wrapped layer's, kernel masked, and
        `more_weights()`; not the mask, step counters or activation ranges, which are
        bookkeeping."""
        weights = list(self.layer.weights)
        if self._kernel_name is not None:
            kernel = self.raw_kernel()
            weights = [self.masked_kernel() if w is kernel else w for w in weights]
        return weights + self.more_weights()

    def more_weights(self):
        """Parameters the wrapper computes with besides the wrapped layer's."""
        return []

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def compute_mask(self, inputs, mask=None):
        return self.layer.compute_mask(inputs, mask)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layer = keras.saving.deserialize_keras_object(config.pop("layer"))
        return cls(layer, **cls.from_config_arguments(config, layer))

    @classmethod
    def from_config_arguments(cls, config, layer):
        """The constructor's keyword arguments from the rest of `config` (deserialized)."""
        return config


def is_frozen(wrapper):
    """Whether a Keras wrapper or the layer it wraps is frozen (`trainable = False`; a
    layer frozen before it was wrapped counts)."""
    return not (wrapper.trainable and wrapper.layer.trainable)


def readable(variable):
    """`variable`'s value as a numpy array, or None where it has none to give: in a
    symbolic build or a traced function."""
    try:
        return np.asarray(ops.convert_to_numpy(variable))
    except (NotImplementedError, TypeError, RuntimeError):  # TF; JAX tracers; PyTorch meta
        return None
