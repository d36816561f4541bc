import warnings

import keras
import numpy as np
import pytest

from tests.helpers import random_images, small_cnn
from tfkd import _graph, _kernels, prune
from tfkd.pipeline.pruning import quiet_unreached


def _trained_copy(model, x, y, epochs=2, batch_size=32, run_eagerly=False):
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        run_eagerly=run_eagerly,
    )
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
    return model


def test_prune_returns_a_new_model_and_leaves_the_input_untouched():
    model = small_cnn(8, "dense")
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
    pruned = prune.prune(model, prune.ConstantSparsity(0.75, frequency=1))
    x, y = random_images()
    _trained_copy(pruned, x, y)
    for old, new in zip(before, model.weights, strict=True):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(new))
    assert prune.summary(model).sparsity == 0.0
    assert prune.summary(pruned).sparsity == pytest.approx(0.75, abs=0.01)
    assert [type(layer).__name__ for layer in pruned.layers].count("PrunedLayer") == 2


def test_unpruned_wrapper_computes_what_the_layer_computes():
    rng = np.random.default_rng(0)
    cases = [
        (keras.layers.Dense(5, activation="relu"), rng.normal(size=(4, 3, 6))),
        (keras.layers.Conv1D(4, 3, padding="causal", dilation_rate=2), rng.normal(size=(2, 9, 3))),
        (keras.layers.Conv2D(4, 3, strides=2, padding="same"), rng.normal(size=(2, 9, 9, 3))),
        (keras.layers.DepthwiseConv2D(3, depth_multiplier=2), rng.normal(size=(2, 7, 7, 3))),
        (keras.layers.SeparableConv2D(4, 3, activation="tanh"), rng.normal(size=(2, 7, 7, 3))),
        (keras.layers.Conv3D(2, 2), rng.normal(size=(1, 4, 4, 4, 2))),
        (keras.layers.Embedding(11, 4), rng.integers(0, 11, size=(3, 5))),
    ]
    for layer, inputs in cases:
        inputs = inputs.astype("float32" if inputs.dtype.kind == "f" else "int32")
        expected = keras.ops.convert_to_numpy(layer(inputs))
        wrapper = prune.PrunedLayer(layer, 0.5)
        received = keras.ops.convert_to_numpy(wrapper(inputs, training=False))
        np.testing.assert_allclose(received, expected, rtol=1e-5, atol=1e-5, err_msg=layer.name)


def test_masks_update_by_themselves_and_pruned_weights_stay_zero():
    x, y = random_images()
    schedule = prune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=16, frequency=4)
    pruned = _trained_copy(prune.prune(small_cnn(8, "student"), schedule), x, y, epochs=1)
    middle = prune.summary(pruned)
    conv = pruned.get_layer("conv")
    assert int(keras.ops.convert_to_numpy(conv.pruning_step)) == 8
    zeros_before = keras.ops.convert_to_numpy(conv.pruned_kernel()) == 0
    _trained_copy(pruned, x, y, epochs=2)
    zeros_after = keras.ops.convert_to_numpy(conv.pruned_kernel()) == 0
    assert np.all(zeros_after[zeros_before])
    assert 0 < middle.sparsity < prune.summary(pruned).sparsity
    assert prune.summary(pruned).sparsity == pytest.approx(0.8, abs=0.01)


def test_a_layer_called_twice_a_step_follows_its_schedule_as_one_called_once():
    # A siamese branch: the same PrunedLayer at two call sites. Before, each call
    # advanced the schedule, so the layer reached its target at half the steps.
    def siamese(shared):
        first, second = keras.Input((16,)), keras.Input((16,))
        if shared:
            branch = keras.layers.Dense(8, name="branch")
            joined = keras.layers.Concatenate()([branch(first), branch(second)])
        else:
            joined = keras.layers.Dense(8, name="branch")(
                keras.layers.Concatenate()([first, second])
            )
        return keras.Model([first, second], keras.layers.Dense(3)(joined))

    rng = np.random.default_rng(0)
    x = [rng.normal(size=(80, 16)).astype("float32") for _ in range(2)]
    schedule = prune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=16, frequency=1)
    for shared, run_eagerly in ((False, False), (True, False), (True, True)):
        pruned = prune.prune(siamese(shared), schedule)
        pruned = _trained_copy(pruned, x, np.arange(80) % 3, 1, 16, run_eagerly)
        branch = pruned.get_layer("branch")
        steps = int(keras.ops.convert_to_numpy(branch.pruning_step))
        (row,) = [row for row in prune.summary(pruned).layers if row["name"] == "branch"]
        # The mask of the 5th step, at step 4 (0-based).
        expected = np.floor(float(schedule(4)) * row["parameters"]) / row["parameters"]
        if run_eagerly and keras.backend.backend() == "jax":
            # Not fixed there: JAX's trainer runs the model's `call` outside the call
            # context Keras keeps for an outermost call, and eager, a step starts from the
            # very values the last one left, so each call site steps. (Before, traced too.)
            assert steps == 10, steps
            continue
        assert (steps, row["sparsity"]) == (5, pytest.approx(expected)), (shared, run_eagerly)


