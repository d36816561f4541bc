"""The check of an exported `.tflite` file against the Keras model it came from, run before
the file is written: the same inputs through both, the outputs compared."""

import warnings

import keras
import numpy as np

from tfkd import _graph
from tfkd._stand_ins import fewest_ids, stand_in
from tfkd.export._interpreter import Runner, one_score, top1_agreement
from tfkd.export._signature import call_structure

CHECK_SAMPLES = 32
_FLOAT_TOLERANCE = 1e-3
_QAT_MIN_AGREEMENT = 0.9
# What to do about a file that computes NaN or inf where Keras does not, by quantization.
_FILE_HINTS = {
    None: "Please report this with the model's summary.",
    "float16": "float16 holds values up to 65504: larger weights become infinite. Export "
    "in float32 or with quantization='dynamic'.",
}
# The weights were checked first, so the inputs or an overflow inside the model remain.
_KERAS_HINT = (
    "The model's weights are finite, so its activations overflow float32 on these inputs "
    "(values beyond 3.4e38 become inf, and inf - inf NaN): pass inputs scaled as the model "
    "was trained on them (for token ids, representative_data with real ones)."
)


def keras_outputs(model, inputs, samples):
    """`(x, expected, activation)`: the inputs the file is checked on, `model`'s outputs on
    them (float32; integer ones, class ids, stay integer), refused when not finite (no
    file can be checked against NaN), and `score_activation(model)`, which says how to
    read one score per sample.

    Without samples, stand-in inputs: sizes the model leaves open (a sequence's length,
    an image's height and width) take a stand-in size.
    """
    if samples is None:
        ids = fewest_ids(model)
        x = [stand_in(item, ids, CHECK_SAMPLES) for item in inputs]
    else:
        x = [array[:CHECK_SAMPLES] for array in samples]
    outputs = model.predict(call_structure(model, x), verbose=0)
    expected = [
        output if output.dtype.kind in "iub" else output.astype(np.float32)
        for output in map(np.asarray, keras.tree.flatten(outputs))
    ]
    source = "stand-in inputs" if samples is None else "inputs from `representative_data`"
    _check_finite_outputs(expected, f"The Keras model {model.name!r}", f"{len(x[0])} {source}")
    return x, expected, score_activation(model, len(expected))


def score_activation(model, outputs):
    """How `top1_agreement` reads one score per sample of `model`: `"sigmoid"`, None (its
    output layer applies no activation: a logit), or `"unknown"` (several outputs, or an
    output that an operation computes, such as `keras.ops.sigmoid`, or a subclassed
    model), where the scores' range decides."""
    layer = _graph.output_layer(model) if outputs == 1 else None
    inner = getattr(layer, "layer", layer)  # a tfkd or Keras wrapper's layer
    if not isinstance(inner, keras.layers.Layer) or not hasattr(inner, "activation"):
        return "unknown"
    return _graph.final_activation(layer)


def check_against_keras(checked, inputs, content, quantization, quantization_aware):
    """Runs the converted file on the inputs of `checked` (from `keras_outputs`) and
    compares its outputs to the Keras model's; a float file must match them.

    Post-training quantized files are expected to differ a little: their agreement goes
    in the report. A quantization-aware model already computes in int8 steps, so its
    file must give the same top-1 class on nearly every sample (a classifier's: one
    score after no activation may be a regression's, whose agreement is only reported).
    NaN or infinite outputs are refused whatever the mode: the argmax of NaN is 0 on both
    sides, which would read as full agreement.
    """
    x, expected, activation = checked
    count = len(x[0])
    runner = Runner(content)
    in_file_order = _in_file_order(x, inputs, runner.inputs)
    received = runner.run(in_file_order[0] if len(x) == 1 else in_file_order)
    if [a.shape for a in expected] != [b.shape for b in received]:
        raise ValueError(
            "The exported model's outputs do not have the Keras model's shapes: "
            f"{[b.shape for b in received]} vs {[a.shape for a in expected]} on {count} "
            "samples. The file was not written. Please report this with the model's summary."
        )
    _check_finite_outputs(
        received,
        f"The exported {quantization or 'float32'} file",
        f"{count} inputs on which the Keras model's outputs are finite",
        _FILE_HINTS.get(quantization, _FILE_HINTS[None]),
    )
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(expected, received))
    largest = max(float(np.max(np.abs(a))) for a in expected)
    tolerance = _FLOAT_TOLERANCE * max(1.0, largest)
    if quantization is None and not difference <= tolerance:
        raise ValueError(
            "The exported float32 model disagrees with the Keras model: max absolute "
            f"difference {difference:.3g} on {count} samples (tolerance {tolerance:.3g}). "
            "The file was not written. This is a converter problem with one of the model's "
            "layers; export the layers separately to find it."
        )
    agreement = min(top1_agreement(a, b, activation) for a, b in zip(expected, received))
    # One score after no activation may be a regression's, whose sign int8 steps can flip
    # near 0: its agreement is reported (and warned about), not a reason to refuse.
    classes = all(
        a.dtype.kind in "iub" or not one_score(a) or activation == "sigmoid" for a in expected
    )
    if quantization_aware and classes and agreement < _QAT_MIN_AGREEMENT:
        raise ValueError(
            "The exported int8 model disagrees with the quantization-aware Keras model: "
            f"top-1 agreement {agreement:.3f} on {count} samples (expected at least "
            f"{_QAT_MIN_AGREEMENT}). The file was not written. Please report this with the "
            "model's summary."
        )
    if quantization is not None and agreement < _QAT_MIN_AGREEMENT:
        warnings.warn(
            f"The exported {quantization} file gives the Keras model's top-1 class on "
            f"{agreement:.3f} of {count} samples (max absolute difference {difference:.3g}); "
            "it is written, with that figure in its report's `keras_agreement`. Measure its "
            "accuracy (tfkd.TFLiteModel(path).evaluate), calibrate on more representative "
            "data, or train the model quantization-aware (tfkd.quantize.quantize_aware).",
            stacklevel=3,
        )
    return {"samples": count, "top1_agreement": agreement, "max_abs_diff": difference}


def _in_file_order(arrays, inputs, file_inputs):
    """`arrays` (in the model's input order) in the file's, matched by name; the model's
    order where the names do not all match."""
    position = {item.name: index for index, item in enumerate(inputs)}
    names = [details["name"] for details in file_inputs]
    if sorted(names) != sorted(position):
        return arrays
    return [arrays[position[name]] for name in names]


def _check_finite_outputs(outputs, side, samples, hint=_KERAS_HINT):
    """A ValueError unless every array of `outputs` is finite: NaN cannot be compared
    (its argmax is 0 on both sides, which reads as full agreement). `side` says whose
    outputs they are, `samples` what they were computed on."""
    bad = sum(int(np.sum(~np.isfinite(output))) for output in outputs)
    if not bad:
        return
    total = sum(output.size for output in outputs)
    raise ValueError(
        f"{side} computes {bad} NaN or infinite output values (of {total}) on the {samples} "
        "it is checked on, so the file cannot be checked against the Keras model. The file "
        f"was not written. Received: outputs holding NaN or inf. {hint}"
    )
