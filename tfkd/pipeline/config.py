"""Pipeline configs: YAML or JSON, loaded as data only, checked with errors at the key's line.

A config is a mapping:

```yaml
data: {name: fashion_mnist}          # a tfkd.datasets name; optional train_size, test_size
seed: 0                              # optional
stages:                              # each: `stage` (a registered name) and its arguments
  - {stage: load, name: teacher, path: ../saved_models/teacher/model.keras}
  - {stage: distill, teacher: teacher, student: {architecture: cnn}, epochs: 8}
  - {stage: export, quantization: int8}
```

Only YAML's plain data (mappings, lists, strings, numbers, booleans, null) is
accepted: tags such as `!!python/object` are refused, so a config can never import
or run code. Relative `path`s are relative to the config file.
"""

import dataclasses
import inspect
import json
import os
import pathlib
import re
import types
import typing

import yaml

from tfkd import datasets
from tfkd.pipeline.data import Data
from tfkd.pipeline.pipeline import Pipeline, check_references
from tfkd.pipeline.stage import Stage, get_stage, registered_stages

TOP_LEVEL_KEYS = ("name", "seed", "data", "stages")
DATA_KEYS = ("name", "train_size", "test_size")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's numbers: `1e-3` is a float (YAML 1.1 wants
    `1.0e-3`) and `2:4` a string (YAML 1.1 reads it as the base-60 integer 124)."""


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _NUMBER_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


class ConfigError(ValueError):
    """A bad config; the message starts with `file:line: key:`."""


@dataclasses.dataclass
class PipelineConfig:
    """A loaded config: the pipeline, the data options, the seed and where it came from."""

    pipeline: Pipeline
    data: dict
    seed: int
    path: pathlib.Path


def load_config(path):
    """Reads and checks a YAML or JSON pipeline config; returns a `PipelineConfig`.

    Every error is a `ConfigError` whose message starts with `file:line: key:`, e.g.
    `pipeline.yaml:12: stages[2].epochs: ...`.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"Config file not found. Received: {os.fspath(path)!r}")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from None
        text = text.expandtabs()  # JSON allows tabs where YAML does not
    reader = _Reader(path)
    config = reader.parse(text)
    return reader.build(config)


