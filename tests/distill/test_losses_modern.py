"""Logit standardisation, decoupled KD, DIST, attention transfer and relational KD.

Each loss is checked against a numpy reference written from its paper's formula (in
float64, with explicit loops or probabilities where the implementation uses
log-sum-exps and Gram matrices), the invariances it has, eager against compiled, and
inside a `tfkd.Distiller`: it trains, it sends no gradient to the teacher, it saves.
"""

import doctest

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import (
    MODEL_KINDS,
    assert_config_round_trip,
    assert_keras_round_trip,
    kind_input_shape,
    model_of_kind,
    random_images,
    small_cnn,
)
from tfkd.distill import (
    AttentionTransfer,
    CorrelationDistillation,
    DecoupledDistillation,
    LogitsDistillation,
    RelationalDistillation,
    attention_map_distance,
    correlation_distance,
    decoupled_kl_divergence,
    features,
    kl_divergence,
    logits,
    relational_distance,
    standardize_logits,
)


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _random(seed, shape=(16, 10), scale=3.0):
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype("float32")


# Numpy references, from the papers' formulas.


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _kl(p, q):
    return np.sum(p * np.log(p / q), axis=-1)


def _numpy_standardized_kd(teacher, student, temperature):
    def z_score(z):
        return (z - z.mean(-1, keepdims=True)) / (z.std(-1, keepdims=True) + 1e-7)

    p_t = _softmax(z_score(teacher) / temperature)
    p_s = _softmax(z_score(student) / temperature)
    return _kl(p_t, p_s) * temperature**2


def _numpy_dkd(teacher, student, temperature, alpha, beta):
    """Zhao et al., eq. 3-7: binary KL of (p_target, 1 - p_target) plus KL of the rest."""
    p_t, p_s = _softmax(teacher / temperature), _softmax(student / temperature)
    values = []
    for i, target in enumerate(teacher.argmax(-1)):
        b_t = np.array([p_t[i, target], 1 - p_t[i, target]])
        b_s = np.array([p_s[i, target], 1 - p_s[i, target]])
        rest_t = np.delete(p_t[i], target) / b_t[1]
        rest_s = np.delete(p_s[i], target) / b_s[1]
        values.append(alpha * _kl(b_t, b_s) + beta * _kl(rest_t, rest_s))
    return np.array(values) * temperature**2


def _numpy_dist(teacher, student, temperature, beta, gamma):
    """Huang et al., eq. 4-8, with numpy's own Pearson correlation."""
    p_t, p_s = _softmax(teacher / temperature), _softmax(student / temperature)
    inter = np.array([1 - np.corrcoef(a, b)[0, 1] for a, b in zip(p_t, p_s)])
    intra = 1 - np.mean([np.corrcoef(p_t[:, c], p_s[:, c])[0, 1] for c in range(p_t.shape[1])])
    return (beta * inter + gamma * intra) * temperature**2


def _numpy_attention(teacher, student, p):
    def attention(f):
        a = (np.abs(f) ** p).mean(-1).reshape(len(f), -1)
        return a / np.linalg.norm(a, axis=-1, keepdims=True)

    return ((attention(teacher) - attention(student)) ** 2).mean(-1)


def _numpy_rkd(teacher, student, distance_weight, angle_weight):
    """Park et al., eq. 4-7, per anchor example: explicit difference vectors, no Gram."""

    def huber(x):
        return np.where(np.abs(x) < 1, 0.5 * x**2, np.abs(x) - 0.5)

    def distances(e):
        d = np.linalg.norm(e[:, None] - e[None], axis=-1)
        return d / d[~np.eye(len(e), dtype=bool)].mean()

    def angles(e):
        difference = e[None, :, :] - e[:, None, :]  # [a, b] = e_b - e_a
        norms = np.linalg.norm(difference, axis=-1, keepdims=True)
        unit = difference / np.maximum(norms, 1e-12)
        return np.einsum("abd,acd->abc", unit, unit)

    teacher, student = teacher.reshape(len(teacher), -1), student.reshape(len(student), -1)
    distance = huber(distances(student) - distances(teacher)).mean(1)
    angle = huber(angles(student) - angles(teacher)).mean((1, 2))
    return distance_weight * distance + angle_weight * angle


