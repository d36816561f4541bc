"""Running `.tflite` files with LiteRT: one home for the interpreter and its quirks.

LiteRT applies its XNNPACK delegate to every file by default, and XNNPACK refuses some
layers (integer kernels in the sparse format): the file then runs on LiteRT's builtin
kernels instead of failing, whether the refusal comes at load time or at the first
`invoke` (where a resized input makes XNNPACK prepare its nodes again).
"""

import os
import re

import numpy as np

from tfkd._stand_ins import OPEN_SIZE
from tfkd.export import _tflite_file

# Ops that only convert between float and integer: a softmax behind them is still the
# op that computes the output.
_CONVERSION_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})


def make_interpreter(path_or_content, num_threads=None, delegates=True):
    """A LiteRT interpreter (ai-edge-litert) of a file or its bytes, checked first.

    Raises:
        UnsafeFileError: a ValueError naming the file: it is no `.tflite` model LiteRT
            can load safely, or LiteRT cannot read it.
    """
    content = checked_content(path_or_content)
    return _litert_interpreter(content, path_or_content, num_threads, delegates)


class UnsafeFileError(ValueError):
    """A file (or bytes) tfkd does not hand to LiteRT, or that LiteRT refused to read,
    prepare or run; the message names it and says why."""


def checked_content(path_or_content):
    """The bytes of a `.tflite` file (or the bytes given), once `_tflite_file.check` found
    them safe to hand to LiteRT: every reader of a file goes through here, and LiteRT gets
    the bytes that were checked, not the file again.

    Raises:
        UnsafeFileError: they are not (a ValueError naming the file and what is wrong).
    """
    if isinstance(path_or_content, bytes | bytearray):
        content = bytes(path_or_content)
    else:
        try:
            with open(os.fspath(path_or_content), "rb") as file:
                content = file.read()
        except MemoryError:  # before: the bare MemoryError (a sparse 7 GB file)
            raise UnsafeFileError(
                f"The .tflite file is not a model LiteRT can load: its "
                f"{os.path.getsize(path_or_content)} bytes do not fit in this process's "
                f"memory. Received: path={os.fspath(path_or_content)!r}."
            ) from None
    _check(content, path_or_content)
    return content


def _check(content, path_or_content, builtin_kernels=False):
    """`_tflite_file.check`, its error an `UnsafeFileError` naming `path_or_content`."""
    try:
        _tflite_file.check(content, OPEN_SIZE, builtin_kernels)
    except ValueError as error:
        fix = (
            ""
            if isinstance(path_or_content, bytes | bytearray)
            else " Write it with `tfkd.export_tflite`."
        )
        raise UnsafeFileError(
            f"The .tflite {_source(path_or_content)} is not a model LiteRT can load safely: "
            f"{error}. Received: {_received(path_or_content, content)}.{fix}"
        ) from None


def _source(path_or_content):
    return "content" if isinstance(path_or_content, bytes | bytearray) else "file"


def _received(path_or_content, content):
    if isinstance(path_or_content, bytes | bytearray):
        return f"{len(content)} bytes"
    return f"path={os.fspath(path_or_content)!r} ({len(content)} bytes)"


def _litert_interpreter(content, source, num_threads=None, delegates=True):
    """A LiteRT interpreter of checked bytes (read from `source`, named in errors), with an
    install hint when LiteRT is missing."""
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
    try:
        return litert.Interpreter(model_content=content, **kwargs)
    except ValueError as error:  # LiteRT's own checks: its flatbuffer verifier, op versions
        raise UnsafeFileError(
            f"LiteRT cannot read the .tflite {_source(source)}: {str(error).strip().rstrip('.')}. "
            f"Received: {_received(source, content)}."
        ) from None


def load_interpreter(path_or_content, num_threads=None, name=None):
    """An allocated interpreter, whether LiteRT's default XNNPACK delegate runs it, and the
    checked bytes it runs. `name`: the path errors name, where `path_or_content` is the
    bytes read from it.

    Raises:
        UnsafeFileError: as `make_interpreter`, or LiteRT cannot prepare the file's ops
            (its words, and the file's name).
    """
    source = path_or_content if name is None else name
    content = checked_content(path_or_content)
    interpreter = _litert_interpreter(content, source, num_threads)
    if not has_sparse_integer_weights(interpreter):
        try:
            _allocate(interpreter)
            return interpreter, True, content
        except RuntimeError as error:
            if not is_delegate_failure(error):
                raise litert_failure("prepare the ops of", source, content, error) from None
    interpreter = _builtin_interpreter(content, source, num_threads)
    try:
        _allocate(interpreter)
    except RuntimeError as error:
        raise litert_failure("prepare the ops of", source, content, error) from None
    return interpreter, False, content


