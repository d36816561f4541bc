"""Quantization-aware training for Keras 3 models, on every backend.

Export the result with `tfkd.export_tflite(model, path, quantization="int8")`.
"""

from tfkd.quantize._fake_quant import fake_quant
from tfkd.quantize.layers import ActivationQuantizer, FoldedBatchNormalization, QuantizeWrapper
from tfkd.quantize.qat import is_quantized, quantize_aware

__all__ = [
    "ActivationQuantizer",
    "FoldedBatchNormalization",
    "QuantizeWrapper",
    "fake_quant",
    "is_quantized",
    "quantize_aware",
]
