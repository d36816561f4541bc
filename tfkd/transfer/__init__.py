"""Transfer learning: fine-tune a pretrained backbone on a new task, offline.

`fine_tune` trains a new head on a frozen backbone, then unfreezes its top.
Pretrained weights that need no network: torchvision's ImageNet MobileNetV2, read
from a checkpoint file that a pip package ships, without torch (only tensors are
unpickled). Any `keras.applications` model with `weights="imagenet"` goes through
the same code.
"""

from tfkd.transfer.fine_tune import (
    TransferHistory,
    build_classifier,
    extract_features,
    feature_extractor,
    fine_tune,
)
from tfkd.transfer.layers import GrayscaleToRGB, torchvision_normalization
from tfkd.transfer.mobilenet_v2 import (
    imagenet_class_names,
    load_torchvision_weights,
    mobilenet_v2,
    preprocess_input,
    pretrained_mobilenet_v2,
)

__all__ = [
    "GrayscaleToRGB",
    "TransferHistory",
    "build_classifier",
    "extract_features",
    "feature_extractor",
    "fine_tune",
    "imagenet_class_names",
    "load_torchvision_weights",
    "mobilenet_v2",
    "preprocess_input",
    "pretrained_mobilenet_v2",
    "torchvision_normalization",
]
