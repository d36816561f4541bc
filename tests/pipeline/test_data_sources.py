"""The user's own data (issue 18): a folder of images, a `.npz` file and a prepared tfds
data set run through the pipeline, and give what the numpy path gives on the same images."""

import importlib.util
import json
import pathlib
import re
import textwrap

import numpy as np
import pytest

import tfkd
from tfkd.pipeline import ConfigError, Data, load_config, run_config
from tfkd.pipeline.config import check_config

REPO = pathlib.Path(__file__).resolve().parents[2]
PER_CLASS = 30  # images per class and split written for these tests
STAGES = """\
stages:
  - {stage: train, name: cnn, model: {architecture: cnn, filters: [8, 16]}, epochs: 1}
  - {stage: export, name: int8, quantization: int8}
"""


def _write_image_folder(output):
    spec = importlib.util.spec_from_file_location(
        "write_image_folder", REPO / "examples" / "write_image_folder.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write(output, per_class=PER_CLASS)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "animals"
    _write_image_folder(path)
    return path


def _numpy_path():
    """The images the folder holds, as arrays, in the folder's order (class by class)."""
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("animal_mnist")
    arrays = []
    for x, y in ((x_train, y_train), (x_test, y_test)):
        order = np.concatenate([np.flatnonzero(y == c)[:PER_CLASS] for c in range(10)])
        arrays += [x[order], y[order]]
    return arrays


def test_an_image_folder_runs_from_a_short_config_like_the_numpy_path(folder, tmp_path):
    config = tmp_path / "images.yaml"
    config.write_text(
        f"data: {{directory: {folder}, image_size: [28, 28], color_mode: grayscale}}\n" + STAGES
    )
    report = run_config(config, tmp_path / "run", tensorboard=False, log=lambda _: None)
    x_train, y_train, x_test, y_test = _numpy_path()
    data = Data.load(directory=folder, image_size=[28, 28], color_mode="grayscale")
    np.testing.assert_array_equal(data.x_train[..., 0], x_train)
    np.testing.assert_array_equal(data.y_train, y_train)
    np.testing.assert_array_equal(data.x_test[..., 0], x_test)
    names = tfkd.datasets.info("animal_mnist")["class_names"]
    assert data.class_names == names  # the folder names, in label order
    arrays = Data(x_train, y_train, x_test, y_test, name="animals", class_names=names)
    stages = load_config(config).pipeline.stages
    same = tfkd.Pipeline(stages).execute(
        arrays, tmp_path / "numpy", tensorboard=False, verbose=0, log=lambda _: None
    )
    assert [row["accuracy"] for row in report.rows] == [row["accuracy"] for row in same.rows]
    classes = report.rows[-1]["classification"]["classes"]
    assert [c["name"] for c in classes] == names and sum(c["support"] for c in classes) == 300
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "## Per class: int8 against cnn" in markdown and "| Zebra | 30 |" in markdown
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["name"] == "animals" and saved["data"]["class_names"] == names


def test_one_folder_of_classes_is_split_by_class_with_a_seed(folder):
    def load(seed):
        return Data.load(
            directory=folder / "train", image_size=[14, 14], test_split=0.2, split_seed=seed
        )

    data, again, other = load(0), load(0), load(1)
    assert data.x_train.shape == (240, 14, 14, 3) and data.x_test.shape == (60, 14, 14, 3)
    assert np.bincount(data.y_test).tolist() == [6] * 10
    np.testing.assert_array_equal(data.x_test, again.x_test)
    assert not np.array_equal(data.x_test, other.x_test)


def test_an_npz_file_is_read_without_pickle(tmp_path):
    x_train, y_train, x_test, y_test = _numpy_path()
    path = tmp_path / "animals.npz"
    names = np.array(tfkd.datasets.info("animal_mnist")["class_names"])
    np.savez(
        path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, class_names=names
    )
    data = Data.load(npz=path, test_size=100)
    np.testing.assert_array_equal(data.x_train[..., 0], x_train)
    assert data.class_names == names.tolist() and len(data.x_test) == 100
    # Stored class by class, its first 50 were of 2 classes only (before: a quick run or
    # train_size trained on those, with no word); now 5 of each, drawn with seed 0.
    data = Data.load(npz=path, train_size=50, test_size=30)
    assert np.bincount(data.y_train).tolist() == [5] * 10
    assert np.bincount(data.y_test).tolist() == [3] * 10
    assert any("stored class by class" in note for note in data.notes)
    again = Data.load(npz=path, train_size=50, test_size=30)
    np.testing.assert_array_equal(data.x_train, again.x_train)
    order = np.argsort(-y_train, kind="stable")  # the classes in another order: 9 first
    np.savez(path, x_train=x_train[order], y_train=y_train[order], x_test=x_test, y_test=y_test)
    assert np.bincount(Data.load(npz=path, train_size=50).y_train).tolist() == [5] * 10
    shuffled = Data.load("animal_mnist", train_size=50)  # in no class order: the first 50
    np.testing.assert_array_equal(
        shuffled.x_train[..., 0], tfkd.datasets.load("animal_mnist")[0][0][:50]
    )
    hostile = tmp_path / "hostile.npz"
    np.savez(
        hostile,
        x_train=np.array([object()], dtype=object),
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
    )
    with pytest.raises(ValueError, match="only pickle can read.* npz="):
        Data.load(npz=hostile)


def test_a_prepared_tfds_data_set_matches_the_bundled_one(tmp_path):
    tfkd.datasets.write_tfds("animal_mnist", tmp_path / "tfds")
    config = tmp_path / "tfds.yaml"
    config.write_text("data: {tfds: animal_mnist, data_dir: tfds, test_size: 500}\n" + STAGES)
    data = Data.load(**load_config(config).data)
    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("animal_mnist")
    np.testing.assert_array_equal(data.x_train[..., 0], x_train)
    np.testing.assert_array_equal(data.y_test, y_test[:500])
    assert data.class_names == tfkd.datasets.info("animal_mnist")["class_names"]
    with pytest.raises(ValueError, match="Unknown split. Received: split='validation'"):
        Data.load(tfds="animal_mnist", data_dir=tmp_path / "tfds", split=["train", "validation"])


def _errors(tmp_path, data):
    config = tmp_path / "bad.yaml"
    config.write_text(f"data: {data}\n" + STAGES)
    return check_config(config)


def test_bad_data_is_refused_before_any_work_naming_the_key_and_the_path(folder, tmp_path):
    assert _errors(tmp_path, f"{{directory: {folder}, image_size: [28, 28]}}") == []
    missing = _errors(tmp_path, "{directory: nowhere, image_size: [28, 28]}")
    assert missing == [
        f"{tmp_path / 'bad.yaml'}:1: data.directory: Folder not found. Received: "
        f"directory={str(tmp_path / 'nowhere')!r}"
    ]
    one_class = tmp_path / "one" / "train" / "cat"
    one_class.mkdir(parents=True)
    (tmp_path / "one" / "test" / "cat").mkdir(parents=True)
    for split in ("train", "test"):
        (tmp_path / "one" / split / "cat" / "a.png").write_bytes(
            (folder / "train" / "Cat").glob("*.png").__next__().read_bytes()
        )
    (message,) = _errors(tmp_path, "{directory: one, image_size: [28, 28]}")[:1]
    assert "data.directory: A classifier needs at least 2 class folders" in message
    broken = tmp_path / "broken"
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (broken / split / name).mkdir(parents=True)
            (broken / split / name / "a.png").write_bytes(b"not an image at all")
    (message,) = _errors(tmp_path, "{directory: broken, image_size: [28, 28]}")[:1]
    assert "Not a readable image in `directory`. Received: file" in message and "a.png" in message
    assert (
        "data.image_size: `directory` needs `image_size`"
        in _errors(tmp_path, f"{{directory: {folder}}}")[0]
    )
    (message,) = _errors(tmp_path, f"{{directory: {folder}, image_size: [8, 8], split_seed: 3}}")
    assert "data.split_seed: `split_seed` draws the test examples that `test_split`" in message
    (message,) = _errors(
        tmp_path,
        f"{{directory: {folder}/train, image_size: [8, 8], test_split: 0.2, split_seed: -1}}",
    )
    assert "data.split_seed: `split_seed` must be an integer" in message and "=-1" in message
    # Before: read as two classes, 'test' and 'train' (the images of theirs mixed), no word.
    (message,) = _errors(tmp_path, f"{{directory: {folder}, image_size: [8, 8], test_split: 0.2}}")
    assert "data.test_split: `directory` holds `train/` and `test/` folders" in message
    np.savez(tmp_path / "partial.npz", x_train=np.zeros((2, 2)))
    (message,) = _errors(tmp_path, "{npz: partial.npz}")
    assert "data.npz: The .npz file lacks the arrays ['y_train', 'x_test', 'y_test']" in message
    (message,) = _errors(tmp_path, "{name: mnist, npz: partial.npz}")
    assert "exactly one of `name`" in message
    # The key given, or `data` itself where none is (before: "data.data" for both).
    (message,) = _errors(tmp_path, "{npz: null}")
    assert ": data.npz: The data must be given by exactly one of" in message
    (message,) = _errors(tmp_path, "{}")
    assert ": data: The data must be given by exactly one of" in message
    with pytest.raises(ConfigError, match=r"data.split: `split` must be two split names"):
        load_config(_config(tmp_path, "{tfds: mnist, data_dir: ., split: train}"))


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"y_train": np.full(4, 0.5)}, "`y_train` must hold integer class ids"),
        ({"y_train": np.array([0, 1, -2, 1])}, "`y_train` holds negative labels ([-2])"),
        ({"y_train": np.array([0, 1, 1])}, "`x_train` and `y_train` differ in length"),
    ],
    ids=["float_labels", "negative_labels", "lengths_differ"],
)
def test_what_an_npz_file_holds_is_a_config_error_at_data_npz(arrays, message, tmp_path):
    good = {
        "x_train": np.zeros((4, 8, 8, 1), "float32"),
        "y_train": np.array([0, 1, 0, 1]),
        "x_test": np.zeros((2, 8, 8, 1), "float32"),
        "y_test": np.array([0, 1]),
    }
    np.savez(tmp_path / "bad.npz", **{**good, **arrays})
    config = _config(tmp_path, "{npz: bad.npz}")
    # before: `tfkd: error: TypeError: ...` (exit 1), naming neither the file nor the key
    with pytest.raises(ConfigError, match=r"bad2.yaml:1: data.npz: ") as error:
        run_config(config, tmp_path / "run", tensorboard=False, log=lambda _: None)
    assert message in str(error.value)
    assert not (tmp_path / "run").exists()


