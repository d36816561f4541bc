"""Channel pruning: masks during fit, and the surgery that returns a smaller model."""

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import assert_tflite_agrees, random_images
from tfkd import _graph
from tfkd.prune import channel_mask

L = keras.layers


def _branchy():
    """Every join the surgery follows: BatchNorm, depthwise, Add, Concatenate, Flatten."""
    inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(16, 3, padding="same", name="c1")(inputs)
    x = L.ReLU(6.0)(L.BatchNormalization(name="bn1")(x))
    y = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = L.ReLU()(L.BatchNormalization(name="bn2")(y))
    x = L.Add(name="add")([x, L.Conv2D(16, 1, name="c2")(y)])
    x = L.Concatenate(name="concat")([x, L.Conv2D(8, 1, activation="relu", name="c3")(x)])
    x = L.Conv2D(10, 3, activation="relu", name="c4")(L.MaxPooling2D()(x))
    x = L.Dense(20, activation="relu", name="d1")(L.Flatten()(x))
    return keras.Model(inputs, L.Dense(4, name="logits")(x), name="branchy")


def _fit(model, x, y, epochs=2):
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0)
    return model


def _data(shape=(12, 12, 3), count=64):
    return random_images(count, shape, num_classes=4)


def _shapes(model):
    return {layer.name: [tuple(w.shape) for w in layer.weights] for layer in model.layers}


def test_keep_mask_keeps_the_best_channels_and_never_restores_one():
    scores = np.array([3.0, 1.0, 2.0, 0.5], "float32")
    ones = np.ones(4, "float32")
    kept = channel_mask.keep_mask(scores, ones, 0.5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(kept), [1, 0, 1, 0])
    # Channel 0 is removed already: it stays removed though it scores best.
    again = channel_mask.keep_mask(scores, np.array([0, 1, 1, 1], "float32"), 0.5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(again), [0, 1, 1, 0])
    # At least one channel always stays.
    assert float(keras.ops.sum(channel_mask.keep_mask(scores, ones, 0.99))) == 1.0


def test_channel_scores_and_taylor_step_golden_values():
    kernel = np.array([[[[1.0, -2.0]], [[3.0, 0.5]]]], "float32")  # (1, 2, 1, 2)
    l1 = keras.ops.convert_to_numpy(channel_mask.channel_scores(kernel, "l1"))
    l2 = keras.ops.convert_to_numpy(channel_mask.channel_scores(kernel, "l2"))
    np.testing.assert_allclose(l1, [4.0, 2.5])
    np.testing.assert_allclose(l2, [np.sqrt(10.0), np.sqrt(4.25)], rtol=1e-6)
    previous = kernel - np.array([[[[0.1, 0.0]], [[-0.1, 1.0]]]], "float32")
    taylor = keras.ops.convert_to_numpy(channel_mask.taylor_step(kernel, previous))
    np.testing.assert_allclose(taylor, [abs(1.0 * 0.1 - 3.0 * 0.1), abs(0.5 * 1.0)], rtol=1e-5)


def test_plan_names_every_group_and_why_some_stay():
    plan = tfkd.prune.channel_groups(_branchy())
    groups = {tuple(group["producers"]): group for group in plan.groups}
    assert set(groups) == {("c1", "c2"), ("c3",), ("c4",), ("d1",), ("logits",)}
    assert groups[("c1", "c2")]["members"] == ["bn1", "dw", "bn2"]
    assert groups[("c1", "c2")]["consumers"] == ["c2", "c3", "c4"]
    assert plan.skipped == {"logits": ["its channels are the model's output"]}
    assert "no: its channels are the model's output" in str(plan)


def test_the_input_concatenated_with_a_conv_then_normalized_is_left_alone():
    # DenseNet-style: before, channel_groups, prune_channels and shrink all failed with
    # "unsupported operand type(s) for +: 'int' and 'NoneType'" (the input's count is unknown).
    inputs = keras.Input((8, 8, 3))
    joined = keras.layers.Concatenate()([inputs, keras.layers.Conv2D(8, 3, padding="same")(inputs)])
    normalized = keras.layers.BatchNormalization(name="bn")(joined)
    pooled = keras.layers.GlobalAveragePooling2D()(normalized)
    model = keras.Model(inputs, keras.layers.Dense(4)(pooled))
    plan = tfkd.prune.channel_groups(model)
    reasons = " ".join(" ".join(why) for why in plan.skipped.values())
    assert "BatchNormalization 'bn' acts on concatenated channels" in reasons
    with pytest.raises(ValueError, match="Nothing to prune"):
        tfkd.prune.prune_channels(model, 0.5)