def _builtin_interpreter(content, source, num_threads):
    """An interpreter that LiteRT's own kernels run (XNNPACK refused the file), once the
    file is checked again for them: they allocate scratch XNNPACK does not (im2col)."""
    _check(content, source, builtin_kernels=True)
    return _litert_interpreter(content, source, num_threads, delegates=False)


def litert_failure(doing, source, content, error, on=""):
    """An UnsafeFileError for a RuntimeError of LiteRT's while it did `doing` the file
    `source` (a path, or `content` itself) `on` some data: LiteRT's own message names
    neither the file nor what failed."""
    return UnsafeFileError(
        f"LiteRT failed to {doing} the .tflite {_source(source)}{on}: "
        f"{litert_words(error)}. Received: {_received(source, content)}."
    )


def litert_words(error):
    """LiteRT's message, once: it runs its sentences together ("... (4 != 5)Node number 0
    (RESHAPE) failed to prepare.") and repeats them after each failed call."""
    text = " ".join(str(error).split())
    parts = re.findall(r".*?failed to \w+\.", text) or [text]
    parts += [text[sum(map(len, parts)) :]] if parts != [text] else []
    unique = [part.strip() for part in dict.fromkeys(parts) if part.strip()]
    words = re.sub(r"(?<=[^\s.:;])(Node number \d+ \()", r"; \1", " ".join(unique))
    return words.rstrip(".") or type(error).__name__


def _in_returned_order(interpreter):
    """The file's outputs in the order the Keras model returned them. The converter may list
    them in another: a file with one signature names them `output_0`, `output_1`, ... in
    that order (one made through a SavedModel: the LiteRT quantizer's), a file without
    one `Identity`, `Identity_1`, ...; file order when the names say nothing."""
    outputs = interpreter.get_output_details()
    signatures = interpreter.get_signature_list()
    if len(signatures) == 1:
        (key, signature), *_ = signatures.items()
        names = signature["outputs"]
        positions = [_position(r"output_(\d+)", name) for name in names]
        if None not in positions:
            named = interpreter.get_signature_runner(key).get_output_details()
            by_index = {details["index"]: details for details in outputs}
            returned = [named[name]["index"] for _, name in sorted(zip(positions, names))]
            if sorted(returned) == sorted(by_index):
                return [by_index[index] for index in returned]
    positions = [_position(r"Identity(?:_(\d+))?", details["name"]) for details in outputs]
    if None in positions:
        return list(outputs)
    return [details for _, details in sorted(zip(positions, outputs), key=lambda p: p[0])]


def _position(pattern, name):
    """The number `pattern`'s group reads from `name` (0 where it is absent), or None."""
    match = re.fullmatch(pattern, name)
    return None if match is None else int(match.group(1) or 0)


def _allocate(interpreter):
    """Allocates tensors; an input size the file leaves open (-1) first takes `OPEN_SIZE`:
    LiteRT would take 1, which a 3x3 convolution without padding cannot prepare."""
    for details in interpreter.get_input_details():
        signature = list(details["shape_signature"])
        if -1 in signature[1:]:
            shape = [1, *(OPEN_SIZE if size == -1 else size for size in signature[1:])]
            interpreter.resize_tensor_input(details["index"], shape)
    interpreter.allocate_tensors()


def has_sparse_integer_weights(interpreter):
    """Whether the file stores integer tensors in the sparse format (XNNPACK cannot run them)."""
    return any(
        details.get("sparsity_parameters") and np.dtype(details["dtype"]).kind in "iu"
        for details in interpreter.get_tensor_details()
    )


def is_delegate_failure(error):
    return "XNNPack" in str(error) or "failed to delegate" in str(error)


def list_ops(path_or_content):
    """`[(op_name, operand dtypes)]` for every op of the main graph, before delegation."""
    return [
        (op["op_name"], [str(getattr(dtype, "__name__", dtype)) for dtype in op["operand_types"]])
        for op in ops_details(make_interpreter(path_or_content, delegates=False))
    ]


def softmax_outputs(path_or_content):
    """For each output of the file (in the order the Keras model returned them), whether a
    SOFTMAX op computes it (through (de)quantize)."""
    interpreter = make_interpreter(path_or_content, delegates=False)
    producers = {}
    for op in ops_details(interpreter):
        for index in op["outputs"]:
            producers[int(index)] = op
    flags = []
    for details in _in_returned_order(interpreter):
        op = producers.get(int(details["index"]))
        while op is not None and op["op_name"] in _CONVERSION_OPS:
            op = producers.get(int(op["inputs"][0]))
        flags.append(op is not None and op["op_name"] == "SOFTMAX")
    return flags


