"""Binary classifiers (one logit, or a sigmoid) distil as two classes; multi-label sigmoids
are refused; `Distiller.fit` checks labels, callbacks and cached teacher outputs first."""

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import Batches, random_images, small_cnn
from tfkd.distill import UNLABELED


def _binary(name, activation=None, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(1, activation=activation, name="logit")(hidden)
    return keras.Model(inputs, outputs, name=name)


def _binary_data(count=64):
    x = np.random.default_rng(0).normal(size=(count, 8)).astype("float32")
    return x, (x[:, 0] > 0).astype("int64")


def _first_step_losses(teacher, student, x, y, classes=True, **fit_options):
    """The logs of one step that moves nothing (SGD at 0): the losses at the given weights
    (a task loss on class ids where `classes`, else none)."""
    distiller = tfkd.Distiller(
        teacher, student, student_loss_weight=0.5 if classes else 0.0, temperature=2.0
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True) if classes else None
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss)
    history = distiller.fit(x, y, batch_size=len(y), epochs=1, verbose=0, **fit_options)
    return {key: values[0] for key, values in history.history.items()}


def _bernoulli_kd(teacher_logits, student_logits, temperature):
    p = 1.0 / (1.0 + np.exp(-np.asarray(teacher_logits, "float64") / temperature))
    q = 1.0 / (1.0 + np.exp(-np.asarray(student_logits, "float64") / temperature))
    kl = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    return temperature**2 * kl[..., 0]


def test_one_logit_is_the_binary_kd_of_its_sigmoid():
    teacher = np.array([[2.0], [-1.0], [0.3]], "float32")
    student = np.array([[-0.5], [0.5], [0.3]], "float32")
    got = keras.ops.convert_to_numpy(tfkd.distill.kl_divergence(teacher, student, temperature=2.0))
    np.testing.assert_allclose(got, _bernoulli_kd(teacher, student, 2.0), rtol=1e-5, atol=1e-7)
    assert got[2] == pytest.approx(0.0, abs=1e-7)
    # The same distributions given as the sigmoid's probabilities.
    probabilities = keras.ops.convert_to_numpy(keras.ops.sigmoid(teacher))
    student_probabilities = keras.ops.convert_to_numpy(keras.ops.sigmoid(student))
    got = tfkd.distill.kl_divergence(
        probabilities, student_probabilities, temperature=1.0, from_logits=False
    )
    want = _bernoulli_kd(teacher, student, 1.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got), want, rtol=1e-4, atol=1e-6)


def test_a_binary_student_learns_its_teacher_and_a_sigmoid_reads_as_its_logit():
    x, y = _binary_data()
    logits = _first_step_losses(_binary("t"), _binary("s", seed=1), x, y, classes=False)
    sigmoids = _first_step_losses(
        _binary("t", "sigmoid"), _binary("s", "sigmoid", seed=1), x, y, classes=False
    )
    # the teacher's and student's sigmoids are read as their logits: the same loss
    assert logits["logits_distillation_loss"] > 0.01  # before: exactly 0 at any temperature
    assert sigmoids["logits_distillation_loss"] == pytest.approx(
        logits["logits_distillation_loss"], rel=1e-4
    )
    teacher, student = _binary("t"), _binary("s", seed=1)
    distiller = tfkd.Distiller(teacher, student, student_loss_weight=0.0)
    distiller.compile(optimizer=keras.optimizers.Adam(0.01), loss=None)
    history = distiller.fit(x, y, batch_size=16, epochs=30, verbose=0)
    losses = history.history["logits_distillation_loss"]
    assert losses[-1] < 0.1 * losses[0]


@pytest.mark.parametrize(
    "loss, match",
    [
        (tfkd.distill.CorrelationDistillation(), "at least 2 classes"),
        (tfkd.distill.DecoupledDistillation(), "at least 2 classes"),
        (tfkd.LogitsDistillation(standardize=True), "single logit"),
    ],
    ids=["dist", "dkd", "standardized"],
)
def test_losses_that_need_classes_refuse_one_logit(loss, match):
    with pytest.raises(ValueError, match=match):
        tfkd.Distiller(_binary("t"), _binary("s"), distillation_losses=loss)


def test_a_multi_label_sigmoid_and_a_binary_ensemble_are_refused():
    teacher = small_cnn(4, "teacher")
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(3, activation="sigmoid")(keras.layers.Flatten()(inputs))
    with pytest.raises(ValueError, match="ends in a sigmoid over 3 outputs"):
        tfkd.Distiller(teacher, keras.Model(inputs, outputs, name="multi_label"))
    with pytest.raises(ValueError, match="with 2 classes or more"):
        tfkd.distill.teacher_ensemble([_binary("a"), _binary("b", seed=1)])