def test_masked_model_and_its_shrunk_copy_compute_the_same():
    model = _branchy()
    before = [np.array(w) for w in model.get_weights()]
    x, y = _data()
    masked = _fit(
        tfkd.prune.prune_channels(model, tfkd.prune.ConstantSparsity(0.5, frequency=1)), x, y
    )
    shrunk = tfkd.prune.shrink(masked)
    np.testing.assert_allclose(
        shrunk.predict(x, verbose=0), masked.predict(x, verbose=0), atol=1e-5
    )
    shapes = _shapes(shrunk)
    assert shapes["c1"] == [(3, 3, 3, 8), (8,)]
    assert shapes["dw"] == [(3, 3, 8, 1), (8,)]
    assert shapes["c3"] == [(1, 1, 8, 4), (4,)]
    assert shapes["c4"] == [(3, 3, 12, 5), (5,)]  # 8 of the Add's + 4 of c3's channels
    assert shapes["d1"] == [(80, 10), (10,)]  # 4x4 positions x 5 channels, after Flatten
    assert shapes["logits"] == [(10, 4), (4,)]
    assert not any(isinstance(layer, tfkd.prune.ChannelMask) for layer in shrunk.layers)
    assert shrunk.count_params() < 0.35 * model.count_params()
    for old, new in zip(before, model.get_weights()):  # the caller's model is untouched
        np.testing.assert_array_equal(old, new)


def test_a_batch_norm_naming_its_channel_axis_by_number_shrinks_with_its_producer():
    # keras.applications' ResNet50, DenseNet and InceptionV3 write BatchNormalization(
    # axis=3). Before, the masked model's inner BatchNormalization, never called in the
    # graph, read as not over channels: shrink cut c1's channels but not c2's inputs
    # ("weight shape (3, 3, 4, 4) is not compatible with (3, 3, 8, 4)").
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(8, 3, name="c1"),
            L.BatchNormalization(axis=3, name="bn"),
            L.ReLU(),
            L.Conv2D(8, 3, name="c2"),
            L.GlobalAveragePooling2D(),
            L.Dense(4, name="logits"),
        ]
    )
    x, y = _data((8, 8, 3))
    masked = _fit(tfkd.prune.prune_channels(model, tfkd.prune.ConstantSparsity(0.5, 1)), x, y)
    assert "c1" not in tfkd.prune.channel_groups(masked).skipped
    shrunk = tfkd.prune.shrink(masked)
    assert _shapes(shrunk)["c2"] == [(3, 3, 4, 4), (4,)]
    np.testing.assert_allclose(
        shrunk.predict(x, verbose=0), masked.predict(x, verbose=0), atol=1e-5
    )


def test_group_members_share_one_mask_that_follows_the_schedule():
    x, y = _data()
    schedule = tfkd.prune.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=8, frequency=2)
    masked = tfkd.prune.prune_channels(_branchy(), schedule, include=["c1"])
    kept = []
    for _ in range(3):
        _fit(masked, x, y, epochs=1)  # 4 steps an epoch
        kept.append(masked.get_layer("c1").kept_channels())
    # Sparsity 0.75 (1 - (1 - step / 8) ** 3) at steps 2, 6, 8: 6, 11, 12 of 16 removed.
    assert kept == [10, 5, 4]
    leader = masked.get_layer("c1")
    for name in ("bn1", "dw", "bn2", "c2"):
        assert masked.get_layer(name).group is leader.group
    assert isinstance(masked.get_layer("c3"), L.Conv2D)  # not included


def test_a_frozen_producer_holds_its_group_s_mask_and_a_frozen_batch_norm_does_not():
    # As for a pruned layer: a layer set `trainable = False` is left as it is by `fit`,
    # and c2 (joined to c1 by the Add) makes the group's channels. Before, the mask moved
    # on. A frozen BatchNormalization, the usual way to fine-tune, does not stop it.
    x, y = _data()
    schedule = tfkd.prune.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=8, frequency=2)
    masked = tfkd.prune.prune_channels(_branchy(), schedule, include=["c1"])
    masked.get_layer("c2").trainable = False
    _fit(masked, x, y, epochs=1)
    leader = masked.get_layer("c1")
    assert leader.kept_channels() == 16
    assert int(keras.ops.convert_to_numpy(leader.pruning_step)) == 0
    masked.get_layer("c2").trainable = True
    masked.get_layer("bn1").trainable = False
    _fit(masked, x, y, epochs=1)
    assert leader.kept_channels() == 10


