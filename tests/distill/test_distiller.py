"""`tfkd.Distiller` through `fit`, `evaluate` and `predict`, on every backend."""

import json
import pathlib
import warnings

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import assert_keras_round_trip, random_images, small_cnn

REPO = pathlib.Path(__file__).resolve().parents[2]
TEACHER = REPO / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"


def _task_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _distiller(teacher=None, student=None, **kwargs):
    teacher = teacher or small_cnn(16, "teacher", batch_norm=True)
    student = student or small_cnn(4, "student")
    distiller = tfkd.Distiller(teacher, student, **kwargs)
    distiller.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss=_task_loss(), metrics=["accuracy"]
    )
    return distiller


def _weights(model):
    return [keras.ops.convert_to_numpy(v).copy() for v in model.weights]


def test_fit_logs_each_loss_component_and_their_weighted_sum():
    x, y = random_images()
    distiller = _distiller(student_loss_weight=0.3, temperature=2.0)
    history = distiller.fit(x, y, batch_size=32, epochs=2, validation_data=(x, y), verbose=0)
    history = history.history
    assert set(history) == {
        "loss",
        "student_loss",
        "logits_distillation_loss",
        "accuracy",
        "val_loss",  # validation is the student's alone
        "val_accuracy",
    }
    for epoch in range(2):
        expected = (
            0.3 * history["student_loss"][epoch] + 0.7 * history["logits_distillation_loss"][epoch]
        )
        assert history["loss"][epoch] == pytest.approx(expected, rel=1e-4)
        assert history["logits_distillation_loss"][epoch] > 0
    assert history["logits_distillation_loss"][1] < history["logits_distillation_loss"][0]


def test_evaluate_and_predict_are_the_students():
    x, y = random_images()
    distiller = _distiller()
    distiller.fit(x, y, batch_size=64, epochs=1, verbose=0)
    result = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert set(result) == {"loss", "accuracy"}
    student = distiller.student
    student.compile(loss=_task_loss(), metrics=["accuracy"])
    expected = student.evaluate(x, y, verbose=0, return_dict=True)
    assert result["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert result["accuracy"] == pytest.approx(expected["accuracy"])
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-6, atol=1e-6
    )


def test_teacher_is_frozen_and_runs_in_inference_mode():
    x, y = random_images()
    teacher = small_cnn(16, "teacher", batch_norm=True)  # BatchNorm and Dropout
    before = _weights(teacher)
    distiller = _distiller(teacher=teacher)
    teacher_ids = {id(v) for v in teacher.weights}
    assert not teacher_ids & {id(v) for v in distiller.trainable_variables}
    assert {id(v) for v in distiller.trainable_variables} == {
        id(v) for v in distiller.student.trainable_variables
    }
    distiller.fit(x, y, batch_size=32, epochs=2, verbose=0)
    for old, new in zip(before, _weights(teacher)):
        np.testing.assert_array_equal(old, new)  # BatchNorm statistics included


