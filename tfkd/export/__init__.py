"""Export to TFLite (LiteRT) and what the exported file holds."""

from tfkd.export.model import TFLiteModel
from tfkd.export.report import ExportReport
from tfkd.export.tflite import QUANTIZATIONS, export_tflite

__all__ = ["QUANTIZATIONS", "ExportReport", "TFLiteModel", "export_tflite"]