# Golden values.


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_standardized_kl_matches_numpy(temperature):
    teacher, student = _random(0), _random(1)
    expected = _numpy_standardized_kd(teacher.astype("float64"), student, temperature)
    actual = kl_divergence(teacher, student, temperature=temperature, standardize=True)
    np.testing.assert_allclose(_numpy(actual), expected, rtol=1e-4, atol=1e-6)
    loss = LogitsDistillation(temperature=temperature, standardize=True)
    np.testing.assert_allclose(_numpy(loss(teacher, student)), expected, rtol=1e-4, atol=1e-6)


def test_standardize_logits_z_scores_each_example():
    z = _random(0, shape=(4, 7))
    scores = _numpy(standardize_logits(z))
    np.testing.assert_allclose(scores.mean(-1), 0.0, atol=1e-6)
    np.testing.assert_allclose(scores.std(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("temperature, alpha, beta", [(1.0, 1.0, 8.0), (4.0, 0.5, 2.0)])
def test_decoupled_kd_matches_numpy(temperature, alpha, beta):
    teacher, student = _random(0), _random(1)
    expected = _numpy_dkd(teacher.astype("float64"), student, temperature, alpha, beta)
    arguments = dict(temperature=temperature, target_weight=alpha, non_target_weight=beta)
    actual = decoupled_kl_divergence(teacher, student, **arguments)
    np.testing.assert_allclose(_numpy(actual), expected, rtol=1e-4, atol=1e-6)
    loss = DecoupledDistillation(**arguments)
    np.testing.assert_allclose(_numpy(loss(teacher, student)), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("temperature, beta, gamma", [(1.0, 1.0, 1.0), (4.0, 2.0, 0.5)])
def test_dist_matches_numpy(temperature, beta, gamma):
    teacher, student = _random(0), _random(1)
    expected = _numpy_dist(teacher.astype("float64"), student, temperature, beta, gamma)
    arguments = dict(temperature=temperature, inter_class_weight=beta, intra_class_weight=gamma)
    actual = correlation_distance(teacher, student, **arguments)
    np.testing.assert_allclose(_numpy(actual), expected, rtol=1e-4, atol=1e-6)
    loss = CorrelationDistillation(**arguments)
    np.testing.assert_allclose(_numpy(loss(teacher, student)), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("exponent", [1.0, 2.0, 4.0])
def test_attention_transfer_matches_numpy(exponent):
    teacher, student = _random(0, (4, 6, 5, 16)), _random(1, (4, 6, 5, 3))
    expected = _numpy_attention(teacher.astype("float64"), student, exponent)
    actual = attention_map_distance(teacher, student, exponent=exponent)
    np.testing.assert_allclose(_numpy(actual), expected, rtol=1e-4, atol=1e-8)
    loss = AttentionTransfer("t", "s", exponent=exponent)
    np.testing.assert_allclose(_numpy(loss(teacher, student)), expected, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("distance_weight, angle_weight", [(1.0, 2.0), (1.0, 0.0), (0.0, 1.0)])
def test_relational_kd_matches_numpy(distance_weight, angle_weight):
    teacher, student = _random(0, (12, 3, 3, 4)), _random(1, (12, 5), scale=0.5)
    expected = _numpy_rkd(teacher.astype("float64"), student, distance_weight, angle_weight)
    arguments = dict(distance_weight=distance_weight, angle_weight=angle_weight)
    actual = _numpy(relational_distance(teacher, student, **arguments))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6)
    loss = RelationalDistillation(**arguments)
    np.testing.assert_allclose(_numpy(loss(teacher, student)), expected, rtol=1e-4, atol=1e-6)
    # Huber's linear part is exercised: some normalised distances differ by more than 1.
    assert expected.max() > 0.1


# Properties.

LOGITS_FUNCTIONS = {
    "standardized_kd": lambda t, s: kl_divergence(t, s, temperature=2.0, standardize=True),
    "decoupled_kd": lambda t, s: decoupled_kl_divergence(t, s, temperature=2.0),
    "dist": lambda t, s: correlation_distance(t, s, temperature=2.0),
}
FUNCTIONS = {
    **LOGITS_FUNCTIONS,
    "attention_transfer": attention_map_distance,
    "relational_kd": relational_distance,
}


def _pair(name, seed=0):
    shape = (8, 4, 4, 6) if name == "attention_transfer" else (8, 10)
    return _random(seed, shape), _random(seed + 1, shape)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_identical_outputs_give_zero_and_others_more(name):
    teacher, student = _pair(name)
    np.testing.assert_allclose(_numpy(FUNCTIONS[name](teacher, teacher)), 0.0, atol=1e-5)
    assert (_numpy(FUNCTIONS[name](teacher, student)) > 1e-3).all()


@pytest.mark.parametrize("name", sorted(LOGITS_FUNCTIONS))
def test_logits_losses_ignore_a_constant_shift_per_example(name):
    teacher, student = _pair(name)
    shift = np.arange(8, dtype="float32")[:, None] * 5.0
    shifted = _numpy(LOGITS_FUNCTIONS[name](teacher + shift, student - shift))
    np.testing.assert_allclose(shifted, _numpy(LOGITS_FUNCTIONS[name](teacher, student)), rtol=1e-4)


def test_standardized_kd_ignores_the_scale_of_each_examples_logits():
    teacher, student = _random(0), _random(1)
    scale = np.linspace(0.1, 10.0, 16, dtype="float32")[:, None]
    plain = kl_divergence(teacher, student, temperature=2.0, standardize=True)
    scaled = kl_divergence(teacher * scale, student / scale, temperature=2.0, standardize=True)
    np.testing.assert_allclose(_numpy(scaled), _numpy(plain), rtol=1e-4)
    unstandardized = kl_divergence(teacher * scale, student, temperature=2.0)
    assert not np.allclose(_numpy(unstandardized), _numpy(kl_divergence(teacher, student)))


def test_standardized_kd_temperature_squared_scaling():
    # At high T, T^2 * KL of z-scored logits tends to 1 - Pearson(z_t, z_s): the T^2
    # factor keeps the loss finite and temperature-free (without it, it would vanish).
    teacher, student = _random(0), _random(1)
    limit = 1.0 - np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(teacher, student)])
    value = _numpy(kl_divergence(teacher, student, temperature=100.0, standardize=True))
    np.testing.assert_allclose(value, limit, rtol=0.03)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_decoupled_kd_with_equal_weights_decomposes_classic_kd(temperature):
    # Zhao et al., eq. 7: KD = TCKD + (1 - p_target of the teacher) * NCKD.
    teacher, student = _random(0), _random(1)
    arguments = dict(temperature=temperature)
    target_part = decoupled_kl_divergence(
        teacher, student, **arguments, target_weight=1.0, non_target_weight=0.0
    )
    rest_part = decoupled_kl_divergence(
        teacher, student, **arguments, target_weight=0.0, non_target_weight=1.0
    )
    p_target = _softmax(teacher / temperature).max(-1)
    decomposed = _numpy(target_part) + (1 - p_target) * _numpy(rest_part)
    classic = _numpy(kl_divergence(teacher, student, temperature=temperature))
    np.testing.assert_allclose(decomposed, classic, rtol=1e-4, atol=1e-6)


def test_decoupled_kd_takes_the_teachers_top_class_as_target():
    teacher = np.array([[0.0, 5.0, 1.0]], "float32")
    student = np.array([[5.0, 0.0, 1.0]], "float32")
    expected = _numpy_dkd(teacher.astype("float64"), student, 1.0, 1.0, 8.0)
    np.testing.assert_allclose(_numpy(decoupled_kl_divergence(teacher, student)), expected)


def test_decoupled_kd_is_finite_for_a_certain_teacher():
    teacher = np.array([[60.0, 0.0, -40.0]], "float32")  # p_target = 1 - 1e-26
    student = np.array([[0.0, 1.0, 2.0]], "float32")
    value = _numpy(decoupled_kl_divergence(teacher, student))
    assert np.isfinite(value).all() and value[0] > 0


def test_dist_temperature_squared_scaling():
    # At high T, softmax(z / T) ~ (1 + centred z / T) / C, and correlation ignores the
    # 1 / T: the loss over T^2 tends to the correlation distances of centred logits.
    teacher, student = _random(0), _random(1)
    temperature = 200.0
    centred_t = teacher - teacher.mean(-1, keepdims=True)
    centred_s = student - student.mean(-1, keepdims=True)
    limit = _numpy_dist(centred_t.astype("float64") * 1e-4, centred_s * 1e-4, 1.0, 1.0, 1.0)
    value = _numpy(correlation_distance(teacher, student, temperature=temperature))
    np.testing.assert_allclose(value / temperature**2, limit, rtol=0.02)


def test_dist_spreads_the_intra_class_term_equally_over_the_batch():
    teacher, student = _random(0), _random(1)
    intra = _numpy(correlation_distance(teacher, student, inter_class_weight=0.0))
    np.testing.assert_allclose(intra, intra[0], rtol=1e-6)
    p_t, p_s = _softmax(teacher.astype("float64")), _softmax(student.astype("float64"))
    batch = 1 - np.mean([np.corrcoef(p_t[:, c], p_s[:, c])[0, 1] for c in range(10)])
    assert intra.mean() == pytest.approx(batch, rel=1e-4)


def test_attention_transfer_ignores_scale_and_channel_count():
    teacher, student = _random(0, (4, 6, 6, 16)), _random(1, (4, 6, 6, 3))
    reference = _numpy(attention_map_distance(teacher, student))
    scale = np.array([0.1, 1.0, 3.0, 50.0], "float32")[:, None, None, None]
    np.testing.assert_allclose(
        _numpy(attention_map_distance(teacher * scale, student)), reference, rtol=1e-4
    )
    # Repeating every student channel changes the width, not the map.
    widened = np.concatenate([student, student], axis=-1)
    np.testing.assert_allclose(
        _numpy(attention_map_distance(teacher, widened)), reference, rtol=1e-4
    )


def test_relational_kd_ignores_rotation_translation_and_scale():
    teacher, student = _random(0, (10, 6)), _random(1, (10, 4))
    rotation = np.linalg.qr(np.random.default_rng(2).normal(size=(4, 4)))[0].astype("float32")
    moved = student @ rotation * 7.0 + 3.0
    np.testing.assert_allclose(
        _numpy(relational_distance(teacher, moved)),
        _numpy(relational_distance(teacher, student)),
        rtol=1e-3,
        atol=1e-6,
    )


def test_relational_kd_mean_over_examples_is_the_papers_batch_loss():
    teacher, student = _random(0, (12, 6)), _random(1, (12, 4))
    per_example = _numpy(relational_distance(teacher, student))
    assert per_example.std() > 0  # each example's own relations, not a copied scalar
    expected = _numpy_rkd(teacher.astype("float64"), student, 1.0, 2.0).mean()
    assert per_example.mean() == pytest.approx(expected, rel=1e-4)


def _gradient(function, teacher, student):
    """The gradient of the summed loss w.r.t. the student outputs, on any backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda s: keras.ops.sum(function(teacher, s)))(student))
    if backend == "torch":
        import torch

        student = torch.tensor(student, requires_grad=True)
        torch.sum(function(teacher, student)).backward()
        return student.grad.numpy()
    import tensorflow as tf

    student = tf.constant(student)
    with tf.GradientTape() as tape:
        tape.watch(student)
        value = tf.reduce_sum(function(teacher, student))
    return tape.gradient(value, student).numpy()


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_degenerate_student_outputs_give_finite_gradients(name):
    # A fresh student can output all-equal logits (zero features, zero bias), dead
    # ReLU maps (all zeros), or the same features for two examples.
    teacher, student = _pair(name)
    student = np.zeros_like(student)
    if name == "relational_kd":
        student[1:] = _random(3, (7, 10))
        student[2] = student[1]
    value = _numpy(FUNCTIONS[name](teacher, student))
    gradient = _gradient(FUNCTIONS[name], teacher, student)
    assert np.isfinite(value).all() and np.isfinite(gradient).all(), (value, gradient)


# Eager against compiled.


def _compiled(function, teacher, student):
    """`function` traced as the training step traces it: batch size unknown on TF."""
    if keras.backend.backend() == "jax":
        import jax

        return np.asarray(jax.jit(function)(teacher, student))
    if keras.backend.backend() == "torch":
        import torch

        # Dynamo traces the function with symbolic shapes; "eager" skips code generation.
        compiled = torch.compile(function, dynamic=True, backend="eager")
        return compiled(torch.tensor(teacher), torch.tensor(student)).detach().numpy()
    import tensorflow as tf

    signature = [tf.TensorSpec((None, *x.shape[1:]), "float32") for x in (teacher, student)]
    return tf.function(function, input_signature=signature)(teacher, student).numpy()


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_eager_and_compiled_agree(name):
    teacher, student = _pair(name)
    eager = _numpy(FUNCTIONS[name](teacher, student))
    np.testing.assert_allclose(
        _compiled(FUNCTIONS[name], teacher, student), eager, rtol=1e-5, atol=1e-6
    )


# Inside a Distiller.


def _losses():
    """One of each new loss, reading the layers of `small_cnn` (conv, features, logits)."""
    return {
        "standardized": LogitsDistillation(temperature=2.0, standardize=True),
        "decoupled": DecoupledDistillation(temperature=2.0),
        "correlation": CorrelationDistillation(),
        "attention": AttentionTransfer("conv", "conv"),
        "relational": RelationalDistillation("features", "features"),
    }


LOG_KEYS = {
    "standardized": "logits_distillation_loss",
    "decoupled": "decoupled_distillation_loss",
    "correlation": "correlation_distillation_loss",
    "attention": "attention_transfer_loss",
    "relational": "relational_distillation_loss",
}


def _distiller(losses, weights=None, teacher=None, student=None):
    distiller = tfkd.Distiller(
        teacher or small_cnn(16, "teacher", batch_norm=True),
        student or small_cnn(4, "student"),
        distillation_losses=losses,
        distillation_loss_weights=weights,
    )
    distiller.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return distiller


def _weights(model):
    return [_numpy(v).copy() for v in model.weights]


@pytest.mark.parametrize("name", sorted(LOG_KEYS))
def test_distiller_trains_with_the_loss_and_leaves_the_teacher_alone(name):
    x, y = random_images(128)
    teacher = small_cnn(16, "teacher", batch_norm=True)
    before = _weights(teacher)
    weight = 500.0 if name == "attention" else 1.0  # AT's values are tiny (the paper's beta / 2)
    distiller = _distiller(_losses()[name], [weight], teacher=teacher)
    history = distiller.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history
    values = history[LOG_KEYS[name]]
    assert np.isfinite(values).all() and values[1] < values[0], values
    for old, new in zip(before, _weights(teacher)):
        np.testing.assert_array_equal(old, new)


def _teacher_gradients(distiller, x, y):
    """Gradients of the Distiller's training loss w.r.t. every teacher weight."""
    weights = distiller.teacher.weights

    def loss():
        y_pred = distiller(x, training=True)
        return distiller.compute_loss(x=x, y=y, y_pred=y_pred, training=True)

    if keras.backend.backend() == "jax":
        import jax

        def loss_of(values):
            with keras.StatelessScope(state_mapping=list(zip(weights, values))):
                return loss()

        return [np.asarray(g) for g in jax.grad(loss_of)([v.value for v in weights])]
    if keras.backend.backend() == "torch":
        import torch

        values = [v.value for v in weights]
        flags = [value.requires_grad for value in values]
        for value in values:  # frozen teacher weights do not ask for gradients: make them
            value.requires_grad_(True)
        try:
            gradients = torch.autograd.grad(loss(), values, allow_unused=True)
        finally:
            for value, flag in zip(values, flags):
                value.requires_grad_(flag)
        return [
            np.zeros(v.shape) if g is None else g.detach().numpy()
            for v, g in zip(weights, gradients)
        ]
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch([v.value for v in weights])
        value = loss()
    gradients = tape.gradient(value, [v.value for v in weights])
    return [np.zeros(v.shape) if g is None else g.numpy() for v, g in zip(weights, gradients)]


def test_no_gradient_reaches_the_teacher():
    x, y = random_images(32)
    distiller = _distiller(list(_losses().values()), [1.0, 1.0, 1.0, 500.0, 1.0])
    gradients = _teacher_gradients(distiller, x, y)
    assert len(gradients) == len(distiller.teacher.weights) > 0
    for gradient in gradients:
        np.testing.assert_array_equal(gradient, 0.0)


def test_no_gradient_reaches_the_teacher_through_a_projection_or_an_ensemble():
    # The projection that maps the student's 4 features to the teacher's 16 trains; the
    # teacher, and every member of an ensemble, gets nothing.
    x, y = random_images(32)
    projected = _distiller(tfkd.FeatureDistillation("features", "features", projection="always"))
    members = [small_cnn(16, f"member_{k}", batch_norm=True) for k in range(2)]
    ensemble = _distiller(
        [
            LogitsDistillation(temperature=2.0),
            DecoupledDistillation(
                teacher_layer_name="member_1_logits", student_layer_name="logits"
            ),
        ],
        teacher=tfkd.distill.teacher_ensemble(members, temperature=2.0),
        student=small_cnn(16, "student"),
    )
    for distiller in (projected, ensemble):
        gradients = _teacher_gradients(distiller, x, y)
        assert len(gradients) == len(distiller.teacher.weights) > 0
        for gradient in gradients:
            np.testing.assert_array_equal(gradient, 0.0)
    projection = projected.distillation_losses[0].projection_layer
    assert projection is not None and projection.trainable_weights


def test_distiller_with_every_new_loss_saves_and_resumes(tmp_path):
    x, y = random_images(64)
    distiller = _distiller(list(_losses().values()), [1.0, 1.0, 1.0, 500.0, 1.0])
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    loaded = assert_keras_round_trip(distiller, x, tmp_path)
    for original, restored in zip(distiller.distillation_losses, loaded.distillation_losses):
        assert type(restored) is type(original)
        assert restored.get_config() == original.get_config()
    teacher, student = distiller.teacher(x), distiller.student(x)
    for original, restored in zip(distiller.distillation_losses[:3], loaded.distillation_losses):
        np.testing.assert_allclose(
            _numpy(restored(teacher, student)), _numpy(original(teacher, student)), rtol=1e-6
        )
    history = loaded.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])


