"""keras-hub preset folders, offline: a backbone to fine-tune, or a whole classifier.

A preset folder holds `config.json` (the backbone), `model.weights.h5` and, for a task
such as a classifier, `task.json` and `task.weights.h5` (`save_to_preset` writes them).
A Hugging Face checkpoint folder (`config.json`, `model.safetensors`) that keras-hub
converts is a backbone preset too. Their JSON is read and checked before keras-hub
sees it: every class it names must be one of Keras's or keras-hub's.
"""

from tfkd import _checks
from tfkd._presets import has_task, preset_folder, read_json

_KERAS_HUB_INSTALL = "pip install --no-deps keras-hub safetensors regex"


def load_preset(path, backbone=False):
    """Loads a keras-hub preset folder without any download.

    Args:
        path: the folder. With a `task.json` (a classifier saved by `save_to_preset`),
            the classifier is returned; else the backbone.
        backbone: `True` returns the backbone of a classifier preset too. Defaults to
            `False`.

    Returns:
        For a backbone preset, the keras-hub `Backbone` (for `fine_tune`). For a text
        classifier, a Keras model that takes padded token ids (as
        `tfkd.text.WordPieceTokenizer` gives) and returns its logits: its preprocessor
        is left out. For any other classifier, the task model itself.

    Raises:
        FileNotFoundError: no such folder, or no `config.json` in it.
        ValueError: a JSON file that is not JSON, names a class outside Keras and
            keras-hub, or a task that is not a classifier.
        ImportError: keras-hub is not installed.

    Example:

    ```python
    base = tfkd.transfer.load_preset("bert_tiny_en_uncased")   # a downloaded preset
    model, history = tfkd.transfer.fine_tune(base, 3, (ids, labels), input_shape=(64,))
    ```
    """
    folder = preset_folder(path)
    _checks.check_flag("backbone", backbone)
    task = read_json(folder, "task.json") if has_task(folder) and not backbone else None
    try:
        import keras_hub
    except ImportError as error:
        raise ImportError(
            f"load_preset needs keras-hub. Install it with `{_KERAS_HUB_INSTALL}`."
        ) from error
    if task is None:
        return keras_hub.models.Backbone.from_preset(folder)
    name = task.get("class_name")
    task_class = getattr(keras_hub.models, name, None) if isinstance(name, str) else None
    if task_class is None or not name.endswith("Classifier"):
        raise ValueError(
            f"`path` holds a task that is not a keras-hub classifier. Received: path={folder!r} "
            f"with task class {name!r}. Accepted: a backbone preset, or a classifier's "
            "(e.g. BertTextClassifier, MobileNetImageClassifier)."
        )
    classifier = task_class.from_preset(folder, preprocessor=None)
    return _on_token_ids(classifier) if _takes_token_ids(classifier) else classifier


def _takes_token_ids(model):
    inputs = model.input
    return isinstance(inputs, dict) and {"token_ids", "padding_mask"} <= set(inputs)


def _on_token_ids(classifier):
    """`classifier` behind `BertInputs`: one input of padded token ids, of any length."""
    import keras

    from tfkd.transfer.text import BertInputs

    inputs = keras.Input((None,), dtype="int32", name="token_ids")
    token_ids, segment_ids, padding_mask = BertInputs(name="bert_inputs")(inputs)
    features = {"token_ids": token_ids, "padding_mask": padding_mask}
    if "segment_ids" in classifier.input:
        features["segment_ids"] = segment_ids
    return keras.Model(inputs, classifier(features), name=classifier.name)
