"""`ExportReport`: what an exported `.tflite` file holds."""

import collections
import os

from tfkd.export._interpreter import list_ops

# Ops that only move data between float and integer, or decode sparse weights.
_CONVERSION_OPS = frozenset({"QUANTIZE", "DEQUANTIZE", "DENSIFY"})
_FLOAT_DTYPES = ("float32", "float16")


class ExportReport:
    """What `export_tflite` wrote.

    Attributes:
        path: the `.tflite` file.
        bytes: its size.
        quantization: the mode it was exported with.
        ops: `{"CONV_2D[int8]": count, ...}`, each op by its name and the dtype of its
            first input (the activations it computes on).
        float_ops: names of the ops that compute in float, other than the QUANTIZE /
            DEQUANTIZE / DENSIFY ops at the edges. Empty for a fully integer model.
        keras_agreement: `top1_agreement` and `max_abs_diff` of the file against the
            Keras model on up to 32 calibration (or random) inputs (over several
            outputs: the lowest agreement, the largest difference; as
            `TFLiteModel.compare` says for a binary classifier's one score and for class
            ids); `None` where no Keras model was compared (`ExportReport.from_file`,
            `litert_quantize`).
        layer_errors: from `litert_quantize`, the float-vs-quantized error of each
            tensor (the `.errors.json` written beside the file); else `None`.
    """

    def __init__(self, path, size, quantization, ops):
        self.path = path
        self.bytes = size
        self.quantization = quantization
        counts = collections.Counter(
            f"{name}[{dtypes[0] if dtypes else '-'}]" for name, dtypes in ops
        )
        self.ops = dict(sorted(counts.items()))
        self.float_ops = sorted(
            {
                name
                for name, dtypes in ops
                if name not in _CONVERSION_OPS and dtypes and dtypes[0] in _FLOAT_DTYPES
            }
        )
        self.keras_agreement = None
        self.layer_errors = None

    @classmethod
    def from_file(cls, path, quantization=None):
        return cls(path, os.path.getsize(path), quantization, list_ops(path))

    def to_dict(self):
        return {
            "path": self.path,
            "bytes": self.bytes,
            "quantization": self.quantization,
            "ops": self.ops,
            "float_ops": self.float_ops,
            "keras_agreement": self.keras_agreement,
        }

    def __repr__(self):
        return (
            f"ExportReport(bytes={self.bytes}, quantization={self.quantization!r}, "
            f"ops={self.ops}, float_ops={self.float_ops})"
        )