def test_images_scaled_to_one_are_refused_where_a_model_takes_pixels(tmp_path):
    # Before: an `.npz` of images in [0, 1] trained with no word; the cnn divided them by
    # 255 again and a transfer teacher scored 0.20 where the same images as 0-255 scored
    # 0.72 (an exploratory review).
    x_train, y_train, x_test, y_test = _numpy_path()
    scaled = {"x_train": x_train / 255.0, "y_train": y_train, "x_test": x_test / 255.0}
    np.savez(tmp_path / "scaled.npz", **scaled, y_test=y_test)
    np.savez(tmp_path / "pixels.npz", **{**scaled, "x_train": x_train * 1.0}, y_test=y_test)
    transfer = "  - {stage: transfer, head_epochs: 1, fine_tune_epochs: 0}\n"
    cases = ((STAGES, "stages[0].model"), ("stages:\n" + transfer, "stages[0]"))
    for stages, argument in cases:
        config = tmp_path / "scaled.yaml"
        config.write_text("data: {npz: scaled.npz}\n" + stages)
        message = re.escape(f"{argument}: The images hold no value above 1")
        with pytest.raises(ConfigError, match=message):
            run_config(config, tmp_path / "run", tensorboard=False, log=lambda _: None)
        assert not (tmp_path / "run" / "stages").exists()  # refused before any work
    pixels = Data.load(npz=tmp_path / "pixels.npz")
    tfkd.pipeline.architectures.check_pixels(pixels, "model", "{}", "it divides them")


