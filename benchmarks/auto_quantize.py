"""`quantization: auto` (`tfkd.export.auto_quantize`, issue 20 must-show 3) on two models: the
bundled Fashion-MNIST CNN teacher and the MobileNetV2 teacher. Every candidate file is
made and measured on 1,000 held-out labelled training images (the last 1,000 of the
training split; the teachers trained on them, so this measures what quantization loses,
not generalization), with a budget of 0.5 accuracy points against the float32 file; the
chosen file and the float32 file are then measured on the 10,000 test images, which the
choice never saw. Calibration: the first 500 training images. Latency: batch 1, median
of 50 runs, LiteRT with its default threads.

    python benchmarks/auto_quantize.py [--budget 0.5] [--test N]

Writes `benchmarks/results/auto_quantize.json`.
"""

import argparse
import json
import pathlib
import sys
import tempfile
import time

from provenance import machine

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "auto_quantize.json"
MODELS = {
    "cnn_teacher": "saved_models/fashion_mnist_cnn_teacher/model.keras",
    "mobilenet_v2_teacher": "saved_models/fashion_mnist_mobilenet_v2_teacher/model.keras",
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args(argv)
    import keras

    import tfkd
    from tfkd.export.auto import auto_quantize
    from tfkd.pipeline._store import load_keras

    (x, y), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    x_val, y_val = x[-1000:], y[-1000:]
    x_test, y_test = x_test[: args.test], y_test[: args.test]
    results = {
        "command": "python benchmarks/auto_quantize.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine(),
        "keras": keras.__version__,
        "budget_points": args.budget,
        "models": {},
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tfkd-auto-") as work:
        for name in args.models:
            model = load_keras(ROOT / MODELS[name])
            start = time.perf_counter()
            path = pathlib.Path(work) / f"{name}.tflite"
            summary = auto_quantize(model, path, x_val, y_val, x[:500], accuracy_budget=args.budget)
            seconds = time.perf_counter() - start
            chosen = tfkd.TFLiteModel(path).evaluate(x_test, y_test)["accuracy"]
            floating = tfkd.TFLiteModel(
                path.with_name(path.stem + ".candidates") / "float32.tflite"
            )
            floating = floating.evaluate(x_test, y_test)["accuracy"]
            summary["test"] = {
                "examples": int(len(y_test)),
                "float32_accuracy": round(float(floating), 4),
                "chosen_accuracy": round(float(chosen), 4),
                "chosen_loses_points": round(100 * (floating - chosen), 2),
                "within_budget": bool(chosen >= floating - args.budget / 100 - 1e-9),
            }
            summary["seconds"] = round(seconds, 1)
            summary.pop("path")
            results["models"][name] = summary
            print(name, json.dumps(summary, indent=1), flush=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Wrote {RESULTS} after {results['seconds']:.0f} s.")


if __name__ == "__main__":
    main()