def test_inference_leaves_masks_and_step_alone():
    x, _ = random_images(64)
    pruned = prune.prune(small_cnn(8, "student"), prune.ConstantSparsity(0.5, frequency=1))
    pruned.predict(x, verbose=0)
    pruned.compile(loss="mse")
    pruned.evaluate(x, np.zeros((64, 3)), verbose=0)
    assert int(keras.ops.convert_to_numpy(pruned.get_layer("conv").pruning_step)) == 0
    assert prune.summary(pruned).sparsity == 0.0


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("frozen", ["before_pruning", "after_pruning"])
def test_frozen_layers_keep_their_masks_and_schedule_step(scope, frozen):
    # As Keras's BatchNormalization keeps its statistics: a layer set `trainable = False`
    # (a frozen backbone, or the whole model), before or after `prune` wraps it, is left
    # as it is by `fit`. Before, its mask and step moved on, pruning weights that could
    # no longer train to make up; globally, the layers still training rank together.
    x, y = random_images(64)
    schedule = prune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=4, frequency=1)
    model = small_cnn(8, "student")
    if scope == "layer":  # as users write it: a Sequential never called
        layers = [keras.layers.Conv2D(8, 3, name="conv"), keras.layers.GlobalAveragePooling2D()]
        model = keras.Sequential([*layers, keras.layers.Dense(3, name="logits")])
    if frozen == "before_pruning":
        model.get_layer("conv").trainable = False
    pruned = prune.prune(model, schedule, scope=scope)
    conv = pruned.get_layer("conv")
    if frozen == "after_pruning":
        conv.trainable = False
    _trained_copy(pruned, x, y, epochs=1, batch_size=8)
    rows = {row["name"]: row for row in prune.summary(pruned).layers}
    assert rows["conv"]["sparsity"] == 0.0
    assert int(keras.ops.convert_to_numpy(conv.pruning_step)) == 0
    assert rows["logits"]["sparsity"] == pytest.approx(0.8, abs=0.01)
    conv.trainable = True
    _trained_copy(pruned, x, y, epochs=1, batch_size=8)
    assert prune.summary(pruned).sparsity == pytest.approx(0.8, abs=0.01)


def test_global_scope_uses_one_threshold_across_layers():
    pruned = prune.prune(
        small_cnn(8, "g"), prune.ConstantSparsity(0.7, frequency=1), scope="global"
    )
    layers = [pruned.get_layer("conv"), pruned.get_layer("logits")]
    rng = np.random.default_rng(3)
    # Give the two layers very different scales: a global threshold prunes the small one more.
    kernels = [
        rng.normal(scale=scale, size=layer.layer.kernel.shape).astype("float32")
        for layer, scale in zip(layers, (0.1, 1.0), strict=True)
    ]
    for layer, kernel in zip(layers, kernels, strict=True):
        layer.layer.kernel.assign(kernel)
    pruned(random_images(4)[0], training=True)
    everything = np.sort(np.concatenate([np.abs(k).reshape(-1) for k in kernels]))
    threshold = everything[int(np.floor(0.7 * everything.size)) - 1]
    for layer, kernel in zip(layers, kernels, strict=True):
        expected = (np.abs(kernel) > threshold).astype("float32")
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.mask), expected)
    sparsities = [row["sparsity"] for row in prune.summary(pruned).layers]
    assert sparsities[0] > 0.9 and sparsities[1] < 0.5
    assert prune.summary(pruned).sparsity == pytest.approx(0.7, abs=0.005)


def test_tied_magnitudes_are_pruned_to_the_asked_sparsity():
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, kernel_initializer="ones", name="hidden"),
            keras.layers.Dense(4, kernel_initializer="ones", name="logits"),
        ]
    )
    for scope in ("layer", "global"):
        pruned = prune.prune(model, prune.ConstantSparsity(0.5, frequency=1), scope=scope)
        pruned(np.ones((2, 8), "float32"), training=True)
        assert prune.summary(pruned).sparsity == 0.5, scope


def test_two_of_four_pattern_holds_on_every_pruned_kernel():
    model = keras.Sequential(
        [
            keras.Input((6, 6, 4)),
            keras.layers.Conv2D(8, 3, name="conv_a"),
            keras.layers.Conv2D(8, 1, name="conv_b"),
            keras.layers.Flatten(),
            keras.layers.Dense(4, name="logits"),
        ]
    )
    pruned = prune.prune(model, prune.ConstantSparsity(0.5, frequency=1), pattern="2:4")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6, 6, 4)).astype("float32"), rng.integers(0, 4, 64)
    _trained_copy(pruned, x, y, epochs=1)
    summary = prune.summary(pruned)
    assert [row["pattern_ok"] for row in summary.layers] == [True, True, True]
    assert summary.sparsity == pytest.approx(0.5)
    stripped = prune.strip(pruned)
    assert all(row["pattern_ok"] for row in prune.summary(stripped, pattern="2:4").layers)
    # As users write it, never called: before, prune read the unbuilt kernels ("You must
    # build the layer before accessing `kernel`"); the pattern is checked at build.
    for channels, fits in ((4, True), (3, False)):
        layers = [keras.layers.Conv2D(8, 3), keras.layers.Flatten(), keras.layers.Dense(4)]
        pruned = prune.prune(keras.Sequential(layers), 0.5, pattern="2:4")
        if fits:
            _trained_copy(pruned, x, y, epochs=1)
            assert [row["pattern_ok"] for row in prune.summary(pruned).layers] == [True] * 2
        else:
            with pytest.raises(ValueError, match=r"multiple of 4.*3 input channels"):
                pruned(x[..., :channels])


