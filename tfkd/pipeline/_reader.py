"""Reading a pipeline config into stages, collecting every error with its file, line and key.

After an error the reader goes on with what it can still check (the next key, argument
and stage), so that `tfkd check` lists all errors at once. Nothing here imports Keras.
"""

import inspect
import os
import pathlib
import re
import types
import typing

from tfkd.pipeline import _yaml
from tfkd.pipeline._sources import COMMON_KEYS, SOURCE_KEYS, load_errors
from tfkd.pipeline.pipeline import Pipeline, reference_errors
from tfkd.pipeline.stage import Stage, get_stage

TOP_LEVEL_KEYS = ("name", "seed", "data", "stages")
DATA_KEYS = (
    "name",
    *SOURCE_KEYS,
    *(k for keys in SOURCE_KEYS.values() for k in keys),
    *COMMON_KEYS,
)
# Data keys that are paths, relative to the config file's folder.
_DATA_PATHS = ("directory", "npz", "data_dir", "csv", "vocabulary")


class _Unchecked(Stage):
    """Stands for a stage whose config has errors, so that references to it still resolve."""

    kind = "unchecked"


class Reader:
    """Reads config text. Attributes: `errors` (`[(line, message)]`), `lines` (key -> line)
    and `stage_keys` (stage name -> key path of the first stage of that name), for errors
    raised later."""

    def __init__(self, path):
        self.path = path
        self.plain = _yaml.PlainData()
        self.lines = self.plain.lines
        self.errors = []
        self.stage_keys = {}
        self.stage_ids = {}  # id(stage) -> key path
        self.dropped = {}  # id(stage) -> the arguments dropped as bad (`construct`)

    def fail(self, key, message, line=None):
        if line is None:
            line = self.lines.get(key) or self.lines.get(key[:-1], 1) if key else 1
        self.errors.append((line, f"{self.path}:{line}: {dotted(key) or '(top level)'}: {message}"))

    def messages(self):
        return [message for _, message in sorted(self.errors, key=lambda error: error[0])]

    def read(self, text):
        """`(pipeline, data, seed)`; `pipeline` is None when it could not be built."""
        try:
            config = self.plain.read(text)
        except _yaml.SyntaxProblem as problem:
            self.errors.append((problem.line, f"{self.path}:{problem.line}: {problem}"))
            return None, None, 0
        for key, message, line in self.plain.problems:
            self.fail(key, message, line)
        if not isinstance(config, dict):
            self.fail((), "a config must be a mapping with `data` and `stages`.")
            return None, None, 0
        self.unknown_keys(config, (), TOP_LEVEL_KEYS)
        for required in ("data", "stages"):
            if required not in config:
                self.fail((), f"missing the required key `{required}`.")
        name, seed = self.name_and_seed(config)
        data = self.data(config["data"]) if "data" in config else None
        if "stages" not in config:
            return None, data, seed
        return self.pipeline(config["stages"], name), data, seed

    def name_and_seed(self, config):
        name, seed = config.get("name", "pipeline"), config.get("seed", 0)
        if not isinstance(name, str | _yaml.Invalid):
            self.fail(("name",), f"`name` must be a string. Received: {name!r}")
        if isinstance(seed, bool) or not isinstance(seed, int | _yaml.Invalid):
            self.fail(("seed",), f"`seed` must be an integer. Received: {seed!r}")
        elif isinstance(seed, int) and not 0 <= seed < 2**32:
            # numpy's and Keras's seeds: a negative one failed after earlier stages ran.
            self.fail(("seed",), f"`seed` must be in 0..2**32-1. Received: {seed}")
        return (name if isinstance(name, str) else "pipeline"), (
            seed if isinstance(seed, int) else 0
        )

    def pipeline(self, stages, name):
        stages = self.stages(stages, ("stages",))
        if not stages:
            return None
        try:
            pipeline = Pipeline(stages, name=name)
        except (ValueError, TypeError) as error:
            self.fail(("name",), str(error))
            return None
        for error in reference_errors(pipeline):
            # By the stage itself: two stages of one name (an error too) each have their key.
            stage = id(getattr(error, "stage_instance", None))
            if error.argument in self.dropped.get(stage, ()):
                continue  # reported already: the value was bad, not missing
            self.fail((*self.stage_ids.get(stage, ()), error.argument), str(error))
        return pipeline

    def data(self, data):
        if isinstance(data, _yaml.Invalid):
            return None
        if not isinstance(data, dict):
            data = {"name": data} if isinstance(data, str) else data
        if not isinstance(data, dict):
            self.fail(
                ("data",),
                "`data` must be a data set name or a mapping with one of `name`, "
                f"`directory`, `npz`, `tfds` or `csv`. Received: {data!r}",
            )
            return None
        self.unknown_keys(data, ("data",), DATA_KEYS)
        keys = {key: data[key] for key in DATA_KEYS if key in data}
        for key in _DATA_PATHS:
            named = key == "vocabulary" and keys.get(key) == "minilm"
            if isinstance(keys.get(key), str) and not os.path.isabs(keys[key]) and not named:
                keys[key] = self.relative(keys[key])
        data = {**data, **keys}
        errors = load_errors(**keys)
        for error in errors:  # the key named, or `data` itself (before: "data.data")
            self.fail(
                ("data",) if error.argument == "data" else ("data", error.argument), str(error)
            )
        return None if errors else data

    def stages(self, stages, key):
        if isinstance(stages, _yaml.Invalid):
            return []
        if not isinstance(stages, list) or not stages:
            self.fail(key, f"`stages` must be a non-empty list. Received: {stages!r}")
            return []
        built = [self.stage(stage, (*key, index)) for index, stage in enumerate(stages)]
        return [stage for stage in built if stage is not None]

    def stage(self, mapping, key):
        """The stage; a stand-in when its config has errors; None when it has no name."""
        if isinstance(mapping, _yaml.Invalid):
            return None
        if not isinstance(mapping, dict) or "stage" not in mapping:
            self.fail(
                key, f"each stage must be a mapping with a `stage` key. Received: {mapping!r}"
            )
            return None
        cls = self.stage_class(mapping["stage"], (*key, "stage"))
        stage = None if cls is None else self.build_stage(cls, mapping, key)
        stage = stage or _stand_in(mapping)
        if stage is not None:
            self.stage_keys.setdefault(stage.name, key)
            self.stage_ids[id(stage)] = key
        return stage

    def stage_class(self, kind, key):
        if isinstance(kind, _yaml.Invalid):
            return None
        if not isinstance(kind, str):
            self.fail(key, f"`stage` must be a stage name. Received: {kind!r}")
            return None
        try:
            return get_stage(kind)
        except ValueError as error:
            self.fail(key, str(error))
            return None

    def build_stage(self, cls, mapping, key):
        parameters = _parameters(cls)
        arguments = {
            name: value
            for name, value in mapping.items()
            if name != "stage" and not _contains_invalid(value)  # those are reported already
        }
        arguments = self.current_names(cls, arguments, key)
        arguments = self.unknown_keys(arguments, key, parameters, f" for stage {cls.kind!r}")
        arguments = self.typed(arguments, key, parameters)
        required = [name for name, p in parameters.items() if p.default is inspect.Parameter.empty]
        missing = [name for name in required if name not in mapping]
        if missing:
            self.fail(key, f"missing required key(s) {missing} for stage {cls.kind!r}.")
        if any(name not in arguments for name in required):
            return None
        if cls is Pipeline:
            arguments["stages"] = self.stages(arguments["stages"], (*key, "stages"))
            if not arguments["stages"]:
                return None  # `stages` reported its errors
        arguments = {name: self.resolve_paths(value, name) for name, value in arguments.items()}
        return self.construct(cls, arguments, key, required)

    def construct(self, cls, arguments, key, required):
        """The stage; after a bad argument, tries again without it, to find the other bad
        ones (an error that names an argument already found bad is not repeated)."""
        dropped = []
        while True:
            try:
                stage = cls(**arguments)
                self.dropped[id(stage)] = dropped
                return stage
            except (ValueError, TypeError) as error:
                argument = str(getattr(error, "argument", "")).split(".")[0]
                if not any(re.search(rf"\b{name}=", str(error)) for name in dropped):
                    self.fail((*key, argument) if argument else key, str(error))
                if argument not in arguments or argument in required:
                    return None
                arguments = {name: value for name, value in arguments.items() if name != argument}
                dropped.append(argument)

    def current_names(self, cls, arguments, key):
        """`arguments` with the stage's deprecated names (`renamed_arguments`) changed to
        their current ones, whose errors then point at the old key's line."""
        for old, new in cls.renamed_arguments.items():
            if old not in arguments:
                continue
            if new in arguments:
                self.fail(
                    (*key, old),
                    f"`{old}` is the deprecated name of `{new}`, which is given too. Keep "
                    f"`{new}` only.",
                )
                del arguments[old]
                continue
            arguments[new] = arguments.pop(old)
            self.lines.setdefault((*key, new), self.lines.get((*key, old)))
        return arguments

    def unknown_keys(self, mapping, key, accepted, where=""):
        """`mapping` without its unknown keys, each reported."""
        for name in mapping:
            if name not in accepted:
                self.fail(
                    (*key, name), f"unknown key{where}. Accepted keys: {sorted(set(accepted))}"
                )
        return {name: value for name, value in mapping.items() if name in accepted}

    def typed(self, arguments, key, parameters):
        """`arguments` without those of the wrong type, each reported."""
        kept = {}
        for name, value in arguments.items():
            annotation = parameters[name].annotation
            if annotation is not inspect.Parameter.empty and not _matches(value, annotation):
                self.fail(
                    (*key, name),
                    f"expected {_describe(annotation)}. Received: {value!r} "
                    f"({type(value).__name__})",
                )
            else:
                kept[name] = value
        return kept

    def resolve_paths(self, value, name):
        """Relative file paths are relative to the config file's directory."""
        if isinstance(value, dict):
            return {key: self.resolve_paths(item, key) for key, item in value.items()}
        is_file = (
            name in ("path", "preset")
            or (name == "backbone" and str(value).endswith(".keras"))
            or (name == "weights" and str(value).endswith(".h5"))  # an application's file
        )
        if is_file and isinstance(value, str) and not os.path.isabs(value):
            return self.relative(value)
        return value

    def relative(self, value):
        """`value`, a relative path, from the config file's folder, normalized (as before),
        except where it climbs (`..`) out of a folder a link leads to: through a link,
        `link/../data` is the link target's neighbour, which the text collapsed to `data`
        (another file, or none)."""
        folder = self.path.parent
        joined = os.path.join(folder, value)
        climbs = ".." in pathlib.PurePath(value).parts
        if climbs and os.path.realpath(folder) != os.path.abspath(folder):
            return joined
        return os.path.normpath(joined)


