"""A report row's measurements: accuracy on the test split, bytes on disk, latency, parameters."""

import statistics

import numpy as np

from tfkd import _graph, _timing
from tfkd.export import TFLiteModel

LATENCY_RUNS = 50
WARMUP_RUNS = 5


def measure(model, data, path):
    """Accuracy on the test split, the file's bytes, batch-1 latency (median ms), parameters.

    `.tflite` files are measured through `tfkd.TFLiteModel`, i.e. the LiteRT
    interpreter runs them; Keras models through `predict` / `predict_on_batch`.
    """
    if isinstance(model, TFLiteModel):
        accuracy = model.evaluate(data.x_test, data.y_test)["accuracy"]
        latency = model.benchmark(num_runs=LATENCY_RUNS, warmup_runs=WARMUP_RUNS)["median_ms"]
        return _row(accuracy, path, latency, parameters=None, nonzero=None)
    outputs = np.asarray(model.predict(data.x_test, batch_size=256, verbose=0))
    accuracy = float(np.mean(outputs.argmax(axis=-1) == data.y_test))
    # Masks and activation ranges of pruned or QAT models are not parameters.
    weights = _graph.parameters(model)
    return _row(
        accuracy,
        path,
        _keras_latency(model, data.x_test[:1]),
        parameters=int(sum(weight.size for weight in weights)),
        nonzero=int(sum(np.count_nonzero(weight) for weight in weights)),
    )


def _row(accuracy, path, latency, parameters, nonzero):
    return {
        "accuracy": round(float(accuracy), 4),
        "bytes": path.stat().st_size,
        "latency_ms": round(float(latency), 4),
        "parameters": parameters,
        "nonzero_parameters": nonzero,
    }


def _keras_latency(model, sample):
    timings = _timing.milliseconds(
        lambda: model.predict_on_batch(sample), LATENCY_RUNS, WARMUP_RUNS
    )
    return statistics.median(timings)
