"""`Stage`: one step of a pipeline, and the registry that finds stages by name."""

import difflib
import importlib
import inspect
import re
import sys

from tfkd import _checks

_REGISTRY = {}
# The longest stage name: it names a directory, and the paths under it must stay short.
MAX_NAME_LENGTH = 100
# The modules that register tfkd's own stages; imported when the registry is first read.
_BUILT_IN_MODULES = (
    "tfkd.pipeline.stages",
    "tfkd.pipeline.training",
    "tfkd.pipeline.distilling",
    "tfkd.pipeline.quantizing",
    "tfkd.pipeline.pruning",
    "tfkd.pipeline.pipeline",
)


class _KerasModelType(type):
    def __instancecheck__(cls, value):
        # A Keras model can only exist once Keras is imported, so there is no need to import it.
        keras = sys.modules.get("keras")
        return keras is not None and isinstance(value, keras.Model)


class KerasModel(metaclass=_KerasModelType):
    """`keras.Model` in stage signatures and checks, without importing Keras (and TensorFlow):
    configs are read and checked before, and without, any training."""


def register_stage(name):
    """Class decorator: makes a `Stage` subclass available to configs as `stage: name`.

    Args:
        name: the name configs use. It must not be taken already.

    Example:

    >>> @tfkd.pipeline.register_stage("halve_learning_rate")
    ... class HalveLearningRate(tfkd.pipeline.Stage):
    ...     def run(self, model, context):
    ...         ...
    """
    if not isinstance(name, str) or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) is None:
        raise ValueError(
            "`name` must be a stage name configs can use: letters, digits and underscores, "
            f"not starting with a digit, e.g. 'halve_learning_rate'. Received: name={name!r}."
        )

    def decorator(cls):
        if not (isinstance(cls, type) and issubclass(cls, Stage)):
            raise TypeError(
                "`register_stage` decorates a class `cls` that subclasses `tfkd.pipeline.Stage`. "
                f"Received: cls={cls!r}"
            )
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(
                f"A stage is already registered as {name!r}: {_REGISTRY[name].__name__}. "
                f"Received: name={name!r} for {cls.__name__}. Choose another name."
            )
        _REGISTRY[name] = cls
        cls.kind = name
        return cls

    return decorator


def _load_built_in_stages():
    for module in _BUILT_IN_MODULES:
        importlib.import_module(module)


def get_stage(name):
    """The `Stage` class registered as `name`; the error lists the registered names."""
    if not isinstance(name, str):
        raise TypeError(
            "`name` must be a string: the name a stage is registered under. "
            f"Received: name={name!r} of type {type(name).__name__}"
        )
    _load_built_in_stages()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), _REGISTRY, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Unknown stage. Received: stage={name!r}. Registered stages: "
            f"{sorted(_REGISTRY)}.{hint}"
        )
    return _REGISTRY[name]


def registered_stages():
    """`{name: Stage subclass}` of every registered stage."""
    _load_built_in_stages()
    return dict(sorted(_REGISTRY.items()))


def invalid_argument(argument, message, error=ValueError):
    """An error about one constructor argument; configs point at that key's line."""
    exception = error(message)
    exception.argument = argument
    return exception


class _StageType(type):
    """Moves a deprecated argument (`Stage.renamed_arguments`) to its current name, with a
    `DeprecationWarning`, before the stage is made: its config holds the current name."""

    @property
    def __signature__(cls):
        # The constructor's, for `inspect.signature(cls)` (help, IDEs), not `__call__`'s.
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
        return inspect.Signature(parameters)

    def __call__(cls, *args, **kwargs):
        if cls.renamed_arguments:
            given = {
                new: kwargs.pop(new) for new in cls.renamed_arguments.values() if new in kwargs
            }
            kwargs.update(
                _checks.renamed_arguments(
                    cls.__name__, given, kwargs, cls.renamed_arguments, stacklevel=4
                )
            )
        return super().__call__(*args, **kwargs)