@pytest.mark.parametrize(
    "labels, shown",
    [(3, "[3]"), (-2, "[-2]"), (0.5, "[0.5]")],
    ids=["too_large", "negative", "not_whole"],
)
def test_labels_that_are_not_class_ids_are_refused_before_training(labels, shown):
    x, y = random_images(count=32)
    y = y.astype("float64") if isinstance(labels, float) else y.copy()
    y[5] = labels
    distiller = tfkd.Distiller(small_cnn(4, "teacher"), small_cnn(4, "student"))
    distiller.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match=r"`y` must hold class ids in \[0, 3\)") as error:
        distiller.fit(x, y, epochs=1, verbose=0)
    assert f"e.g. {shown}" in str(error.value)
    assert distiller.optimizer.iterations.numpy() == 0
    good = (x, random_images(count=32)[1])
    bad = (x, np.full(32, 7))
    with pytest.raises(ValueError, match=r"`validation_data\[1\]` must hold class ids"):
        distiller.fit(*good, validation_data=bad, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"`y` must hold class ids .* e\.g\. \[7\]"):
        distiller.evaluate(*bad, verbose=0)  # before: TensorFlow's error inside the step


@pytest.mark.parametrize("student", ["functional", "sequential_never_called"])
def test_one_hot_labels_for_a_sparse_loss_are_named_with_the_fix(student):
    # Before: Keras's "Argument `output` must have rank (ndim) `target.ndim - 1`".
    x, y = random_images(count=32)
    one_hot = keras.utils.to_categorical(y, 3)
    if student == "functional":
        student = small_cnn(4, "student")
    else:
        layers = [keras.layers.Conv2D(4, 3), keras.layers.Flatten(), keras.layers.Dense(3)]
        student = keras.Sequential(layers)
    distiller = tfkd.Distiller(small_cnn(4, "teacher"), student)
    distiller.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    message = r"`y` holds one-hot rows.*Received: y of shape \(32, 3\)\. Pass y.argmax"
    with pytest.raises(ValueError, match=message):
        distiller.fit(x, one_hot, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="`validation_data\\[1\\]` holds one-hot rows"):
        distiller.fit(x, y, validation_data=(x, one_hot), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=message):
        distiller.evaluate(x, one_hot, verbose=0)
    assert distiller.optimizer.iterations.numpy() == 0
    # With the categorical loss, one-hot rows train.
    distiller.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=True))
    assert np.isfinite(distiller.fit(x, one_hot, epochs=1, verbose=0).history["loss"][0])


def test_binary_cross_entropy_labels_are_0_or_1_and_float_ids_mark_unlabelled():
    x, y = _binary_data()
    distiller = tfkd.Distiller(_binary("t"), _binary("s", seed=1))
    distiller.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\)"):
        distiller.fit(x, np.where(y == 1, 2, 0), epochs=1, verbose=0)
    # Float class ids (as read from a CSV): -1.0 is UNLABELED, as -1 is.
    x, y = random_images(count=32)
    y = y.copy()
    y[:10] = UNLABELED
    teacher, student = small_cnn(4, "t"), small_cnn(4, "s")
    as_ints = _first_step_losses(teacher, student, x, y)
    as_floats = _first_step_losses(teacher, student, x, y.astype("float32"))
    assert as_floats["student_loss"] == pytest.approx(as_ints["student_loss"], rel=1e-6)


def test_one_callback_is_taken_as_a_list_of_one():
    x, y = random_images(count=32)
    epochs = []
    callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: epochs.append(epoch))
    distiller = tfkd.Distiller(small_cnn(4, "teacher"), small_cnn(4, "student"))
    distiller.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller.fit(x, y, epochs=2, verbose=0, callbacks=callback)
    assert epochs == [0, 1]


def test_a_dataset_of_single_examples_is_refused_with_the_fix():
    # Before: Keras's "Invalid input shape ... Expected shape (None, 8, 8, 1), but input
    # has incompatible shape (8, 8, 1)", from inside the student's call.
    import tensorflow as tf

    x, y = random_images(32)
    distiller = tfkd.Distiller(small_cnn(8, "teacher"), small_cnn(4, "student"))
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    single = tf.data.Dataset.from_tensor_slices((x, y))
    with pytest.raises(ValueError, match=r"`x` must yield batches.*Batch it: `dataset.batch"):
        distiller.fit(single, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"`validation_data` must yield batches"):
        distiller.fit(x, y, validation_data=single, epochs=1, verbose=0)
    assert distiller.fit(single.batch(16), epochs=1, verbose=0).history["loss"][0] > 0