def test_cached_teacher_outputs_train_exactly_like_the_online_teacher():
    x, y = random_images()
    teacher = small_cnn(16, "teacher", batch_norm=True)
    keras.utils.set_random_seed(1)
    online = _distiller(teacher=teacher, student=small_cnn(4, "student"))
    keras.utils.set_random_seed(1)
    offline = _distiller(teacher=teacher, student=small_cnn(4, "student"))
    online.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    cached = offline.predict_teacher(x)
    assert set(cached) == {"output"} and cached["output"].shape == (len(x), 3)
    offline.fit(
        tfkd.distill.with_teacher_outputs(x, cached),
        y,
        batch_size=32,
        epochs=2,
        shuffle=False,
        verbose=0,
    )
    for a, b in zip(_weights(online.student), _weights(offline.student)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_tf_data_pipelines_with_and_without_cached_outputs():
    import tensorflow as tf

    x, y = random_images()
    distiller = _distiller(
        distillation_losses=[
            tfkd.LogitsDistillation(),
            tfkd.FeatureDistillation("features", "features"),
        ]
    )
    online = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert np.isfinite(distiller.fit(online, epochs=1, verbose=0).history["loss"][0])
    # A dataset shuffles itself: no "shuffle=True was passed, but will be ignored".
    assert not [w for w in caught if "shuffle" in str(w.message)]
    cached = distiller.predict_teacher(tf.data.Dataset.from_tensor_slices(x).batch(64))
    packed = tfkd.distill.with_teacher_outputs(x, cached)
    offline = tf.data.Dataset.from_tensor_slices((packed, y)).shuffle(256, seed=0).batch(32)
    history = distiller.fit(offline, epochs=2, verbose=0).history
    assert history["feature_distillation_loss"][1] < history["feature_distillation_loss"][0]
    assert set(distiller.evaluate(online, verbose=0, return_dict=True)) == {"loss", "accuracy"}


def test_feature_distillation_with_a_learned_projection():
    x, y = random_images()
    loss = tfkd.FeatureDistillation(teacher_layer_name="features", student_layer_name="features")
    distiller = _distiller(distillation_losses=[tfkd.LogitsDistillation(), loss])
    assert loss.projection_layer is not None  # widths 16 vs 4
    projection = {id(v) for v in loss.trainable_weights}
    assert projection <= {id(v) for v in distiller.trainable_variables}
    assert not projection & {id(v) for v in distiller.student.weights}
    cached = distiller.predict_teacher(x)
    assert cached["layer:features"].shape == (len(x), 16)
    before = keras.ops.convert_to_numpy(loss.projection_layer.kernel).copy()
    history = distiller.fit(x, y, batch_size=32, epochs=3, verbose=0).history
    assert {"feature_distillation_loss", "logits_distillation_loss"} <= set(history)
    assert history["feature_distillation_loss"][-1] < history["feature_distillation_loss"][0]
    # The projection trains with the student (its kernel moved by more than rounding).
    after = keras.ops.convert_to_numpy(loss.projection_layer.kernel)
    assert np.abs(after - before).max() > 1e-3


def test_sample_weights_apply_to_distillation_losses():
    x, y = random_images()
    distiller = _distiller()
    history = distiller.fit(x, y, sample_weight=np.zeros(len(x)), epochs=1, verbose=0).history
    assert history["logits_distillation_loss"] == [0.0]
    assert history["student_loss"] == [0.0]


def test_sample_weights_weigh_examples():
    x, y = random_images(64)
    weights = np.zeros(len(x), dtype="float32")
    weights[:32] = 2.0
    distiller = _distiller()
    teacher = distiller.teacher.predict(x, verbose=0)
    student = distiller.student.predict(x, verbose=0)
    per_example = keras.ops.convert_to_numpy(tfkd.distill.kl_divergence(teacher, student))
    # One batch: the logged loss is computed on the initial student, before the update.
    history = distiller.fit(x, y, sample_weight=weights, batch_size=64, epochs=1, verbose=0).history
    expected = float(np.mean(weights * per_example))  # Keras's sum_over_batch_size
    assert history["logits_distillation_loss"][0] == pytest.approx(expected, rel=1e-4)


def test_regularizers_keep_their_own_weight():
    x, y = random_images()
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    regularizer = keras.regularizers.L2(0.1)
    student = keras.Model(inputs, keras.layers.Dense(3, kernel_regularizer=regularizer)(h))
    distiller = _distiller(student=student, student_loss_weight=0.5)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), loss=_task_loss())  # weights fixed
    history = distiller.fit(x, y, batch_size=256, epochs=1, verbose=0).history
    kernel = keras.ops.convert_to_numpy(student.layers[-1].kernel)
    penalty = 0.1 * float(np.sum(kernel**2))
    weighted = 0.5 * history["student_loss"][0] + 0.5 * history["logits_distillation_loss"][0]
    assert history["loss"][0] == pytest.approx(weighted + penalty, rel=1e-4)
    student.compile(loss=_task_loss())
    assert history["student_loss"][0] == pytest.approx(
        student.evaluate(x, y, batch_size=256, verbose=0) - penalty, rel=1e-4
    )


def test_pure_distillation_without_labels():
    x, _ = random_images()
    distiller = tfkd.Distiller(
        small_cnn(16, "teacher"), small_cnn(4, "student"), student_loss_weight=0.0
    )
    distiller.compile(optimizer="adam")
    history = distiller.fit(x, batch_size=32, epochs=2, verbose=0).history
    assert history["logits_distillation_loss"][1] < history["logits_distillation_loss"][0]