def test_config_round_trips():
    assert_config_round_trip(LogitsDistillation(temperature=2.0, standardize=True))
    assert_config_round_trip(DecoupledDistillation(3.0, 0.5, 2.0, name="dkd"))
    assert_config_round_trip(CorrelationDistillation(4.0, 2.0, 0.0))
    assert_config_round_trip(AttentionTransfer("conv", "conv_1", exponent=3.0))
    assert_config_round_trip(RelationalDistillation("a", "b", distance_weight=0.0))
    assert_config_round_trip(RelationalDistillation())


@pytest.mark.parametrize("name", ["decoupled", "correlation", "standardized"])
def test_logits_losses_refuse_outputs_of_different_shapes(name):
    with pytest.raises(ValueError, match="compares outputs of the same shape"):
        _distiller(_losses()[name], student=small_cnn(4, "student", num_classes=5))


@pytest.mark.parametrize("name", ["decoupled", "correlation"])
def test_logits_losses_read_the_log_of_a_softmax_output(name):
    x, _ = random_images(32)
    teacher = small_cnn(16, "teacher")
    softmax_teacher = keras.Model(teacher.inputs, keras.layers.Softmax()(teacher.outputs[0]))
    loss = _losses()[name]
    with pytest.warns(UserWarning, match="ends in a softmax"):
        distiller = _distiller(loss, teacher=softmax_teacher)
    expected = loss(teacher(x), distiller.student(x))
    y_pred = distiller(x, training=True)
    value = distiller.compute_loss(x=x, y=np.zeros(32), y_pred=y_pred, training=True)
    task = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(np.zeros(32), y_pred)
    expected_total = 0.1 * _numpy(task) + 0.9 * _numpy(expected).mean()
    assert float(_numpy(value)) == pytest.approx(float(expected_total), rel=1e-4)