def test_batch_norm_importance_keeps_the_largest_scales():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            L.Conv2D(4, 3, name="conv"),
            L.BatchNormalization(name="bn"),
            L.ReLU(),
            L.GlobalAveragePooling2D(),
            L.Dense(3),
        ]
    )
    model.get_layer("bn").gamma.assign([0.1, 2.0, -3.0, 0.2])
    shrunk = tfkd.prune.shrink(model, 0.5, importance="batch_norm")
    original = model.get_layer("conv").get_weights()[0]
    np.testing.assert_array_equal(shrunk.get_layer("conv").get_weights()[0], original[..., [1, 2]])
    np.testing.assert_allclose(shrunk.get_layer("bn").get_weights()[0], [2.0, -3.0])


def test_taylor_importance_trains_and_shrinks_a_never_called_sequential():
    model = keras.Sequential(
        [
            L.Conv2D(8, 3, name="conv"),
            L.ReLU(),
            L.GlobalAveragePooling2D(),
            L.Dense(3, name="logits"),
        ]
    )
    plan = tfkd.prune.channel_groups(model)  # read from the layers alone, before any build
    assert [group["producers"] for group in plan.groups] == [["conv"], ["logits"]]
    assert plan.skipped == {"logits": ["its channels are the model's output"]}
    x, y = random_images(64, (8, 8, 1))
    schedule = tfkd.prune.ConstantSparsity(0.5, begin_step=3, frequency=1)
    masked = _fit(tfkd.prune.prune_channels(model, schedule, importance="taylor"), x, y)
    score = keras.ops.convert_to_numpy(masked.get_layer("conv").taylor_score)
    assert score.shape == (8,) and np.all(score > 0)
    shrunk = tfkd.prune.shrink(masked)
    assert shrunk.get_layer("logits").get_weights()[0].shape == (4, 3)
    np.testing.assert_allclose(
        shrunk.predict(x, verbose=0), masked.predict(x, verbose=0), atol=1e-5
    )


def test_taylor_scores_start_from_the_copied_kernel(tmp_path):
    model = keras.Sequential([keras.Input((8,)), L.Dense(16, name="hidden"), L.Dense(2)])
    kernel = model.get_layer("hidden").get_weights()[0]
    schedule = tfkd.prune.ConstantSparsity(0.5, frequency=1)
    masked = tfkd.prune.prune_channels(model, schedule, importance="taylor")
    previous = masked.get_layer("hidden").previous_kernel
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(previous), kernel)
    masked.save(tmp_path / "masked.keras")
    hidden = keras.saving.load_model(tmp_path / "masked.keras").get_layer("hidden")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(hidden.previous_kernel), kernel)
    hidden(np.ones((4, 8), "float32"), training=True)  # a step that changes no weight
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(hidden.taylor_score), 0.0)


def _wrappers(model):
    return [
        layer for layer in _graph.leaf_layers(model) if isinstance(layer, tfkd.prune.ChannelMask)
    ]


def _nested_mobilenet_v2():
    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None
    )
    inputs = keras.Input((32, 32, 3))
    outputs = L.Dense(4)(L.GlobalAveragePooling2D()(base(inputs)))
    return keras.Model(inputs, outputs)


