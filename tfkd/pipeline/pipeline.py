"""`Pipeline`: stages run in order into an output directory, resumable, with a report."""

import numbers
import os
from collections.abc import Iterable

import numpy as np

from tfkd import _checks
from tfkd.pipeline.stage import Stage, get_stage, invalid_argument, register_stage


@register_stage("pipeline")
class Pipeline(Stage):
    """Stages run in order, each on the previous one's model; itself a stage, so they nest.

    `execute` runs it into an output directory. Every stage's model (`.keras`, or the
    `.tflite` an `export` stage writes), metrics and metadata are written there
    atomically, the stage's entry last. Executing again into the same directory
    resumes: a stage whose arguments, input and data are unchanged is loaded, not
    rerun; a stage that was interrupted (crash, Ctrl-C, `kill -9`) reruns, and so
    does every stage downstream of a changed one.

    Args:
        stages: `Stage` instances, in order. Names must be unique (nested pipelines
            included).
        name: the pipeline's name. Defaults to `"pipeline"`.

    Example:

    ```python
    pipeline = tfkd.Pipeline([
        tfkd.pipeline.Load("teacher.keras", name="teacher"),
        tfkd.pipeline.Distill("teacher", student={"architecture": "cnn"}, epochs=8),
        tfkd.pipeline.Prune(target_sparsity=0.5, teacher="teacher"),
        tfkd.pipeline.QuantizeAware(teacher="teacher"),
        tfkd.pipeline.Export(quantization="int8"),
    ])
    result = pipeline.execute("fashion_mnist", "runs/fashion_mnist")
    print(result.markdown())
    ```
    """

    def __init__(self, stages: list, **kwargs):
        super().__init__(**kwargs)
        self.stages = _checked_stages(stages)

    def run(self, model, context):
        for stage in self.stages:
            model = context.run_stage(stage, model)
        return model, {}

    def leaves(self):
        """The non-pipeline stages, depth first: what runs and gets a directory."""
        for stage in self.stages:
            yield from stage.leaves() if isinstance(stage, Pipeline) else [stage]

    def get_config(self):
        config = super().get_config()
        config["stages"] = [{"stage": stage.kind, **stage.get_config()} for stage in self.stages]
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["stages"] = [_stage_from_config(stage) for stage in config["stages"]]
        return cls(**config)

    def execute(
        self, data, output_dir, *, quick=False, seed=0, tensorboard=True, verbose="auto", log=print
    ):
        """Runs every stage not finished in `output_dir` yet; returns the `Report`.

        Args:
            data: a `tfkd.pipeline.Data`, or the name of a `tfkd.datasets` data set.
            output_dir: where models, entries, TensorBoard logs and the report go.
            quick: a smoke run: a few thousand examples, one epoch per training stage.
                Defaults to `False`.
            seed: seeds every stage's initialisation and batch order. Defaults to `0`.
            tensorboard: write TensorBoard logs under `output_dir/logs/<stage>`.
                Defaults to `True`.
            verbose: Keras's `verbose` for training; `"auto"` shows progress bars on
                a terminal and a line per epoch otherwise. Defaults to `"auto"`.
            log: called with one line per stage. Defaults to `print`.

        Returns:
            The `tfkd.pipeline.Report`, also written as `report.md`, `report.json`
            and `report.png` in `output_dir`.

        Raises:
            TypeError, ValueError: a bad argument or stage reference, before any stage runs.
        """
        check_run_options(
            output_dir, quick=quick, tensorboard=tensorboard, log=log, seed=seed, verbose=verbose
        )
        check_references(self)
        data = _data(data)
        return execute_checked(
            self,
            data,
            output_dir,
            quick=quick,
            seed=seed,
            tensorboard=tensorboard,
            verbose=verbose,
            log=log,
        )


def execute_checked(pipeline, data, output_dir, *, quick, seed, tensorboard, verbose, log):
    """`Pipeline.execute` after its checks, for callers that made them (`run_config`)."""
    from tfkd.pipeline import _engine  # Keras and TensorFlow load when a pipeline runs
    from tfkd.pipeline.context import RunOptions

    options = RunOptions(quick=quick, seed=int(seed), tensorboard=tensorboard, verbose=verbose)
    return _engine.execute(pipeline, data, output_dir, options, log)


def _stage_from_config(config):
    config = dict(config)
    return get_stage(config.pop("stage")).from_config(config)


def _checked_stages(stages):
    """`stages` as a list, refused unless it is a non-empty sequence of `Stage`s."""
    if isinstance(stages, str | bytes | dict | Stage) or not isinstance(stages, Iterable):
        raise invalid_argument(
            "stages",
            "`stages` must be a list of `tfkd.pipeline.Stage`s. Received: "
            f"stages={stages!r} of type {type(stages).__name__}. Wrap a single stage in a "
            "list: Pipeline([stage]).",
            TypeError,
        )
    stages = list(stages)
    if not stages:
        raise invalid_argument(
            "stages", "`stages` must hold at least one stage. Received: stages=[]"
        )
    for index, stage in enumerate(stages):
        if not isinstance(stage, Stage):
            raise invalid_argument(
                "stages",
                "Every element of `stages` must be a `tfkd.pipeline.Stage`. Received: "
                f"stages[{index}]={stage!r} of type {type(stage).__name__}",
                TypeError,
            )
    return stages


