"""A report row's measurements: accuracy and per-class results on the test split, bytes on
disk, latency, parameters."""

import statistics

import numpy as np

from tfkd import _graph, _timing, metrics
from tfkd.export import TFLiteModel

LATENCY_RUNS = 50
WARMUP_RUNS = 5
# Above this many classes a row keeps the per-class figures but not the confusion
# matrix, which grows with the square of the classes.
CONFUSION_MATRIX_CLASSES = 100


def measure(model, data, path, verbose=0):
    """Accuracy on the test split, the file's bytes, batch-1 latency (median ms), parameters.

    `.tflite` files are measured through `tfkd.TFLiteModel`, i.e. the LiteRT
    interpreter runs them; Keras models through `predict` / `predict_on_batch`.
    `verbose`: Keras's, for the pass over the test split.
    """
    if isinstance(model, TFLiteModel):
        result = model.evaluate(
            data.x_test, data.y_test, class_names=data.class_names, verbose=verbose
        )
        # A test example (not zeros): a text model's input length may be open.
        latency = model.benchmark(LATENCY_RUNS, WARMUP_RUNS, sample=data.x_test[:1])["median_ms"]
        return _row(result["classification"], path, latency, parameters=None, nonzero=None)
    outputs = np.asarray(model.predict(data.x_test, batch_size=256, verbose=verbose))
    classification = metrics.classification_report(
        data.y_test, outputs.argmax(axis=-1), data.num_classes, data.class_names
    )
    # Masks and activation ranges of pruned or QAT models are not parameters.
    weights = _graph.parameters(model)
    return _row(
        classification,
        path,
        _keras_latency(model, data.x_test[:1]),
        parameters=int(sum(weight.size for weight in weights)),
        nonzero=int(sum(np.count_nonzero(weight) for weight in weights)),
    )


def _row(classification, path, latency, parameters, nonzero):
    if len(classification["classes"]) > CONFUSION_MATRIX_CLASSES:
        classification = {k: v for k, v in classification.items() if k != "confusion_matrix"}
    return {
        "accuracy": round(classification["accuracy"], 4),
        "bytes": path.stat().st_size,
        "latency_ms": round(float(latency), 4),
        "parameters": parameters,
        "nonzero_parameters": nonzero,
        "classification": classification,
    }


def _keras_latency(model, sample):
    timings = _timing.milliseconds(
        lambda: model.predict_on_batch(sample), LATENCY_RUNS, WARMUP_RUNS
    )
    return statistics.median(timings)
