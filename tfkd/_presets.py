"""The checks of a keras-hub preset folder that need neither Keras nor keras-hub: a config
naming one is checked before anything loads (`tfkd.transfer.load_preset` loads it)."""

import json
import os

from tfkd import _checks

_JSON_LIMIT = 16 << 20  # a preset's JSON is a few kilobytes


def preset_folder(path, name="path"):
    """`path` as a str, once it is a folder with a `config.json` whose JSON (and that of
    `task.json`, when there is one) names only Keras and keras-hub classes; errors name
    the argument `name`."""
    folder = _checks.check_path(path, name)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(
            f"`{name}` must be a keras-hub preset folder (config.json, model.weights.h5) or a "
            "Hugging Face checkpoint folder (config.json, model.safetensors). Received: "
            f"{name}={folder!r}" + ("" if os.path.isdir(folder) else " (no such folder)") + "."
        )
    for file in ("config.json", "task.json"):
        if os.path.isfile(os.path.join(folder, file)):
            read_json(folder, file, name)
    return folder


def has_task(folder):
    """Whether a preset folder holds a task (a classifier), not only a backbone."""
    return os.path.isfile(os.path.join(folder, "task.json"))


def read_json(folder, file, name="path"):
    """A preset's JSON file as a dict, refused when it is not JSON or names a class
    outside Keras and keras-hub (their loaders import the modules that JSON names)."""
    path = os.path.join(folder, file)
    if os.path.getsize(path) > _JSON_LIMIT:
        raise ValueError(
            f"`{name}` holds a {file} over {_JSON_LIMIT >> 20} MiB, not a preset's. "
            f"Received: {name}={folder!r}."
        )
    try:
        with open(path, encoding="utf-8") as stream:
            content = json.load(stream)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ValueError(
            f"`{name}` holds a {file} that is not JSON ({type(error).__name__}). "
            f"Received: {name}={folder!r}."
        ) from None
    foreign = sorted(
        {module for module in _modules(content) if module.split(".")[0] not in _ALLOWED}
    )
    if foreign:
        raise ValueError(
            f"`{name}` holds a {file} that names classes outside Keras and keras-hub "
            f"({foreign[:3]}): a preset must not import other code. Received: {name}={folder!r}."
        )
    return content if isinstance(content, dict) else {}


_ALLOWED = ("keras", "keras_hub")


def _modules(value):
    """Every `module` a JSON value names, at any depth."""
    if isinstance(value, dict):
        module = value.get("module")
        if isinstance(module, str):
            yield module
        for item in value.values():
            yield from _modules(item)
    elif isinstance(value, list):
        for item in value:
            yield from _modules(item)