@pytest.mark.heavy  # on TensorFlow only: 34 s of JAX compiling MobileNetV2
def test_mobilenet_v2_inside_a_nested_model_is_planned_and_shrinks_without_training():
    # The graph analysis on a keras.applications model, in the default run: the test
    # below trains the masks (slow); here channels masked by hand are removed.
    model = _nested_mobilenet_v2()
    plan = tfkd.prune.channel_groups(model)
    assert len(plan.groups) == 26 and list(plan.skipped) == ["dense"]
    masked = tfkd.prune.prune_channels(model, tfkd.prune.ConstantSparsity(0.5, frequency=1))
    leaders = {id(layer.group.leader): layer.group.leader for layer in _wrappers(masked)}
    # One leader a group that shrinks (the logits' group stays whole: the model's output).
    assert len(leaders) == len([group for group in plan.groups if not group["reasons"]]) == 25
    for leader in leaders.values():
        mask = np.ones(leader.mask.shape, "float32")
        mask[: len(mask) // 2] = 0
        leader.mask.assign(mask)
    x, _ = random_images(4, (32, 32, 3), num_classes=4)
    shrunk = tfkd.prune.shrink(masked)
    np.testing.assert_allclose(
        shrunk.predict(x, verbose=0), masked.predict(x, verbose=0), atol=1e-4
    )
    assert shrunk.count_params() < 0.35 * model.count_params()


# Slow (`bash scripts/test.sh -m slow`): 85 s in CI on TensorFlow, 68 s more of compiling
# MobileNetV2 on JAX; the test above plans and shrinks the same model in the default run.
@pytest.mark.slow
def test_mobilenet_v2_backbone_shrinks_inside_a_nested_model():
    model = _nested_mobilenet_v2()
    x, y = random_images(16, (32, 32, 3), num_classes=4)
    masked = _fit(
        tfkd.prune.prune_channels(model, tfkd.prune.ConstantSparsity(0.5, frequency=1)), x, y, 1
    )
    shrunk = tfkd.prune.shrink(masked)
    np.testing.assert_allclose(
        shrunk.predict(x, verbose=0), masked.predict(x, verbose=0), atol=1e-4
    )
    assert shrunk.count_params() < 0.35 * model.count_params()


def test_reshape_is_left_alone_and_including_it_is_an_error():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            L.Conv2D(4, 3, name="conv"),
            L.Reshape((-1, 4)),
            L.Conv1D(4, 2, name="conv1d"),
            L.GlobalAveragePooling1D(),
            L.Dense(3),
        ]
    )
    plan = tfkd.prune.channel_groups(model)
    assert plan.skipped["conv"] == ["they reach Reshape 'reshape', which the surgery cannot follow"]
    with pytest.raises(ValueError, match="selected by `include`.*Reshape 'reshape'"):
        tfkd.prune.prune_channels(model, 0.5, include=["conv"])
    shrunk = tfkd.prune.shrink(model, 0.5)
    assert _shapes(shrunk)["conv"] == [(3, 3, 2, 4), (4,)]
    assert _shapes(shrunk)["conv1d"] == [(2, 4, 2), (2,)]


def test_activation_that_moves_zero_stops_the_group():
    model = keras.Sequential(
        [keras.Input((4,)), L.Dense(6, name="hidden"), L.Activation("sigmoid"), L.Dense(2)]
    )
    assert "does not map 0 to 0" in tfkd.prune.channel_groups(model).skipped["hidden"][0]


@pytest.mark.heavy  # on TensorFlow only: its cost off TensorFlow is the export subprocess
def test_saved_masked_model_keeps_its_groups_and_exports_shrunk(tmp_path):
    x, y = _data()
    masked = _fit(tfkd.prune.prune_channels(_branchy(), 0.5), x, y)
    path = tmp_path / "masked.keras"
    masked.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("bn1").group is loaded.get_layer("c1").group
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), masked.predict(x, verbose=0), atol=1e-6
    )
    _fit(loaded, x, y, epochs=1)  # trains again after loading
    shrunk = tfkd.prune.shrink(masked)
    tflite = tmp_path / "shrunk.tflite"
    tfkd.export_tflite(masked, tflite, representative_data=x)  # export shrinks it
    assert_tflite_agrees(shrunk, tflite, x)
    stripped = tfkd.prune.strip(masked)
    assert _shapes(stripped) == _shapes(shrunk)


def test_groups_load_where_nested_models_repeat_layer_names(tmp_path):
    def block(name):  # both blocks hold layers named "conv" and "bn"
        layers = [L.Conv2D(8, 3, padding="same", name="conv"), L.BatchNormalization(name="bn")]
        return keras.Sequential([keras.Input((6, 6, 3)), *layers], name=name)

    inputs = keras.Input((6, 6, 3))
    joined = L.Add()([block("branch_a")(inputs), block("branch_b")(inputs)])
    model = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling2D()(joined)))
    x = np.random.default_rng(0).random((8, 6, 6, 3), "float32")
    masked = tfkd.prune.prune_channels(model, tfkd.prune.ConstantSparsity(0.5, frequency=1))
    masked(x, training=True)
    masked.save(tmp_path / "masked.keras")
    loaded = keras.saving.load_model(tmp_path / "masked.keras")
    convs = [loaded.get_layer(name).get_layer("conv") for name in ("branch_a", "branch_b")]
    assert convs[0].group is convs[1].group and len(convs[0].group.members) == 4
    np.testing.assert_allclose(loaded.predict(x, verbose=0), masked.predict(x, verbose=0))