class _Reader:
    """Turns YAML nodes into plain data, remembering each key's line."""

    def __init__(self, path):
        self.path = path
        self.lines = {}
        self.stage_keys = {}
        self.nodes = set()

    def error(self, key, message):
        line = self.lines.get(key) or self.lines.get(key[:-1], 1) if key else 1
        return ConfigError(f"{self.path}:{line}: {_dotted(key) or '(top level)'}: {message}")

    def parse(self, text):
        try:
            node = yaml.compose(text, Loader=_Loader)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            line = mark.line + 1 if mark else 1
            raise ConfigError(f"{self.path}:{line}: invalid YAML: {error.problem}") from None
        if node is None:
            raise ConfigError(f"{self.path}:1: the config is empty.")
        return self.value(node, ())

    def value(self, node, key):
        self.lines.setdefault(key, node.start_mark.line + 1)
        if id(node) in self.nodes:  # an alias: refused, as a self-reference would never end
            raise self.error(key, "YAML aliases (*name) are not supported in configs.")
        self.nodes.add(id(node))
        if node.tag not in _PLAIN_TAGS:
            raise self.error(
                key,
                f"tag {node.tag!r} is not allowed: a config holds data only (mappings, lists, "
                "strings, numbers, booleans, null).",
            )
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, key)
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, (*key, index)) for index, item in enumerate(node.value)]
        return _Loader("").construct_object(node)

    def mapping(self, node, key):
        result = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _PLAIN_TAGS[0]:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"{self.path}:{line}: {_dotted(key)}: keys must be strings.")
            name = key_node.value
            child = (*key, name)
            if name in result:
                raise self.error(child, "this key appears twice.")
            self.lines[child] = key_node.start_mark.line + 1
            result[name] = self.value(value_node, child)
        return result

    def build(self, config):
        if not isinstance(config, dict):
            raise self.error((), "a config must be a mapping with `data` and `stages`.")
        self.unknown_keys(config, (), TOP_LEVEL_KEYS)
        for required in ("data", "stages"):
            if required not in config:
                raise self.error((), f"missing the required key `{required}`.")
        name = config.get("name", "pipeline")
        if not isinstance(name, str):
            raise self.error(("name",), f"`name` must be a string. Received: {name!r}")
        seed = config.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise self.error(("seed",), f"`seed` must be an integer. Received: {seed!r}")
        data = self.data(config["data"])
        try:
            pipeline = Pipeline(self.stages(config["stages"], ("stages",)), name=name)
        except (ValueError, TypeError) as error:
            if isinstance(error, ConfigError):
                raise
            raise self.error(("name",), str(error)) from None
        try:
            check_references(pipeline)
        except ValueError as error:
            key = (*self.stage_keys.get(getattr(error, "stage", None), ()), error.argument)
            raise self.error(key, str(error)) from None
        return PipelineConfig(pipeline, data, seed, self.path)

    def data(self, data):
        if not isinstance(data, dict):
            data = {"name": data} if isinstance(data, str) else data
        if not isinstance(data, dict) or "name" not in data:
            raise self.error(("data",), f"`data` must be a mapping with `name`. Received: {data!r}")
        self.unknown_keys(data, ("data",), DATA_KEYS)
        if data["name"] not in datasets.available():
            raise self.error(
                ("data", "name"),
                f"Unknown data set. Received: {data['name']!r}. Available: {datasets.available()}",
            )
        for size in ("train_size", "test_size"):
            value = data.get(size)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise self.error(
                    ("data", size), f"`{size}` must be a positive integer. Received: {value!r}"
                )
        return data

    def stages(self, stages, key):
        if not isinstance(stages, list) or not stages:
            raise self.error(key, f"`stages` must be a non-empty list. Received: {stages!r}")
        return [self.stage(stage, (*key, index)) for index, stage in enumerate(stages)]

    def stage(self, mapping, key):
        if not isinstance(mapping, dict) or "stage" not in mapping:
            raise self.error(
                key, f"each stage must be a mapping with a `stage` key. Received: {mapping!r}"
            )
        if not isinstance(mapping["stage"], str):
            raise self.error(
                (*key, "stage"), f"`stage` must be a stage name. Received: {mapping['stage']!r}"
            )
        try:
            cls = get_stage(mapping["stage"])
        except ValueError as error:
            raise self.error((*key, "stage"), str(error)) from None
        arguments = {name: value for name, value in mapping.items() if name != "stage"}
        parameters = _parameters(cls)
        self.unknown_keys(arguments, key, parameters, f" for stage {mapping['stage']!r}")
        self.check_types(arguments, key, parameters, cls)
        if cls is Pipeline:
            arguments["stages"] = self.stages(arguments.get("stages"), (*key, "stages"))
        arguments = {name: self.resolve_paths(value, name) for name, value in arguments.items()}
        try:
            stage = cls(**arguments)
        except (ValueError, TypeError) as error:
            argument = str(getattr(error, "argument", "")).split(".")[0]
            raise self.error((*key, argument) if argument else key, str(error)) from None
        self.stage_keys[stage.name] = key
        return stage

    def unknown_keys(self, mapping, key, accepted, where=""):
        for name in mapping:
            if name not in accepted:
                raise self.error(
                    (*key, name), f"unknown key{where}. Accepted keys: {sorted(accepted)}"
                )

    def check_types(self, arguments, key, parameters, cls):
        missing = [
            name
            for name, parameter in parameters.items()
            if parameter.default is inspect.Parameter.empty and name not in arguments
        ]
        if missing:
            raise self.error(key, f"missing required key(s) {missing} for stage {cls.kind!r}.")
        for name, value in arguments.items():
            annotation = parameters[name].annotation
            if annotation is not inspect.Parameter.empty and not _matches(value, annotation):
                raise self.error(
                    (*key, name),
                    f"expected {_describe(annotation)}. Received: {value!r} "
                    f"({type(value).__name__})",
                )

    def resolve_paths(self, value, name):
        """Relative file paths are relative to the config file's directory."""
        if isinstance(value, dict):
            return {key: self.resolve_paths(item, key) for key, item in value.items()}
        is_file = name == "path" or (name == "backbone" and str(value).endswith(".keras"))
        if is_file and isinstance(value, str) and not os.path.isabs(value):
            return os.path.normpath(self.path.parent / value)
        return value


_PLAIN_TAGS = (
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
)


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
        return " or ".join(name for name in names if name != "Model")
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


def _dotted(key):
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else f"{'.' if text else ''}{part}"
    return text


def available_stages():
    """Names and one-line summaries of the registered stages (for `tfkd --help`)."""
    return {
        name: (inspect.getdoc(cls) or "").splitlines()[0]
        for name, cls in registered_stages().items()
    }


def run_config(path, output_dir=None, *, quick=False, tensorboard=True, log=print):
    """Loads a config and executes its pipeline; returns the `Report`.

    Args:
        path: the YAML or JSON config.
        output_dir: defaults to `runs/<config name>` (`runs/<config name>-quick`
            with `quick`), relative to the current directory.
        quick: a smoke run (see `Pipeline.execute`). Defaults to `False`.
        tensorboard: write TensorBoard logs. Defaults to `True`.
        log: called with one line per stage. Defaults to `print`.
    """
    config = load_config(path)
    if output_dir is None:
        output_dir = pathlib.Path("runs") / (config.path.stem + ("-quick" if quick else ""))
    data = Data.load(**config.data)
    return config.pipeline.execute(
        data, output_dir, quick=quick, seed=config.seed, tensorboard=tensorboard, log=log
    )
