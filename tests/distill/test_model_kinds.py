"""`tfkd.Distiller` with every kind of model users write, softmax outputs, and checkpoints.

Each model kind is built with the weights of one functional reference, so the training
loss the Distiller computes must equal the one computed in numpy from the reference's
outputs, whatever the kind.
"""

import pathlib
import warnings

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import random_images, small_cnn

REPO = pathlib.Path(__file__).resolve().parents[2]
TEMPERATURE = 2.0
STUDENT_LOSS_WEIGHT = 0.3


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _expected_loss(teacher_logits, student_logits, y):
    """0.3 * cross-entropy + 0.7 * T^2 KL(teacher || student), in numpy."""
    cross_entropy = -np.log(_softmax(student_logits)[np.arange(len(y)), y]).mean()
    p_t = _softmax(teacher_logits / TEMPERATURE)
    p_s = _softmax(student_logits / TEMPERATURE)
    kl = (p_t * (np.log(p_t) - np.log(p_s))).sum(-1).mean() * TEMPERATURE**2
    return STUDENT_LOSS_WEIGHT * cross_entropy + (1 - STUDENT_LOSS_WEIGHT) * kl


def _layers(width, num_classes=3):
    return [
        keras.layers.Conv2D(width, 3, padding="same", activation="relu", name="conv"),
        keras.layers.GlobalAveragePooling2D(name="features"),
        keras.layers.Dense(num_classes, name="logits"),
    ]


class SubclassedCNN(keras.Model):
    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.blocks = _layers(width)

    def call(self, inputs, training=None):
        for layer in self.blocks:
            inputs = layer(inputs)
        return inputs


def _functional_list(width):
    inputs = keras.Input((8, 8, 1))
    x = inputs
    for layer in _layers(width):
        x = layer(x)
    return keras.Model([inputs], [x])


def _nested(width):
    inner = keras.Sequential(_layers(width), name="inner")
    inputs = keras.Input((8, 8, 1))
    return keras.Model(inputs, inner(inputs))


def _called_sequential(width):
    model = keras.Sequential(_layers(width))
    model(np.zeros((2, 8, 8, 1), "float32"))
    return model


def _loaded(width, directory):
    path = directory / f"model_{width}.keras"
    small_cnn(width, f"saved_{width}").save(path)
    return keras.saving.load_model(path)


KINDS = {
    "sequential_with_input": lambda w, d: keras.Sequential([keras.Input((8, 8, 1)), *_layers(w)]),
    "sequential_never_called": lambda w, d: keras.Sequential(_layers(w)),
    "sequential_called": lambda w, d: _called_sequential(w),
    "functional": lambda w, d: small_cnn(w, f"functional_{w}"),
    "functional_lists": lambda w, d: _functional_list(w),
    "nested": lambda w, d: _nested(w),
    "subclassed": lambda w, d: SubclassedCNN(w),
    "loaded_keras_file": _loaded,
}


def _with_weights_of(model, reference, x):
    """Builds `model` if needed and gives it `reference`'s weights, layer by layer."""
    if not model.built:
        model(x[:1])
    weights = reference.get_weights()
    model.set_weights(weights)
    return model


PAIRS = [("functional", kind) for kind in sorted(KINDS)] + [
    (kind, "functional") for kind in ("sequential_with_input", "subclassed", "loaded_keras_file")
]


@pytest.mark.parametrize("teacher_kind, student_kind", PAIRS)
def test_every_model_kind_distills_with_the_exact_loss(teacher_kind, student_kind, tmp_path):
    x, y = random_images(64)
    reference_teacher = small_cnn(16, "reference_teacher")
    reference_student = small_cnn(4, "reference_student")
    teacher = _with_weights_of(KINDS[teacher_kind](16, tmp_path), reference_teacher, x)
    student = KINDS[student_kind](4, tmp_path)
    if student_kind != "sequential_never_called":
        student = _with_weights_of(student, reference_student, x)
    distiller = tfkd.Distiller(
        teacher, student, student_loss_weight=STUDENT_LOSS_WEIGHT, temperature=TEMPERATURE
    )
    if student_kind == "sequential_never_called":  # built by the Distiller, on x's shape
        student.set_weights(reference_student.get_weights())
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    y_pred = distiller(x, training=True)
    loss = distiller.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
    expected = _expected_loss(
        np.asarray(reference_teacher.predict(x, verbose=0)),
        np.asarray(reference_student.predict(x, verbose=0)),
        y,
    )
    assert float(keras.ops.convert_to_numpy(loss)) == pytest.approx(expected, rel=1e-4)
    history = distiller.fit(x, y, batch_size=32, epochs=2, verbose=0).history
    assert history["logits_distillation_loss"][1] < history["logits_distillation_loss"][0]


