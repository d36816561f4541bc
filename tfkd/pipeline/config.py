"""Pipeline configs: YAML or JSON, loaded as data only, checked with errors at the key's line.

A config is a mapping:

```yaml
data: {name: fashion_mnist}          # a tfkd.datasets name; optional train_size, test_size,
                                     # labelled_per_class (keep N labels a class, seeded)
seed: 0                              # optional
stages:                              # each: `stage` (a registered name) and its arguments
  - {stage: load, name: teacher, path: ../saved_models/teacher/model.keras}
  - {stage: distill, teacher: teacher, student: {architecture: cnn}, epochs: 8}
  - {stage: export, quantization: int8}
```

Only YAML's plain data (mappings, lists, strings, numbers, booleans, null) is
accepted: tags such as `!!python/object` are refused, so a config can never import
or run code. Relative `path`s are relative to the config file.

`tfkd check pipeline.yaml` lists every error of a config at once, in well under a
second (neither Keras nor TensorFlow is imported). What depends on the models
themselves (whether an N:M pruning pattern fits their layers) is checked when `run`
starts, before any stage runs.
"""

import dataclasses
import inspect
import json
import os
import pathlib
import re

from tfkd.pipeline import _reader, _yaml
from tfkd.pipeline.data import Data
from tfkd.pipeline.pipeline import Pipeline, check_run_options, execute_checked
from tfkd.pipeline.stage import registered_stages


class ConfigError(ValueError):
    """A bad config; each line of the message is an error starting with `file:line: key:`.

    Attributes:
        errors: the errors, one message each.
    """

    def __init__(self, message, errors=None):
        super().__init__(message)
        self.errors = list(errors) if errors else [message]


@dataclasses.dataclass
class PipelineConfig:
    """A loaded config: the pipeline, the data options, the seed and where it came from."""

    pipeline: Pipeline
    data: dict
    seed: int
    path: pathlib.Path
    _stage_keys: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)
    _lines: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def error(self, stage, argument, message):
        """A `ConfigError` at the line of `stage`'s `argument` (or of the stage)."""
        key = self._stage_keys.get(stage, ())
        key = (*key, argument) if (*key, argument) in self._lines else key
        line = self._lines.get(key, 1)
        return ConfigError(f"{self.path}:{line}: {_reader.dotted(key) or '(top level)'}: {message}")

    def data_error(self, argument, message):
        """A `ConfigError` at the line of `data`'s `argument` (or of `data`)."""
        key = ("data", argument) if ("data", argument) in self._lines else ("data",)
        line = self._lines.get(key, 1)
        return ConfigError(f"{self.path}:{line}: {_reader.dotted(key)}: {message}")


def load_config(path):
    """Reads and checks a YAML or JSON pipeline config; returns a `PipelineConfig`.

    Raises:
        ConfigError: listing every error found, one a line, each starting with
            `file:line: key:`, e.g. `pipeline.yaml:12: stages[2].epochs: ...`.
        TypeError: `path` is not a path.
    """
    config, errors = _read(path)
    if errors:
        raise ConfigError("\n".join(errors), errors)
    return config


def check_config(path):
    """Every error of a config, without running anything (nor importing Keras).

    Returns:
        A list of messages, each starting with `file:line: key:`; empty for a good config.
    """
    return _read(path)[1]


def _read(path):
    if not isinstance(path, str | os.PathLike):
        raise TypeError(
            "`path` must be the path of a YAML or JSON config file. "
            f"Received: path={path!r} of type {type(path).__name__}"
        )
    path = pathlib.Path(path)
    if not path.is_file():
        what = (
            "Config path is a directory, not a file" if path.is_dir() else "Config file not found"
        )
        return None, [f"{what}. Received: path={os.fspath(path)!r}"]
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        return None, [f"{path}:{line}: the config is not UTF-8 text: {error.reason}."]
    if path.suffix.lower() == ".json":
        try:
            json.loads(text)
        except json.JSONDecodeError as error:
            return None, [f"{path}:{error.lineno}: invalid JSON: {error.msg}"]
        except RecursionError:
            return None, [f"{path}:1: {_yaml.TOO_DEEP}"]
        text = text.expandtabs()  # JSON allows tabs where YAML does not
    reader = _reader.Reader(path)
    pipeline, data, seed = reader.read(text)
    if reader.errors:
        return None, reader.messages()
    config = PipelineConfig(pipeline, data, seed, path, reader.stage_keys, reader.lines)
    return config, []


def available_stages():
    """Names and summaries of the registered stages (for `tfkd run --help`): the first
    sentence of each docstring, however many lines it takes."""
    summaries = {}
    for name, cls in registered_stages().items():
        paragraph = " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split())
        sentence = re.match(r"(.*?\.)(?=\s|$)", paragraph)
        summaries[name] = sentence.group(1) if sentence else paragraph
    return summaries


def default_output(path, quick):
    """Where `tfkd run` writes when not told: `runs/<config name>[-quick]`."""
    return pathlib.Path("runs") / (pathlib.Path(path).stem + ("-quick" if quick else ""))


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
    output = "." if output_dir is None else output_dir
    check_run_options(output, quick=quick, tensorboard=tensorboard, log=log)
    config = load_config(path)
    if output_dir is None:
        output_dir = default_output(config.path, quick)
    try:
        data = Data.load(**config.data)
        if quick:
            data.quick()  # a class missing from the quick subset is the data's error
    except (ValueError, TypeError) as error:
        # What the data's own file holds (an .npz's arrays, a CSV's labels) is blamed on
        # the key that names it.
        if hasattr(error, "argument"):
            raise config.data_error(error.argument, str(error)) from None
        raise config.data_error(_source_key(config.data), str(error)) from None
    try:
        # The reader checked the stages and their references, and the options are checked.
        return execute_checked(
            config.pipeline,
            data,
            output_dir,
            quick=quick,
            seed=config.seed,
            tensorboard=tensorboard,
            verbose="auto",
            log=log,
        )
    except (ValueError, TypeError, ImportError) as error:
        if getattr(error, "stage", None) is None or not hasattr(error, "argument"):
            raise
        # Found by the checks against the models, before any stage ran: a config error.
        raise config.error(error.stage, error.argument, str(error)) from None


def _source_key(data):
    """The key of `data` (a config's) that names where the data come from."""
    from tfkd.pipeline._sources import SOURCE_KEYS

    return next((key for key in SOURCE_KEYS if data.get(key) is not None), "name")
