"""The Fashion-MNIST teacher and student that tfkd's benchmarks share.

The teacher is a small VGG-style CNN; the student has the same shape of
network at a fraction of the width, about 20x fewer parameters. Both output
logits (no softmax), as distillation wants.
"""

import keras

import tfkd

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def teacher_cnn(seed=0):
    """VGG-style CNN, about 160k parameters, ~0.92 test accuracy on Fashion-MNIST."""
    return tfkd.models.cnn(
        INPUT_SHAPE,
        NUM_CLASSES,
        filters=(32, 32, 64, 64, 160),
        pool_every=2,
        dropout=0.3,
        seed=seed,
        name="teacher_cnn",
    )


def student_cnn(seed=0):
    """The teacher's shape at a fraction of its width: about 8k parameters."""
    return tfkd.models.cnn(
        INPUT_SHAPE,
        NUM_CLASSES,
        filters=(12, 24, 24),
        batch_norm=False,
        seed=seed,
        name="student_cnn",
    )


def compile_classifier(model, learning_rate):
    """Compiles `model` (or a Distiller) with Adam, cross-entropy on logits and accuracy."""
    return tfkd.models.compile_classifier(model, learning_rate)


def load_fashion_mnist():
    """`((x_train, y_train), (x_test, y_test))`, images as float32 of shape (28, 28, 1)."""
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    return (x_train[..., None].astype("float32"), y_train), (
        x_test[..., None].astype("float32"),
        y_test,
    )


def tf_keras_student(dense):
    """`student_cnn` rebuilt layer for layer in tf_keras, with the same weights.

    tfmot cannot wrap a model that holds a `Rescaling` layer, so the tf_keras model
    leaves it out and is fed images already divided by 255 (the same computation).
    """
    import tf_keras

    inputs = tf_keras.Input(INPUT_SHAPE, name="image")
    x = inputs
    for index, filters in enumerate((12, 24, 24)):
        name = f"conv{index + 1}"
        x = tf_keras.layers.Conv2D(filters, 3, padding="same", name=name)(x)
        x = tf_keras.layers.ReLU(name=f"{name}_relu")(x)
        if index < 2:
            x = tf_keras.layers.MaxPooling2D(name=f"pool{index + 1}")(x)
    x = tf_keras.layers.GlobalAveragePooling2D(name="features")(x)
    outputs = tf_keras.layers.Dense(NUM_CLASSES, name="logits")(x)
    model = tf_keras.Model(inputs, outputs)
    model.set_weights([keras.ops.convert_to_numpy(w) for w in dense.weights])
    return model
