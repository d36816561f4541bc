"""`ExportReport`: what an exported `.tflite` file holds."""

import collections
import os

# Ops that only move data between float and integer, or decode sparse weights.
_CONVERSION_OPS = frozenset({"QUANTIZE", "DEQUANTIZE", "DENSIFY"})
_FLOAT_DTYPES = ("float32", "float16")


def make_interpreter(path_or_content, num_threads=None, delegates=True):
    """A LiteRT interpreter (ai-edge-litert), with an install hint when it is missing."""
    try:
        from ai_edge_litert import interpreter as litert
    except ImportError as error:
        raise ImportError(
            "Running .tflite files needs the LiteRT interpreter: pip install ai-edge-litert "
            "(or pip install 'tfkd[litert]')."
        ) from error
    kwargs = {"num_threads": num_threads}
    if not delegates:
        kwargs["experimental_op_resolver_type"] = (
            litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    if isinstance(path_or_content, (bytes, bytearray)):
        return litert.Interpreter(model_content=bytes(path_or_content), **kwargs)
    return litert.Interpreter(model_path=os.fspath(path_or_content), **kwargs)


def load_interpreter(path_or_content, num_threads=None):
    """An allocated interpreter, and whether LiteRT's default XNNPACK delegate runs it.

    XNNPACK rejects some layers (sparse integer weights); the file then runs on the
    builtin kernels instead of failing.
    """
    try:
        interpreter = make_interpreter(path_or_content, num_threads=num_threads)
        interpreter.allocate_tensors()
        return interpreter, True
    except RuntimeError as error:
        if "XNNPack" not in str(error):
            raise
    interpreter = make_interpreter(path_or_content, num_threads=num_threads, delegates=False)
    interpreter.allocate_tensors()
    return interpreter, False


def list_ops(path_or_content):
    """`[(op_name, operand dtypes)]` for every op of the main graph, before delegation."""
    interpreter = make_interpreter(path_or_content, delegates=False)
    # The interpreter has no public op listing; `_get_ops_details` is what LiteRT's own
    # tools use.
    return [
        (op["op_name"], [str(getattr(dtype, "__name__", dtype)) for dtype in op["operand_types"]])
        for op in interpreter._get_ops_details()
    ]


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
            Keras model on up to 32 calibration (or random) inputs; `None` for
            multi-input models.
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
