"""How the training stages fit: steps, Adam on a cosine, BatchNorm statistics recomputed
after training, and what a stage reports of its training history."""

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


# Batches, and their size, whose statistics set the moving mean and variance after
# training: 2,560 examples; each batch is one eager call, so few and large.
RECALIBRATION_BATCHES = 10
RECALIBRATION_BATCH_SIZE = 256


def train_every_layer(model):
    """Makes every layer of `model` trainable but its frozen BatchNormalization layers
    (which keep their moving statistics in `fit` only so, keras-team/keras#20285); returns
    how many layers with weights it unfroze. The compression stages train the whole model
    they get: a transfer stage leaves the lower backbone frozen, and a frozen layer keeps
    its pruning mask or quantization ranges, and cannot learn to make up for them."""
    from tfkd import _graph

    frozen_norms = [layer for layer in _graph.batch_norm_layers(model) if not layer.trainable]
    unfrozen = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if not layer.trainable
        and layer.weights
        and layer not in frozen_norms
        and not list(layer._flatten_layers(include_self=False))
    ]
    _unfreeze(model)
    for layer in frozen_norms:
        layer.trainable = False
    return len(unfrozen)


def _unfreeze(layer):
    """Sets `trainable` on `layer` and all it holds, inner layers first and each through
    its own class's setter: on TensorFlow, Keras skips setting `trainable` to the value a
    layer already has, so a parent's setter would not reach a frozen child; and a
    cluster-preserving QuantizeWrapper's setter, run after its layer's, keeps the kernel
    its centroids replace frozen."""
    for child in layer._flatten_layers(include_self=False, recursive=False):
        _unfreeze(child)
    type(layer).trainable.fset(layer, True)


def recompute_moving_statistics(
    model, x, seed=0, batches=RECALIBRATION_BATCHES, batch_size=RECALIBRATION_BATCH_SIZE
):
    """Sets each trainable BatchNormalization layer's moving mean and variance to the
    average of its batch statistics over up to `batches` batches of `x` (drawn with
    `seed`), under the trained weights; returns the number of batches used.

    Keras's moving averages (momentum 0.99; 0.999 in keras.applications) keep a share
    of their initial values (mean 0, variance 1) for hundreds or thousands of steps. That
    share is far from the truth when a layer's inputs vary little: the pipeline's CNN
    trained for 6 epochs on Animal-MNIST kept a moving variance of 0.15 where its batches
    had 0.003, and scored 0.10 (chance) in inference against 0.97 in training. This
    recalibration is what PyTorch's `torch.optim.swa_utils.update_bn` does: the model
    runs in training mode on the batches (no weight changes), each layer's momentum set
    so that its moving statistics become the plain average of the batches'. Frozen
    layers (`trainable=False`) run in inference mode and keep their statistics.
    """
    import numpy as np

    from tfkd import _graph

    layers = [layer for layer in _graph.batch_norm_layers(model) if layer.trainable]
    if not layers or not len(x):
        return 0
    order = np.random.default_rng(seed).permutation(len(x))[: batches * batch_size]
    saved = [layer.momentum for layer in layers]
    count = 0
    try:
        for start in range(0, len(order), batch_size):
            for layer in layers:  # the running average of `count + 1` batches
                layer.momentum = count / (count + 1)
            model(x[np.sort(order[start : start + batch_size])], training=True)
            count += 1
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    return count
