"""Weight clustering of the default student on Fashion-MNIST: tfkd against tfmot.

The model is the default pipeline's 165k-parameter student (`tfkd.models.cnn` with filters
(24, 48, 96), a Dense layer of 128 and dropout 0.3), trained on labels for `--epochs`
epochs on the first `--train-size` training images. From those weights, for each number
of clusters, the same fine-tuning (`--fine-tune-epochs` epochs, Adam at
`--learning-rate`, batch 128, the same images in the same order):
- `tfkd`: `tfkd.cluster.cluster_weights` (k-means++), `fit`, `tfkd.cluster.strip`;
- `tfkd_folded`: the same with `fold_batch_norm=True` (each BatchNormalization folded into
  the convolution before it, and the folded kernel clustered), exported with
  `per_channel=False` (one int8 scale a kernel);
- `tfkd_cqat` and `tfkd_qat` (their int8 files): tfkd's clustered model, before stripping,
  trained quantization-aware for `--qat-epochs` more epochs, with and without
  `preserve_clusters=True` (cluster-preserving QAT), exported to int8 from the trained ranges;
- `tfmot`: the same architecture rebuilt in `tf_keras` with the same weights,
  `tfmot.clustering.keras.cluster_weights` (k-means++), `fit`, `strip_clustering`.
Accuracy on the 10,000 test images. For seed 0, tfkd's files: float32 and int8 `.tflite`
bytes, their gzip bytes, the distinct int8 values of each kernel in the int8 file, and
the bytes the int8 kernels would take as look-up-table indices (a table of values for
each output channel, and ceil(log2(table size)) bits a weight), computed from the file,
not run on TFLite Micro.

    PYTHONPATH=<tfmot and tf_keras> python benchmarks/cluster_fashion_mnist.py

tfmot needs `pip install 'tfkd[tfmot]'`; this script sets TF_USE_LEGACY_KERAS=1 for its
own process so that tfmot finds tf_keras (tfkd itself never does).
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # for tfmot only; tfkd uses Keras 3.

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import models  # noqa: E402

import tfkd  # noqa: E402
from tfkd.export._interpreter import integer_kernels  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "cluster_fashion_mnist.json"
BATCH_SIZE = 128


def student(seed):
    return tfkd.models.cnn(
        (28, 28, 1), 10, filters=(24, 48, 96), dense_units=128, dropout=0.3, seed=seed
    )


def tf_keras_copy(model):
    """`model`, a chain of layers, rebuilt in tf_keras with the same weights. tfmot cannot
    wrap `Rescaling`, so the copy leaves it out and is fed images divided by 255."""
    import tf_keras

    inputs = tf_keras.Input(model.input_shape[1:])
    x = inputs
    for layer in model.layers:
        if isinstance(layer, (keras.layers.InputLayer, keras.layers.Rescaling)):
            continue
        # The weights are copied, so initializers (whose Keras 3 arguments tf_keras lacks)
        # and the dtype policy stay at tf_keras's defaults.
        config = {
            key: value
            for key, value in layer.get_config().items()
            if key not in ("dtype", "quantization_config")
            and not key.endswith(("_initializer", "_regularizer", "_constraint"))
        }
        copy = tf_keras.layers.deserialize({"class_name": type(layer).__name__, "config": config})
        x = copy(x)
        copy.set_weights(layer.get_weights())
    return tf_keras.Model(inputs, x)


def run_tfkd(dense, data, clusters, arguments, fold_batch_norm=False):
    (x_train, y_train), (x_test, y_test) = data
    clustered = tfkd.cluster.cluster_weights(dense, clusters, fold_batch_norm=fold_batch_norm)
    models.compile_classifier(clustered, arguments.learning_rate)
    clustered.fit(
        x_train, y_train, batch_size=BATCH_SIZE, epochs=arguments.fine_tune_epochs, verbose=0
    )
    stripped = tfkd.cluster.strip(clustered)
    models.compile_classifier(stripped, arguments.learning_rate)
    return clustered, stripped, stripped.evaluate(x_test, y_test, batch_size=1024, verbose=0)[1]


def run_qat(clustered, data, arguments, directory, name, preserve_clusters):
    """The int8 file of `clustered` after QAT: its accuracy, and the most distinct int8
    values in one output channel and in one kernel."""
    (x_train, y_train), (x_test, y_test) = data
    aware = tfkd.quantize.quantize_aware(clustered, preserve_clusters=preserve_clusters)
    models.compile_classifier(aware, arguments.learning_rate)
    aware.fit(x_train, y_train, batch_size=BATCH_SIZE, epochs=arguments.qat_epochs, verbose=0)
    path = pathlib.Path(directory) / f"{name}.tflite"
    tfkd.export_tflite(aware, path, "int8")
    kernels = [values for values, _ in integer_kernels(path).values()]
    return {
        "int8_accuracy": tfkd.TFLiteModel(path).evaluate(x_test, y_test)["accuracy"],
        "most_values_per_channel": int(
            max(len(np.unique(row)) for k in kernels for row in k.reshape(len(k), -1))
        ),
        "most_values_per_kernel": int(max(len(np.unique(k)) for k in kernels)),
    }


def run_tfmot(dense, data, clusters, arguments):
    import tensorflow_model_optimization as tfmot
    import tf_keras

    (x_train, y_train), (x_test, y_test) = data
    init = tfmot.clustering.keras.CentroidInitialization.KMEANS_PLUS_PLUS
    clustered = tfmot.clustering.keras.cluster_weights(
        tf_keras_copy(dense), number_of_clusters=clusters, cluster_centroids_init=init
    )
    compile_arguments = dict(
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    clustered.compile(tf_keras.optimizers.Adam(arguments.learning_rate), **compile_arguments)
    clustered.fit(
        x_train / 255.0,
        y_train,
        batch_size=BATCH_SIZE,
        epochs=arguments.fine_tune_epochs,
        verbose=0,
    )
    stripped = tfmot.clustering.keras.strip_clustering(clustered)
    stripped.compile(tf_keras.optimizers.Adam(arguments.learning_rate), **compile_arguments)
    return stripped.evaluate(x_test / 255.0, y_test, batch_size=1024, verbose=0)[1]


def _lookup_bytes(kernel):
    """Bytes of `kernel` stored as a table of its values for each output channel (axis 0)
    and, per weight, an index of ceil(log2(largest table)) bits."""
    tables = [np.unique(channel).size for channel in kernel]
    bits = max(1, math.ceil(math.log2(max(tables))))
    return math.ceil(kernel.size * bits / 8) + sum(tables)


def file_rows(model, data, directory, name, per_channel=True):
    (x_train, _), (x_test, y_test) = data
    row = {"int8_per_channel": per_channel}
    for quantization in (None, "int8"):
        path = pathlib.Path(directory) / f"{name}_{quantization or 'float32'}.tflite"
        options = {} if quantization is None else {"per_channel": per_channel}
        tfkd.export_tflite(model, path, quantization, x_train[:500], **options)
        content = path.read_bytes()
        label = quantization or "float32"
        row[f"{label}_bytes"] = len(content)
        row[f"{label}_gzip_bytes"] = len(gzip.compress(content, 9))
    row["int8_accuracy"] = tfkd.TFLiteModel(path).evaluate(x_test, y_test)["accuracy"]
    kernels = {name: values for name, (values, _) in integer_kernels(path).items()}
    row["int8_unique_values_per_kernel"] = {
        name: int(len(np.unique(value))) for name, value in kernels.items()
    }
    row["int8_most_unique_values_per_channel"] = {
        name: int(max(len(np.unique(channel)) for channel in value))
        for name, value in kernels.items()
    }
    row["int8_kernel_bytes"] = int(sum(value.size for value in kernels.values()))
    row["lookup_table_kernel_bytes"] = int(sum(_lookup_bytes(value) for value in kernels.values()))
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--clusters", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--fine-tune-epochs", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--qat-epochs", type=int, default=1)
    arguments = parser.parse_args()
    start = time.perf_counter()
    (x_train, y_train), test = models.load_fashion_mnist()
    data = (x_train[: arguments.train_size], y_train[: arguments.train_size]), test
    per_seed, files, qat_values = [], {}, {}
    with tempfile.TemporaryDirectory() as directory:
        for seed in arguments.seeds:
            dense = student(seed)
            models.compile_classifier(dense, 1e-3)
            dense.fit(*data[0], batch_size=BATCH_SIZE, epochs=arguments.epochs, verbose=0)
            rows = {"dense": dense.evaluate(*test, batch_size=1024, verbose=0)[1]}
            if seed == arguments.seeds[0]:
                files["dense"] = file_rows(dense, data, directory, "dense")
            for clusters in arguments.clusters:
                keras.utils.set_random_seed(seed)
                clustered, stripped, rows[f"tfkd_{clusters}"] = run_tfkd(
                    dense, data, clusters, arguments
                )
                for preserve, label in ((True, "cqat"), (False, "qat")):
                    keras.utils.set_random_seed(seed)
                    name = f"tfkd_{label}_{clusters}"
                    qat = run_qat(clustered, data, arguments, directory, name, preserve)
                    rows[f"{name}_int8"] = qat["int8_accuracy"]
                    qat_values.setdefault(name, []).append(qat)
                keras.utils.set_random_seed(seed)
                _, folded, rows[f"tfkd_folded_{clusters}"] = run_tfkd(
                    dense, data, clusters, arguments, fold_batch_norm=True
                )
                keras.utils.set_random_seed(seed)
                rows[f"tfmot_{clusters}"] = run_tfmot(dense, data, clusters, arguments)
                if seed == arguments.seeds[0]:
                    files[f"tfkd_{clusters}"] = file_rows(
                        stripped, data, directory, f"tfkd_{clusters}"
                    )
                    files[f"tfkd_folded_{clusters}"] = file_rows(
                        folded, data, directory, f"tfkd_folded_{clusters}", per_channel=False
                    )
            per_seed.append(rows)
            print(f"seed {seed}: {rows} ({time.perf_counter() - start:.0f} s)", flush=True)
    summary = {
        name: {
            "mean": statistics.fmean(rows[name] for rows in per_seed),
            "std": statistics.pstdev(rows[name] for rows in per_seed),
        }
        for name in per_seed[0]
    }
    result = {
        "command": "python benchmarks/cluster_fashion_mnist.py " + " ".join(sys.argv[1:]),
        "backend": keras.backend.backend(),
        "arguments": vars(arguments),
        "per_seed": per_seed,
        "summary": summary,
        "files_from_seed": arguments.seeds[0],
        "files": files,
        "qat_int8_files": qat_values,
        "seconds": round(time.perf_counter() - start, 1),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {RESULTS} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
