"""Small text classifiers that export to `.tflite` with builtin ops only."""

import keras

from tfkd import _checks


def conv_classifier(
    vocabulary_size,
    num_classes,
    *,
    sequence_length=64,
    embedding_dim=64,
    filters=128,
    kernel_size=3,
    hidden_units=64,
    dropout=0.3,
    name="text_cnn",
):
    """Token ids -> embedding -> Conv1D -> global max pooling -> Dense -> logits.

    A student for a BERT teacher: it takes the same padded token ids (e.g. from
    `tfkd.text.WordPieceTokenizer`), and every layer maps to a builtin TFLite op
    (GATHER, CONV_2D, MAX/REDUCE, FULLY_CONNECTED), so int8 export and
    quantization-aware training (`tfkd.quantize.quantize_aware`) apply.

    Args:
        vocabulary_size: number of token ids (e.g. `tokenizer.vocabulary_size`).
        num_classes: number of classes.
        sequence_length: length of the padded inputs. Defaults to `64`.
        embedding_dim: size of the token vectors. Defaults to `64`.
        filters: convolution filters. Defaults to `128`.
        kernel_size: convolution width in tokens. Defaults to `3`.
        hidden_units: Dense units before the classifier; 0 for none. Defaults to `64`.
        dropout: dropout before the Dense layers. Defaults to `0.3`.
        name: the model's name. Defaults to `"text_cnn"`.

    Returns:
        An uncompiled Keras model whose outputs are logits.

    Raises:
        ValueError: a size < 1, `hidden_units` < 0, or a `dropout` outside [0, 1).
        TypeError: a size or `hidden_units` that is not an integer, a `dropout` that is
            not a number, or a `name` that is not a string.

    Example:

    ```python
    student = tfkd.text.conv_classifier(tokenizer.vocabulary_size, 3)
    ```
    """
    sizes = dict(
        vocabulary_size=vocabulary_size,
        num_classes=num_classes,
        sequence_length=sequence_length,
        embedding_dim=embedding_dim,
        filters=filters,
        kernel_size=kernel_size,
    )
    size = {key: _checks.check_number(key, v, low=1, integer=True) for key, v in sizes.items()}
    hidden_units = _checks.check_number("hidden_units", hidden_units, low=0, integer=True)
    _checks.check_number("dropout", dropout, low=0, high=1, high_open=True)
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a string. Received: name={name!r}.")
    inputs = keras.Input((size["sequence_length"],), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(size["vocabulary_size"], size["embedding_dim"], name="embedding")(
        inputs
    )
    x = keras.layers.Conv1D(
        size["filters"], size["kernel_size"], padding="same", activation="relu", name="conv"
    )(x)
    x = keras.layers.GlobalMaxPooling1D(name="pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    if hidden_units:
        x = keras.layers.Dense(hidden_units, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(size["num_classes"], name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
