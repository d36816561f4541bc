"""How fast the teacher's cached outputs are computed: Keras's `predict` against LiteRT.

`tfkd.distill.teacher_outputs(teacher, x, runtime=...)` on the same images, side by side in
one process, interleaved over `--repeats` rounds (these machines are shared and noisy):
- `keras`: the teacher's `predict` (`runtime="keras"`, batch 256);
- `litert`: a float32 `.tflite` of the teacher run by the LiteRT interpreter with XNNPACK,
  one thread per core (`runtime="litert"`), conversion and its check against Keras
  included.
Reported: the median seconds of each, their ratio, and the largest difference between the
two runtimes' outputs. Teacher: the default pipeline's (`examples/pipeline_fashion_mnist.yaml`)
architecture, torchvision's ImageNet MobileNetV2 with a 10-class head on 28x28x1 images
resized to 128x128 inside the model; its weights are the ImageNet ones with a fresh head,
which costs what the fine-tuned teacher costs (`--teacher PATH` loads a `.keras` one).

    python benchmarks/teacher_outputs_runtime.py --images 10000 --repeats 3 \
        --output benchmarks/results/teacher_outputs_runtime.json
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import keras
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import models  # noqa: E402
from provenance import machine  # noqa: E402

import tfkd  # noqa: E402
from tfkd import _atomic  # noqa: E402


def default_teacher(image_size):
    base = tfkd.transfer.pretrained_mobilenet_v2((image_size, image_size, 3), include_top=False)
    return tfkd.transfer.build_classifier(
        base,
        10,
        input_shape=(28, 28, 1),
        image_size=(image_size, image_size),
        preprocessing=tfkd.transfer.torchvision_normalization(),
        name="mobilenet_v2_teacher",
    )


def timed(teacher, x, runtime):
    start = time.perf_counter()
    outputs = tfkd.distill.teacher_outputs(teacher, x, runtime=runtime)["output"]
    return time.perf_counter() - start, outputs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10000, help="training images to run on")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--teacher", type=pathlib.Path, help="a .keras teacher instead")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=pathlib.Path)
    args = parser.parse_args()
    if args.images < 64 or args.repeats < 1:
        parser.error(
            f"--images must be >= 64 and --repeats >= 1; got {args.images}, {args.repeats}"
        )
    began = time.perf_counter()
    (x, _), _ = models.load_fashion_mnist()
    x = x[: args.images].astype("float32")
    if args.teacher:
        teacher = keras.saving.load_model(args.teacher)
    else:
        teacher = default_teacher(args.image_size)
    for runtime in ("keras", "litert"):  # warm-up: trace and convert once (not timed)
        timed(teacher, x[:256], runtime)
    seconds = {"keras": [], "litert": []}
    difference = 0.0
    for repeat in range(args.repeats):
        outputs = {}
        for runtime in seconds:
            elapsed, outputs[runtime] = timed(teacher, x, runtime)
            seconds[runtime].append(round(elapsed, 2))
        difference = max(difference, float(np.abs(outputs["keras"] - outputs["litert"]).max()))
        medians = {key: statistics.median(values) for key, values in seconds.items()}
        print(
            f"round {repeat + 1}: keras {seconds['keras'][-1]:.1f} s, litert "
            f"{seconds['litert'][-1]:.1f} s; speed-up so far "
            f"{medians['keras'] / medians['litert']:.2f}x "
            f"({time.perf_counter() - began:.0f} s elapsed)",
            flush=True,
        )
    result = {
        "command": "python " + " ".join(sys.argv),
        "backend": keras.backend.backend(),
        "settings": {
            "images": len(x),
            "teacher": str(args.teacher)
            if args.teacher
            else (
                f"MobileNetV2 (ImageNet weights, fresh 10-class head), 28x28x1 resized to "
                f"{args.image_size}x{args.image_size} inside the model"
            ),
            "teacher_parameters": teacher.count_params(),
            "keras": "tfkd.distill.teacher_outputs(runtime='keras'): model.predict, batch 256",
            "litert": "tfkd.distill.teacher_outputs(runtime='litert'): float32 .tflite, "
            "XNNPACK, one thread per core, batch 64; conversion and check included",
            "repeats": args.repeats,
        },
        "seconds": seconds,
        "median_seconds": medians,
        "speed_up": medians["keras"] / medians["litert"],
        "max_abs_difference": difference,
        "cpu_count": os.cpu_count(),
        "machine": machine(),
    }
    print(json.dumps({key: result[key] for key in ("median_seconds", "speed_up")}))
    if args.output:
        _atomic.write_bytes(args.output, (json.dumps(result, indent=2) + "\n").encode())
    print(f"elapsed {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