def _stand_in(mapping):
    name = mapping.get("name", mapping.get("stage"))
    try:
        return _Unchecked(name=name)
    except (ValueError, TypeError):
        return None


def _contains_invalid(value):
    if isinstance(value, dict):
        return any(_contains_invalid(item) for item in value.values())
    if isinstance(value, list):
        return any(_contains_invalid(item) for item in value)
    return isinstance(value, _yaml.Invalid)


def _parameters(cls):
    """The config keys a stage takes: its constructor's, plus `name` and `from_stage`."""
    parameters = {}
    for klass in (Stage, cls):
        hints = typing.get_type_hints(klass.__init__)
        for name, parameter in inspect.signature(klass.__init__).parameters.items():
            if name == "self" or parameter.kind in (
                parameter.VAR_KEYWORD,
                parameter.VAR_POSITIONAL,
            ):
                continue
            parameters[name] = parameter.replace(annotation=hints.get(name, parameter.annotation))
    return parameters


def _matches(value, annotation):
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_matches(value, member) for member in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    origin = typing.get_origin(annotation) or annotation
    return isinstance(origin, type) and isinstance(value, origin)


def _describe(annotation):
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        names = [_describe(member) for member in typing.get_args(annotation)]
        return " or ".join(name for name in names if name != "KerasModel")
    if annotation is type(None):
        return "null"
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        dict: "a mapping",
        list: "a list",
    }.get(annotation, getattr(annotation, "__name__", str(annotation)))


def dotted(key):
    """`("stages", 1, "epochs")` -> `"stages[1].epochs"`."""
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else f"{'.' if text else ''}{part}"
    return text
