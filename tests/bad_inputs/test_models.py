"""Bad inputs to `tfkd.models` are refused before any layer is built."""

import keras

import tfkd
from tests.bad_inputs._cases import Case, check, parametrize

cnn = tfkd.models.cnn
compile_classifier = tfkd.models.compile_classifier
save = tfkd.models.save

CASES = [
    Case(cnn, lambda: cnn((28, 28), 10), ValueError, "input_shape", "(28, 28)"),
    Case(cnn, lambda: cnn("28x28", 10), TypeError, "input_shape", "'28x28'"),
    Case(cnn, lambda: cnn((28, 28, 1), 0), ValueError, "num_classes", "0"),
    Case(cnn, lambda: cnn((28, 28, 1), "10"), TypeError, "num_classes", "'10'"),
    Case(cnn, lambda: cnn((28, 28, 1), 10, filters=[]), ValueError, "filters", "[]"),
    Case(cnn, lambda: cnn((28, 28, 1), 10, filters=(8, -1)), ValueError, "filters", "(8, -1)"),
    Case(cnn, lambda: cnn((28, 28, 1), 10, pool_every=0), ValueError, "pool_every", "0"),
    Case(cnn, lambda: cnn((28, 28, 1), 10, dropout=1.0), ValueError, "dropout", "1.0"),
    Case(cnn, lambda: cnn((28, 28, 1), 10, batch_norm=1), TypeError, "batch_norm", "1"),
    Case(cnn, lambda: cnn((28, 28, 1), 10, filters="8"), TypeError, "filters", "'8'"),
    Case(cnn, lambda: cnn((28, 28, 1), 10, seed="0"), TypeError, "seed", "'0'"),
    Case(compile_classifier, lambda: compile_classifier("model.keras"), TypeError, "model", "str"),
    Case(
        compile_classifier,
        lambda: compile_classifier(cnn((8, 8, 1), 2), learning_rate=0),
        ValueError,
        "learning_rate",
        "0",
    ),
    Case(
        compile_classifier,
        lambda: compile_classifier(cnn((8, 8, 1), 2), from_logits="yes"),
        TypeError,
        "from_logits",
        "'yes'",
    ),
    Case(save, lambda: save("model.keras", "out.keras"), TypeError, "model", "str"),
    Case(
        save,
        lambda: save(keras.Sequential([keras.layers.Dense(2)]), "out.keras"),
        ValueError,
        "model",
        "Sequential",
    ),
    Case(save, lambda: save(cnn((8, 8, 1), 2), "out.h5"), ValueError, "path", "'out.h5'"),
    Case(save, lambda: save(cnn((8, 8, 1), 2), 3), TypeError, "path", "3"),
    Case(
        save,
        lambda: save(cnn((8, 8, 1), 2), "out.keras", ["accuracy"]),
        TypeError,
        "metadata",
        "list",
    ),
    Case(
        save,
        lambda: save(cnn((8, 8, 1), 2), "out.keras", {"bad": {1, 2}}),
        TypeError,
        "metadata",
        "{1, 2}",
    ),
]


@parametrize(CASES)
def test_bad_input_is_refused(case):
    check(case)