def _with_softmax(model):
    """The same model with a softmax on its logits (shares the weights)."""
    return keras.Model(model.inputs, keras.layers.Softmax()(model.outputs[0]))


@pytest.mark.parametrize("softmax_side", ["teacher", "student", "both"])
def test_softmax_outputs_distill_as_their_logits(softmax_side):
    x, y = random_images(64)
    teacher, student = small_cnn(16, "teacher"), small_cnn(4, "student")
    reference = tfkd.Distiller(teacher, student, temperature=TEMPERATURE)
    expected = reference.distillation_losses[0](teacher(x), student(x))
    models = {"teacher": teacher, "student": student}
    for side in ("teacher", "student") if softmax_side == "both" else (softmax_side,):
        models[side] = _with_softmax(models[side])
    with pytest.warns(UserWarning, match="ends in a softmax; tfkd distils the log"):
        distiller = tfkd.Distiller(**models, temperature=TEMPERATURE)
    loss = distiller.compute_loss(x=x, y=y, y_pred=distiller(x, training=True), training=True)
    # Task loss unweighted away: student_loss_weight=0.1 of a loss compiled as None is 0.
    assert float(keras.ops.convert_to_numpy(loss)) == pytest.approx(
        0.9 * float(np.mean(keras.ops.convert_to_numpy(expected))), rel=1e-4
    )


class WrappedModel(keras.Model):
    """A subclassed model: `inner`'s output, through a softmax where `softmax`."""

    def __init__(self, inner, softmax, **kwargs):
        super().__init__(**kwargs)
        self.inner, self.softmax = inner, softmax

    def call(self, inputs):
        outputs = self.inner(inputs)
        return keras.ops.softmax(outputs) if self.softmax else outputs


HIDDEN_SOFTMAX = {
    "subclassed": lambda model: WrappedModel(model, softmax=True),
    "lambda": lambda model: keras.Model(
        model.inputs, keras.layers.Lambda(keras.ops.softmax)(model.outputs[0])
    ),
    "softmax_then_reshape": lambda model: keras.Model(
        model.inputs, keras.layers.Reshape((3,))(keras.layers.Softmax()(model.outputs[0]))
    ),
    "subclassed_logits": lambda model: WrappedModel(model, softmax=False),
}