def test_cached_outputs_are_checked_against_what_the_losses_read():
    x, y = random_images(count=32)
    teacher, student = small_cnn(4, "teacher", softmax=True), small_cnn(4, "student")
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    probabilities = teacher.predict(x, verbose=0)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):  # log-probabilities, not p
        distiller.fit(tfkd.distill.with_teacher_outputs(x, np.log(probabilities)), y, verbose=0)
    with pytest.raises(ValueError, match=r"lack \['output'\]"):
        cached = {"layer:conv": probabilities}
        distiller.fit(tfkd.distill.with_teacher_outputs(x, cached), y, verbose=0)
    # An array is the teacher's output: the same loss as the dict predict_teacher gives.
    from_array = _first_step_losses(
        teacher, student, tfkd.distill.with_teacher_outputs(x, probabilities), y
    )
    from_dict = _first_step_losses(
        teacher, student, tfkd.distill.with_teacher_outputs(x, {"output": probabilities}), y
    )
    online = _first_step_losses(teacher, student, x, y)
    assert from_array == pytest.approx(from_dict, rel=1e-6)
    assert from_array["logits_distillation_loss"] == pytest.approx(
        online["logits_distillation_loss"], rel=1e-5
    )


def test_a_numpy_seed_and_numpy_loss_weights_are_numbers():
    distiller = tfkd.Distiller(
        small_cnn(4, "teacher"),
        small_cnn(4, "student"),
        distillation_losses=[tfkd.LogitsDistillation(), tfkd.distill.DecoupledDistillation()],
        distillation_loss_weights=np.array([1.0, 0.5]),
        mixup=0.2,
        seed=np.int64(3),
    )
    assert distiller.distillation_loss_weights == [1.0, 0.5]
    assert distiller.get_config()["seed"] == 3
    with pytest.raises(ValueError, match=r"`seed` must be an integer in \[0, 2\*\*32\)"):
        tfkd.Distiller(small_cnn(4, "teacher"), small_cnn(4, "student"), seed=-1)


def test_a_student_with_two_outputs_and_a_loss_on_its_layer_is_refused_when_made():
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Flatten(name="hidden")(inputs)
    two_outputs = keras.Model(
        inputs, [keras.layers.Dense(3)(hidden), keras.layers.Dense(1)(hidden)], name="two"
    )
    loss = tfkd.distill.FeatureDistillation(
        teacher_layer_name="flatten", student_layer_name="hidden"
    )
    teacher = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(name="flatten"), keras.layers.Dense(3)]
    )
    with pytest.raises(ValueError, match="needs a student with one output"):  # before: in fit
        tfkd.Distiller(teacher, two_outputs, distillation_losses=loss)


def test_cutmix_on_inputs_that_are_not_images_is_refused_when_made():
    with pytest.raises(ValueError, match=r"needs models that take one input of images"):
        tfkd.Distiller(_binary("t"), _binary("s", seed=1), cutmix=1.0)  # before: in fit


def _token_model(name, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,), dtype="int32")
    hidden = keras.layers.Embedding(20, 8)(inputs)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(hidden), name=name)


def test_token_labels_take_a_weight_per_token_and_ignore_class_for_padding():
    rng = np.random.default_rng(0)
    x, y = rng.integers(1, 20, size=(32, 6)), rng.integers(0, 4, size=(32, 6))
    weights = (rng.random((32, 6)) > 0.3).astype("float32")
    student = _token_model("student", 1)
    distiller = tfkd.Distiller(_token_model("teacher", 0), student, student_loss_weight=0.5)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    logs = distiller.fit(x, y, sample_weight=weights, batch_size=32, verbose=0).history
    # before: a shape error (the weights were read as one per example)
    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    want = plain(y, student.predict(x, verbose=0), sample_weight=weights)
    assert logs["student_loss"][0] == pytest.approx(float(want), rel=1e-5)
    padded = y.copy()
    padded[:, -2:] = -1
    with pytest.raises(ValueError, match="one per position"):
        distiller.fit(x, padded, batch_size=32, verbose=0)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1),
    )
    assert np.isfinite(distiller.fit(x, padded, batch_size=32, verbose=0).history["loss"][0])