def test_attention_transfer_refuses_maps_of_different_sizes():
    with pytest.raises(ValueError, match="same spatial size"):
        _distiller(AttentionTransfer("conv", "features"))
    with pytest.raises(ValueError, match=r"\(None, 4, 4, 16\).*\(None, 2, 2, 8\)"):
        AttentionTransfer("t", "s").build((None, 4, 4, 16), (None, 2, 2, 8))


def test_decoupled_kd_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        DecoupledDistillation().build((None, 1), (None, 1))


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: DecoupledDistillation(temperature=0), ValueError, "temperature"),
        (lambda: DecoupledDistillation(target_weight=-1.0), ValueError, "target_weight=-1.0"),
        (lambda: DecoupledDistillation(non_target_weight="8"), TypeError, "non_target_weight"),
        (lambda: CorrelationDistillation(inter_class_weight=True), TypeError, "inter_class"),
        (lambda: CorrelationDistillation(intra_class_weight=-0.5), ValueError, "intra_class"),
        (lambda: CorrelationDistillation(temperature="4"), TypeError, "temperature"),
        (lambda: AttentionTransfer("t", "s", exponent=0.5), ValueError, "exponent=0.5"),
        (lambda: AttentionTransfer("t", "s", exponent="2"), TypeError, "exponent"),
        (lambda: AttentionTransfer(None, "s"), ValueError, "compares two named layers"),
        (lambda: RelationalDistillation(angle_weight=-2.0), ValueError, "angle_weight=-2.0"),
        (lambda: RelationalDistillation(teacher_layer_name=3), TypeError, "teacher_layer_name"),
        (lambda: LogitsDistillation(standardize="yes"), TypeError, "standardize='yes'"),
        (lambda: LogitsDistillation(from_logits=1), TypeError, "from_logits=1"),
    ],
)
def test_bad_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make()


