"""Transfer with scarce data: Animal-MNIST from a Fashion-MNIST backbone vs from random weights.

The backbone is the bundled Fashion-MNIST teacher (`models.teacher_cnn`, trained by
`saved_models/build_teachers.py`) cut at its pooled features. For 10, 50 and 200
training images per class (drawn per seed from Animal-MNIST's 8,000-image train
split), and 3 seeds:
- `fine_tune`: `tfkd.transfer.fine_tune`, head alone at 1e-3 for half of the
  `--steps` training steps, then the whole backbone at 1e-4 for the other half;
- `pretrained_all_layers`: the pretrained weights with a new Dense head, trained
  exactly like `scratch` (below): only the starting weights differ;
- `scratch`: the same network and head (`models.teacher_cnn`) from random weights,
  trained as usual (BatchNormalization in training mode) for the same `--steps`
  at 1e-3. On 100 images BatchNormalization's moving statistics (momentum 0.99)
  lag behind the fast-changing weights, and a model can then predict one class at
  test time; so the scratch row re-estimates them on the training images after
  training (`raw_accuracies` keeps the figures without that).
Every run takes about the same number of steps (batch 32), whatever the data size,
so the smallest sets are not under-trained. Test accuracy on the 2,000-image test
split; mean and std over seeds.

    python benchmarks/transfer_animal_mnist.py
"""

import argparse
import json
import pathlib
import statistics
import sys

import keras
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import models  # noqa: E402

import tfkd  # noqa: E402

TEACHER = ROOT / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
NUM_CLASSES = 10
ARMS = ("fine_tune", "pretrained_all_layers", "scratch")


def pretrained_backbone(path=TEACHER):
    model = keras.saving.load_model(path)
    return keras.Model(model.inputs, model.get_layer("features").output, name="fashion_backbone")


def sample(x, y, per_class, seed):
    rng = np.random.default_rng(seed)
    index = np.concatenate(
        [rng.choice(np.flatnonzero(y == label), per_class, replace=False) for label in range(10)]
    )
    rng.shuffle(index)
    return x[index], y[index]


def run(arm, train, test, seed, args):
    keras.utils.set_random_seed(seed)
    steps_per_epoch = int(np.ceil(len(train[0]) / 32))
    half = max(1, round(args.steps / 2 / steps_per_epoch))
    if arm == "fine_tune":
        model, _ = tfkd.transfer.fine_tune(
            pretrained_backbone(args.backbone),
            NUM_CLASSES,
            train,
            head_epochs=half,
            fine_tune_epochs=half,
            fine_tune_learning_rate=1e-4,
            batch_size=32,
            dropout=0.3,
            verbose=0,
        )
    else:
        model = models.teacher_cnn(seed=seed)
        if arm == "pretrained_all_layers":
            teacher = keras.saving.load_model(args.backbone)
            for layer in model.layers:
                if layer.weights and layer.name != "logits":
                    layer.set_weights(teacher.get_layer(layer.name).get_weights())
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(*train, batch_size=32, epochs=2 * half, verbose=0)
        raw = _accuracy(model, test)
        recalibrate_batch_norm(model, train[0])
        return {"accuracy": _accuracy(model, test), "raw": raw}
    return {"accuracy": _accuracy(model, test)}


def _accuracy(model, test):
    x_test, y_test = test
    return float(np.mean(model.predict(x_test, verbose=0).argmax(-1) == y_test))


def recalibrate_batch_norm(model, x):
    """Sets every BatchNormalization's moving statistics to their values on all of `x`."""
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--per-class", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1000, help="training steps per run")
    parser.add_argument(
        "--backbone", default=str(TEACHER), help="pretrained `teacher_cnn` .keras file"
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=ARMS,
        default=list(ARMS),
        help="fine_tune: tfkd.transfer.fine_tune from the Fashion-MNIST backbone; "
        "pretrained_all_layers: those weights trained like scratch; scratch: random weights",
    )
    parser.add_argument(
        "--output", default=str(ROOT / "benchmarks" / "results" / "transfer_animal_mnist.json")
    )
    args = parser.parse_args()
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("animal_mnist")
    x_train, x_test = x_train[..., None].astype("float32"), x_test[..., None].astype("float32")
    results = {"arguments": vars(args), "rows": []}
    for per_class in args.per_class:
        for arm in args.arms:
            runs = []
            for seed in args.seeds:
                train = sample(x_train, y_train, per_class, seed)
                runs.append(run(arm, train, (x_test, y_test), seed, args))
            accuracies = [entry["accuracy"] for entry in runs]
            row = {
                "per_class": per_class,
                "arm": arm,
                "accuracies": accuracies,
                "mean": statistics.fmean(accuracies),
                "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            }
            if "raw" in runs[0]:
                row["raw_accuracies"] = [entry["raw"] for entry in runs]
            results["rows"].append(row)
            print(
                f"{per_class:>4} per class, {arm:<22} "
                f"{row['mean']:.4f} +- {row['std']:.4f}  {accuracies}",
                flush=True,
            )
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