# The ops whose second input is a kernel, output channels first.
_KERNEL_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D")


def integer_kernels(path_or_content):
    """`{tensor name: (values, scales)}` for the integer kernels of a file: the constant
    weights of its convolutions and fully connected ops, with their quantization scales
    (one per output channel, or one for the whole kernel)."""
    interpreter = make_interpreter(path_or_content, delegates=False)
    details = {item["index"]: item for item in interpreter.get_tensor_details()}
    ops = ops_details(interpreter)
    computed = {int(index) for op in ops for index in op["outputs"]}
    computed |= {item["index"] for item in interpreter.get_input_details()}
    found = {}
    for op in ops:
        if op["op_name"] not in _KERNEL_OPS:
            continue
        index = int(op["inputs"][1])  # TRANSPOSE_CONV's first input is the output shape
        tensor = details[index]
        if index in computed or np.dtype(tensor["dtype"]).kind not in "iu":
            continue
        scales = tensor["quantization_parameters"]["scales"]
        found[tensor["name"]] = (interpreter.get_tensor(index), np.asarray(scales))
    return found


def ops_details(interpreter):
    """The interpreter's ops in execution order, each a dict with `op_name`, `inputs` and
    `outputs` (tensor indices).

    LiteRT has no public op listing; its private `_get_ops_details` is what its own tools
    use. This is the one place tfkd reaches it, and `tests/export/test_private_apis.py`
    fails when a release moves it.
    """
    if not hasattr(interpreter, "_get_ops_details"):
        raise RuntimeError(
            f"This LiteRT interpreter ({type(interpreter).__module__}) no longer has the private "
            "`_get_ops_details` that tfkd lists a file's ops with. Install a LiteRT version "
            "tfkd supports (see setup.cfg)."
        )
    return interpreter._get_ops_details()


def quantize_input(x, details):
    """`x` in the dtype of an interpreter input: the one place inputs are quantized.

    For a quantized integer input, `x` of that very dtype (int8 for an int8 input) is
    quantized already and passes as is; any other `x` (float, or integers of another
    dtype: uint8 images for an int8 input) holds the values the Keras model took, and
    is quantized with the input's scale and zero point.
    """
    x = np.asarray(x)
    dtype = np.dtype(details["dtype"])
    scale, zero_point = details["quantization"]
    if dtype.kind == "f" or scale == 0 or x.dtype == dtype:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize_output(y, details):
    """An interpreter output as float32, dequantized if it is integer."""
    scale, zero_point = details["quantization"]
    if np.dtype(y.dtype).kind == "f" or scale == 0:
        return y.astype(np.float32)
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)


def top1_agreement(expected, received, activation="unknown"):
    """The share of samples on which `received` (a file's output) gives the class that
    `expected` (the Keras model's) gives: the argmax over the last axis, which holds a
    score per class; for integer `expected` (class ids: a model ending in
    `keras.ops.argmax`), the ids themselves; for one score per sample (shape `(samples,)`
    or `(samples, 1)`: a binary classifier), whether it lies above 0.5 after a sigmoid
    (`activation`, as `_keras_check.score_activation` reads the model), above 0 after
    none (a logit), and where that is unknown, above 0.5 if every expected score lies in
    [0, 1], else above 0 (a score on the threshold is negative, as `keras.metrics.BinaryAccuracy`
    counts it). Before, one score per sample always agreed (the argmax of one
    value), and ids of shape `(samples,)` agreed on all or none."""
    expected, received = np.asarray(expected), np.asarray(received)
    if expected.dtype.kind in "iub":
        same = expected == received
    elif one_score(expected):
        if activation in ("sigmoid", None):
            threshold = 0.5 if activation else 0.0
        else:
            threshold = 0.5 if 0 <= expected.min() and expected.max() <= 1 else 0.0
        same = (expected > threshold) == (received > threshold)
    else:
        same = expected.argmax(-1) == received.argmax(-1)
    return float(np.mean(same))


def holds_ids(details):
    """Whether a file's output (its interpreter details) holds class ids (an ARG_MAX's
    integers), not quantized scores."""
    return np.dtype(details["dtype"]).kind in "iu" and details["quantization"][0] == 0