def test_a_schedule_at_odds_with_an_n_of_m_pattern_is_refused():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="dense")])
    for target in (0.8, 0.2, 0.0):
        with pytest.raises(ValueError, match=rf"'2:4'.*0\.5.*target_sparsity={target}"):
            prune.prune(model, prune.ConstantSparsity(target), pattern="2:4")
    with pytest.raises(ValueError, match="no `target_sparsity` or `end_step`"):
        prune.PrunedLayer(keras.layers.Dense(4), _Step(), pattern="2:4")
    assert prune.PrunedLayer(keras.layers.Dense(4), _Step(end_step=9), pattern="2:4").built is False
    # A layer saved before the check loads with the sparsity its pattern pruned to.
    config = prune.prune(model, 0.5, pattern="2:4").get_layer("dense").get_config()
    config["schedule"]["config"]["target_sparsity"] = 0.8
    with pytest.warns(UserWarning, match="target_sparsity=0.8.*pruned to 0.5"):
        loaded = prune.PrunedLayer.from_config(config)
    assert loaded.schedule.target_sparsity == 0.5


class _Step(prune.PruningSchedule):
    def __call__(self, step):
        return keras.ops.where(step < 5, 0.25, 0.5)


def test_strip_gives_plain_layers_with_the_same_outputs(tmp_path):
    x, y = random_images()
    pruned = _trained_copy(prune.prune(small_cnn(8, "s"), 0.6), x, y, epochs=1)
    stripped = prune.strip(pruned)
    assert not any(isinstance(layer, prune.PrunedLayer) for layer in stripped.layers)
    np.testing.assert_allclose(
        stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    assert prune.summary(stripped).sparsity == pytest.approx(prune.summary(pruned).sparsity)
    stripped.save(tmp_path / "plain.keras")
    assert "PrunedLayer" not in (tmp_path / "plain.keras").read_bytes().decode("latin-1")


def test_nested_models_and_layer_selection():
    inner = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(8, name="inner_a"),
            keras.layers.Dense(8, name="inner_b"),
        ],
        name="block",
    )
    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(2, name="head")(inner(inputs))
    model = keras.Model(inputs, outputs)
    by_name = prune.prune(model, 0.5, include=["inner_b", "head"])
    wrapped = {
        layer.name
        for layer in by_name.get_layer("block").layers + by_name.layers
        if isinstance(layer, prune.PrunedLayer)
    }
    assert wrapped == {"inner_b", "head"}
    by_function = prune.prune(model, 0.5, exclude=lambda layer: layer.name.startswith("inner"))
    assert [row["name"] for row in prune.summary(by_function).layers if row["type"]] == [
        "inner_a",
        "inner_b",
        "head",
    ]
    assert isinstance(by_function.layers[-1], prune.PrunedLayer)
    assert not isinstance(by_function.get_layer("block").layers[0], prune.PrunedLayer)
    by_type = prune.prune(model, 0.5, include=[keras.layers.Dense], exclude=["head"])
    assert isinstance(by_type.get_layer("block").layers[0], prune.PrunedLayer)


def test_save_mid_training_and_resume_keeps_masks_and_step(tmp_path):
    x, y = random_images()
    schedule = prune.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=24, frequency=2)
    pruned = _trained_copy(prune.prune(small_cnn(8, "resume"), schedule), x, y, epochs=1)
    pruned.save(tmp_path / "mid.keras")
    loaded = keras.saving.load_model(tmp_path / "mid.keras")
    for name in ("conv", "logits"):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(loaded.get_layer(name).mask),
            keras.ops.convert_to_numpy(pruned.get_layer(name).mask),
        )
        assert int(keras.ops.convert_to_numpy(loaded.get_layer(name).pruning_step)) == 8
    assert loaded.get_layer("conv").schedule.get_config() == schedule.get_config()
    loaded.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert int(keras.ops.convert_to_numpy(loaded.get_layer("conv").pruning_step)) == 24
    assert prune.summary(loaded).sparsity == pytest.approx(0.8, abs=0.01)


def test_global_group_survives_save_and_load(tmp_path):
    pruned = prune.prune(small_cnn(8, "g"), 0.5, scope="global")
    pruned.save(tmp_path / "g.keras")
    loaded = keras.saving.load_model(tmp_path / "g.keras")
    groups = {id(layer.group) for layer in loaded.layers if isinstance(layer, prune.PrunedLayer)}
    assert len(groups) == 1
    assert len(loaded.get_layer("conv").group.members) == 2