def test_nan_loss_stops_training_and_names_the_component():
    x, y = random_images()
    teacher = small_cnn(16, "teacher")
    teacher.get_layer("logits").bias.assign(np.full(3, np.nan, dtype="float32"))
    distiller = _distiller(teacher=teacher)
    with pytest.raises(FloatingPointError, match="logits_distillation_loss") as error:
        distiller.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    message = str(error.value)
    # On Keras's callback threads the guard made JAX's epoch-end metrics read donated
    # buffers in about 1 run of 9 under load (see NonFiniteLossGuard): it stays on the
    # training thread.
    assert not tfkd.distill.NonFiniteLossGuard.async_safe
    # The error names the first bad batch, where the student's own loss was finite.
    assert "epoch 1, batch 1:" in message and "Received: {" in message
    # Before a user's callbacks see the epoch's end (a ModelCheckpoint saved NaN weights).
    ends = []
    recorder = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ends.append(epoch))
    with pytest.raises(FloatingPointError):
        distiller.fit(x, y, batch_size=16, epochs=1, callbacks=[recorder], verbose=0)
    assert ends == []
    assert "student_loss" not in message  # the labels part is fine: only the culprit is named


def _relu_model(name):
    layers = [keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)]
    return keras.Sequential([keras.Input((6,)), *layers], name=name)


def test_a_nan_input_is_named_and_stops_training_at_the_epoch_end():
    # Before, on TensorFlow: the ReLU gave 0 for the NaN, the losses stayed finite, the
    # gradient made 16 kernel values NaN, and the student predicted one output for all.
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(256, 6)).astype("float32")
    y = (x[:, 0] * 4).astype(int).clip(0, 3)
    x[0, 0] = np.nan
    distiller = tfkd.Distiller(_relu_model("teacher"), _relu_model("student"))
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # Named before training (a model may replace NaN), stopped at the epoch's end: on
    # TensorFlow by the weights, on JAX by the NaN loss.
    with pytest.warns(UserWarning, match=r"`x` holds 1 NaN or infinite values"):
        with pytest.raises(FloatingPointError, match="NaN|non-finite"):
            distiller.fit(x, y, epochs=1, verbose=0)
    with pytest.warns(UserWarning, match=r"`validation_data\[0\]` holds 1 NaN"):
        with pytest.raises(FloatingPointError, match="NaN|non-finite"):
            distiller.fit(x, y, validation_data=(x[:8], y[:8]), epochs=1, verbose=0)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    with pytest.raises(FloatingPointError, match="NaN|non-finite"):
        distiller.fit(dataset, epochs=1, verbose=0)


def _imputing_model(name):
    inputs = keras.Input((6,))
    cleaned = keras.layers.Lambda(lambda t: keras.ops.where(keras.ops.isnan(t), 0.0, t))(inputs)
    hidden = keras.layers.Dense(8, activation="relu")(cleaned)
    return keras.Model(inputs, keras.layers.Dense(4)(hidden), name=name)


def test_a_model_that_replaces_nan_inputs_trains_on_them():
    # Refusing NaN inputs (9460b91) refused models that impute them; it is a warning now.
    x = np.random.default_rng(1).uniform(size=(64, 6)).astype("float32")
    x[::7, 2] = np.nan
    distiller = tfkd.Distiller(
        _imputing_model("teacher"), _imputing_model("student"), student_loss_weight=0.0
    )
    distiller.compile("adam")
    with pytest.warns(UserWarning, match="Training goes on"):
        history = distiller.fit(x, epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))


def test_nan_guard_names_a_weight_that_turned_nan_with_finite_losses():
    model = small_cnn(4, "student")
    model.get_layer("logits").kernel.assign(np.full((4, 3), np.nan, "float32"))
    guard = tfkd.distill.NonFiniteLossGuard(["loss"])
    guard.set_model(model)
    guard.on_epoch_begin(1)
    guard.on_train_batch_end(0, {"loss": 0.5})
    with pytest.raises(FloatingPointError, match=r"end of epoch 2.*'logits/kernel' holds 12"):
        guard.on_epoch_end(1)


def test_nan_guard_names_the_first_bad_batch_whatever_order_its_threads_finish():
    guard = tfkd.distill.NonFiniteLossGuard(["student_loss", "kd_loss"])
    guard.set_model(small_cnn(4, "student"))
    guard.on_epoch_begin(0)
    nan = float("nan")
    # Keras runs async callbacks on a thread pool: batch 3's check may finish first.
    guard.on_train_batch_end(2, {"student_loss": nan, "kd_loss": nan})
    guard.on_train_batch_end(0, {"student_loss": 0.5, "kd_loss": nan})
    assert guard.model.stop_training
    with pytest.raises(FloatingPointError, match=r"epoch 1, batch 1: .*\['kd_loss'\]"):
        guard.on_epoch_end(0)