class Stage(metaclass=_StageType):
    """One step of a pipeline: takes the previous stage's model, returns a new one.

    Subclass it, implement `run`, and register it with `register_stage` to use it
    from configs. The constructor's keyword arguments are the stage's config: they
    are recorded by themselves (`get_config`), fingerprinted so that a changed
    argument reruns the stage, and type-checked against the constructor's
    annotations when they come from a config file. Never modify the incoming model:
    return a new one (tfkd's `prune`, `quantize_aware` and `Distiller` already do).

    Args:
        name: the stage's name in the report and the output directory. Defaults
            to the registered name (`kind`).
        from_stage: name of an earlier stage whose model this stage takes,
            instead of the previous stage's. Defaults to `None`.

    Example:

    >>> @tfkd.pipeline.register_stage("fine_tune_more")
    ... class FineTuneMore(tfkd.pipeline.Stage):
    ...     def __init__(self, epochs: int = 1, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.epochs = epochs
    ...     def run(self, model, context):
    ...         model = context.copy_model(model)
    ...         context.compile(model, learning_rate=1e-4)
    ...         context.fit(model, epochs=self.epochs)
    ...         return model, {"epochs": self.epochs}
    """

    kind = None
    # Whether `run` trains. On several processes (`tfkd run --processes`), a stage that
    # trains runs on every process, in step; one that does not (an export) runs on
    # process 0 alone, which gives it models of its own (see `_processes`).
    trains = True
    # Whether `run` needs an incoming model (when `takes_input`): the first stage cannot
    # be one that does. False lets `run` take `None` (see `run`).
    needs_input = False
    # `{old name: current name}` of arguments renamed since configs were written: the old
    # names are still read, in Python and in configs.
    renamed_arguments = {}

    def __new__(cls, *args, **kwargs):
        instance = super().__new__(cls)
        bound = inspect.signature(cls.__init__).bind(instance, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop(next(iter(arguments)))  # self
        extra = arguments.pop("kwargs", {}) if _has_var_keyword(cls) else {}
        instance._config = {**arguments, **extra}
        return instance

    def __init__(self, name: str | None = None, from_stage: str | None = None):
        name = self.kind if name is None else name
        if name is None:
            raise invalid_argument(
                "name",
                f"{type(self).__name__} is not registered, so it has no default name. "
                "Received: name=None. Pass `name=` or decorate the class with "
                "`@tfkd.pipeline.register_stage(...)`.",
            )
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise invalid_argument(
                "name",
                "A stage name must be ASCII letters, digits, '_' or '-' (it names a directory). "
                f"Received: name={name!r}",
                ValueError if isinstance(name, str) else TypeError,
            )
        if len(name) > MAX_NAME_LENGTH:
            raise invalid_argument(
                "name",
                f"A stage name must be at most {MAX_NAME_LENGTH} characters (it names a "
                f"directory). Received: name={name[:20]!r}... of {len(name)} characters",
            )
        if from_stage is not None and not isinstance(from_stage, str):
            raise invalid_argument(
                "from_stage",
                f"`from_stage` must be a stage name. Received: from_stage={from_stage!r}",
                TypeError,
            )
        self.name = name
        self.from_stage = from_stage

    def run(self, model, context):
        """Returns `(new_model, details)`: a Keras model or `tfkd.TFLiteModel`, and a dict.

        Args:
            model: the previous stage's model (or `from_stage`'s); `None` for the first.
            context: a `tfkd.pipeline.Context`: data, other stages' models, training helpers.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `run(model, context)`.")

    def references(self):
        """Names of earlier stages whose models `run` reads (besides its input)."""
        return []

    def takes_input(self):
        """Whether `run` uses the incoming model (if not, its changes don't rerun this stage)."""
        return True

    def _output_spec(self, incoming):
        """What the returned model is built from, when that is known before anything runs:
        a spec (`{"architecture": ...}`, `{"path": ...}`, a Keras model), or None when
        unknown (the default). `incoming`: the same for the model this stage receives."""
        return None

    def _check_input_model(self, build, incoming):
        """Checks the arguments against the model this stage will receive, before any stage
        runs. `build()` returns an untrained model of that architecture (call it only if
        needed); `incoming` is its spec (see `_output_spec`). Raises `invalid_argument`
        errors, which configs report at the key."""

    def _check_input_tflite(self, export):
        """Checks the arguments against the `.tflite` file this stage will receive, before
        any stage runs, as the `export` stage that makes it describes it:
        `{"quantization": ..., "recipe": ...}`, or `{"path": ...}` for a file a `load`
        stage reads. Raises `invalid_argument` errors."""

    def _check_layer_names(self, build, incoming, specs):
        """Checks the layers the arguments name against the models they name, before any
        stage runs: `incoming` is the spec of the model this stage receives, `specs`
        those of the stages before (by name, None where unknown), and `build(spec)` an
        untrained model of one. Raises `invalid_argument` errors."""

    def _check_reference_tflite(self, name, export):
        """Checks the arguments against the `.tflite` file of stage `name`, which `run`
        reads (`references`), before any stage runs; `export` as in
        `_check_input_tflite`. Raises `invalid_argument` errors."""

    def _check_before_run(self, data):
        """Checks the arguments against what needs Keras or the data (`tfkd.pipeline.Data`),
        before any stage runs. Raises `invalid_argument` errors, which configs report at
        the key."""

    def fingerprint(self):
        """What decides whether a finished run of this stage can be reused (with its
        input's and references' fingerprints, the data and the seed). Defaults to
        `get_config()`; override to add what the arguments don't show (a file's hash)."""
        return self.get_config()

    def get_config(self):
        """The constructor's arguments, which also fingerprint the stage for resuming."""
        return dict(self._config)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}(name={self.name!r})"


class StageError(RuntimeError):
    """A stage failed; the message names it and says that rerunning resumes.

    Attributes:
        stage: the stage's name; `kind`: its registered kind; `error`: what it raised.
    """

    def __init__(self, stage, error, directory):
        super().__init__(
            f"Stage {stage.name!r} ({stage.kind}) failed: {type(error).__name__}: "
            f"{str(error).rstrip('.')}. Finished stages are kept in {directory}; fix the cause "
            "and rerun to resume from this stage."
        )
        self.stage, self.kind, self.error = stage.name, stage.kind, error


def _has_var_keyword(cls):
    parameters = inspect.signature(cls.__init__).parameters.values()
    return any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters)