def test_global_group_survives_save_and_load_with_repeated_names(tmp_path):
    layers = [keras.layers.Dense(8, name="fc"), keras.layers.Dense(8, name="fc2")]
    inner = keras.Sequential([keras.Input((4,)), *layers], name="inner")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="fc")(inner(inputs)))
    pruned = prune.prune(model, 0.5, scope="global")
    pruned.save(tmp_path / "g.keras")
    loaded = keras.saving.load_model(tmp_path / "g.keras")
    leaves = _graph.leaf_layers(loaded)
    wrappers = [layer for layer in leaves if isinstance(layer, prune.PrunedLayer)]
    assert len({id(layer.group) for layer in wrappers}) == 1
    assert len(wrappers[0].group.members) == 3
    # Files saved before members saved their position still load, grouped by layer name.
    config = prune.prune(small_cnn(8, "old"), 0.5, scope="global").get_config()
    for entry in config["layers"]:
        if "group" in entry["config"]:
            assert entry["config"]["group"].pop("member") in (0, 1)
    old = keras.Model.from_config(config)
    assert len(old.get_layer("conv").group.members) == 2


def test_subclassed_model_error_says_what_to_do():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, inputs):
            return self.dense(inputs)

    model = Subclassed()
    model(np.ones((1, 3)))
    with pytest.raises(TypeError, match="subclassed.*PrunedLayer"):
        prune.prune(model, 0.5)


# Heavy: its time on JAX and PyTorch is the TensorFlow export subprocess's.
@pytest.mark.heavy
def test_a_subclassed_model_with_its_own_pruned_layers_exports_with_the_zeros(tmp_path):
    # As the README says: wrap the layers in PrunedLayer yourself. Before, export refused
    # the model: stripping cannot rewire a subclassed model. The converter folds each
    # wrapper's kernel * mask into one constant instead.
    import tfkd

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            schedule = prune.ConstantSparsity(0.5, frequency=1)
            self.hidden = prune.PrunedLayer(keras.layers.Dense(32, activation="relu"), schedule)
            self.out = keras.layers.Dense(3)

        def call(self, inputs, training=None):
            return self.out(self.hidden(inputs, training=training))

    x = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
    model = Subclassed()
    model(x[:2])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.arange(64) % 3, epochs=1, batch_size=16, verbose=0)
    if keras.backend.backend() != "tensorflow":
        # The conversion runs in a TensorFlow subprocess, which cannot import a class defined
        # here: the README's "a subclassed model there needs the TensorFlow backend".
        with pytest.raises(ValueError, match="Subclassed .* is a class it cannot import"):
            tfkd.export_tflite(model, tmp_path / "subclassed.tflite")
        return
    report = tfkd.export_tflite(model, tmp_path / "subclassed.tflite")  # checked against Keras
    assert report.keras_agreement["top1_agreement"] == 1.0
    assert sum(count for name, count in report.ops.items() if "MUL" in name) == 0, report.ops


def test_pruned_layers_of_a_call_without_training_are_named_before_export():
    # Keras passes no `training=True` into a subclassed model whose `call` takes none: its
    # PrunedLayers never stepped, and the model exported as if pruned, with no word.
    class NoTraining(keras.Model):
        def __init__(self):
            super().__init__()
            schedule = prune.ConstantSparsity(0.5, frequency=1)
            self.hidden = prune.PrunedLayer(keras.layers.Dense(8, name="hidden"), schedule)
            self.out = keras.layers.Dense(3)

        def call(self, inputs):
            return self.out(self.hidden(inputs))

    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    model = NoTraining()
    model(x[:2])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.arange(32) % 3, epochs=1, batch_size=8, verbose=0)
    assert float(prune.summary(model).sparsity) == 0.0
    with pytest.warns(UserWarning, match=r"\['hidden'\] never took a training step"):
        _graph.strip_if_wrapped(model)  # what export_tflite reads the model through


def test_pruned_layers_stopped_before_their_schedule_s_end_are_named():
    # An EarlyStopping(restore_best_weights=True) or a best-only checkpoint restores an
    # earlier step's masks: 0.68 of a 0.9 target exported, and quantize_aware froze it,
    # with no word.
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), keras.layers.Dense(3)])
    schedule = prune.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=16, frequency=2)
    pruned = prune.prune(model, schedule)
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, np.arange(64) % 3, epochs=1, batch_size=16, verbose=0)  # 4 steps
    with pytest.warns(
        UserWarning, match=r"stopped before .*: dense \(step 4 of 16: 0\.\d+ of 0\.90"
    ):
        _graph.strip_if_wrapped(pruned)  # what export_tflite and quantize_aware read
    pruned.fit(x, np.arange(64) % 3, epochs=3, batch_size=16, verbose=0)  # to step 16
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _graph.strip_if_wrapped(pruned)
    assert not [w for w in caught if "stopped before" in str(w.message)]


def test_layers_with_weights_prune_cannot_wrap_are_named():
    # Before, left dense with no word: the summary's 0.8 read as the model's (0.04 was).
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.Conv2DTranspose(8, 3, strides=2, padding="same", name="up")(x)
    x = keras.layers.EinsumDense("abcd,de->abce", output_shape=(8, 8, 4), name="mix")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    match = (
        r"cannot prune the weights of 2 layer\(s\), 2?,?\d+ parameters.*'up \(Conv2DTranspose\)'"
    )
    with pytest.warns(UserWarning, match=match):
        pruned = prune.prune(model, 0.5)
    assert {row["name"] for row in prune.summary(pruned).layers} == {"conv", "head"}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        prune.prune(model, 0.5, exclude=["up", "mix"])


