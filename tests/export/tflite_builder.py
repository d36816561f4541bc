"""Builds small `.tflite` files from LiteRT's schema, op by op, for the tests of the
checks tfkd makes before LiteRT reads a file (`tfkd/export/_tflite_file.py`)."""

import re

import numpy as np
import pytest

from tfkd.export import _tflite_file
from tfkd.export._interpreter import OPEN_SIZE


def check_file(path):
    _tflite_file.check(path.read_bytes(), OPEN_SIZE)


def assert_refused(path, graphs, message):
    """The file of `graphs` built at `path` fails the check with `message`."""
    with pytest.raises(ValueError, match=re.escape(message)):
        check_file(build_file(path, *graphs))


DTYPES = {
    "float32": 0, "float16": 1, "int32": 2, "uint8": 3, "int64": 4, "string": 5, "bool": 6,
    "int16": 7, "int8": 9,
}  # fmt: skip


def build_file(path, *subgraphs, signature=False):
    """A file of `subgraphs`, each `(tensors, ops, inputs, outputs)`: a tensor is `(name,
    shape, dtype, data or None[, quantization scales[, zero points[, quantized
    dimension]]])` (zero points default to `[0]`, the dimension to 0), an op
    `(BuiltinOperator name, inputs, outputs[, options])`, the options one of the
    schema's `...OptionsT` objects."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT()
    model.version, model.operatorCodes, model.buffers, model.subgraphs = (
        3,
        [],
        [schema.BufferT()],
        [],
    )
    codes = {}
    for tensors, ops, inputs, outputs in subgraphs:
        graph = schema.SubGraphT()
        graph.tensors, graph.operators = [], []
        for name, shape, dtype, data, *quantization in tensors:
            tensor = schema.TensorT()
            tensor.name, tensor.shape, tensor.type = name, np.array(shape, np.int32), DTYPES[dtype]
            if quantization:
                defaults = (None, [0], 0)
                scale, zero_point, dimension = (*quantization, *defaults[len(quantization) :])
                tensor.quantization = schema.QuantizationParametersT()
                tensor.quantization.scale, tensor.quantization.zeroPoint = scale, zero_point
                tensor.quantization.quantizedDimension = dimension
            if data is not None:
                buffer = schema.BufferT()
                buffer.data = np.frombuffer(np.asarray(data, dtype).tobytes(), np.uint8)
                model.buffers.append(buffer)
                tensor.buffer = len(model.buffers) - 1
            graph.tensors.append(tensor)
        for name, op_inputs, op_outputs, *options in ops:
            if name not in codes:
                code = schema.OperatorCodeT()
                code.builtinCode = getattr(schema.BuiltinOperator, name)
                code.deprecatedBuiltinCode = min(code.builtinCode, 127)
                code.version = 2 if name == "BROADCAST_TO" else 1
                codes[name] = len(model.operatorCodes)
                model.operatorCodes.append(code)
            operator = schema.OperatorT()
            operator.opcodeIndex = codes[name]
            operator.inputs = np.array(op_inputs, np.int32)
            operator.outputs = np.array(op_outputs, np.int32)
            for value in options:
                kind = type(value).__name__[:-1]  # WhileOptionsT -> WhileOptions
                if hasattr(schema.BuiltinOptions, kind):
                    operator.builtinOptionsType = getattr(schema.BuiltinOptions, kind)
                    operator.builtinOptions = value
                else:
                    operator.builtinOptions2Type = getattr(schema.BuiltinOptions2, kind)
                    operator.builtinOptions2 = value
            graph.operators.append(operator)
        graph.inputs, graph.outputs = np.array(inputs, np.int32), np.array(outputs, np.int32)
        model.subgraphs.append(graph)
    if signature:
        entries = []
        for kind, indices in (
            ("input", model.subgraphs[0].inputs),
            ("output", model.subgraphs[0].outputs),
        ):
            entries.append([])
            for position, index in enumerate(indices):
                entry = schema.TensorMapT()
                entry.name, entry.tensorIndex = f"{kind}_{position}", int(index)
                entries[-1].append(entry)
        definition = schema.SignatureDefT()
        definition.signatureKey, (definition.inputs, definition.outputs) = (
            "serving_default",
            entries,
        )
        model.signatureDefs = [definition]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def option_table(kind, **fields):
    from ai_edge_litert import schema_py_generated as schema

    value = getattr(schema, kind + "T")()
    for field, setting in fields.items():
        setattr(value, field, setting)
    return value
