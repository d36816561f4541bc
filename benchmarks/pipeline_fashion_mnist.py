"""Distillation settings for the default pipeline's student, measured with the pipeline itself.

Runs, into one output directory (so the teacher's logits are computed once and every
finished variant is reused on a rerun), the all-labels config's teacher and scratch
student and a distilled student per (temperature, student_loss_weight) pair, then
prints the test accuracy of each. Point --output at a finished run of that config
(`tfkd run examples/pipeline_fashion_mnist_all_labels.yaml`) to reuse its stages.

    python benchmarks/pipeline_fashion_mnist.py --output runs/pipeline_fashion_mnist_all_labels \
        --settings 1:0.1 2:0.1 4:0.1 2:0.5 4:0.5 [--epochs 8] [--filters 24 48 96] \
        [--dense-units 128] [--dropout 0.3]   # the all-labels config's student
"""

import argparse
import pathlib

import tfkd
from tfkd.pipeline import Distill, Load, Train

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEACHER = ROOT / "saved_models" / "fashion_mnist_mobilenet_v2_teacher" / "model.keras"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=pathlib.Path, required=True)
    parser.add_argument("--settings", nargs="+", default=["1:0.1", "2:0.1", "4:0.1"])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--filters", type=int, nargs="+", default=[24, 48, 96])
    parser.add_argument("--dense-units", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument(
        "--augmented-copies",
        type=int,
        default=0,
        help="distil on that many teacher-labelled shifted/flipped copies too, and add a "
        "scratch control trained on the same copies with their labels",
    )
    args = parser.parse_args(argv)
    student = {"architecture": "cnn", "filters": args.filters}
    if args.dense_units:
        student |= {"dense_units": args.dense_units, "dropout": args.dropout}
    stages = [Load(TEACHER, name="teacher"), Train(student, epochs=args.epochs, name="scratch")]
    copies = args.augmented_copies
    suffix = f"_aug{copies}_e{args.epochs}" if copies else ""
    if copies:
        stages.append(
            Train(student, epochs=args.epochs, augmented_copies=copies, name=f"scratch{suffix}")
        )
    for setting in args.settings:
        temperature, weight = (float(value) for value in setting.split(":"))
        name = "distilled" if (temperature, weight) == (1.0, 0.1) else f"distilled_t{setting}"
        name += suffix
        stages.append(
            Distill(
                "teacher",
                student=student,
                epochs=args.epochs,
                temperature=temperature,
                student_loss_weight=weight,
                augmented_copies=copies,
                name=name.replace(":", "_w").replace(".", ""),
            )
        )
    report = tfkd.Pipeline(stages).execute("fashion_mnist", args.output)
    for row in report.rows:
        print(f"{row['name']:24s} {row['accuracy']:.4f}")


if __name__ == "__main__":
    main()