@pytest.mark.parametrize(
    "kind, side",
    [(kind, "teacher") for kind in HIDDEN_SOFTMAX] + [("subclassed", "student")],
)
def test_a_softmax_the_graph_does_not_show_is_read_from_the_outputs(kind, side):
    # Before, these probabilities were read as logits: a finite, wrong loss (9.28 for a
    # student whose logits equal the teacher's, against 0), with no word.
    x, y = random_images(64)
    teacher, student = small_cnn(16, "teacher"), small_cnn(4, "student")
    expected = tfkd.Distiller(teacher, student, temperature=TEMPERATURE).distillation_losses[0](
        teacher(x), student(x)
    )
    models = {"teacher": teacher, "student": student}
    models[side] = HIDDEN_SOFTMAX[kind](models[side])
    distiller = tfkd.Distiller(**models, temperature=TEMPERATURE, student_loss_weight=0.0)
    distiller.compile(keras.optimizers.SGD(0.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = distiller.fit(x, batch_size=64, epochs=1, verbose=0).history
    said = [str(w.message) for w in caught if "gives probabilities at its output" in str(w.message)]
    assert len(said) == (kind != "subclassed_logits"), said
    assert history["logits_distillation_loss"][0] == pytest.approx(
        float(np.mean(keras.ops.convert_to_numpy(expected))), rel=1e-3
    )


class InputBatches(keras.utils.PyDataset):
    def __init__(self, x, **kwargs):
        super().__init__(**kwargs)
        self.x = x

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return (self.x,)


@pytest.mark.parametrize("given_as", ["generator", "py_dataset", "train_on_batch"])
def test_a_hidden_softmax_is_read_whatever_the_data_is_given_as(given_as):
    # Only arrays and tf.data sets were read: a generator or a PyDataset (not read ahead of
    # training: stand-in inputs now) and train_on_batch read the probabilities as logits.
    x, _ = random_images(64)
    teacher, student = small_cnn(16, "teacher"), small_cnn(4, "student")
    expected = tfkd.Distiller(teacher, student, temperature=TEMPERATURE).distillation_losses[0](
        teacher(x), student(x)
    )
    distiller = tfkd.Distiller(
        HIDDEN_SOFTMAX["subclassed"](teacher),
        student,
        temperature=TEMPERATURE,
        student_loss_weight=0.0,
    )
    distiller.compile(keras.optimizers.SGD(0.0))
    with pytest.warns(UserWarning, match="gives probabilities at its output"):
        if given_as == "train_on_batch":
            loss = distiller.train_on_batch(x, return_dict=True)["logits_distillation_loss"]
        else:
            data = InputBatches(x) if given_as == "py_dataset" else (b for b in [(x,)] * 2)
            history = distiller.fit(data, steps_per_epoch=1, epochs=1, verbose=0).history
            loss = history["logits_distillation_loss"][0]
    assert loss == pytest.approx(float(np.mean(keras.ops.convert_to_numpy(expected))), rel=1e-3)


def test_an_ensemble_reads_a_hidden_softmax_as_probabilities():
    # A member's probabilities were read as its logits: the ensemble's average weighed
    # them as log-probabilities (a member with a visible softmax was averaged right).
    x, _ = random_images(32)
    first, second = small_cnn(16, "first"), small_cnn(8, "second")
    shown = tfkd.distill.teacher_ensemble([_with_softmax(first), second], temperature=2.0)
    hidden = HIDDEN_SOFTMAX["subclassed"](first)
    hidden(x[:1])
    with pytest.warns(UserWarning, match="gives probabilities"):
        ensemble = tfkd.distill.teacher_ensemble([hidden, second], temperature=2.0)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ensemble(x)), keras.ops.convert_to_numpy(shown(x)), atol=1e-5
    )
    logits = HIDDEN_SOFTMAX["subclassed_logits"](first)
    logits(x[:1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tfkd.distill.teacher_ensemble([logits, second])
    assert not [w for w in caught if "gives probabilities" in str(w.message)]  # logits stay


def test_an_ensemble_of_teachers_that_take_strings_is_made_unprobed():
    # Stand-in inputs of strings cannot be made: teacher_ensemble raised numpy's "data
    # type 'string' not understood" for teachers it made before the probe.
    def teacher(name):
        texts = keras.Input((1,), dtype="string")
        ids = keras.layers.TextVectorization(vocabulary=["a", "b", "c"])(texts)
        features = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(5, 4)(ids))
        logits = keras.layers.Activation("linear")(keras.layers.Dense(3)(features))
        return keras.Model(texts, logits, name=name)

    ensemble = tfkd.distill.teacher_ensemble([teacher("first"), teacher("second")])
    assert ensemble.output.shape == (None, 3)


class LogitsInTraining(keras.Model):
    """Logits in training, a softmax at inference: the step reads its logits."""

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner

    def call(self, inputs, training=False):
        outputs = self.inner(inputs, training=training)
        return outputs if training else keras.ops.softmax(outputs)


def test_a_student_is_read_as_the_training_step_calls_it():
    # The probe read the student at inference (its softmax), and took the log of the
    # logits the step reads (a loss of 1.78 where the student's logits equal the teacher's).
    x, _ = random_images(64)
    teacher, student = small_cnn(16, "teacher"), small_cnn(4, "student")
    expected = tfkd.Distiller(teacher, student, temperature=TEMPERATURE).distillation_losses[0](
        teacher(x), student(x)
    )
    distiller = tfkd.Distiller(
        teacher, LogitsInTraining(student), temperature=TEMPERATURE, student_loss_weight=0.0
    )
    distiller.compile(keras.optimizers.SGD(0.0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = distiller.fit(x, batch_size=64, epochs=1, verbose=0).history
    assert not [w for w in caught if "gives probabilities" in str(w.message)]
    assert history["logits_distillation_loss"][0] == pytest.approx(
        float(np.mean(keras.ops.convert_to_numpy(expected))), rel=1e-4
    )


# Slow (`bash scripts/test.sh -m slow`): 126 s in CI; test_softmax_outputs_distill_as_their_logits
# asserts the losses are equal
@pytest.mark.slow
def test_softmax_teacher_trains_a_logits_student_as_well_as_a_logits_teacher():
    """The case that today's advice (from_logits=False) ruined: same training, same student."""
    (x, y), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    x, y = x[:2048, ..., None].astype("float32"), y[:2048]
    x_test, y_test = x_test[:1000, ..., None].astype("float32"), y_test[:1000]
    teacher = keras.saving.load_model(
        REPO / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
    )
    accuracies = {}
    for name, distilled_teacher in (("logits", teacher), ("softmax", _with_softmax(teacher))):
        keras.utils.set_random_seed(0)
        student = keras.Sequential(
            [
                keras.layers.Rescaling(1 / 255),
                keras.layers.Flatten(),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dense(10),
            ]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            distiller = tfkd.Distiller(distilled_teacher, student, temperature=TEMPERATURE)
        distiller.compile(
            keras.optimizers.Adam(3e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        distiller.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0)
        accuracies[name] = float(np.mean(student.predict(x_test, verbose=0).argmax(-1) == y_test))
    assert accuracies["logits"] > 0.7, accuracies
    assert accuracies["softmax"] == pytest.approx(accuracies["logits"], abs=0.01), accuracies


def test_one_default_temperature():
    distiller = tfkd.Distiller(small_cnn(16, "teacher"), small_cnn(4, "student"))
    assert tfkd.LogitsDistillation().temperature == 1.0
    assert distiller.distillation_losses[0].temperature == 1.0


@pytest.mark.parametrize("teacher_outputs", [1, 2])
def test_several_outputs_are_refused_with_the_fix(teacher_outputs):
    inputs = keras.Input((8, 8, 1))
    features = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = [keras.layers.Dense(3, name=f"head_{i}")(features) for i in range(2)]
    two_heads = keras.Model(inputs, outputs)
    models = {"teacher": small_cnn(16, "teacher"), "student": small_cnn(4, "student")}
    models["teacher" if teacher_outputs == 2 else "student"] = two_heads
    with pytest.raises(ValueError, match=r"several outputs.*Received: .* outputs .*_layer_name="):
        tfkd.Distiller(**models)


def test_never_called_models_on_both_sides_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"never been called.*keras.Input"):
        tfkd.Distiller(keras.Sequential(_layers(16)), keras.Sequential(_layers(4)))


@pytest.mark.parametrize("weights_only", [False, True])
def test_student_checkpoint_saves_the_student_alone(tmp_path, weights_only):
    x, y = random_images(64)
    teacher = small_cnn(16, "teacher")
    student = keras.Sequential(_layers(4))
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    path = tmp_path / ("student.weights.h5" if weights_only else "student.keras")
    checkpoint = tfkd.distill.StudentCheckpoint(
        path, monitor="loss", save_best_only=True, save_weights_only=weights_only
    )
    distiller.fit(x, y, epochs=2, verbose=0, callbacks=[checkpoint])
    if weights_only:
        restored = keras.Sequential([keras.Input((8, 8, 1)), *_layers(4)])
        restored.load_weights(path)
    else:
        restored = keras.saving.load_model(path)
        assert not isinstance(restored, tfkd.Distiller)
    assert restored.count_params() == student.count_params()
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), student.predict(x, verbose=0), atol=1e-6
    )


def test_student_checkpoint_reads_the_direction_of_a_metric_as_modelcheckpoint_does(tmp_path):
    # Before: with mode "auto", Keras read the direction of `val_accuracy` from the
    # student it was handed, never compiled, and raised "pass mode='max'".
    x, y = random_images(64)
    distiller = tfkd.Distiller(small_cnn(16, "teacher"), keras.Sequential(_layers(4)))
    distiller.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"]
    )
    checkpoints = {
        monitor: tfkd.distill.StudentCheckpoint(
            tmp_path / f"{monitor}.keras", monitor=monitor, save_best_only=True
        )
        for monitor in ("val_accuracy", "val_loss")
    }
    history = distiller.fit(
        x, y, epochs=3, verbose=0, validation_data=(x, y), callbacks=[*checkpoints.values()]
    )
    for monitor, best in (("val_accuracy", max), ("val_loss", min)):
        assert checkpoints[monitor].best == best(history.history[monitor])
        assert (tmp_path / f"{monitor}.keras").exists()
