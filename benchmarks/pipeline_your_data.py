"""Issue 18's must-shows 1-3: the pipeline on an image folder, an `.npz` of the same
images, a prepared tfds data set against the bundled one, and a `keras.applications`
student, each a `tfkd run` of a config, their report rows collected in one JSON file.

1. `examples/pipeline_image_folder.yaml` on Animal-MNIST written as PNG folders
   (`examples/write_image_folder.py`), then the same config on the same images saved as an
   `.npz` (the numpy path): the same seed must give the same accuracies.
2. `tfkd.datasets.write_tfds("fashion_mnist", D)`, then one config on `{tfds:
   fashion_mnist, data_dir: D}` and on the bundled `fashion_mnist`: the same rows.
3. `examples/pipeline_application_student.yaml`: MobileNetV3Small (minimalistic, random
   initialisation) trained on labels and distilled from the MobileNetV2 teacher, int8.

    python benchmarks/pipeline_your_data.py [--parts 1 2 3] [--work runs/your_data]

Finished runs in `--work` are reused (the pipeline resumes). Writes
`benchmarks/results/pipeline_your_data.json` after each part.
"""

import argparse
import json
import pathlib
import sys
import time

import numpy as np
from provenance import machine

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "pipeline_your_data.json"
TFDS_CONFIG = """\
data: {source}
seed: 0
stages:
  - {{stage: load, name: teacher, path: {teacher}}}
  - {{stage: train, name: scratch, model: {{architecture: cnn, filters: [8, 16]}}, epochs: 1}}
  - {{stage: export, name: int8, quantization: int8}}
"""


def run(config, output):
    """`tfkd run config --output output`: its report's rows, trimmed, and its seconds."""
    from tfkd.pipeline import run_config

    start = time.perf_counter()
    report = run_config(config, output, tensorboard=False, log=print)
    rows = [
        {key: row.get(key) for key in ("name", "stage", "format", "parameters", "bytes")}
        | {"accuracy": row["accuracy"], "macro_f1": _macro_f1(row)}
        for row in report.rows
    ]
    return {"config": str(config), "rows": rows, "seconds": round(time.perf_counter() - start, 1)}


def _macro_f1(row):
    classification = row.get("classification") or {}
    return classification.get("macro", {}).get("f1")


def image_folder(work):
    sys.path.insert(0, str(ROOT / "examples"))
    import write_image_folder

    from tfkd.pipeline import Data

    folder = ROOT / "data" / "animal_mnist_png"
    write_image_folder.write(folder)
    results = {"folder": run(ROOT / "examples" / "pipeline_image_folder.yaml", work / "folder")}
    data = Data.load(directory=folder, image_size=[28, 28], color_mode="grayscale")
    npz = work / "animal_mnist.npz"
    np.savez(
        npz,
        x_train=data.x_train,
        y_train=data.y_train,
        x_test=data.x_test,
        y_test=data.y_test,
        class_names=np.array(data.class_names),
    )
    text = (ROOT / "examples" / "pipeline_image_folder.yaml").read_text()
    config = work / "pipeline_npz.yaml"
    config.write_text(
        text.replace(
            "{directory: ../data/animal_mnist_png, image_size: [28, 28], color_mode: grayscale}",
            f"{{npz: {npz}}}",
        )
    )
    results["npz"] = run(config, work / "npz")
    results["images"] = {"train": len(data.x_train), "test": len(data.x_test)}
    results["same_accuracies"] = [r["accuracy"] for r in results["folder"]["rows"]] == [
        r["accuracy"] for r in results["npz"]["rows"]
    ]
    return results


def tfds(work):
    import tfkd

    data_dir = work / "tfds"
    tfkd.datasets.write_tfds("fashion_mnist", data_dir)
    teacher = ROOT / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
    results = {}
    for name, source in (
        ("tfds", f"{{tfds: fashion_mnist, data_dir: {data_dir}}}"),
        ("bundled", "fashion_mnist"),
    ):
        config = work / f"pipeline_{name}.yaml"
        config.write_text(TFDS_CONFIG.format(source=source, teacher=teacher))
        results[name] = run(config, work / name)
    results["same_accuracies"] = [r["accuracy"] for r in results["tfds"]["rows"]] == [
        r["accuracy"] for r in results["bundled"]["rows"]
    ]
    return results


def application(work):
    return run(ROOT / "examples" / "pipeline_application_student.yaml", work / "application")


PARTS = {
    "1": ("image_folder", image_folder),
    "2": ("tfds", tfds),
    "3": ("application", application),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=sorted(PARTS))
    parser.add_argument("--work", type=pathlib.Path, default=ROOT / "runs" / "your_data")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    start = time.perf_counter()
    for part in args.parts:
        name, measure = PARTS[part]
        began = time.perf_counter()
        results[name] = measure(args.work)
        results[name + "_seconds"] = round(time.perf_counter() - began, 1)
        results["command"] = "python benchmarks/pipeline_your_data.py " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        results["machine"] = machine()
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"part {part} ({name}) done in {time.perf_counter() - began:.0f} s", flush=True)
    print(f"all parts in {time.perf_counter() - start:.0f} s; written to {RESULTS}")


if __name__ == "__main__":
    main()
