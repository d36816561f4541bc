"""`method`, `method_arguments`, `augmentation`, `mixup` and `cutmix` on the distilling stages:
checked like every key, and each runs end to end."""

import inspect
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest

import tfkd
from tfkd.pipeline import ConfigError, Data, Distill, Load, Prune, QuantizeAware, run_config
from tfkd.pipeline._distillation import METHODS, RENAMED_ARGUMENTS

REPO = pathlib.Path(__file__).resolve().parents[2]
TEACHER = REPO / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
STUDENT = {"architecture": "cnn", "filters": [8, 16]}
# Teacher conv3_relu and student conv2_relu are both 14 x 14 (64 and 16 channels).
LAYERS = {"teacher_layer_name": "conv3_relu", "student_layer_name": "conv2_relu"}

BAD = f"""\
data: {{name: fashion_mnist, train_size: 100, labelled_per_class: 20}}
stages:
  - {{stage: load, name: teacher, path: {TEACHER}}}
  - stage: distill
    name: unknown_method
    teacher: teacher
    method: dkd
  - stage: distill
    name: unknown_argument
    teacher: teacher
    method: decoupled
    method_arguments: {{non_target_weight: 2.0, beta: 8.0}}
  - stage: distill
    name: wrong_type
    teacher: teacher
    method_arguments: {{standardize: 'yes'}}
  - stage: distill
    name: no_layers
    teacher: teacher
    method: attention
  - stage: distill
    name: bad_mixing
    teacher: teacher
    mixup: 0
    cutmix: -1.0
  - stage: distill
    name: copies
    teacher: teacher
    augmented_copies: 1
    augmentation: {{flip: true}}
  - stage: prune
    name: no_teacher
    augmentation: {{flip: true, zoom: 2.0}}
"""


@pytest.fixture(scope="module")
def data():
    return Data.load("fashion_mnist", train_size=256, test_size=64)


@pytest.fixture
def distillers(monkeypatch):
    """The keyword arguments of every Distiller the stages build."""
    built = []
    original = tfkd.distill.Distiller
    # `tfkd.Distiller` is resolved from `tfkd.distill` and kept, also when a `.keras` load
    # imports every name under the spy: restored with the rest, for the tests after these.
    monkeypatch.setattr(tfkd, "Distiller", original)

    def spy(*args, **kwargs):
        built.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(tfkd.distill, "Distiller", spy)
    return built


def _execute(stages, data, directory):
    lines = []
    report = tfkd.Pipeline(stages).execute(
        data, directory, tensorboard=False, verbose=0, log=lines.append
    )
    return report, lines


def test_the_method_table_is_the_loss_classes_signatures():
    for method, (class_name, accepted, required) in METHODS.items():
        loss_class = getattr(tfkd.distill, class_name)
        signature = inspect.signature(loss_class.__init__)
        parameters = {
            name: parameter
            for name, parameter in signature.parameters.items()
            if name not in ("self", "temperature") and parameter.kind is not parameter.VAR_KEYWORD
        }
        assert set(parameters) == set(accepted), method
        names = (
            {"teacher_layer_name", "student_layer_name"}
            if loss_class.requires_layer_names
            else set()
        )
        assert {n for n, p in parameters.items() if p.default is p.empty} | names == set(required)
        for name, parameter in parameters.items():
            if parameter.default not in (parameter.empty, None):
                assert isinstance(parameter.default, accepted[name]), (method, name)
        takes_temperature = "temperature" in signature.parameters
        assert takes_temperature == (method in ("kd", "decoupled", "dist")), method