def test_summary_rows_name_each_layer_by_its_path_in_the_model():
    # Two nested models may each hold a layer of one name: the path tells their rows apart
    # (before, both rows said "fc").
    inputs = keras.Input((8,))
    branches = {}
    for name, sparsity in (("left", 0.5), ("right_branch_of_a_long_name", 0.25)):
        dense = keras.layers.Dense(8, name="fc")
        branches[name] = keras.Sequential([keras.Input((8,)), dense], name=name)
        kernel = keras.ops.convert_to_numpy(dense.kernel).copy()
        kernel.reshape(-1)[: int(sparsity * kernel.size)] = 0
        dense.kernel.assign(kernel)
    joined = keras.layers.Concatenate()([branch(inputs) for branch in branches.values()])
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(joined))
    summary = prune.summary(model)
    rows = {row["path"]: (row["name"], row["sparsity"]) for row in summary.layers}
    assert rows == {
        "left/fc": ("fc", 0.5),
        "right_branch_of_a_long_name/fc": ("fc", 0.25),
        "head": ("head", 0.0),
    }
    table = str(summary).splitlines()  # in columns, however long the paths
    assert table[1].startswith("left/fc ")
    assert {line.index("Dense") for line in table[1:4]} == {table[0].index("type")}


def test_summary_reads_the_pruned_layers_inside_a_users_block():
    # Before, `summary` did not look inside a layer of the user's own class: the block's
    # pruned Dense was left out (one row of two).
    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            schedule = prune.ConstantSparsity(0.5, frequency=1)
            self.dense = prune.PrunedLayer(keras.layers.Dense(16), schedule)

        def call(self, inputs, training=None):
            return self.dense(inputs, training=training)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.block = Block()
            self.out = keras.layers.Dense(3)

        def call(self, inputs, training=None):
            return self.out(self.block(inputs, training=training))

    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    model = Subclassed()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.arange(32) % 3, epochs=1, batch_size=16, verbose=0)
    summary = prune.summary(model)
    assert [row["parameters"] for row in summary.layers] == [128, 48]
    assert summary.layers[0]["sparsity"] == pytest.approx(0.5)
    assert summary.sparsity == pytest.approx(64 / 176)


def test_summary_counts_a_layer_that_two_blocks_share_once():
    class Block(keras.layers.Layer):
        def __init__(self, dense, **kwargs):
            super().__init__(**kwargs)
            self.dense = dense

        def call(self, inputs):
            return self.dense(inputs)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            shared = prune.PrunedLayer(keras.layers.Dense(8), prune.ConstantSparsity(0.5))
            self.first, self.second = Block(shared), Block(shared)
            self.out = keras.layers.Dense(3)

        def call(self, inputs):
            return self.out(self.second(self.first(inputs)))

    model = Subclassed()
    model(np.zeros((1, 8), "float32"))
    assert [row["parameters"] for row in prune.summary(model).layers] == [64, 24]


class _DenseBlock(keras.layers.Layer):
    """A user's block whose code makes its Dense: `prune` rebuilds the graph, not this."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(16, name="inner_dense")

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, inputs):
        return keras.ops.relu(self.dense(inputs))

    def compute_output_shape(self, input_shape):  # for TimeDistributed
        return (*input_shape[:-1], 16)


def _block_models():
    inputs = keras.Input((8,))
    functional = keras.Model(
        inputs, keras.layers.Dense(3, name="head")(_DenseBlock(name="block")(inputs))
    )
    sequential = keras.Sequential([_DenseBlock(name="block"), keras.layers.Dense(3, name="head")])
    return [functional, sequential]


@pytest.mark.parametrize("index", [0, 1], ids=["functional", "sequential_never_called"])
def test_kernels_a_users_block_holds_are_named_not_left_dense_silently(index):
    # Before, the block's Dense stayed dense without a word: summary then reported half
    # the target sparsity of a model that `prune` was asked to prune to 0.5.
    model = _block_models()[index]
    with pytest.warns(
        UserWarning, match=r"not pruned: 'block/inner_dense' \(made by _DenseBlock\)\. "
    ) as record:
        pruned = prune.prune(model, prune.ConstantSparsity(0.5, frequency=1))
    assert [w.filename for w in record if "keeps whole" in str(w.message)] == [__file__]
    x = np.random.default_rng(0).normal(size=(32, 8)).astype("float32")
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, np.arange(32) % 3, epochs=1, batch_size=16, verbose=0)
    rows = {row["name"]: row["sparsity"] for row in prune.summary(pruned).layers}
    assert rows == {"inner_dense": 0.0, "head": pytest.approx(0.5, abs=0.03)}
    # Leaving the block out on purpose is silent; naming what it holds says where it is.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prune.prune(model, 0.5, exclude=["block"])
    assert not [w for w in caught if "keeps whole" in str(w.message)]
    with pytest.raises(
        ValueError,
        match=r"\['inner_dense'\].*'inner_dense' is inside 'block' \(as 'block/inner_dense'\)",
    ):
        prune.prune(model, 0.5, include=["inner_dense"])
    # A selector function meets the block's layers too: one that cannot read them (they
    # are not the model's) does not pick them, and prunes what it picks.
    only_head = lambda layer: model.get_layer(layer.name).name == "head"  # noqa: E731
    pruned = prune.prune(model, 0.5, include=only_head)
    assert [type(layer).__name__ for layer in pruned.layers if "head" in layer.name] == [
        "PrunedLayer"
    ]


class _LateBlock(keras.layers.Layer):
    """A user's block that makes a Dropout when made and its Dense in `build`, when it
    first sees its input."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dropout = keras.layers.Dropout(0.1)

    def build(self, input_shape):
        self.dense = keras.layers.Dense(input_shape[-1], name="late_dense")
        self.dense.build(input_shape)

    def call(self, inputs):
        return self.dense(self.dropout(inputs))


