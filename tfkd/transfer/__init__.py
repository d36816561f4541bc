"""Transfer learning: fine-tune a pretrained backbone on a new task, offline.

`fine_tune` trains a new head on a frozen backbone, then unfreezes its top.
Pretrained weights that need no network: torchvision's ImageNet MobileNetV2, read
from a checkpoint file that a pip package ships, without torch (only tensors are
unpickled). Any `keras.applications` model with `weights="imagenet"` goes through
the same code. Text: the pretrained all-MiniLM-L6-v2 (BERT) from a pip package,
through keras-hub, with a classifier that takes token ids; any keras-hub preset folder
(`load_preset`).
"""

from tfkd.transfer.classifier import build_classifier, extract_features, feature_extractor
from tfkd.transfer.fine_tune import TransferHistory, fine_tune
from tfkd.transfer.layers import GrayscaleToRGB, torchvision_normalization
from tfkd.transfer.mobilenet_v2 import mobilenet_v2, preprocess_input
from tfkd.transfer.presets import load_preset
from tfkd.transfer.text import BertInputs, MaskedAveragePooling, minilm_dir, pretrained_minilm
from tfkd.transfer.torchvision_weights import (
    imagenet_class_names,
    load_torchvision_weights,
    pretrained_mobilenet_v2,
)

__all__ = [
    "BertInputs",
    "GrayscaleToRGB",
    "MaskedAveragePooling",
    "TransferHistory",
    "build_classifier",
    "extract_features",
    "feature_extractor",
    "fine_tune",
    "imagenet_class_names",
    "load_preset",
    "load_torchvision_weights",
    "minilm_dir",
    "mobilenet_v2",
    "preprocess_input",
    "pretrained_minilm",
    "pretrained_mobilenet_v2",
    "torchvision_normalization",
]