def test_a_loss_per_example_takes_the_mean_of_weights_per_token():
    # Before: the (batch, tokens) weights were flattened against the (batch,) losses of
    # a feature loss, and the step failed on their shapes (8 and 80).
    rng = np.random.default_rng(0)
    x, y = rng.integers(1, 20, size=(32, 6)), rng.integers(0, 4, size=(32, 6))
    weights = (rng.random((32, 6)) > 0.3).astype("float32")
    teacher, student = _token_model("teacher", 0), _token_model("student", 1)
    embeddings = (teacher.layers[1].name, student.layers[1].name)  # (batch, tokens, 8)
    found = []
    for given in (weights, weights.mean(1)):  # equal widths: no projection to train
        losses = [
            tfkd.distill.LogitsDistillation(2.0),
            tfkd.distill.FeatureDistillation(*embeddings),
        ]
        distiller = tfkd.Distiller(
            teacher, student, distillation_losses=losses, student_loss_weight=0.0
        )
        distiller.compile(keras.optimizers.SGD(0.0))
        logs = distiller.fit(x, y, sample_weight=given, batch_size=32, verbose=0).history
        found.append(logs["feature_distillation_loss"][0])
    assert found[0] == pytest.approx(found[1], rel=1e-5) and found[0] > 0


def test_class_weight_on_a_dataset_with_unlabelled_examples_weighs_as_on_arrays():
    # Before: Keras's mapping of the dataset gathered class_weight[-1], and TensorFlow
    # failed ("indices[0] = -1 is not in [0, 4)"); arrays gave the unlabelled weight 1.
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 6)).astype("float32"), rng.integers(0, 4, 32)
    y[:8] = UNLABELED
    teacher, student = (
        keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)], name=name)
        for name in ("teacher", "student")
    )
    weights, histories = {0: 1.0, 1: 2.0, 2: 1.0, 3: 5.0}, []
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    for data, batch_size in (((x, y), 8), ((dataset,), None)):
        distiller = tfkd.Distiller(teacher, student)
        distiller.compile(
            keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(True)
        )
        fitted = distiller.fit(
            *data, class_weight=weights, batch_size=batch_size, shuffle=False, verbose=0
        )
        histories.append({key: values[0] for key, values in fitted.history.items()})
    assert histories[1] == pytest.approx(histories[0], rel=1e-6)


def test_a_loss_named_like_the_task_loss_is_refused():
    # Before, its log entry replaced the task loss's `student_loss`.
    with pytest.raises(ValueError, match="'student' gives 'student_loss'"):
        tfkd.Distiller(
            small_cnn(8, "teacher"),
            small_cnn(4, "student"),
            distillation_losses=tfkd.distill.LogitsDistillation(2.0, name="student"),
        )


def test_arrays_without_labels_are_refused_while_the_task_loss_reads_them():
    x, _ = random_images(count=32)
    distiller = tfkd.Distiller(small_cnn(4, "teacher"), small_cnn(4, "student"))
    distiller.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(
        ValueError, match="`y` must be given"
    ):  # before: "None values not supported"
        distiller.fit(x, epochs=1, verbose=0)
    teacher_only = tfkd.Distiller(
        small_cnn(4, "teacher"), small_cnn(4, "student"), student_loss_weight=0.0
    )
    teacher_only.compile(loss=None)
    assert np.isfinite(teacher_only.fit(x, epochs=1, verbose=0).history["loss"][0])


def test_soft_binary_targets_and_the_losses_own_ignore_class_pass_the_label_check():
    x, y = _binary_data()
    distiller = tfkd.Distiller(_binary("t"), _binary("s", seed=1))
    distiller.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True))
    smoothed = np.where(y == 1, 0.9, 0.1).astype("float32")  # probabilities, not class ids
    assert np.isfinite(distiller.fit(x, smoothed, epochs=1, verbose=0).history["loss"][0])
    x, y = random_images(count=32)
    y = y.copy()
    y[:8] = -100
    distiller = tfkd.Distiller(small_cnn(4, "teacher"), small_cnn(4, "student"))
    distiller.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-100)
    )
    assert np.isfinite(distiller.fit(x, y, epochs=1, verbose=0).history["loss"][0])


def test_teacher_outputs_take_batch_size_none_as_predict_does():
    x, _ = random_images(count=32)
    teacher = small_cnn(4, "teacher")
    outputs = tfkd.distill.teacher_outputs(teacher, x, batch_size=None)
    np.testing.assert_allclose(outputs["output"], teacher.predict(x, verbose=0), atol=1e-5)


def test_a_never_called_sequential_binary_student_reads_its_sigmoid_and_checks_its_labels():
    x, y = _binary_data()
    student = keras.Sequential(
        [keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1, activation="sigmoid")]
    )
    distiller = tfkd.Distiller(_binary("t"), student)  # built on the teacher's inputs
    distiller.compile(loss=keras.losses.BinaryCrossentropy())
    with pytest.raises(ValueError, match=r"class ids in \[0, 2\)"):
        distiller.fit(x, y + 1, epochs=1, verbose=0)
    logs = distiller.fit(x, y, epochs=1, verbose=0).history
    assert logs["logits_distillation_loss"][0] > 0.0  # before: exactly 0 (softmax of one value)


