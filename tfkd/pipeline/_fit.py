"""How the training stages fit: steps, Adam on a cosine, BatchNorm momentum for short
runs, and what a stage reports of its training history."""

import contextlib
import math

# Keras (through tfkd._graph) is imported inside the functions: configs are read and
# checked without it.


def compile_with_cosine(context, model, learning_rate, epochs, batch_size, examples, from_logits):
    """`context.compile` with Adam's learning rate decayed to 0 on a cosine over training."""
    import keras

    steps = epochs * steps_per_epoch(context, batch_size, examples)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max(1, steps))
    context.compile(model, schedule, from_logits=from_logits)


def steps_per_epoch(context, batch_size, examples=None):
    examples = len(context.data.x_train) if examples is None else examples
    return math.ceil(examples / batch_size)


def history_details(history, epochs):
    accuracy = history.history.get("accuracy") or history.history.get("student_accuracy") or []
    loss = history.history.get("loss", [])
    details = {
        "epochs": epochs,
        "train_accuracy": [round(float(value), 4) for value in accuracy],
        "train_loss": [round(float(value), 4) for value in loss],
    }
    if "student_loss" in history.history:  # a Distiller's task loss, on the labelled examples
        details["student_loss"] = [round(float(v), 4) for v in history.history["student_loss"]]
    return details


@contextlib.contextmanager
def moving_statistics_within(model, steps):
    """Lowers BatchNormalization momentum, while training, so that the moving statistics
    leave their initial values within `steps` steps.

    With Keras's momentum of 0.99 the moving mean and variance need several hundred steps
    to forget their initial 0 and 1; a short run (`--quick`, a small data set) would
    leave a model that scores near chance in inference. The momentum drops only as far
    as needed for the initial values to keep at most 1% of their weight after `steps`,
    and comes back afterwards, so the model's config is unchanged; long runs are not
    affected at all (0.99 is enough from about 460 steps).
    """
    from tfkd import _graph

    momentum = 0.01 ** (1.0 / max(1, steps))
    layers = [
        layer
        for layer in _graph.batch_norm_layers(model)
        if isinstance(layer.momentum, float | int) and layer.momentum > momentum
    ]
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = momentum
    try:
        yield
    finally:
        for layer, value in zip(layers, saved):
            layer.momentum = value