def _config(tmp_path, data):
    config = tmp_path / "bad2.yaml"
    config.write_text(textwrap.dedent(f"data: {data}\n") + STAGES)
    return config


def test_the_image_folder_example_is_a_config_of_about_ten_lines(folder, tmp_path):
    text = (REPO / "examples" / "pipeline_image_folder.yaml").read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) <= 10
    config = tmp_path / "example.yaml"
    config.write_text(text.replace("../data/animal_mnist_png", str(folder)))
    stages = load_config(config).pipeline.stages
    assert [stage.kind for stage in stages] == ["train", "distill", "quantize_aware", "export"]


def test_an_image_that_fails_to_decode_is_named(folder, tmp_path):
    broken = tmp_path / "truncated"
    for split in ("train", "test"):
        for name in ("Cat", "Dog"):
            (broken / split / name).mkdir(parents=True)
            for source in sorted((folder / split / name).glob("*.png"))[:3]:
                (broken / split / name / source.name).write_bytes(source.read_bytes())
    bad = broken / "train" / "Dog" / "zz.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # the right header, then nothing
    assert tfkd.datasets.directory_errors(broken, (28, 28)) == []
    with pytest.raises(ValueError, match=f"Not a readable image in `directory`.*{bad.name}"):
        Data.load(directory=broken, image_size=[28, 28])
    # A GIF decodes as RGB only: before, each file was decoded again in its own channels,
    # all passed, and the error named "file None".
    from PIL import Image

    bad.unlink()
    gif = broken / "train" / "Dog" / "moving.gif"
    Image.fromarray(np.full((28, 28), 200, "uint8")).save(gif)
    assert Data.load(directory=broken, image_size=[28, 28]).x_train.shape[0] == 7
    with pytest.raises(ValueError, match=r"color_mode='grayscale'. Received: file '.*moving.gif'"):
        Data.load(directory=broken, image_size=[28, 28], color_mode="grayscale")