def test_labels_from_a_dataset_are_checked_at_the_batch_that_holds_them():
    x, y = _binary_data()
    y = y.copy()
    y[::5] = UNLABELED  # integer UNLABELED passes, in a dataset too
    seen = []
    callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda _, logs: seen.append(set(logs)))
    distiller = tfkd.Distiller(_binary("t"), _binary("s", seed=1))
    distiller.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True), metrics=["accuracy"])
    history = distiller.fit(Batches(x, y, 16), epochs=2, verbose=0, callbacks=[callback])
    keys = {"accuracy", "logits_distillation_loss", "loss", "student_loss"}
    assert set(history.history) == keys and seen == [keys, keys]
    one_batch = distiller.train_on_batch(x[:16], y[:16])
    assert len(one_batch) == 4  # each metric once (the trackers were listed twice)
    # Before: a label of 2 for a binary cross-entropy trained on, on every backend.
    bad = y.copy()
    bad[40] = 2  # third batch
    fresh = tfkd.Distiller(_binary("t"), _binary("s", seed=1))
    fresh.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match=r"Received in the training data at epoch 1, batch 3: 1 "):
        fresh.fit(Batches(x, bad, 16), epochs=2, verbose=0, shuffle=False)
    assert int(keras.ops.convert_to_numpy(fresh.optimizer.iterations)) == 3
    with pytest.raises(ValueError, match=r"in the data evaluated: 1 label\(s\) outside them \(2\)"):
        fresh.fit(Batches(x, y, 16), validation_data=Batches(x, bad, 16), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"in train_on_batch's labels: 1 label"):
        fresh.train_on_batch(x[32:48], bad[32:48])
    assert np.isfinite(fresh.evaluate(Batches(x, y, 16), verbose=0))  # the count was reset


def test_class_ids_from_a_dataset_outside_the_classes_stop_training_on_every_backend():
    x, y = random_images(count=64)
    y = y.copy()
    y[20] = 7  # second batch
    distiller = tfkd.Distiller(small_cnn(4, "teacher"), small_cnn(4, "student"))
    distiller.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # JAX trained on it (a loss of 0 for that example); TensorFlow and PyTorch raised
    # their own error, before tfkd's: now tfkd's on every backend.
    with pytest.raises(ValueError, match=r"epoch 1, batch 2: 1 label\(s\) outside them \(7\)"):
        distiller.fit(Batches(x, y, 16), epochs=1, verbose=0, shuffle=False)


@pytest.mark.parametrize("kind", ["sparse", "binary"])
def test_float_class_ids_of_a_dataset_read_unlabeled_as_numpy_ones_do(kind):
    # A dataset's float -1 was a label outside the classes (a sparse loss: TensorFlow's own
    # error; a binary one: tfkd's), where numpy's float ids become integers, -1 unlabelled:
    # the same losses now.
    if kind == "sparse":
        (x, y), models = random_images(count=64), (small_cnn(4, "t"), small_cnn(4, "s"))
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        (x, y), models = _binary_data(), (_binary("t"), _binary("s", seed=1))
        loss = keras.losses.BinaryCrossentropy(from_logits=True)
    y = np.where(np.arange(64) % 4 == 0, UNLABELED, y).astype("float32")
    losses = []
    for data in ((x, y), (Batches(x, y, 16),)):
        distiller = tfkd.Distiller(*models)
        distiller.compile(keras.optimizers.SGD(0.0), loss, metrics=["accuracy"])
        kwargs = {"batch_size": 16, "shuffle": False} if len(data) == 2 else {"shuffle": False}
        losses.append(distiller.fit(*data, epochs=1, verbose=0, **kwargs).history)
    assert set(losses[1]) == set(losses[0])
    for key, values in losses[0].items():
        assert losses[1][key] == pytest.approx(values, rel=1e-5), key


def test_a_never_called_sequential_student_has_its_dataset_labels_checked():
    x, _ = _binary_data()
    y = np.arange(64) % 3
    y[20] = 7  # second batch
    teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    student = keras.Sequential([keras.layers.Dense(3)])  # never called: built on the teacher's
    distiller = tfkd.Distiller(teacher, student)
    distiller.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    message = r"for the model's 3 classes.*batch 2: 1 label\(s\) outside them \(7\)"
    with pytest.raises(ValueError, match=message):
        distiller.fit(Batches(x, y, 16), epochs=1, verbose=0, shuffle=False)