def test_saving_and_loading_a_distiller_does_not_warn_of_the_deprecated_names(tmp_path):
    # Keras's saving read every attribute `dir` lists, the deprecated properties among
    # them: each save and load warned that `teacher_layer` and `student_layer` are.
    teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    distiller = tfkd.Distiller(teacher, student, temperature=2.0)
    distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller.fit(np.zeros((8, 4), "float32"), np.zeros(8, "int32"), verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        distiller.save(tmp_path / "distiller.keras")
        keras.saving.load_model(tmp_path / "distiller.keras")
    assert not [w for w in caught if "is deprecated and will be removed" in str(w.message)]


def test_the_deprecated_layer_arguments_still_work_in_python_and_configs():
    assert RENAMED_ARGUMENTS == tfkd.distill.losses.RENAMED
    with pytest.warns(DeprecationWarning, match="`teacher_layer` is deprecated"):
        old = tfkd.distill.FeatureDistillation(teacher_layer="conv_2", student_layer="conv_1")
    assert (old.teacher_layer_name, old.student_layer_name) == ("conv_2", "conv_1")
    with pytest.warns(DeprecationWarning, match="read `student_layer_name`"):
        assert old.student_layer == "conv_1"
    config = {**old.get_config(), "teacher_layer": "conv_2"}
    del config["teacher_layer_name"]
    with pytest.warns(DeprecationWarning):  # a config saved before the rename
        assert tfkd.distill.FeatureDistillation.from_config(config).get_config() == old.get_config()
    with pytest.raises(TypeError, match="got both `teacher_layer` .* and `teacher_layer_name`"):
        tfkd.distill.LogitsDistillation(teacher_layer="a", teacher_layer_name="a")
    stage = Distill(
        "teacher", method="feature", method_arguments={"teacher_layer": "a", "student_layer": "b"}
    )
    assert stage.method_arguments == {"teacher_layer_name": "a", "student_layer_name": "b"}
    assert stage.get_config()["method_arguments"] == {"teacher_layer": "a", "student_layer": "b"}
    with pytest.raises(ValueError, match="holds both 'student_layer' .* Keep 'student_layer_name'"):
        Distill(
            "teacher",
            method="feature",
            method_arguments={
                "teacher_layer_name": "a",
                "student_layer": "b",
                "student_layer_name": "b",
            },
        )


def test_every_error_is_listed_by_tfkd_check(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    result = subprocess.run(
        [sys.executable, "-m", "tfkd", "check", path],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=60,
    )
    assert result.returncode == 2
    errors = result.stderr.splitlines()
    expected = [
        ("1: data.labelled_per_class:", "20 per class x 10 classes > 100"),
        ("7: stages[1].method:", "Unknown distillation method. Received: method='dkd'."),
        ("12: stages[2].method_arguments:", "unknown `method_arguments.beta`; Decoupled"),
        ("16: stages[3].method_arguments:", "`method_arguments.standardize` must be true or"),
        ("20: stages[4].method:", "method='attention' compares a teacher layer with a student"),
        ("24: stages[5].mixup:", "`mixup` must be a finite number > 0. Received: mixup=0"),
        ("25: stages[5].cutmix:", "`cutmix` must be a finite number > 0. Received: cutmix=-1.0"),
        ("30: stages[6].augmentation:", "use one of the two. Received: augmentation="),
        ("33: stages[7].augmentation:", "`augmentation.zoom` must be a fraction in [0, 0.9]"),
    ]
    for (where, what), error in zip(expected, errors):
        assert f"tfkd: config error: {path}:{where} " in error and what in error, error
    assert errors[-1] == f"tfkd: {len(expected)} errors in {path}."
    # Fixed, the prune stage's augmentation is accepted without a teacher (it augments the
    # labelled images), but mixup there still needs one.
    text = BAD.replace("zoom: 2.0}", "zoom: 0.1}\n    mixup: 0.2")
    path.write_text(text)
    stderr = subprocess.run(
        [sys.executable, "-m", "tfkd", "check", path], capture_output=True, text=True
    ).stderr
    assert "stages[7].augmentation" not in stderr
    assert f"{path}:34: stages[7].mixup: `mixup` belongs to distillation, so it needs " in stderr


def test_values_are_checked_by_the_loss_before_any_stage_runs(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            data: {{name: fashion_mnist, train_size: 100, test_size: 50}}
            stages:
              - {{stage: load, name: teacher, path: {TEACHER}}}
              - stage: distill
                teacher: teacher
                method: decoupled
                method_arguments: {{non_target_weight: -1.0}}
            """
        )
    )
    assert tfkd.pipeline.config.check_config(path) == []  # a value: the loss checks it
    with pytest.raises(ConfigError) as info:
        run_config(path, tmp_path / "out", tensorboard=False, log=lambda _: None)
    assert str(info.value).startswith(
        f"{path}:7: stages[1].method_arguments: `non_target_weight` must be a finite number >= 0. "
        "Received: non_target_weight=-1.0"
    )
    assert not (tmp_path / "out" / "stages").exists()


@pytest.mark.parametrize(
    "side, layers",
    [
        ("teacher", {"teacher_layer_name": "conv9", "student_layer_name": "conv2_relu"}),
        ("student", {"teacher_layer_name": "conv3_relu", "student_layer_name": "conv9"}),
    ],
)
def test_a_layer_name_that_the_model_lacks_fails_before_any_stage_runs(side, layers, tmp_path):
    # before: refused when the stage ran, after the stages before it
    stages = [
        Load(str(TEACHER), name="teacher"),
        tfkd.pipeline.Train(STUDENT, epochs=1, name="scratch"),
        Distill("teacher", method="feature", method_arguments=layers, epochs=1, name="distilled"),
    ]
    data = Data.load("fashion_mnist", train_size=100, test_size=50)
    with pytest.raises(
        ValueError, match=f"The {side} of stage 'distilled' has no layer named"
    ) as e:
        tfkd.Pipeline(stages).execute(data, tmp_path, tensorboard=False, log=lambda _: None)
    assert (e.value.stage, e.value.argument) == ("distilled", "method_arguments")
    assert not (tmp_path / "stages").exists()


@pytest.mark.parametrize(
    "method, layers, text",
    [
        ("attention", ("conv1_relu", "conv2_relu"), "same spatial size"),
        ("feature", ("conv1_relu", "features"), "project the last axis only"),
    ],
)
def test_layers_whose_shapes_the_loss_cannot_compare_fail_before_any_stage_runs(
    method, layers, text, tmp_path
):
    # Before: the names were checked, their shapes (28x28 against 14x14 attention maps, a
    # 4-D map against a vector) only when the stage ran, after the stages before it.
    arguments = {"teacher_layer_name": layers[0], "student_layer_name": layers[1]}
    stages = [
        Load(str(TEACHER), name="teacher"),
        tfkd.pipeline.Train(STUDENT, epochs=1, name="scratch"),
        Distill("teacher", method=method, method_arguments=arguments, epochs=1, name="distilled"),
    ]
    data = Data.load("fashion_mnist", train_size=100, test_size=50)
    with pytest.raises(ValueError, match=text) as e:
        tfkd.Pipeline(stages).execute(data, tmp_path, tensorboard=False, log=lambda _: None)
    assert (e.value.stage, e.value.argument) == ("distilled", "method_arguments")
    assert not (tmp_path / "stages").exists()


def test_python_arguments_are_checked_too():
    with pytest.raises(ValueError, match="Unknown distillation method. Received: method='DKD'"):
        Distill("teacher", method="DKD")
    with pytest.raises(ValueError, match=r"unknown `method_arguments.temperature`.*stage's own"):
        Distill("teacher", method_arguments={"temperature": 4.0})
    with pytest.raises(ValueError, match="needs `teacher`. Received: mixup=0.2, teacher=None"):
        QuantizeAware(mixup=0.2)
    # Keys that nothing would read are refused, not dropped.
    with pytest.raises(ValueError, match="needs `teacher`. Received: temperature=4.0, teacher="):
        Prune(temperature=4.0)
    with pytest.raises(ValueError, match="Received: student_loss_weight=0.5, teacher=None"):
        QuantizeAware(student_loss_weight=0.5)
    for method in ("feature", "attention", "relational"):
        with pytest.raises(ValueError, match=f"method='{method}' softens no logits.*=8.0"):
            Distill("teacher", method=method, method_arguments=LAYERS, temperature=8.0)
    with pytest.raises(ValueError, match=r"ensemble whose output is the logits.*from_logits"):
        Prune(teacher=["a", "b"], method_arguments={"from_logits": False})
    # ... and read where something softens: several teachers' average, propagation.
    assert Distill(["a", "b"], method="relational", temperature=8.0).temperature == 8.0
    assert (
        Distill("teacher", method="relational", temperature=2.0, propagation=True).temperature
        == 2.0
    )
    with pytest.raises(ValueError, match="`augmentation.shift` must be an integer, not 1.5"):
        Prune(teacher="teacher", augmentation={"shift": 1.5})


def test_the_defaults_leave_the_fingerprint_as_it_was():
    assert "method" not in Distill("teacher").fingerprint()
    assert "mixup" not in Prune(teacher="teacher").fingerprint()
    changed = Distill("teacher", method="dist", mixup=0.2).fingerprint()
    assert changed["method"] == "dist" and changed["mixup"] == 0.2


def test_each_method_distils_one_epoch_and_writes_its_row(data, tmp_path, distillers):
    methods = {
        "kd": {"standardize": True},
        "decoupled": {"non_target_weight": 2.0},
        "dist": None,
        "feature": LAYERS,
        "attention": LAYERS,
        "relational": {"teacher_layer_name": "features", "student_layer_name": "features"},
    }
    stages = [Load(TEACHER, name="teacher")] + [
        Distill(
            "teacher",
            student=STUDENT,
            epochs=1,
            batch_size=64,
            temperature=2.0 if method in ("kd", "decoupled", "dist") else 1.0,
            method=method,
            method_arguments=arguments,
            name=method,
        )
        for method, arguments in methods.items()
    ]
    report, lines = _execute(stages, data, tmp_path)
    assert [row["name"] for row in report.rows] == ["teacher", *methods]
    for row in report.rows:
        assert 0.0 <= row["accuracy"] <= 1.0
    losses = [kwargs["distillation_losses"] for kwargs in distillers]
    assert [type(loss).__name__ for loss in losses] == [METHODS[method][0] for method in methods]
    assert losses[0].standardize and losses[0].temperature == 2.0
    assert losses[1].non_target_weight == 2.0 and losses[2].temperature == 2.0
    assert (
        losses[3].teacher_layer_name == "conv3_relu"
        and losses[4].student_layer_name == "conv2_relu"
    )
    # Cached once for the logits methods; the feature methods read a teacher layer online.
    assert sum("computing teacher's outputs" in line for line in lines) == 1
    for method in methods:
        entry = json.loads((tmp_path / "stages" / method / "entry.json").read_text())
        assert np.isfinite(entry["details"]["train_loss"]).all(), method


def test_augmentation_and_mixing_run_with_the_teacher_online(data, tmp_path, distillers):
    augmentation = {"flip": True, "shift": 2, "rotation": 0.05, "zoom": 0.1}
    stages = [
        Load(TEACHER, name="teacher"),
        Distill(
            "teacher",
            student=STUDENT,
            epochs=1,
            batch_size=64,
            augmentation=augmentation,
            mixup=0.2,
            cutmix=1.0,
            name="mixed",
        ),
        Prune(teacher="teacher", epochs=1, batch_size=64, method="dist", mixup=0.4, name="pruned"),
        QuantizeAware(
            teacher="teacher",
            epochs=1,
            batch_size=64,
            method="decoupled",
            method_arguments={"non_target_weight": 2.0},
            augmentation={"flip": True},
            cutmix=0.5,
            name="qat",
        ),
    ]
    report, lines = _execute(stages, data, tmp_path)
    assert [row["name"] for row in report.rows] == ["teacher", "mixed", "pruned", "qat"]
    mixed, pruned, qat = distillers
    assert type(qat["distillation_losses"]).__name__ == "DecoupledDistillation"
    assert qat["distillation_losses"].non_target_weight == 2.0
    assert [type(layer).__name__ for layer in qat["augmentation"].layers] == ["RandomFlip"]
    assert qat["cutmix"] == 0.5 and "mixup" not in qat
    layers = mixed["augmentation"].layers
    assert [type(layer).__name__ for layer in layers] == [
        "RandomFlip",
        "RandomTranslation",
        "RandomRotation",
        "RandomZoom",
    ]
    assert isinstance(mixed["augmentation"], keras.Sequential)
    assert layers[1].height_factor == layers[1].width_factor == 2 / 28  # 2 pixels
    assert mixed["mixup"] == 0.2 and mixed["cutmix"] == 1.0
    assert pruned["mixup"] == 0.4 and "augmentation" not in pruned
    assert not any("computing teacher's outputs" in line for line in lines)
    entry = json.loads((tmp_path / "stages" / "mixed" / "entry.json").read_text())
    assert np.isfinite(entry["details"]["student_loss"]).all()
