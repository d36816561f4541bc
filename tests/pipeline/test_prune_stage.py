"""The prune stage: N:M patterns on models where some layers cannot follow them, `exclude`,
errors before any stage runs, and a schedule that prunes gradually in short runs too."""

import json
import re
import textwrap
import warnings

import keras
import numpy as np
import pytest

import tfkd
from tfkd.export._interpreter import integer_kernels
from tfkd.pipeline import ConfigError, Data, Prune, PruneChannels, Train

STUDENT = {"architecture": "cnn", "filters": [8, 16]}


@pytest.fixture(scope="module")
def data():
    return Data.load("fashion_mnist", train_size=512, test_size=128)


def _execute(stages, data, directory):
    return tfkd.Pipeline(stages).execute(
        data, directory, tensorboard=False, verbose=0, log=lambda _: None
    )


def _kernel(directory, stage, layer):
    model = keras.saving.load_model(directory / "stages" / stage / "model.keras")
    return keras.ops.convert_to_numpy(model.get_layer(layer).kernel)


def test_2_4_on_the_built_in_cnn_leaves_the_first_conv_dense_and_says_so(data, tmp_path):
    stages = [
        Train(STUDENT, epochs=1, name="scratch"),
        Prune(pattern="2:4", epochs=1, batch_size=64, name="pruned"),
    ]
    report = _execute(stages, data, tmp_path)  # before: ValueError from conv1, mid-run
    entry = json.loads((tmp_path / "stages" / "pruned" / "entry.json").read_text())
    assert entry["details"]["left_dense"] == {"conv1": "1 input channels, not a multiple of 4"}
    assert report.notes == [
        "pruned: pattern 2:4 does not fit, left dense: conv1 (1 input channels, not a multiple "
        "of 4)"
    ]
    assert "- pruned: pattern 2:4 does not fit, left dense: conv1" in report.markdown()
    assert np.count_nonzero(_kernel(tmp_path, "pruned", "conv1") == 0) == 0
    for layer in ("conv2", "logits"):
        kernel = _kernel(tmp_path, "pruned", layer)
        assert tfkd.prune.follows_pattern(kernel, 2, 4)
        assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.01)


def test_exclude_takes_names_and_regular_expressions(data, tmp_path):
    stages = [
        Train(STUDENT, epochs=0, name="scratch"),
        Prune(target_sparsity=0.5, exclude=["conv.*"], epochs=1, batch_size=64, name="pruned"),
    ]
    _execute(stages, data, tmp_path)
    assert np.mean(_kernel(tmp_path, "pruned", "logits") == 0) == pytest.approx(0.5, abs=0.01)
    for layer in ("conv1", "conv2"):
        assert np.count_nonzero(_kernel(tmp_path, "pruned", layer) == 0) == 0


def test_a_prune_stage_trains_and_prunes_the_layers_the_incoming_model_held_frozen(data, tmp_path):
    # A transfer stage leaves the lower backbone frozen, as may a loaded file. A frozen
    # layer keeps its mask (as BatchNormalization its statistics), so a compression stage
    # trains every layer but the frozen BatchNormalization: before, frozen kernels were
    # masked without training to make up; the library alone would now leave them dense.
    # A train (or distill) stage leaves frozen layers frozen, as the user froze them.
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(8, 3, name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    model.get_layer("conv").trainable = False
    model.get_layer("bn").trainable = False
    model.save(tmp_path / "frozen.keras")
    stages = [
        tfkd.pipeline.Load(str(tmp_path / "frozen.keras"), name="loaded"),
        Train(epochs=1, batch_size=64, name="trained", from_stage="loaded"),
        Prune(target_sparsity=0.5, epochs=1, batch_size=64, name="pruned", from_stage="loaded"),
    ]
    report = _execute(stages, data, tmp_path / "run")
    kernel = _kernel(tmp_path / "run", "pruned", "conv")
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.02)
    assert report.notes == ["pruned: trained 1 layers the incoming model held frozen"]
    pruned = keras.saving.load_model(tmp_path / "run" / "stages" / "pruned" / "model.keras")
    assert not pruned.get_layer("bn").trainable
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(pruned.get_layer("bn").moving_mean),
        keras.ops.convert_to_numpy(model.get_layer("bn").moving_mean),
    )
    original = keras.ops.convert_to_numpy(model.get_layer("conv").kernel)
    np.testing.assert_array_equal(_kernel(tmp_path / "run", "trained", "conv"), original)
    assert not np.array_equal(_kernel(tmp_path / "run", "trained", "logits"), _kernel_of(model))