def test_student_and_distiller_save_as_keras_files(tmp_path):
    x, y = random_images()
    distiller = _distiller(
        distillation_losses=[
            tfkd.LogitsDistillation(temperature=3.0),
            tfkd.FeatureDistillation("features", "features"),
        ],
        distillation_loss_weights=[1.0, 0.5],
    )
    distiller.fit(x, y, epochs=1, verbose=0)
    assert_keras_round_trip(distiller.student, x, tmp_path)
    loaded = assert_keras_round_trip(distiller, x, tmp_path)
    assert isinstance(loaded, tfkd.Distiller)
    assert loaded.distillation_loss_weights == [1.0, 0.5]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded.distillation_losses[1].projection_layer.kernel),
        keras.ops.convert_to_numpy(distiller.distillation_losses[1].projection_layer.kernel),
    )
    assert loaded.compiled and isinstance(loaded.optimizer, keras.optimizers.Adam)
    history = loaded.fit(x, y, epochs=1, verbose=0).history  # training resumes
    assert np.isfinite(history["loss"][0])


def test_config_round_trip():
    distiller = tfkd.Distiller(small_cnn(16, "teacher"), small_cnn(4, "student"), temperature=3.0)
    config = distiller.get_config()
    assert config["temperature"] == 3.0 and config["distillation_losses"] is None
    rebuilt = tfkd.Distiller.from_config(json.loads(json.dumps(config)))
    assert json.loads(json.dumps(rebuilt.get_config())) == json.loads(json.dumps(config))
    assert rebuilt.distillation_losses[0].temperature == 3.0


# Slow (`bash scripts/test.sh -m slow`): 268 s in CI; test_unlabeled.py's few-labels test keeps a
# Distiller accuracy check in the default run
@pytest.mark.slow
def test_distillation_transfers_the_teacher_on_fashion_mnist():
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("fashion_mnist")
    x_train, y_train = x_train[:6000, ..., None], y_train[:6000]
    x_test, y_test = x_test[:2000, ..., None], y_test[:2000]
    teacher = keras.saving.load_model(TEACHER)
    teacher_predictions = teacher.predict(x_test, verbose=0).argmax(-1)
    assert (teacher_predictions == y_test).mean() > 0.9

    def student():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((28, 28, 1))
        h = keras.layers.Rescaling(1 / 255)(inputs)
        h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D()(h)
        h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D()(h)
        h = keras.layers.Flatten()(h)
        return keras.Model(inputs, keras.layers.Dense(10)(h))

    def train(model, x, y=None):
        keras.utils.set_random_seed(0)
        model.fit(x, y, batch_size=64, epochs=3, verbose=0)

    scratch = student()
    scratch.compile(keras.optimizers.Adam(3e-3), _task_loss())
    train(scratch, x_train, y_train)
    label_free = tfkd.Distiller(teacher, student(), student_loss_weight=0.0)
    label_free.compile(keras.optimizers.Adam(3e-3))
    cached = label_free.predict_teacher(x_train)
    train(label_free, tfkd.distill.with_teacher_outputs(x_train, cached))  # no labels at all
    default = tfkd.Distiller(teacher, student())
    default.compile(keras.optimizers.Adam(3e-3), _task_loss())
    train(default, tfkd.distill.with_teacher_outputs(x_train, cached), y_train)
    accuracy = {
        name: (model.predict(x_test, verbose=0).argmax(-1) == y_test).mean()
        for name, model in (
            ("scratch", scratch),
            ("label_free", label_free.student),
            ("default", default.student),
        )
    }
    assert accuracy["scratch"] > 0.8, accuracy
    # What the teacher knows reaches the student without a single label.
    assert accuracy["label_free"] > accuracy["scratch"] - 0.02, accuracy
    assert accuracy["default"] > accuracy["scratch"] - 0.01, accuracy


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"teacher": "model.keras"}, TypeError, "Received: teacher of type builtins.str"),
        (
            {"student": small_cnn(4, "student", num_classes=5)},
            ValueError,
            r"shape \(None, 3\).*\(None, 5\)",
        ),
        ({"temperature": 0.0}, ValueError, "Received: temperature=0.0"),
        ({"student_loss_weight": 1.5}, ValueError, "Received: student_loss_weight=1.5"),
        (
            {"distillation_losses": [tfkd.LogitsDistillation()], "temperature": 2.0},
            ValueError,
            "either",
        ),
        ({"distillation_losses": ["kl"]}, TypeError, "must be a tfkd.DistillationLoss"),
        ({"distillation_losses": []}, ValueError, "is empty"),
        (
            {
                "distillation_losses": [tfkd.LogitsDistillation()],
                "distillation_loss_weights": [1, 2],
            },
            ValueError,
            "one weight per loss",
        ),
        ({"distillation_loss_weights": [-1.0]}, ValueError, ">= 0"),
        (
            {"distillation_losses": tfkd.FeatureDistillation("conv", "nope")},
            ValueError,
            r"no layer named 'nope'.*\['image', 'conv', 'conv_relu', 'features', 'logits'\]",
        ),
        (
            {
                "teacher": small_cnn(16, "teacher", softmax=True),
                "distillation_losses": tfkd.LogitsDistillation(from_logits=False),
            },
            ValueError,
            "student's output applies no softmax",
        ),
        (
            {"student": small_cnn(4, "student", input_shape=(9, 9, 1))},
            ValueError,
            r"same inputs.*\[\(8, 8, 1\)\].*\[\(9, 9, 1\)\]",
        ),
    ],
)
def test_bad_input_fails_before_training(kwargs, error, message):
    arguments = {"teacher": small_cnn(16, "teacher"), "student": small_cnn(4, "student"), **kwargs}
    with pytest.raises(error, match=message):
        tfkd.Distiller(**arguments)