class _Twice(keras.layers.Layer):
    """A user's layer without a `build` of its own: it can make no layers."""

    def call(self, inputs):
        return inputs * 2.0


class _MyDense(keras.layers.Dense):
    """A user's subclass of a Keras layer that `prune` wraps itself."""


class _Scale(keras.layers.Layer):
    """A user's layer whose `build` makes a weight only: the usual kind."""

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.scale = self.add_weight(
            shape=(shape[-1],), initializer=keras.initializers.Constant(1.0), name="scale"
        )

    def call(self, inputs):
        return inputs * self.scale


class _ScaleOnTop(_Scale):
    def build(self, input_shape):
        super().build(input_shape)
        self.offset = self.add_weight(shape=(), initializer="zeros")


class _LateOnTop(_LateBlock):
    def build(self, input_shape):
        super().build(input_shape)


def _make_dense():
    return keras.layers.Dense(4)


class _HelperBlock(keras.layers.Layer):
    def build(self, input_shape):
        self.dense = _make_dense()


class _Maker:
    """Not a layer, but makes one."""

    def make(self):
        return keras.layers.Dense(4)


class _LocalAlias(keras.layers.Layer):
    def build(self, input_shape):
        layers = keras.layers
        self.dense = layers.Dense(4)


class _PlainClass(keras.layers.Layer):
    def build(self, input_shape):
        self.maker = _Maker()


class _Deserialized(keras.layers.Layer):
    def build(self, input_shape):
        self.dense = keras.layers.deserialize({"class_name": "Dense", "config": {"units": 4}})


class _AttentionOnTop(keras.layers.MultiHeadAttention):
    def build(self, *shapes):  # Keras's build, which makes sublayers
        super().build(*shapes)


class _BuildsHeld(keras.layers.Layer):
    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner

    def build(self, input_shape):
        self.inner.build(input_shape)


class _Mixin(keras.layers.Layer):
    def build(self, input_shape):
        super().build(input_shape)


class _Cooperative(_Mixin, _LateBlock):
    """_Mixin's super().build reaches _LateBlock's in this class's MRO."""


class _Traced(keras.layers.Layer):
    @staticmethod
    def build(input_shape):
        print(len(input_shape))


def test_a_build_that_makes_weights_alone_is_read_as_such():
    from tfkd import _build_code

    makes_layers = {
        cls.__name__: _build_code.build_may_make_layers(cls())
        for cls in (_Scale, _ScaleOnTop, _LateBlock, _LateOnTop, _HelperBlock, _Twice)
    }
    assert makes_layers == {
        "_Scale": False,  # add_weight, an initializer class, tuple(...)
        "_ScaleOnTop": False,  # super().build reaches _Scale's
        "_LateBlock": True,  # keras.layers.Dense(...)
        "_LateOnTop": True,  # super().build reaches _LateBlock's
        "_HelperBlock": True,  # a function of the user's own
        "_Twice": False,  # no build of its own: Keras's
    }
    # Read as may: each of these makes a layer, or may (a wrong "no" hides a warning).
    may = [
        _LocalAlias(),
        _PlainClass(),
        _Deserialized(),
        _AttentionOnTop(2, 4),
        _BuildsHeld(_LateBlock()),
        _Cooperative(),
    ]
    assert [_build_code.build_may_make_layers(layer) for layer in may] == [True] * 6
    assert not _build_code.build_may_make_layers(_BuildsHeld(keras.layers.Dense(4)))
    assert not _build_code.build_may_make_layers(_Traced())  # a staticmethod: read, not raised
    namespace = {"keras": keras}
    exec("class Unreadable(keras.layers.Layer):\n    def build(self, shape): pass", namespace)
    assert _build_code.build_may_make_layers(namespace["Unreadable"]())  # no source to read


def test_a_never_called_block_that_makes_layers_in_build_is_named():
    # Before, such a block held no kernel when `prune` ran: no warning, and the Dense its
    # `build` made when the model was first called stayed dense.
    def model():
        layers = [_LateBlock(name="late"), _Scale(), _Twice(), _MyDense(8), keras.layers.Dense(3)]
        return keras.Sequential(layers)

    with pytest.warns(UserWarning) as record:
        pruned = prune.prune(model(), 0.5)
    (message,) = [str(w.message) for w in record if "of your own class" in str(w.message)]
    assert "so such layers will not be pruned. Blocks: 'late' (_LateBlock). A" in message
    # No build / weights alone (before, named) / wrapped.
    assert "_Twice" not in message and "_Scale" not in message and "_MyDense" not in message
    assert [type(layer).__name__ for layer in pruned.layers] == [
        "_LateBlock",
        "_Scale",
        "_Twice",
        "PrunedLayer",
        "PrunedLayer",
    ]
    # A block that a TimeDistributed wraps is named by its path (before, not at all).
    steps = keras.Sequential(
        [
            keras.layers.TimeDistributed(_LateBlock(name="inner"), name="steps"),
            keras.layers.Dense(3),
        ]
    )
    with pytest.warns(UserWarning, match=r"Blocks: 'steps/inner' \(_LateBlock\)\."):
        prune.prune(steps, 0.5)
    built = model()
    built(np.zeros((1, 8), "float32"))
    with pytest.warns(UserWarning, match=r"not pruned: 'late/late_dense' \(made by _LateBlock\)"):
        prune.prune(built, 0.5)
    with warnings.catch_warnings(record=True) as caught:  # left out on purpose: silent
        warnings.simplefilter("always")
        prune.prune(model(), 0.5, exclude=["late"])
        with quiet_unreached():  # as a pipeline stage logs it once instead
            prune.prune(model(), 0.5)
    assert not [w for w in caught if "of your own class" in str(w.message)]