def check_run_options(output_dir, *, quick, tensorboard, log, seed=0, verbose="auto"):
    """Checks the options of `Pipeline.execute` (and `run_config`) before any work."""
    if not isinstance(output_dir, str | os.PathLike):
        raise TypeError(
            "`output_dir` must be a directory path. "
            f"Received: output_dir={output_dir!r} of type {type(output_dir).__name__}"
        )
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(
            "`output_dir` is a file, not a directory. "
            f"Received: output_dir={os.fspath(output_dir)!r}. Give a new or existing directory."
        )
    for argument, value in (("quick", quick), ("tensorboard", tensorboard)):
        if not isinstance(value, bool | np.bool_):
            raise TypeError(f"`{argument}` must be True or False. Received: {argument}={value!r}")
    if not callable(log):
        raise TypeError(
            "`log` must be a function called with each line, such as `print`. "
            f"Received: log={log!r}"
        )
    _checks.check_seed(seed)
    if not _is_verbose(verbose):
        raise ValueError(
            f"`verbose` must be 'auto', 0, 1 or 2 (as Keras's). Received: verbose={verbose!r}"
        )


def _data(data):
    """`data` as a `tfkd.pipeline.Data`: loaded when it is a data set's name."""
    from tfkd.pipeline._sources import load_errors
    from tfkd.pipeline.data import Data

    if isinstance(data, Data):
        return data
    if not isinstance(data, str):
        raise TypeError(
            "`data` must be a `tfkd.pipeline.Data` or a data set name. "
            f"Received: data={data!r} of type {type(data).__name__}"
        )
    for error in load_errors(data, argument="data"):
        raise error
    return Data.load(data)


def _is_verbose(verbose):
    if isinstance(verbose, str):
        return verbose == "auto"
    return (
        isinstance(verbose, numbers.Integral)
        and not isinstance(verbose, bool)
        and (verbose in (0, 1, 2))
    )


def check_references(pipeline):
    """Unique names; `from_stage` and teachers name earlier stages (of any nesting level);
    a first stage that needs an incoming model (`Stage.needs_input`) has one.

    A nested pipeline's name can be referenced once all its stages have run.

    Raises:
        ValueError: the first of `reference_errors`.
    """
    for error in reference_errors(pipeline):
        raise error


def reference_errors(pipeline):
    """Yields a ValueError, with `stage` and `argument` attributes, for each bad reference."""
    seen, names = set(), set()
    for stage in _walk(pipeline):
        if isinstance(stage, tuple):  # the end of a nested pipeline: its output exists now
            seen.add(stage[1].name)
            continue
        if stage.from_stage and not stage.takes_input():
            yield _reference_error(
                stage,
                "from_stage",
                f"Stage {stage.name!r} ({stage.kind}) builds or loads its own model, so "
                f"`from_stage` would have no effect. Received: from_stage={stage.from_stage!r}. "
                "Remove it.",
            )
        if not seen and _needs_a_model_first(stage):
            yield _first_stage_error(stage)
        for argument, name in _references(stage):
            if name not in seen:
                yield _reference_error(
                    stage,
                    argument,
                    f"Stage {stage.name!r}: `{argument}` must name an earlier stage. "
                    f"Received: {argument}={name!r}. Earlier stages: {sorted(seen)}",
                )
        if stage.name.lower() in names:
            yield _reference_error(
                stage,
                "name",
                f"Two stages are named {stage.name!r} (ignoring case: names become directory "
                f"names); names must be unique. Received: name={stage.name!r} again.",
            )
        names.add(stage.name.lower())
        if not isinstance(stage, Pipeline):
            seen.add(stage.name)


def _needs_a_model_first(stage):
    """Whether `stage`, coming first, would get no model where it needs one."""
    return stage.needs_input and stage.takes_input() and not stage.from_stage


def _first_stage_error(stage):
    argument = getattr(stage, "new_model_argument", None)
    fix = "put a stage that makes a model (load, transfer, train with `model`) before it"
    if argument:
        fix = f"give `{argument}` (e.g. {{architecture: cnn}}), or {fix}"
    return _reference_error(
        stage,
        argument or "from_stage",
        f"Stage {stage.name!r} ({stage.kind}) needs an incoming model, and it comes first: "
        f"no stage gives it one. Received: {argument or 'from_stage'}=None. To fix it, {fix}.",
    )


def _reference_error(stage, argument, message):
    error = invalid_argument(argument, message)
    error.stage, error.stage_instance = stage.name, stage
    return error


def _walk(pipeline):
    """Every stage depth first; a nested pipeline is followed by `("end", pipeline)`."""
    for stage in pipeline.stages:
        yield stage
        if isinstance(stage, Pipeline):
            yield from _walk(stage)
            yield ("end", stage)


def _holds(value, name):
    """Whether a config value is the stage name `name` or a list holding it."""
    return value == name or (isinstance(value, list) and name in value)


def _references(stage):
    references = [("from_stage", stage.from_stage)] if stage.from_stage else []
    config = stage.get_config()
    for name in stage.references():
        names = (key for key, value in config.items() if key != "name" and _holds(value, name))
        references.append((next(names, "teacher"), name))
    return references