def refuse_tflite_input(stage):
    """For `_check_input_tflite` of a stage that needs a Keras model: its error before
    any stage runs, as `check_keras_input`'s when it runs."""
    raise invalid_argument(
        "from_stage",
        f"Stage {stage.name!r} ({stage.kind}) needs a Keras model as input, and the stage "
        f"before it gives a .tflite file. Received: from_stage={stage.from_stage!r}. Set "
        "`from_stage` to a stage that returns a Keras model, or move the stage before the "
        "export.",
    )


def check_keras_input(stage, model):
    if not isinstance(model, KerasModel):
        raise TypeError(
            f"Stage {stage.name!r} ({stage.kind}) needs a Keras model as input. Received: "
            f"{type(model).__name__}. Set `from_stage` to a stage that returns a Keras model."
        )


def check_range(argument, value, check):
    """`check(argument, value)` (one of `_checks`'), its error naming `argument` as a
    config key."""
    try:
        check(argument, value)
    except (TypeError, ValueError) as error:
        error.argument = argument
        raise


def check_positive(argument, value, kind, allow_zero=False):
    """Raises unless `value` is a finite positive (or non-negative) int, or number for float:
    a `TypeError` for another type, a `ValueError` for a value out of range (an int above
    `_checks.COUNT_LIMIT` too). Numpy scalars count as numbers."""
    try:
        _checks.check_number(argument, value, low=0, low_open=not allow_zero, integer=kind is int)
    except (TypeError, ValueError) as error:
        error.argument = argument
        raise
    if kind is int and value > _checks.COUNT_LIMIT:
        raise invalid_argument(
            argument,
            f"`{argument}` must be at most 2**31 - 1 ({_checks.COUNT_LIMIT:,}). Received: "
            f"{argument}={value!r}",
        )
