"""Export to TFLite (LiteRT) and what the exported file holds."""

from tfkd._export_options import QUANTIZATIONS
from tfkd.export.auto import auto_quantize
from tfkd.export.litert_quantizer import litert_quantize
from tfkd.export.micro import micro_bundle
from tfkd.export.model import TFLiteModel
from tfkd.export.report import ExportReport

__all__ = [
    "QUANTIZATIONS",
    "ExportReport",
    "TFLiteModel",
    "auto_quantize",
    "export_tflite",
    "litert_quantize",
    "micro_bundle",
]


def __getattr__(name):
    # The exporter imports Keras (and TensorFlow): loaded on first use, so that reading
    # `.tflite` files and checking pipeline configs start fast.
    if name == "export_tflite":
        from tfkd.export.tflite import export_tflite

        return export_tflite
    raise AttributeError(f"module 'tfkd.export' has no attribute {name!r}")