class _Outer(keras.layers.Layer):
    """A block that holds a block of the user's own, a PrunedLayer it wraps itself, and a
    Sequential it makes."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.inner = _DenseBlock(name="inner")
        self.own = prune.PrunedLayer(keras.layers.Dense(8), prune.ConstantSparsity(0.5))
        self.attention = keras.layers.MultiHeadAttention(2, 4)
        self.mlp = keras.Sequential([keras.layers.Dense(8, name="mlp_dense")], name="mlp")

    def call(self, inputs):
        return self.mlp(self.own(self.inner(inputs)))


def test_a_block_inside_a_block_in_a_nested_model_is_named_by_its_path():
    inner = keras.Sequential([keras.Input((8,)), _Outer(name="outer")], name="backbone")
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(inner(inputs)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prune.prune(model, 0.5)
    (message,) = [str(w.message) for w in caught if "keeps whole" in str(w.message)]
    # The Dense that _DenseBlock makes and the one in the Sequential _Outer makes, not the
    # PrunedLayer _Outer wraps itself, nor the attention's Dense layers (Keras's own layer,
    # not opened).
    assert (
        "not pruned: 'outer/inner/inner_dense' (made by _DenseBlock), "
        "'outer/mlp/mlp_dense' (made by _Outer). To have" in message
    )
    # Where the blocks hold the only kernels, the error says where they are.
    only_blocks = keras.Sequential([keras.Input((8,)), _DenseBlock(name="block")])
    with pytest.raises(ValueError, match=r"Nothing to prune.*kept whole.*\['block/inner_dense'\]"):
        prune.prune(only_blocks, 0.5, exclude=["block"])
    with pytest.raises(TypeError, match=r"'block' was selected.*\['block/inner_dense'\]"):
        prune.prune(only_blocks, 0.5, include=["block"])


def test_layers_that_time_distributed_wraps_are_named_and_it_is_copied_whole():
    # Before: prune and cluster_weights raised Keras's "Could not locate class
    # '_DenseBlock'" (not registered) copying the TimeDistributed; its Dense stayed dense with no
    # warning; cluster_weights and prune_channels refused it as a tfkd wrapper to strip.
    from tfkd import cluster

    inputs = keras.Input((5, 6))
    x = keras.layers.Dense(6, name="proj")(inputs)
    x = keras.layers.TimeDistributed(keras.layers.Dense(8), name="frames")(x)
    x = keras.layers.TimeDistributed(_DenseBlock(name="block"), name="steps")(x)
    outputs = keras.layers.Dense(3, name="head")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(32, 5, 6)).astype("float32")
    with pytest.warns(UserWarning) as record:
        pruned = prune.prune(model, prune.ConstantSparsity(0.5, frequency=1))
    copy = _graph.copy_model(model)  # as the pipeline's stages copy a model (it raised too)
    np.testing.assert_array_equal(copy.predict(x, verbose=0), model.predict(x, verbose=0))
    for name in ("frames", "steps"):  # copied whole, with their weights
        for old, new in zip(model.get_layer(name).weights, pruned.get_layer(name).weights):
            np.testing.assert_array_equal(old, new)
    (message,) = [str(w.message) for w in record if "TimeDistributed" in str(w.message)]
    assert "not pruned: 'frames/dense' (in TimeDistributed)." in message
    assert "use the Dense alone" in message
    assert "not pruned: 'steps/block/inner_dense' (made by _DenseBlock)" in message
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, np.arange(32) % 3, epochs=1, batch_size=16, verbose=0)
    sparsity = {row["path"]: row["sparsity"] for row in prune.summary(pruned).layers}
    assert sparsity == {  # the summary reads what the wrappers hold too
        "proj": pytest.approx(0.5, abs=0.03),
        "frames/dense": 0.0,
        "steps/block/inner_dense": 0.0,
        "head": pytest.approx(0.5, abs=0.03),
    }
    with pytest.warns(UserWarning, match=r"not clustered: 'frames/dense' \(in TimeDistributed\)"):
        cluster.cluster_weights(model, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prune.prune(model, 0.5, exclude=["frames", "steps"])
        clustered = cluster.cluster_weights(model, 8, exclude=["frames", "steps"])
    assert not [w for w in caught if "TimeDistributed" in str(w.message)]
    np.testing.assert_allclose(
        prune.strip(pruned).predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5
    )
    assert [type(layer).__name__ for layer in clustered.layers][2:4] == ["TimeDistributed"] * 2
    with pytest.raises(ValueError, match=r"proj .*'frames' wraps another layer, whose channels"):
        prune.prune_channels(model, 0.5)
    # Other wrappers, and a Dense TimeDistributed does not wrap itself, get no Dense hint
    # (without its wrapper, a SpectralNormalization's Dense would lose its normalization).
    nested = keras.Sequential([keras.layers.Dense(4, name="inner")], name="nested")
    other = keras.Sequential(
        [
            keras.Input((5, 6)),
            keras.layers.SpectralNormalization(keras.layers.Dense(4, name="d"), name="sn"),
            keras.layers.TimeDistributed(nested, name="frames"),
            keras.layers.Dense(2, name="head"),
        ]
    )
    with pytest.warns(UserWarning) as record:
        prune.prune(other, 0.5)
    (message,) = [str(w.message) for w in record if "not tfkd's" in str(w.message)]
    assert "'sn/d' (in SpectralNormalization), 'frames/nested/inner' (in" in message
    assert "Dense alone" not in message


# Heavy: on JAX, 23 of its 24 s in CI make MobileNetV3Small's weights; what it checks is a
# walk of the layer graph, the same on every backend.
@pytest.mark.heavy
def test_library_models_hold_no_block_of_the_users_own():
    # keras.applications, KerasHub and tfkd layers are theirs: not opened, no warning.
    application = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), weights=None, include_top=False, minimalistic=True
    )
    assert _graph.held_layers(list(_graph.leaf_layers(application))) == {}
    assert prune.pruning._unreached_layers(application) is None


def test_bad_input_errors_name_the_problem():
    model = small_cnn(8, "m")
    with pytest.raises(ValueError, match="Received: include.*conv.*logits"):
        prune.prune(model, 0.5, include=lambda layer: False)
    with pytest.raises(ValueError, match=r"not in the model\. Received: \['nope'\]"):
        prune.prune(model, 0.5, exclude=["nope"])
    with pytest.raises(TypeError, match="'features'.*cannot be pruned.*GlobalAveragePooling2D"):
        prune.prune(model, 0.5, include=["features"])
    with pytest.raises(ValueError, match="'conv'.*multiple of 4.*1 input channels"):
        prune.prune(model, 0.5, pattern="2:4")
    with pytest.raises(ValueError, match="scope"):
        prune.prune(model, 0.5, scope="model")
    with pytest.raises(ValueError, match="global threshold"):
        prune.prune(model, 0.5, scope="global", pattern="2:4", exclude=["conv"])
    with pytest.raises(TypeError, match="schedule"):
        prune.prune(model, "0.5")
    with pytest.raises(ValueError, match=r"target_sparsity.*Received: target_sparsity=1\.0"):
        prune.prune(model, 1.0)
    with pytest.raises(ValueError, match="already pruned"):
        prune.prune(prune.prune(model, 0.5), 0.5)
    no_kernels = keras.Sequential([keras.Input((4,)), keras.layers.ReLU()])
    with pytest.raises(ValueError, match="Nothing to prune"):
        prune.prune(no_kernels, 0.5)
    depthwise = keras.Sequential(
        [keras.Input((5, 5, 4)), keras.layers.DepthwiseConv2D(3, name="dw")]
    )
    with pytest.raises(ValueError, match="'dw'.*no input-channel axis"):
        prune.prune(depthwise, 0.5, pattern="2:4")
    with pytest.raises(TypeError, match="'up' cannot be pruned.*Conv2DTranspose"):
        prune.PrunedLayer(keras.layers.Conv2DTranspose(2, 3, name="up"), 0.5)


def test_supported_types_cover_the_issue_list():
    names = {layer_type.__name__ for layer_type in _kernels.SUPPORTED_TYPES}
    assert {"Dense", "Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Embedding"} <= names


def test_summary_reads_kernels_inside_a_quantization_aware_model():
    # Issue 14, item 10: the summary of a QAT model had no rows (sparsity 0.0).
    from tfkd import quantize

    x, y = random_images(64)
    schedule = prune.ConstantSparsity(0.5, frequency=1)
    pruned = prune.prune(small_cnn(4, "m", batch_norm=True), schedule)
    _trained_copy(pruned, x, y, epochs=1)
    qat_model = _trained_copy(quantize.quantize_aware(pruned), x, y, epochs=1)
    report = prune.summary(qat_model)
    rows = [(row["name"], row["type"], row["parameters"], row["zeros"]) for row in report.layers]
    assert rows == [("conv", "Conv2D", 36, 18), ("logits", "Dense", 12, 6)]
    assert report.sparsity == 0.5


def test_keras_ops_calls_in_a_functional_model_are_copied():
    # `x + 3.0` on Keras tensors is an operation, not a layer: copying it raised
    # `AttributeError: 'Add' object has no attribute 'set_weights'`.
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)
    outputs = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    x, y = random_images(64)
    pruned = _trained_copy(prune.prune(model, prune.ConstantSparsity(0.5, frequency=1)), x, y)
    stripped = prune.strip(pruned)
    np.testing.assert_allclose(
        stripped.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6
    )
    assert prune.summary(stripped).sparsity == 0.5
