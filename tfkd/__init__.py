"""tfkd: make Keras models small and fast for edge devices, and keep them accurate.

The public API is declared here and in each subpackage's ``__init__``;
everything else is private. Importing tfkd has no side effects.
"""

from tfkd import datasets, distill, export, pipeline, prune, quantize, text, transfer
from tfkd.distill import (
    DistillationLoss,
    Distiller,
    FeatureDistillation,
    LogitsDistillation,
)
from tfkd.export import TFLiteModel, export_tflite
from tfkd.pipeline import Pipeline

__version__ = "0.1.0"

__all__ = [
    "DistillationLoss",
    "Distiller",
    "FeatureDistillation",
    "LogitsDistillation",
    "Pipeline",
    "TFLiteModel",
    "datasets",
    "distill",
    "export",
    "export_tflite",
    "pipeline",
    "prune",
    "quantize",
    "text",
    "transfer",
]