# Model kinds: logits losses read outputs (every kind); layer losses need layers.

LAYER_KINDS_WORK = {"sequential_with_input", "sequential_never_called", "sequential_called"}
LAYER_KINDS_WORK |= {"functional", "functional_lists", "loaded_keras_file"}


def _training_loss(distiller, x, y):
    y_pred = distiller(x, training=True)
    return float(_numpy(distiller.compute_loss(x=x, y=y, y_pred=y_pred, training=True)))


# keras.applications on TensorFlow only: 47 s of JAX compiling it.
@pytest.mark.parametrize(
    "kind",
    [pytest.param(k, marks=pytest.mark.heavy) if k == "applications" else k for k in MODEL_KINDS],
)
def test_every_student_kind(kind, tmp_path):
    shape = kind_input_shape(kind)
    x, y = random_images(16, shape=shape)
    logits_losses = [
        LogitsDistillation(standardize=True),
        DecoupledDistillation(),
        CorrelationDistillation(),
        RelationalDistillation(),
    ]
    teacher = small_cnn(8, "teacher", input_shape=shape)
    student = model_of_kind(kind, tmp_path, input_shape=shape)
    distiller = _distiller(logits_losses, teacher=teacher, student=student)
    assert np.isfinite(_training_loss(distiller, x, y))
    if kind == "applications":
        return  # its layers have other names; the outputs path above is what applies
    layer_losses = [
        AttentionTransfer("conv", "conv"),
        RelationalDistillation("features", "features"),
    ]
    student = model_of_kind(kind, tmp_path)
    if kind in LAYER_KINDS_WORK:
        distiller = _distiller(layer_losses, teacher=small_cnn(8, "teacher"), student=student)
        assert _training_loss(distiller, x, y) > 0
    else:
        message = "needs a Sequential or functional model|has no layer named 'conv'"
        with pytest.raises(ValueError, match=message):
            _distiller(layer_losses, teacher=small_cnn(8, "teacher"), student=student)


def test_docstring_examples():
    for module in (logits, features):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted >= 4 and result.failed == 0, module.__name__