def _kernel_of(model, layer="logits"):
    return keras.ops.convert_to_numpy(model.get_layer(layer).kernel)


@pytest.mark.parametrize(
    "prune, argument, message",
    [
        (
            Prune(target_sparsity=0.6667, pattern="1:3"),
            "pattern",
            "Nothing to prune: pattern '1:3' fits none",
        ),
        (Prune(exclude=["conv9"]), "exclude", "`exclude` matches no layer"),
        (Prune(exclude=[".*"]), "exclude", "Nothing to prune"),
    ],
    ids=["pattern_fits_no_layer", "exclude_matches_no_layer", "exclude_leaves_nothing"],
)
def test_a_prune_stage_that_cannot_apply_fails_before_any_stage_runs(
    prune, argument, message, data, tmp_path
):
    # conv1 has 1 input channel, conv2 8 and logits 16: no multiple of 3
    stages = [Train(STUDENT, epochs=1, name="scratch"), prune]
    with pytest.raises(ValueError, match=message) as info:
        _execute(stages, data, tmp_path)
    assert (info.value.stage, info.value.argument) == ("prune", argument)
    assert not tmp_path.joinpath("stages").exists()  # nothing was trained


def test_exclude_is_checked_against_the_classifier_a_transfer_stage_makes(data, tmp_path):
    transfer = tfkd.pipeline.Transfer(image_size=32, head_epochs=1, fine_tune_epochs=0)
    stages = [transfer, Prune(exclude=["Conv1_typo"], epochs=1, name="pruned")]
    with pytest.raises(ValueError, match="Conv1_typo") as info:
        _execute(stages, data, tmp_path)  # before: after the fine-tuning
    assert (info.value.stage, info.value.argument) == ("pruned", "exclude")
    assert not tmp_path.joinpath("stages").exists()
    # The names of the classifier `fine_tune` makes (MobileNetV2's, and the new head's).
    Prune(exclude=["block_2_expand", "head_logits"])._check_input_model(
        lambda: transfer.classifier(data), None
    )