def test_softmax_models_distill_with_from_logits_false():
    x, y = random_images()
    teacher, student = small_cnn(16, "teacher", softmax=True), small_cnn(4, "student", softmax=True)
    distiller = tfkd.Distiller(
        teacher, student, tfkd.LogitsDistillation(temperature=2.0, from_logits=False)
    )
    distiller.compile("adam", loss="sparse_categorical_crossentropy")
    history = distiller.fit(x, y, epochs=1, verbose=0).history
    assert np.isfinite(history["logits_distillation_loss"][0])


def test_compile_requires_a_task_loss_when_it_is_weighted():
    distiller = tfkd.Distiller(small_cnn(16, "teacher"), small_cnn(4, "student"))
    with pytest.raises(ValueError, match="student_loss_weight=0.1 > 0"):
        distiller.compile(optimizer="adam")


def test_the_callers_teacher_is_left_trainable_and_still_trains_nothing():
    # Issue 16.7: setting `teacher.trainable = False` changed the caller's model (and
    # every layer in it), so a later stage that copied the teacher trained or not
    # depending on whether the Distiller had been built in this run.
    x, y = random_images()
    teacher = small_cnn(16, "teacher", batch_norm=True)
    flags = [layer.trainable for layer in teacher._flatten_layers()]
    trainable = len(teacher.trainable_weights)
    before = _weights(teacher)
    distiller = _distiller(teacher=teacher)
    distiller.fit(x, y, batch_size=32, epochs=2, verbose=0)
    assert [layer.trainable for layer in teacher._flatten_layers()] == flags
    assert teacher.trainable and len(teacher.trainable_weights) == trainable > 0
    for old, new in zip(before, _weights(teacher)):
        np.testing.assert_array_equal(old, new)
    teacher_ids = {id(v) for v in teacher.variables}
    assert teacher_ids <= {id(v) for v in distiller.non_trainable_variables}
    assert len(distiller.trainable_weights) + len(distiller.non_trainable_weights) == len(
        distiller.weights
    )


def test_a_student_that_is_or_shares_the_teacher_is_refused():
    teacher = small_cnn(8, "teacher")
    with pytest.raises(ValueError, match="separate models.*'teacher'.*the same model"):
        tfkd.Distiller(teacher, teacher)
    shared = keras.Sequential([teacher.layers[1], keras.layers.Flatten(), keras.layers.Dense(3)])
    shared.build((None, 8, 8, 1))
    with pytest.raises(ValueError, match="separate models.*shared variables"):
        tfkd.Distiller(teacher, shared)
