"""Bad inputs to `tfkd.pipeline` and `tfkd.export` (issue 16.9).

Every case is refused before any work: no training, no data set loaded, no conversion.
Configs are small YAML files that fail validation; `.tflite` files are a few bytes.
"""

import keras
import numpy as np
import pytest

import tfkd
from tests.bad_inputs._cases import Case, check, parametrize, tmp
from tfkd import pipeline
from tfkd.export import TFLiteModel, export_tflite
from tfkd.pipeline import (
    ConfigError,
    Data,
    Distill,
    Export,
    Load,
    Pipeline,
    Prune,
    QuantizeAware,
    Report,
    Stage,
    Train,
    Transfer,
    get_stage,
    load_config,
    register_stage,
    run_config,
)

EXEMPT = {
    "tfkd.pipeline.ConfigError": "an exception class (what `load_config` raises)",
    "tfkd.pipeline.Context": "built by the pipeline runner and handed to `Stage.run`; "
    "users never construct it",
    "tfkd.pipeline.PipelineConfig": "a result type: what `load_config` returns",
    "tfkd.pipeline.registered_stages": "a function that takes no arguments",
    "tfkd.export.ExportReport": "a result type: what `export_tflite` returns",
}


def _file(name, content=b"abcd1234"):
    """A file of `content` (a few bytes: no valid .tflite) in the test's tmp directory."""
    path = tmp(name)
    path.write_bytes(content)
    return path


def _config(text, name="pipeline.yaml"):
    path = tmp(name)
    path.write_text(text)
    return path


def _model():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])


def _export(*args, **kwargs):
    """`export_tflite` of a tiny model: every case here fails before the conversion."""
    return export_tflite(_model(), *args, **kwargs)


def _data(x_train=None, y_train=(0, 1), **kwargs):
    x_train = np.zeros((len(y_train), 4), "float32") if x_train is None else x_train
    y_test = kwargs.pop("y_test", np.array([0, 1]))
    return Data(
        x_train, np.asarray(y_train), np.zeros((len(y_test), 4), "float32"), y_test, **kwargs
    )


def _execute(stages=None, **kwargs):
    stages = stages or [Train({"architecture": "cnn"})]
    arguments = {"data": "mnist", "output_dir": tmp("run"), "log": lambda _: None, **kwargs}
    return Pipeline(stages).execute(**arguments)


def _register(name, cls=None):
    cls = cls or type("Custom", (Stage,), {"run": lambda self, model, context: (model, {})})
    return register_stage(name)(cls)


_STAGES = "data: {name: mnist}\nstages:\n"