def one_score(output):
    """Whether `output` holds one score per sample: shape `(samples,)` or `(samples, 1)`."""
    return output.ndim == 1 or (output.ndim == 2 and output.shape[-1] == 1)


class Runner:
    """Runs batches through a file; returns every output, dequantized, in the order the
    exported model returned them. `name`: as for `load_interpreter`."""

    def __init__(self, path_or_content, num_threads=None, name=None):
        self._num_threads = num_threads
        self._source = path_or_content if name is None else name  # named in errors
        self.interpreter, self.xnnpack, self._content = load_interpreter(
            path_or_content, num_threads, name
        )
        self.inputs = self.interpreter.get_input_details()
        self.outputs = _in_returned_order(self.interpreter)
        self._batch = None

    def run(self, batch):
        """`batch` (float or integer, shaped like the input, quantized as `quantize_input`
        says; a list of arrays, one per input in the file's order, for several inputs) ->
        a list of float32 outputs.

        Raises:
            UnsafeFileError: LiteRT cannot prepare the file's ops for this batch, or
                fails running them (its words, and the file's name).
        """
        arrays = list(batch) if len(self.inputs) > 1 else [batch]
        if len(arrays) != len(self.inputs):
            raise ValueError(
                f"The file has {len(self.inputs)} inputs. Received: {len(arrays)} arrays."
            )
        fixed = self._fixed_batch()
        if fixed is not None and len(arrays[0]) not in (0, fixed):
            return self._run_in_parts(arrays, fixed)
        try:
            self.resize([np.shape(array) for array in arrays])
            for details, array in zip(self.inputs, arrays):
                self.interpreter.set_tensor(details["index"], quantize_input(array, details))
            self.interpreter.invoke()
        except RuntimeError as error:
            if not (self.xnnpack and is_delegate_failure(error)):
                shapes = [tuple(np.shape(array)) for array in arrays]
                on = f" on a batch of shape {shapes[0] if len(shapes) == 1 else shapes}"
                raise litert_failure("run", self._source, self._content, error, on) from None
            self._without_delegates()
            return self.run(batch)
        return [
            dequantize_output(self.interpreter.get_tensor(details["index"]), details)
            for details in self.outputs
        ]

    def _fixed_batch(self):
        """The batch size every input of the file fixes, or None where one leaves it open
        (-1, as tfkd's exports do, except those of recurrent layers: `_convert._frozen`),
        has no axis (a scalar input, resized to the batch as before) or they differ."""
        signatures = [details["shape_signature"] for details in self.inputs]
        sizes = {int(signature[0]) if len(signature) else -1 for signature in signatures}
        size = sizes.pop() if len(sizes) == 1 else -1
        return None if size < 1 else size

    def _run_in_parts(self, arrays, size):
        """Runs `arrays` (one per input) `size` examples at a time, as a file that fixes
        its batch at `size` runs: LiteRT can resize its inputs, but ops sized for that batch
        (a RESHAPE's constant shape) then fail to prepare or compute on the wrong elements.
        The last part is filled up with copies of its last example."""
        parts = []
        for start in range(0, len(arrays[0]), size):
            part = [array[start : start + size] for array in arrays]
            short = size - len(part[0])
            part = [np.concatenate([piece, np.repeat(piece[-1:], short, 0)]) for piece in part]
            outputs = self.run(part if len(part) > 1 else part[0])
            parts.append([output[: size - short] for output in outputs])
        return [np.concatenate(pieces) for pieces in zip(*parts, strict=True)]

    def resize(self, shapes):
        """Sizes each input for a batch of its shape in `shapes`: its length, and the sizes
        the file leaves open (-1 in its signature) from the batch itself."""
        if not isinstance(shapes, list):
            shapes = [shapes]
        sized = []
        for details, shape in zip(self.inputs, shapes):
            signature = details["shape_signature"]
            sized.append(
                [shape[0], *(s if s != -1 else b for s, b in zip(signature[1:], shape[1:]))]
            )
        if sized != self._batch:
            self._batch = None  # until allocated: a failure leaves the tensors resized
            for details, shape in zip(self.inputs, sized):
                self.interpreter.resize_tensor_input(details["index"], shape)
            self.interpreter.allocate_tensors()
            self._batch = sized

    def _without_delegates(self):
        self.interpreter = _builtin_interpreter(self._content, self._source, self._num_threads)
        try:
            _allocate(self.interpreter)
        except RuntimeError as error:
            raise litert_failure("prepare the ops of", self._source, self._content, error) from None
        self.xnnpack = False
        self._batch = None
