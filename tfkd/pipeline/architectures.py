"""Models a config can ask for by name: `{"architecture": "cnn", ...}` or `{"path": "x.keras"}`."""

import os

from tfkd.models import CNN_OPTIONS, check_cnn_option, cnn
from tfkd.pipeline import _store
from tfkd.pipeline.stage import KerasModel, invalid_argument

ARCHITECTURES = ("cnn",)


def check_spec(spec, argument):
    """Validates a model spec before any work; raises naming `argument`."""
    if isinstance(spec, KerasModel):
        _check_copyable(spec, argument)
        return
    if not isinstance(spec, dict) or ("architecture" in spec) == ("path" in spec):
        raise invalid_argument(
            argument,
            f"`{argument}` must be a mapping with either `architecture` (one of "
            f"{list(ARCHITECTURES)}, plus its options) or `path` (a `.keras` file), or a Keras "
            f"model. Received: {argument}={spec!r}",
            ValueError if isinstance(spec, dict) else TypeError,
        )
    if "path" in spec:
        if set(spec) != {"path"}:
            raise invalid_argument(
                argument, f"A `path` spec takes no other keys. Received: {argument}={spec!r}"
            )
        check_model_file(spec["path"], f"{argument}.path")
        return
    if spec["architecture"] not in ARCHITECTURES:
        raise invalid_argument(
            argument,
            f"Unknown architecture. Received: {argument}.architecture={spec['architecture']!r}. "
            f"Available: {list(ARCHITECTURES)}",
        )
    unknown = set(spec) - {"architecture", *CNN_OPTIONS}
    if unknown:
        raise invalid_argument(
            argument,
            f"Unknown option(s) {sorted(unknown)} for architecture {spec['architecture']!r}. "
            "Accepted: "
            + ", ".join(f"{name} ({kind})" for name, (kind, *_) in CNN_OPTIONS.items()),
        )
    for name in CNN_OPTIONS:
        if name in spec:
            try:
                check_cnn_option(name, spec[name])
            except (TypeError, ValueError) as error:
                raise invalid_argument(argument, f"`{argument}.{str(error)[1:]}") from None


def build(spec, data, seed):
    """A new model from a spec, for `data`'s input shape and classes.

    A Keras model is copied with its weights (a pretrained model stays pretrained), and
    the caller's model is left as it was.
    """
    if isinstance(spec, KerasModel):
        from tfkd import _graph

        return _graph.copy_model(spec, data.input_shape)
    if "path" in spec:
        return _store.load_keras(spec["path"])
    options = {key: value for key, value in spec.items() if key != "architecture"}
    return cnn(data.input_shape, data.num_classes, seed=seed, **options)


def _check_copyable(model, argument):
    """Stages train a copy of a given model, so it must be one Keras can rebuild from its config."""
    from tfkd import _graph

    if not _graph.is_graph_model(model):
        raise invalid_argument(
            argument,
            f"`{argument}` must be a Sequential or functional Keras model: a stage trains a copy "
            f"with the same weights, and a subclassed model cannot be rebuilt from its config. "
            f"Received: {argument}={model.name!r} of type {type(model).__name__}. Build it "
            "with keras.Sequential([...]) or keras.Model(inputs, outputs).",
            TypeError,
        )


def check_model_file(path, argument, suffixes=(".keras",)):
    if not isinstance(path, str | os.PathLike):
        raise invalid_argument(
            argument, f"`{argument}` must be a file path. Received: {argument}={path!r}", TypeError
        )
    if not os.fspath(path).endswith(suffixes):
        raise invalid_argument(
            argument,
            f"`{argument}` must be a {' or '.join(suffixes)} file. "
            f"Received: {argument}={os.fspath(path)!r}",
        )
    if not os.path.isfile(path):
        raise invalid_argument(
            argument,
            f"Model file not found. Received: {argument}={os.fspath(path)!r} (absolute: "
            f"{os.path.abspath(path)!r}). Relative paths in a config are relative to the config "
            "file's directory.",
        )