CASES = [
    # export_tflite: refused before the conversion
    Case(
        export_tflite, lambda: export_tflite("model.keras", "m.tflite"), TypeError, "model", "str"
    ),
    Case(
        export_tflite,
        lambda: export_tflite(keras.layers.Dense(2), "m.tflite"),
        TypeError,
        "model",
        "Dense",
    ),
    Case(export_tflite, lambda: _export("m.tflite", "int4"), ValueError, "quantization", "'int4'"),
    Case(export_tflite, lambda: _export("m.tflite", verbose="yes"), ValueError, "verbose", "'yes'"),
    Case(export_tflite, lambda: _export(3), TypeError, "path", "path=3"),
    # Before: NotADirectoryError naming a temporary `.part` file in the folder.
    Case(export_tflite, lambda: _export("new_folder/"), ValueError, "path", "'new_folder/'"),
    Case(
        export_tflite,
        lambda: _export("m.tflite", "dynamic", per_channel="no"),
        TypeError,
        "per_channel",
        "'no'",
    ),
    Case(
        export_tflite,
        lambda: _export("m.tflite", "float16", per_channel=False),
        ValueError,
        "per_channel",
        "'float16'",
    ),
    Case(export_tflite, lambda: _export("."), ValueError, "path", "path='.'"),
    Case(
        export_tflite,
        lambda: _export(_file("file.txt") / "m.tflite"),
        ValueError,
        "path",
        "file.txt",
    ),
    Case(
        export_tflite,
        lambda: _export(tmp("m.tflite"), "int8", representative_data=np.zeros((8, 3))),
        ValueError,
        "representative_data",
        "(8, 3)",
    ),
    Case(
        export_tflite,
        lambda: _export(tmp("m.tflite"), "int8", representative_data=np.zeros((0, 4))),
        ValueError,
        "representative_data",
        "(0, 4)",
    ),
    # Before: calibrated on one input, and checked against Keras on it (agreement 1.0).
    Case(
        export_tflite,
        lambda: _export(tmp("m.tflite"), "int8", representative_data=np.zeros((8, 4))),
        ValueError,
        "representative_data",
        "(8, 4) whose samples all equal",
    ),
    Case(
        export_tflite,
        lambda: _export(
            tmp("m.tflite"), "int8", representative_data=np.repeat(np.eye(4)[:1], 6, axis=0)
        ),
        ValueError,
        "representative_data",
        "(6, 4) whose samples all equal",
    ),
    Case(
        export_tflite,
        lambda: _export(tmp("m.tflite"), "int8", representative_data=np.full((8, 4), np.nan)),
        ValueError,
        "representative_data",
        "nan",
    ),
    Case(
        export_tflite,
        lambda: _export(tmp("m.tflite"), "int8", representative_data=5),
        TypeError,
        "representative_data",
        "int",
    ),
    Case(
        export_tflite,
        lambda: _export(tmp("m.tflite"), "int8"),
        ValueError,
        "representative_data",
        "None",
    ),
    Case(
        export_tflite,
        lambda: _export(tmp("m.tflite"), io_dtype="int8"),
        ValueError,
        "io_dtype",
        "'int8'",
    ),
    Case(
        export_tflite,
        lambda: _export(tmp("m.tflite"), sparsity="yes"),
        ValueError,
        "sparsity",
        "'yes'",
    ),
    Case(
        export_tflite,
        lambda: _export(tmp("m.tflite"), select_tf_ops="no"),
        TypeError,
        "select_tf_ops",
        "'no'",
    ),
    Case(
        export_tflite,
        lambda: _export(tmp("m.tflite"), calibration_samples=0),
        ValueError,
        "calibration_samples",
        "calibration_samples=0",
    ),
    # TFLiteModel: a path, and a file LiteRT can read
    Case(TFLiteModel, lambda: TFLiteModel(3), TypeError, "path", "path=3"),
    Case(
        TFLiteModel,
        lambda: TFLiteModel("missing.tflite"),
        FileNotFoundError,
        "path",
        "'missing.tflite'",
    ),
    Case(TFLiteModel, lambda: TFLiteModel(_file("bad.tflite")), ValueError, "path", "bad.tflite"),
    Case(
        TFLiteModel,
        lambda: TFLiteModel(_file("empty.tflite", b"")),
        ValueError,
        "path",
        "empty.tflite",
    ),
    Case(
        TFLiteModel,
        lambda: TFLiteModel("m.tflite", num_threads=0),
        ValueError,
        "num_threads",
        "num_threads=0",
    ),
    Case(
        TFLiteModel,
        lambda: TFLiteModel("m.tflite", num_threads="2"),
        TypeError,
        "num_threads",
        "'2'",
    ),
    Case(
        TFLiteModel,
        lambda: TFLiteModel("m.tflite", num_threads=True),
        TypeError,
        "num_threads",
        "True",
    ),
    # Data and Data.load: checked before any data set is read
    Case(
        Data,
        lambda: _data(np.zeros((3, 4)), (0, 1)),
        ValueError,
        "x_train",
        "length 3",
    ),
    Case(Data, lambda: _data(y_train=np.array([0.0, 1.5])), TypeError, "y_train", "float64"),
    Case(Data, lambda: Data(None, [0, 1], np.zeros((2, 4)), [0, 1]), TypeError, "x_train", "None"),
    Case(Data, lambda: _data(y_test=np.array([0, -1])), ValueError, "y_test", "[-1]"),
    Case(Data, lambda: _data(num_classes=2.0), TypeError, "num_classes", "2.0"),
    Case(Data, lambda: _data(tokenizer="vocab.txt"), TypeError, "tokenizer", "str"),
    Case(Data, lambda: Data.load("cifar"), ValueError, "name", "'cifar'"),
    Case(Data, lambda: Data.load("mnist", train_size=0), ValueError, "train_size", "0"),
    Case(
        Data,
        lambda: Data.load("mnist", labelled_per_class=-5),
        ValueError,
        "labelled_per_class",
        "-5",
    ),
    # Stage and register_stage, get_stage
    Case(Stage, lambda: Stage(name="two words"), ValueError, "name", "'two words'"),
    Case(Stage, lambda: Stage(name=3), TypeError, "name", "name=3"),
    Case(Stage, lambda: Stage(name="a", from_stage=3), TypeError, "from_stage", "from_stage=3"),
    Case(Stage, lambda: Stage(), ValueError, "name", "name=None"),
    Case(register_stage, lambda: register_stage(""), ValueError, "name", "name=''"),
    Case(register_stage, lambda: register_stage("3d"), ValueError, "name", "'3d'"),
    Case(register_stage, lambda: register_stage(None), ValueError, "name", "None"),
    Case(register_stage, lambda: _register("train"), ValueError, "name", "name='train'"),
    Case(register_stage, lambda: _register("new_one", int), TypeError, "cls", "int"),
    Case(get_stage, lambda: get_stage("trian"), ValueError, "stage", "'trian'"),
    Case(get_stage, lambda: get_stage(["train"]), TypeError, "name", "['train']"),
    Case(get_stage, lambda: get_stage(3), TypeError, "name", "name=3"),
    # Pipeline and Pipeline.execute: checked before any data loads or stage runs
    Case(Pipeline, lambda: Pipeline(3), TypeError, "stages", "stages=3"),
    Case(Pipeline, lambda: Pipeline(Train()), TypeError, "stages", "Train"),
    Case(Pipeline, lambda: Pipeline(["train"]), TypeError, "stages", "'train'"),
    Case(Pipeline, lambda: Pipeline([]), ValueError, "stages", "[]"),
    Case(
        Pipeline,
        lambda: _execute([Train({"architecture": "cnn"}), Train()]),
        ValueError,
        "name",
        "name='train'",
    ),
    Case(Pipeline, lambda: _execute(data=3), TypeError, "data", "data=3"),
    Case(Pipeline, lambda: _execute(data="cifar"), ValueError, "data", "'cifar'"),
    Case(Pipeline, lambda: _execute(output_dir=3), TypeError, "output_dir", "3"),
    Case(Pipeline, lambda: _execute(output_dir=_file("f.txt")), ValueError, "output_dir", "f.txt"),
    Case(Pipeline, lambda: _execute(seed=-1), ValueError, "seed", "seed=-1"),
    Case(Pipeline, lambda: _execute(seed=1.5), TypeError, "seed", "1.5"),
    Case(Pipeline, lambda: _execute(quick="yes"), TypeError, "quick", "'yes'"),
    Case(Pipeline, lambda: _execute(verbose=5), ValueError, "verbose", "verbose=5"),
    Case(Pipeline, lambda: _execute(log="print"), TypeError, "log", "'print'"),
    # Report.load
    Case(Report, lambda: Report.load(3), TypeError, "directory", "directory=3"),
    Case(Report, lambda: Report.load("no_such_run"), ValueError, "directory", "no_such_run"),
    Case(
        Report,
        lambda: Report.load(_file("config.json", b"{not json").parent),
        ValueError,
        "directory",
        "config.json",
    ),
    # The stages' constructors
    Case(Train, lambda: Train(epochs=-1), ValueError, "epochs", "epochs=-1"),
    Case(Train, lambda: Train(epochs="8"), TypeError, "epochs", "'8'"),
    Case(Train, lambda: Train(learning_rate=float("nan")), ValueError, "learning_rate", "nan"),
    Case(Train, lambda: Train({"architecture": "resnet"}), ValueError, "model", "'resnet'"),
    Case(Train, lambda: Train(model="cnn"), TypeError, "model", "'cnn'"),
    Case(
        Train,
        lambda: Train(augmented_copies=2, augmentation={"flip": True}),
        ValueError,
        "augmentation",
        "'flip': True",
    ),
    Case(Distill, lambda: Distill(None), TypeError, "teacher", "None"),
    Case(Distill, lambda: Distill(3), TypeError, "teacher", "teacher=3"),
    Case(Distill, lambda: Distill(["a", "a"]), ValueError, "teacher", "['a', 'a']"),
    Case(Distill, lambda: Distill("t", temperature=0), ValueError, "temperature", "temperature=0"),
    Case(Distill, lambda: Distill("t", temperature=1e-300), ValueError, "temperature", "1e-300"),
    Case(Distill, lambda: Distill("t", mixup=1e300), ValueError, "mixup", "mixup=1e+300"),
    Case(Distill, lambda: Distill("t", method="DKD"), ValueError, "method", "'DKD'"),
    Case(Distill, lambda: Distill("t", method=["kd"]), TypeError, "method", "['kd']"),
    Case(
        Distill,
        lambda: Distill("t", student_loss_weight=2),
        ValueError,
        "student_loss_weight",
        "student_loss_weight=2",
    ),
    Case(Prune, lambda: Prune(target_sparsity=1.0), ValueError, "target_sparsity", "=1.0"),
    Case(Prune, lambda: Prune(target_sparsity="half"), TypeError, "target_sparsity", "'half'"),
    Case(Prune, lambda: Prune(pattern="4:2"), ValueError, "pattern", "'4:2'"),
    Case(
        Prune,
        lambda: Prune(target_sparsity=0.8, pattern="2:4"),
        ValueError,
        "target_sparsity",
        "target_sparsity=0.8",
    ),
    Case(Prune, lambda: Prune(exclude="conv1"), TypeError, "exclude", "'conv1'"),
    Case(Prune, lambda: Prune(exclude=["conv("]), ValueError, "exclude", "'conv('"),
    Case(QuantizeAware, lambda: QuantizeAware(epochs=1.5), TypeError, "epochs", "1.5"),
    Case(
        QuantizeAware,
        lambda: QuantizeAware(preserve_clusters="yes"),
        TypeError,
        "preserve_clusters",
        "'yes'",
    ),
    Case(
        QuantizeAware, lambda: QuantizeAware(batch_size=0), ValueError, "batch_size", "batch_size=0"
    ),
    Case(QuantizeAware, lambda: QuantizeAware(mixup=0.2), ValueError, "mixup", "mixup=0.2"),
    Case(QuantizeAware, lambda: QuantizeAware(teacher={"a": 1}), TypeError, "teacher", "{'a': 1}"),
    Case(Export, lambda: Export("int4"), ValueError, "quantization", "'int4'"),
    Case(Export, lambda: Export(io_dtype="int8"), ValueError, "io_dtype", "'int8'"),
    Case(Export, lambda: Export("int8", per_channel=0), TypeError, "per_channel", "=0"),
    Case(Export, lambda: Export(per_channel=False), ValueError, "per_channel", "=None"),
    Case(
        Export,
        lambda: Export(calibration_samples=0),
        ValueError,
        "calibration_samples",
        "calibration_samples=0",
    ),
    Case(
        Export,
        lambda: Export(calibration_samples="500"),
        TypeError,
        "calibration_samples",
        "'500'",
    ),
    Case(Load, lambda: Load("missing.keras"), ValueError, "path", "'missing.keras'"),
    Case(Load, lambda: Load("model.h5"), ValueError, "path", "'model.h5'"),
    Case(Load, lambda: Load(3), TypeError, "path", "path=3"),
    Case(Transfer, lambda: Transfer(image_size=0), ValueError, "image_size", "image_size=0"),
    Case(Transfer, lambda: Transfer(image_size=16), ValueError, "image_size", "image_size=16"),
    Case(Transfer, lambda: Transfer(dropout=1.0), ValueError, "dropout", "1.0"),
    Case(
        Transfer,
        lambda: Transfer(fine_tune_decay="exponential"),
        ValueError,
        "fine_tune_decay",
        "exponential",
    ),
    Case(
        Transfer,
        lambda: Transfer(backbone={"preset": "no/such/folder"}),
        ValueError,
        "backbone",
        "no/such/folder",
    ),
    Case(Transfer, lambda: Transfer(backbone={"path": "x"}), ValueError, "backbone", "'path'"),
    Case(Transfer, lambda: Transfer(unfreeze=True), TypeError, "unfreeze", "True"),
    Case(Transfer, lambda: Transfer(unfreeze=1.5), ValueError, "unfreeze", "1.5"),
    Case(Transfer, lambda: Transfer(backbone="resnet50"), ValueError, "backbone", "'resnet50'"),
    Case(
        Transfer,
        lambda: Transfer(head_learning_rate=-1e-3),
        ValueError,
        "head_learning_rate",
        "-0.001",
    ),
    # load_config: configs that fail validation
    Case(load_config, lambda: load_config(3), TypeError, "path", "path=3"),
    Case(load_config, lambda: load_config("missing.yaml"), ConfigError, "path", "'missing.yaml'"),
    Case(
        load_config,
        lambda: load_config(_config(_STAGES + "  - {stage: train, epochs: -1}\n")),
        ConfigError,
        "epochs",
        "epochs=-1",
    ),
    Case(
        load_config,
        lambda: load_config(_config(_STAGES + "  - {stage: shrink}\n")),
        ConfigError,
        "stage",
        "'shrink'",
    ),
    Case(
        load_config,
        lambda: load_config(_config("data: {name: cifar}\nstages: [{stage: train}]\n")),
        ConfigError,
        "name",
        "'cifar'",
    ),
    Case(
        load_config,
        lambda: load_config(_config("data: mnist\nseed: -1\nstages: [{stage: train}]\n")),
        ConfigError,
        "seed",
        "-1",
    ),
    Case(
        load_config,
        lambda: load_config(_config(_STAGES + "  - !!python/object:os.system {stage: x}\n")),
        ConfigError,
        "stages",
        "'tag:yaml.org,2002:python/object:os.system'",
    ),
    # run_config: refused before any data loads or training starts
    Case(run_config, lambda: run_config(3), TypeError, "path", "path=3"),
    Case(
        run_config,
        lambda: run_config(_config(_STAGES + "  - {stage: export, quantization: int4}\n")),
        ConfigError,
        "quantization",
        "'int4'",
    ),
    Case(
        run_config,
        lambda: run_config(_config(_STAGES + "  - {stage: prune, sparsity: 1.5}\n")),
        ConfigError,
        "target_sparsity",  # `sparsity`, its deprecated name, is still read
        "target_sparsity=1.5",
    ),
    Case(
        run_config,
        lambda: run_config(_config(_STAGES + "  - {stage: distill, teacher: nobody}\n")),
        ConfigError,
        "teacher",
        "'nobody'",
    ),
    Case(
        run_config,
        lambda: run_config(_config(_STAGES + "  - {stage: train}\n"), quick="yes"),
        TypeError,
        "quick",
        "'yes'",
    ),
    Case(
        run_config,
        lambda: run_config(_config(_STAGES + "  - {stage: train}\n"), log=None),
        TypeError,
        "log",
        "None",
    ),
    Case(
        run_config,
        lambda: run_config(_config(_STAGES + "  - {stage: train}\n"), _file("out.txt")),
        ValueError,
        "output_dir",
        "out.txt",
    ),
]


@parametrize(CASES)
def test_bad_input_is_refused(case):
    check(case)


def test_the_top_level_names_are_these():
    assert tfkd.Pipeline is pipeline.Pipeline
    assert tfkd.TFLiteModel is TFLiteModel and tfkd.export_tflite is export_tflite


def test_a_refused_execute_makes_no_output_directory():
    for case in CASES:
        if case.target is Pipeline:
            with pytest.raises(case.error):
                case.call()
    assert not tmp("run").exists()