def test_from_a_config_it_is_a_config_error_at_the_key(tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        textwrap.dedent(
            """\
            data: {name: fashion_mnist, train_size: 256, test_size: 64}
            stages:
              - {stage: train, name: scratch, model: {architecture: cnn, filters: [8, 16]}}
              - stage: prune
                pattern: "1:3"
                target_sparsity: 0.6667
            """
        )
    )
    with pytest.raises(ConfigError, match=r"pipeline.yaml:5: stages\[1\].pattern: Nothing"):
        tfkd.pipeline.run_config(config, tmp_path / "out", log=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_exclude_is_checked_when_the_stage_is_made():
    with pytest.raises(TypeError, match="`exclude` must be a list of layer names"):
        Prune(exclude="conv1")
    with pytest.raises(ValueError, match="invalid regular expression"):
        Prune(exclude=["conv("])


def _updates(schedule, steps):
    """`{step: sparsity}` at the steps where masks are recomputed."""
    return {
        step: round(float(schedule(step)), 4)
        for step in range(steps)
        if bool(schedule.should_update(step))
    }


def test_a_short_run_prunes_gradually_and_a_long_one_as_before():
    # --quick: 2,000 examples, batch 128, one epoch: 16 steps (before: updates at 0 and 11
    # only, i.e. from 0 to the full sparsity in one step)
    updates = _updates(Prune(target_sparsity=0.5).schedule(16), 16)
    levels = sorted(set(updates.values()))
    assert len(levels) >= 8 and levels[0] == 0.0 and levels[-1] == 0.5
    assert list(updates.values()) == sorted(updates.values())
    # the default run (60,000 examples, 3 epochs): every 100 steps, as before
    assert Prune(target_sparsity=0.5).schedule(3 * 469).frequency == 100


def test_sparsity_the_former_name_of_target_sparsity_is_still_read(tmp_path):
    with pytest.warns(DeprecationWarning, match="`sparsity` is deprecated .* `target_sparsity`"):
        stage = Prune(sparsity=0.3)
    assert stage.target_sparsity == 0.3
    with pytest.warns(DeprecationWarning, match="read `target_sparsity`"):
        assert stage.sparsity == 0.3
    assert stage.get_config() == Prune(target_sparsity=0.3).get_config()
    assert "sparsity" not in stage.get_config()
    with pytest.raises(TypeError, match="got both `sparsity` .* and `target_sparsity`"):
        Prune(sparsity=0.3, target_sparsity=0.3)
    with pytest.warns(DeprecationWarning, match="`final_sparsity` is deprecated"):
        schedule = tfkd.prune.PolynomialDecay(0.0, final_sparsity=0.8, end_step=10)
    assert schedule.get_config() == tfkd.prune.PolynomialDecay(0.0, 0.8, 0, 10).get_config()
    old = {**schedule.get_config(), "final_sparsity": 0.8}
    del old["target_sparsity"]
    with pytest.warns(DeprecationWarning):  # a config saved before the rename
        assert tfkd.prune.PolynomialDecay.from_config(old).target_sparsity == 0.8
    config = tmp_path / "pipeline.yaml"
    stages = "stages:\n  - {stage: train, model: {architecture: cnn}}\n  - {stage: prune, %s}\n"
    config.write_text("data: fashion_mnist\n" + stages % "sparsity: 0.3")
    (_, loaded) = tfkd.pipeline.load_config(config).pipeline.stages
    assert loaded.get_config() == Prune(target_sparsity=0.3).get_config()
    config.write_text("data: fashion_mnist\n" + stages % "sparsity: 1.5")
    with pytest.raises(ConfigError, match=r"yaml:4: stages\[1\].target_sparsity: .* in \[0, 1\)"):
        tfkd.pipeline.load_config(config)
    config.write_text("data: fashion_mnist\n" + stages % "sparsity: 0.3, target_sparsity: 0.3")
    with pytest.raises(ConfigError, match=r"stages\[1\].sparsity: `sparsity` is the deprecated"):
        tfkd.pipeline.load_config(config)


def test_prune_channels_stage_shrinks_the_model_the_next_stages_get(data, tmp_path):
    stages = [
        Train(STUDENT, epochs=1, name="scratch"),
        PruneChannels(target_sparsity=0.5, importance="batch_norm", epochs=1, batch_size=64),
        tfkd.pipeline.Export(quantization="int8", name="int8"),
    ]
    report = _execute(stages, data, tmp_path)
    shrunk = keras.saving.load_model(tmp_path / "stages" / "prune_channels" / "model.keras")
    assert [shrunk.get_layer(name).filters for name in ("conv1", "conv2")] == [4, 8]
    entry = json.loads((tmp_path / "stages" / "prune_channels" / "entry.json").read_text())
    assert entry["details"]["left_whole"] == {"logits": ["its channels are the model's output"]}
    rows = {row["name"]: row for row in report.rows}
    assert rows["prune_channels"]["parameters"] < 0.4 * rows["scratch"]["parameters"]
    assert rows["int8"]["accuracy"] is not None


def test_the_stages_after_prune_channels_are_checked_before_any_stage_runs(data, tmp_path):
    # prune_channels's output was unknown until trained, so the stages after it were
    # not checked: a second quantize_aware failed after three stages had trained, each of
    # its layers named as one it "cannot quantize-aware train".
    stages = [
        Train(STUDENT, epochs=1, name="scratch"),
        PruneChannels(target_sparsity=0.5, epochs=1, batch_size=64, name="narrow"),
        tfkd.pipeline.QuantizeAware(epochs=1, name="qat"),
        tfkd.pipeline.QuantizeAware(epochs=1, name="again"),
    ]
    with pytest.raises(ValueError, match="receives a model that is already quantization-aware"):
        _execute(stages, data, tmp_path)
    assert not tmp_path.joinpath("stages").exists()  # nothing was trained
    # The spec the checks build: the architecture with as many channels removed.
    spec = tfkd.pipeline.architectures.shrunk(STUDENT, stages[1])
    model = tfkd.pipeline.architectures.build(spec, data, seed=0)
    assert [model.get_layer(name).filters for name in ("conv1", "conv2")] == [4, 8]


def test_prune_channels_stage_checks_its_keys(tmp_path):
    with pytest.raises(ValueError, match=r"importance.*Received: importance='big'"):
        PruneChannels(importance="big")
    with pytest.raises(ValueError, match="target_sparsity"):
        PruneChannels(target_sparsity=1.0)
    with pytest.raises(TypeError, match="pattern"):
        PruneChannels(pattern="2:4")
    path = tmp_path / "config.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: channels
            data: {name: fashion_mnist}
            stages:
              - {stage: train, model: {architecture: cnn, filters: [8, 16]}}
              - {stage: prune_channels, target_sparsity: 0.3, importance: taylor}
              - {stage: prune_channels, name: again, importance: l7}
            """
        )
    )
    errors = tfkd.pipeline.config.check_config(path)
    assert len(errors) == 1 and "stages[2].importance" in errors[0] and "'l7'" in errors[0]


def test_prune_channels_that_cannot_apply_fails_before_any_stage_runs(data, tmp_path):
    stages = [Train(STUDENT, epochs=1, name="scratch"), PruneChannels(exclude=["nope"])]
    with pytest.raises(ValueError, match=r"`exclude` names layers .* Received: \['nope'\]") as e:
        _execute(stages, data, tmp_path)  # before: after `scratch` trained
    assert (e.value.stage, e.value.argument) == ("prune_channels", "exclude")
    # Only the logits' channels, which cannot shrink: the model given is the cause.
    inputs = keras.Input((28, 28, 1))
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))
    stages = [Train(keras.Model(inputs, outputs), epochs=1, name="scratch"), PruneChannels()]
    with pytest.raises(ValueError, match="Nothing to prune") as e:
        _execute(stages, data, tmp_path)
    assert (e.value.stage, e.value.argument) == ("prune_channels", "from_stage")
    assert not tmp_path.joinpath("stages").exists()
    built = tfkd.pipeline.architectures.build(STUDENT, data, seed=0)
    PruneChannels(exclude=["conv1"])._check_input_model(lambda: built, None)


def test_cluster_stage_after_pruning_keeps_zeros_and_few_values(data, tmp_path):
    # Without BatchNormalization: the converter folds it into the kernel before it, one
    # factor per channel, and a kernel then keeps 8 values per channel, not per kernel.
    stages = [
        Train({**STUDENT, "batch_norm": False}, epochs=1, name="scratch"),
        Prune(target_sparsity=0.5, epochs=1, batch_size=64, name="pruned"),
        tfkd.pipeline.Cluster(clusters=8, epochs=1, batch_size=64, name="clustered"),
        tfkd.pipeline.Export("int8", per_channel=False, calibration_samples=64),
    ]
    _execute(stages, data, tmp_path)
    entry = json.loads((tmp_path / "stages" / "clustered" / "entry.json").read_text())
    # The pruned zeros are one of the 8 clusters (before, 8 centroids and the zeros: 9).
    assert entry["details"]["unique_values"] == {"conv1": 8, "conv2": 8, "logits": 8}
    kernel = _kernel(tmp_path, "clustered", "conv2")
    assert 0.49 <= np.mean(kernel == 0) <= 0.6  # the zero cluster takes the smallest too
    assert len(np.unique(kernel)) == 8
    kernels = integer_kernels(tmp_path / "stages" / "export" / "model.tflite")
    assert len(kernels) == 3  # one scale each, so the file keeps the 8 values too
    assert all(
        len(np.unique(values)) <= 8 and len(scales) == 1 for values, scales in kernels.values()
    )


def test_cluster_stage_counts_each_layer_of_nested_models_that_share_a_name(data, tmp_path):
    def branch(name):
        layers = [keras.layers.Flatten(), keras.layers.Dense(16, activation="relu", name="fc")]
        return keras.Sequential([keras.Input((28, 28, 1)), *layers], name=name)

    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Concatenate()([branch("left")(x), branch("right")(x)])
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
    stages = [
        Train(model=model, epochs=0, name="given"),
        tfkd.pipeline.Cluster(clusters=4, epochs=1, batch_size=64, name="clustered"),
    ]
    _execute(stages, data, tmp_path)
    entry = json.loads((tmp_path / "stages" / "clustered" / "entry.json").read_text())
    # Before, keyed by layer name: {"fc": 4, "logits": 4}, one of the two kernels lost.
    assert entry["details"]["unique_values"] == {"left/fc": 4, "right/fc": 4, "logits": 4}


@keras.saving.register_keras_serializable(package="tfkd_tests")
class TwinBlock(keras.layers.Layer):
    """A user's block holding two layers of one name (Keras allows it inside a layer)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = keras.layers.Conv2D(4, 3, padding="same", name="conv")
        self.second = keras.layers.Conv2D(4, 3, padding="same", name="conv")

    def build(self, input_shape):
        self.first.build(input_shape)
        self.second.build(input_shape)

    def call(self, inputs):
        return self.first(inputs) + self.second(inputs)


def _around(block):
    """A Fashion-MNIST classifier with `block` (a user's layer) as its body."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.GlobalAveragePooling2D()(block(keras.layers.Rescaling(1 / 255)(inputs)))
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def test_cluster_stage_numbers_two_layers_of_one_name_in_a_block(data, tmp_path):
    stages = [
        Train(model=_around(TwinBlock(name="twin")), epochs=0, name="given"),
        tfkd.pipeline.Cluster(clusters=4, epochs=1, batch_size=64, name="clustered"),
    ]
    _execute(stages, data, tmp_path)
    entry = json.loads((tmp_path / "stages" / "clustered" / "entry.json").read_text())
    counts = entry["details"]["unique_values"]
    # The block is kept whole (not clustered), and both of its kernels are counted.
    assert list(counts) == ["twin/conv", "twin/conv (2)", "logits"] and counts["logits"] == 4
    assert counts["twin/conv"] > 4 and counts["twin/conv (2)"] > 4


@pytest.mark.parametrize(
    "between",
    [[], [tfkd.pipeline.Cluster(clusters=8, epochs=0, name="clustered"), Train(epochs=0)]],
    ids=["no_cluster_stage", "trained_after_clustering"],
)
def test_preserve_clusters_without_clusters_fails_before_any_stage_runs(between, data, tmp_path):
    qat = tfkd.pipeline.QuantizeAware(preserve_clusters=True, epochs=1, name="qat")
    with pytest.raises(ValueError, match="receives has none: put a `cluster` stage") as info:
        _execute([Train(STUDENT, epochs=1, name="scratch"), *between, qat], data, tmp_path)
    assert (info.value.stage, info.value.argument) == ("qat", "preserve_clusters")
    assert not tmp_path.joinpath("stages").exists()  # nothing was trained


def test_quantize_aware_on_a_model_it_cannot_quantize_fails_before_any_stage_runs(data, tmp_path):
    # a swish inside the Dense layer would run in float in the int8 file
    inputs = keras.Input((28, 28, 1))
    outputs = keras.layers.Dense(10, activation="swish")(keras.layers.Flatten()(inputs))
    stages = [
        Train(keras.Model(inputs, outputs), epochs=1, name="scratch"),
        tfkd.pipeline.QuantizeAware(epochs=1, name="qat"),
    ]
    with pytest.raises(TypeError, match="quantize_aware cannot quantize every layer") as info:
        _execute(stages, data, tmp_path)  # before: after `scratch` trained
    assert (info.value.stage, info.value.argument) == ("qat", "from_stage")
    assert not tmp_path.joinpath("stages").exists()


@pytest.mark.parametrize(
    "stage",
    [tfkd.pipeline.Cluster(epochs=1, name="late"), Prune(epochs=1, name="late")],
    ids=["cluster", "prune"],
)
def test_a_training_stage_after_an_export_fails_before_any_stage_runs(stage, data, tmp_path):
    stages = [Train(STUDENT, epochs=1, name="scratch"), tfkd.pipeline.Export("int8"), stage]
    with pytest.raises(ValueError, match="needs a Keras model as input, and the stage") as info:
        _execute(stages, data, tmp_path)
    assert (info.value.stage, info.value.argument) == ("late", "from_stage")
    assert not tmp_path.joinpath("stages").exists()


@pytest.mark.parametrize("kind", [tfkd.pipeline.Distill, Prune, tfkd.pipeline.QuantizeAware])
@pytest.mark.parametrize("source", ["export", "nested_export", "load"])
def test_a_teacher_that_gives_a_tflite_file_fails_before_any_stage_runs(
    kind, source, data, tmp_path
):
    exported = tfkd.pipeline.Export(name="file")
    if source == "nested_export":
        exported = tfkd.Pipeline([tfkd.pipeline.Export(name="inner")], name="file")
    if source == "load":
        path = tmp_path / "model.tflite"
        path.write_bytes(b"not read before the check")
        exported = tfkd.pipeline.Load(path, name="file")
    stages = [Train(STUDENT, epochs=1, name="scratch"), exported]
    stages.append(kind(teacher="file", from_stage="scratch", epochs=1, name="late"))
    with pytest.raises(ValueError, match="its teacher 'file' gives a .tflite file") as info:
        _execute(stages, data, tmp_path / "run")  # before: after `scratch` trained
    assert (info.value.stage, info.value.argument) == ("late", "teacher")
    assert not tmp_path.joinpath("run", "stages").exists()


def test_a_training_stage_given_a_loaded_tflite_file_fails_before_any_stage_runs(data, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"not read before the check")
    stages = [
        tfkd.pipeline.Load(path, name="file"),
        Train(STUDENT, epochs=1, name="scratch"),
        tfkd.pipeline.QuantizeAware(from_stage="file", epochs=1, name="late"),
    ]
    with pytest.raises(ValueError, match="needs a Keras model as input, and the stage") as info:
        _execute(stages, data, tmp_path / "run")
    assert (info.value.stage, info.value.argument) == ("late", "from_stage")
    assert not tmp_path.joinpath("run", "stages").exists()


def test_clusters_that_do_not_fit_a_layer_fail_before_any_stage_runs(data, tmp_path):
    # conv1's 3x3x1 kernel has 9 weights per output channel
    stages = [
        Train(STUDENT, epochs=1, name="scratch"),
        tfkd.pipeline.Cluster(clusters=16, per_channel=True, name="clustered"),
        tfkd.pipeline.QuantizeAware(preserve_clusters=True, name="qat"),
    ]
    with pytest.raises(ValueError, match="larger than the number of weights of layer 'conv1'") as e:
        _execute(stages, data, tmp_path)
    assert (e.value.stage, e.value.argument) == ("clustered", "clusters")
    stages[1] = tfkd.pipeline.Cluster(exclude=["nothing_by_this_name"], name="clustered")
    with pytest.raises(ValueError, match="nothing_by_this_name") as e:
        _execute(stages, data, tmp_path)
    assert (e.value.stage, e.value.argument) == ("clustered", "exclude")
    assert not tmp_path.joinpath("stages").exists()


@pytest.mark.parametrize(
    "export, argument",
    [
        ({"quantization": "int8", "per_channel": False}, "per_channel"),
        ({"quantization": None}, "quantization"),
        ({"quantization": "dynamic"}, "quantization"),
        ({"recipe": "int8_weight_only"}, "recipe"),
        ({"quantization": "auto"}, "quantization"),
    ],
)
def test_an_export_a_quantization_aware_model_cannot_take_fails_before_any_stage_runs(
    data, tmp_path, export, argument
):
    # Before: the export refused these ("exports with the per-channel scales it trained",
    # "exports as int8 only") after the training stages had run.
    stages = [
        Train(STUDENT, epochs=1, name="scratch"),
        tfkd.pipeline.Cluster(clusters=4, name="clustered"),
        tfkd.pipeline.QuantizeAware(preserve_clusters=True, name="qat"),
        tfkd.pipeline.Export(**export, name="exported"),
    ]
    with pytest.raises(ValueError, match="receives a quantization-aware model") as e:
        _execute(stages, data, tmp_path)
    assert (e.value.stage, e.value.argument) == ("exported", argument)
    assert not tmp_path.joinpath("stages").exists()


@pytest.mark.parametrize(
    "unfreeze, text", [("block_99_expand", "names no layer"), (5000, "must be in [1, ")]
)
def test_a_transfer_unfreeze_the_backbone_lacks_fails_before_any_stage_runs(
    data, tmp_path, unfreeze, text
):
    # Before: refused by fine_tune when the stage ran, after the stages before it.
    stages = [
        Train(STUDENT, epochs=1, name="scratch"),
        tfkd.pipeline.Transfer(unfreeze=unfreeze, fine_tune_epochs=1, image_size=32, name="t"),
    ]
    with pytest.raises(ValueError, match=re.escape(text)) as e:
        _execute(stages, data, tmp_path)
    assert (e.value.stage, e.value.argument) == ("t", "unfreeze")
    assert not tmp_path.joinpath("stages").exists()


def test_the_export_builds_its_input_only_where_it_may_be_quantization_aware():
    from tfkd.pipeline.architectures import may_be_quantized, quantized

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert may_be_quantized(STUDENT) is False and may_be_quantized(model) is False
    assert may_be_quantized(tfkd.quantize.quantize_aware(model)) is True
    assert may_be_quantized(quantized(STUDENT, None)) is True
    assert may_be_quantized({"path": "teacher.keras"}) is None  # known once loaded


def test_a_model_with_nothing_to_cluster_is_refused_at_from_stage(data, tmp_path):
    # `exclude` is unset, so the model given (no kernel: a crop to 10 pixels) is the cause
    inputs = keras.Input((28, 28, 1))
    outputs = keras.layers.Flatten()(keras.layers.Cropping2D(((27, 0), (18, 0)))(inputs))
    stages = [
        Train(keras.Model(inputs, outputs), epochs=1, name="scratch"),
        tfkd.pipeline.Cluster(name="clustered"),
    ]
    with pytest.raises(ValueError, match="Nothing to cluster") as e:
        _execute(stages, data, tmp_path)
    assert (e.value.stage, e.value.argument) == ("clustered", "from_stage")
    assert not tmp_path.joinpath("stages").exists()


def test_a_never_called_sequential_is_clustered_and_keeps_its_clusters_through_qat(data, tmp_path):
    layers = [keras.layers.Conv2D(8, 3, name="conv"), keras.layers.Flatten(name="flat")]
    model = keras.Sequential([*layers, keras.layers.Dense(10, name="logits")])  # never called
    stages = [
        Train(model=model, epochs=1, batch_size=64, name="scratch"),
        tfkd.pipeline.Cluster(clusters=8, epochs=1, batch_size=64, name="clustered"),
        tfkd.pipeline.QuantizeAware(preserve_clusters=True, epochs=1, batch_size=64, name="qat"),
    ]
    _execute(stages, data, tmp_path)  # the checks before the run build it for the data
    qat = keras.saving.load_model(tmp_path / "stages" / "qat" / "model.keras")
    assert {row["name"]: row["unique_values"] for row in tfkd.cluster.summary(qat)} == {
        "conv": 8,
        "logits": 8,
    }


def test_a_loaded_clustered_model_not_stripped_keeps_its_clusters_through_qat(data, tmp_path):
    model = tfkd.models.cnn(data.input_shape, data.num_classes, filters=[8, 16])
    path = tmp_path / "clustered.keras"
    tfkd.cluster.cluster_weights(model, 8).save(path)  # the wrappers, as fit leaves them
    stages = [
        tfkd.pipeline.Load(str(path), name="clustered"),
        tfkd.pipeline.QuantizeAware(preserve_clusters=True, epochs=1, batch_size=64, name="qat"),
    ]
    _execute(stages, data, tmp_path / "run")
    qat = keras.saving.load_model(tmp_path / "run" / "stages" / "qat" / "model.keras")
    assert {row["unique_values"] for row in tfkd.cluster.summary(qat)} == {8}


def test_cluster_preserving_qat_stage_keeps_the_clusters_in_the_int8_file(data, tmp_path):
    stages = [
        Train(STUDENT, epochs=1, name="scratch"),
        tfkd.pipeline.Cluster(clusters=8, epochs=1, batch_size=64, name="clustered"),
        tfkd.pipeline.QuantizeAware(preserve_clusters=True, epochs=1, batch_size=64, name="qat"),
        tfkd.pipeline.Export("int8", calibration_samples=64),
    ]
    _execute(stages, data, tmp_path)
    qat = keras.saving.load_model(tmp_path / "stages" / "qat" / "model.keras")
    assert {row["name"]: row["unique_values"] for row in tfkd.cluster.summary(qat)} == {
        "conv1": 8,
        "conv2": 8,
        "logits": 8,
    }
    kernels = integer_kernels(tmp_path / "stages" / "export" / "model.tflite")
    assert len(kernels) == 3
    for values, _ in kernels.values():  # a scale per channel: 8 values in each
        assert max(len(np.unique(row)) for row in values.reshape(len(values), -1)) <= 8


@keras.saving.register_keras_serializable(package="tfkd_tests")
class ConvBlock(keras.layers.Layer):
    """A user's block whose code makes its Conv2D: the stages keep it whole."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, padding="same", name="block_conv")

    def build(self, input_shape):
        self.conv.build(input_shape)

    def call(self, inputs):
        return keras.ops.relu(self.conv(inputs))


def test_prune_and_cluster_stages_note_the_layers_a_users_block_keeps(data, tmp_path):
    stages = [
        Train(model=_around(ConvBlock(name="block")), epochs=0, name="given"),
        Prune(target_sparsity=0.5, epochs=1, batch_size=64, name="pruned"),
        tfkd.pipeline.Cluster(clusters=4, epochs=1, batch_size=64, name="clustered"),
    ]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = _execute(stages, data, tmp_path)
    # Once each, as the stage's note (in the report), not as Python warnings too.
    assert not [w for w in caught if "keeps whole" in str(w.message)]
    notes = [note for note in report.notes if "keeps whole" in note]
    assert len(notes) == 2
    assert notes[0].startswith("pruned: tfkd.prune.prune: these layers are inside")
    assert notes[1].startswith("clustered: tfkd.cluster.cluster_weights: these layers")
    assert all("'block/block_conv' (made by ConvBlock)" in note for note in notes)
    entry = json.loads((tmp_path / "stages" / "pruned" / "entry.json").read_text())
    assert entry["details"]["sparsity"] == pytest.approx(0.5 * 40 / (36 + 40), abs=0.02)
