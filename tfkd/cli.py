"""The `tfkd` command: run a pipeline config, check one, or print the report of a run directory.

Only `run` (and `run --help`, which lists the stages) imports Keras and TensorFlow, which
takes seconds: `--help`, `check` and `report` answer at once.
"""

import argparse
import os
import pathlib
import sys
import traceback

EPILOG = """\
examples:
  tfkd check examples/pipeline_fashion_mnist.yaml        # every config error at once, no run
  tfkd run examples/pipeline_fashion_mnist.yaml          # the default pipeline (809 s on 2 CPU
                                                         # cores in its committed report; up to
                                                         # 4x that on slower machines)
  tfkd run examples/pipeline_fashion_mnist.yaml --quick  # a smoke run (251 s with one thread on
                                                         # a slow machine)
  tfkd report runs/pipeline_fashion_mnist                # the report of a (partial) run
  tfkd run examples/pipeline_fashion_mnist.yaml --quick --processes 2  # two JAX processes

Rerunning the same command resumes after the last finished stage; a stage whose
config changed reruns, with the stages after it that depend on it.
"""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose description can be computed when help is shown."""

    def __init__(self, *args, describe=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._describe = describe

    def format_help(self):
        if self._describe is not None:
            self.description = self._describe()
        return super().format_help()


def _parser():
    parser = _Parser(
        prog="tfkd",
        description="Make Keras models small and fast for edge devices: transfer, distill, "
        "prune, quantize and export to TFLite in one resumable pipeline, with a report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug", action="store_true", help="on an error, show the full Python traceback"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run a pipeline config (YAML or JSON); resumes an interrupted run",
        describe=_run_description,
        parents=[debug],
    )
    run.add_argument("config", type=pathlib.Path, help="the pipeline config, .yaml or .json")
    run.add_argument(
        "--output",
        type=pathlib.Path,
        default=None,
        help="output directory (default: runs/<config name>, or runs/<config name>-quick)",
    )
    run.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2,000 training and 500 test examples, one epoch per training stage",
    )
    run.add_argument("--no-tensorboard", action="store_true", help="write no TensorBoard logs")
    run.add_argument(
        "--processes",
        type=int,
        default=None,
        metavar="N",
        help="train on N processes of this machine (JAX's keras.distribution); on a "
        "cluster, set TFKD_COORDINATOR, TFKD_PROCESS_COUNT and TFKD_PROCESS_ID instead",
    )
    check = commands.add_parser(
        "check",
        help="check a pipeline config and list every error, without running anything",
        parents=[debug],
    )
    check.add_argument("config", type=pathlib.Path, help="the pipeline config, .yaml or .json")
    report = commands.add_parser(
        "report", help="print (and rewrite) the report of a run directory", parents=[debug]
    )
    report.add_argument("directory", type=pathlib.Path)
    micro = commands.add_parser(
        "micro",
        help="check a .tflite file for TFLite Micro, measure its arena, write C files",
        parents=[debug],
    )
    micro.add_argument("model", type=pathlib.Path, help="the int8 .tflite file")
    micro.add_argument("--output", type=pathlib.Path, required=True, help="bundle directory")
    micro.add_argument(
        "--data",
        type=pathlib.Path,
        help="a .npy file of inputs (one example per row) to compare TFLM with LiteRT on",
    )
    micro.add_argument("--name", default="model", help="C name of the model (default: model)")
    micro.add_argument(
        "--arena-margin", type=float, default=0.1, help="share added to the measured arena"
    )
    micro.add_argument("--arena-limit", type=int, help="bytes of RAM the arena must fit in")
    return parser


def _run_description():
    from tfkd.pipeline.config import available_stages

    stages = "; ".join(f"{name}: {summary}" for name, summary in available_stages().items())
    return "Run a pipeline config. Stages: " + stages


def _run(args):
    if args.processes is not None:
        return _launch(args)
    from tfkd.pipeline import _processes

    # Before anything runs on JAX: the processes join, and each builds replicated models.
    processes = _processes.join_from_environment()
    from tfkd.pipeline.config import run_config

    report = run_config(
        args.config, args.output, quick=args.quick, tensorboard=not args.no_tensorboard
    )
    if processes is None or processes.writes:
        print(report.markdown())
    return 0


def _launch(args):
    """`tfkd run --processes N`: the same command as N processes of this machine."""
    from tfkd.pipeline import _processes
    from tfkd.pipeline.config import default_output, load_config

    if args.processes < 1:
        raise ValueError(
            f"`--processes` must be at least 1. Received: --processes {args.processes}"
        )
    present = [name for name in _processes.ENVIRONMENT if name in os.environ]
    if present:
        raise ValueError(
            f"`--processes` starts processes on this machine; {', '.join(present)} say this "
            "process is one of a cluster's already. Use one or the other."
        )
    config = load_config(args.config)  # every config error before any process starts
    try:
        _processes.check_batch_sizes(config.pipeline, args.processes)
    except ValueError as error:
        raise config.error(error.stage, error.argument, str(error)) from None
    output = args.output or default_output(args.config, args.quick)
    arguments = [os.fspath(args.config), "--output", os.fspath(output)]
    arguments += ["--quick"] * args.quick + ["--no-tensorboard"] * args.no_tensorboard
    arguments += ["--debug"] * args.debug
    return _processes.launch(arguments, args.processes, output)


def _check(args):
    from tfkd.pipeline._sources import source_kind
    from tfkd.pipeline.config import load_config

    config = load_config(args.config)
    stages = ", ".join(f"{stage.name} ({stage.kind})" for stage in config.pipeline.leaves())
    kind = source_kind(config.data.get("name"), config.data)
    data = config.data[kind] if kind == "name" else f"{kind} {config.data[kind]}"
    print(f"{args.config}: no errors. Data: {data}. Stages: {stages}.")
    return 0


def _report(args):
    from tfkd.pipeline.report import Report

    try:
        report = Report.load(args.directory)
    except ValueError as error:
        print(f"tfkd: {error}", file=sys.stderr)
        return 2
    report.write(args.directory)
    print(f"Report: {args.directory / 'report.md'}")
    print(report.markdown())
    return 0


def _micro(args):

    from tfkd.export.micro import describe, micro_bundle

    data = None if args.data is None else _micro_data(args.data)
    summary = micro_bundle(
        args.model,
        args.output,
        data,
        name=args.name,
        arena_margin=args.arena_margin,
        arena_limit=args.arena_limit,
    )
    print(
        f"{args.model}: {describe(summary)}. Written: {', '.join(summary['files'])} and "
        f"micro.json in {args.output}."
    )
    return 0


def _micro_data(path):
    """The `--data` array of a `.npy` file, its header checked against the file's size
    before its data is read (before: a missing file was a bare `[Errno 2]`, and a header
    could ask for any memory)."""
    import numpy as np

    from tfkd.datasets._files import npy_problem

    try:
        with open(path, "rb") as file:
            problem = npy_problem(file, os.path.getsize(path), "its array")
    except OSError as error:
        problem = f"cannot be read ({error.strerror or error})"
    if problem:
        raise ValueError(
            f"`--data` must be a .npy file of inputs (written by np.save); the file {problem}. "
            f"Received: --data={path!r}"
        )
    return np.load(path, allow_pickle=False)


_COMMANDS = {"run": _run, "check": _check, "report": _report, "micro": _micro}


def main(argv=None):
    args = _parser().parse_args(argv)
    from tfkd.pipeline import _processes

    try:
        code = _main(args)
    except BaseException:
        if _processes.current() is None:
            raise
        traceback.print_exc()  # `--debug` on one of several processes
        code = 1
    if code and _processes.current() is not None:
        # Leaving normally would wait at JAX's shutdown barrier for processes that wait
        # for this one: ending now makes the others' runs fail at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(args):
    from tfkd.pipeline.config import ConfigError

    try:
        return _COMMANDS[args.command](args)
    except ConfigError as error:
        for message in error.errors:
            print(f"tfkd: config error: {message}", file=sys.stderr)
        if len(error.errors) > 1:
            print(f"tfkd: {len(error.errors)} errors in {args.config}.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ntfkd: interrupted. Finished stages are kept; rerun the same command to resume.",
            file=sys.stderr,
        )
        return 130
    except Exception as error:
        if args.debug:
            raise
        print(f"tfkd: {_one_line(error)}", file=sys.stderr)
        print("tfkd: add --debug to see the traceback.", file=sys.stderr)
        return 1


def _one_line(error):
    """A stage failure already names the stage and what it raised; anything else, its type."""
    from tfkd.pipeline.stage import StageError

    if isinstance(error, StageError):
        return str(error)
    return f"error: {type(error).__name__}: {error}"


if __name__ == "__main__":
    sys.exit(main())
