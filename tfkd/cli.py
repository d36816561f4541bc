"""The `tfkd` command: run a pipeline config, or print the report of a run directory."""

import argparse
import pathlib
import sys

EPILOG = """\
examples:
  tfkd run examples/pipeline_fashion_mnist.yaml          # the default pipeline (~11 min, 2 cores)
  tfkd run examples/pipeline_fashion_mnist.yaml --quick  # a one-minute smoke run
  tfkd report runs/pipeline_fashion_mnist                # the report of a (partial) run

Rerunning the same command resumes after the last finished stage; a stage whose
config changed reruns, with the stages after it that depend on it.
"""


def _parser():
    parser = argparse.ArgumentParser(
        prog="tfkd",
        description="Make Keras models small and fast for edge devices: transfer, distill, "
        "prune, quantize and export to TFLite in one resumable pipeline, with a report.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run a pipeline config (YAML or JSON); resumes an interrupted run",
        description="Run a pipeline config. Stages: " + _stage_list(),
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
    report = commands.add_parser("report", help="print (and rewrite) the report of a run directory")
    report.add_argument("directory", type=pathlib.Path)
    return parser


def _stage_list():
    from tfkd.pipeline.config import available_stages

    return "; ".join(f"{name}: {summary}" for name, summary in available_stages().items())


def main(argv=None):
    args = _parser().parse_args(argv)
    from tfkd import pipeline

    try:
        if args.command == "run":
            report = pipeline.run_config(
                args.config, args.output, quick=args.quick, tensorboard=not args.no_tensorboard
            )
        else:
            try:
                report = pipeline.Report.load(args.directory)
            except ValueError as error:
                print(f"tfkd: {error}", file=sys.stderr)
                return 2
            report.write(args.directory)
            print(f"Report: {args.directory / 'report.md'}")
    except pipeline.ConfigError as error:
        print(f"tfkd: config error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "\ntfkd: interrupted. Finished stages are kept; rerun the same command to resume.",
            file=sys.stderr,
        )
        return 130
    print(report.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