def test_channel_pruned_student_of_a_distiller(tmp_path):
    teacher = keras.Sequential([keras.Input((12, 12, 3)), L.Flatten(), L.Dense(4)])
    x, y = _data()
    student = tfkd.prune.prune_channels(_branchy(), tfkd.prune.ConstantSparsity(0.5, frequency=1))
    distiller = tfkd.Distiller(teacher=teacher, student=student, temperature=2.0)
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert student.get_layer("c1").kept_channels() == 8
    assert _shapes(tfkd.prune.shrink(student))["c4"][0] == (3, 3, 12, 5)


def test_shrink_and_prune_channels_refuse_what_they_cannot_do():
    model = _branchy()
    with pytest.raises(ValueError, match="sparsity.*Received: sparsity=None"):
        tfkd.prune.shrink(model)
    masked = tfkd.prune.prune_channels(model, 0.5)
    with pytest.raises(ValueError, match="channel-pruned already.*Received: sparsity=0.3"):
        tfkd.prune.shrink(masked, 0.3)
    with pytest.raises(ValueError, match="Received: include=\\['c1'\\]"):
        tfkd.prune.shrink(masked, include=["c1"])
    with pytest.raises(ValueError, match="Call tfkd.prune.shrink"):
        tfkd.prune.prune_channels(masked, 0.5)
    with pytest.raises(ValueError, match="needs gradients from training"):
        tfkd.prune.shrink(model, 0.5, importance="taylor")
    with pytest.raises(ValueError, match="Nothing to prune"):
        tfkd.prune.prune_channels(model, 0.5, exclude=["c1", "c3", "c4", "d1"])


def test_batch_norm_over_concatenated_channels_is_left_whole():
    inputs = keras.Input((8, 8, 3))
    joined = L.Concatenate(axis=3)(
        [L.Conv2D(4, 1, name="a")(inputs), L.Conv2D(4, 1, name="b")(inputs)]
    )
    x = L.Conv2D(6, 1, name="after")(L.BatchNormalization(name="bn")(joined))
    model = keras.Model(inputs, L.Dense(2)(L.GlobalAveragePooling2D()(x)))
    skipped = tfkd.prune.channel_groups(model).skipped
    assert skipped["a"] == skipped["b"] == ["BatchNormalization 'bn' acts on concatenated channels"]
    masked = tfkd.prune.prune_channels(model, tfkd.prune.ConstantSparsity(0.5, frequency=1))
    x, y = random_images(16, (8, 8, 3), num_classes=2)
    _fit(masked, x, y, 1)  # only `after` is pruned
    assert _shapes(tfkd.prune.shrink(masked))["after"] == [(1, 1, 8, 3), (3,)]


def test_a_nested_model_with_two_outputs_is_not_followed():
    nested_input = keras.Input((8, 8, 3))
    nested = keras.Model(
        nested_input,
        [L.Conv2D(4, 1, name="n1")(nested_input), L.Conv2D(6, 1, name="n2")(nested_input)],
    )
    inputs = keras.Input((8, 8, 3))
    _, second = nested(inputs)
    x = L.GlobalAveragePooling2D()(L.Conv2D(5, 1, name="after")(second))
    model = keras.Model(inputs, L.Dense(2)(x))
    plan = tfkd.prune.channel_groups(model)
    assert "several outputs" in plan.skipped["n1"][-1]
    masked = tfkd.prune.prune_channels(model, tfkd.prune.ConstantSparsity(0.5, frequency=1))
    x, y = random_images(16, (8, 8, 3), num_classes=2)
    _fit(masked, x, y, 1)
    shrunk = tfkd.prune.shrink(masked)
    np.testing.assert_allclose(
        shrunk.predict(x, verbose=0), masked.predict(x, verbose=0), atol=1e-5
    )


def test_exclude_a_batch_norm_keeps_its_group_whole():
    masked = tfkd.prune.prune_channels(_branchy(), 0.5, exclude=["bn2"])
    assert isinstance(masked.get_layer("bn2"), L.BatchNormalization)
    assert isinstance(masked.get_layer("c1"), L.Conv2D)
    assert isinstance(masked.get_layer("c3"), tfkd.prune.ChannelMask)
