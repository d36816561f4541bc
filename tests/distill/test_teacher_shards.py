"""`write_teacher_shards` / `TeacherShards`: teacher outputs for data larger than memory,
on Fashion-MNIST images and the bundled CNN teacher."""

import json
import pathlib

import keras
import numpy as np
import pytest

import tfkd
from tests.helpers import model_of_kind, small_cnn
from tfkd.distill import TeacherShards, teacher_cache, write_teacher_shards

REPO = pathlib.Path(__file__).resolve().parents[2]
TEACHER = REPO / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"


@pytest.fixture(scope="module")
def fashion():
    (x, y), _ = tfkd.datasets.load("fashion_mnist")
    return x[:600, :, :, None], y[:600].astype("int64")


@pytest.fixture(scope="module")
def teacher():
    """A small teacher keeps the tests quick on every backend (the bundled one: below)."""
    keras.utils.set_random_seed(1)
    return small_cnn(8, "teacher", num_classes=10, input_shape=(28, 28, 1), batch_norm=True)


@pytest.mark.heavy
def test_the_bundled_teacher_round_trips(fashion, tmp_path):
    teacher = keras.saving.load_model(TEACHER)
    x, y = fashion
    write_teacher_shards(teacher, (x, y), tmp_path, rows_per_shard=256, top_k=4)
    got_x, logits, got_y, _ = _epoch(TeacherShards(tmp_path), shuffle=False)
    np.testing.assert_array_equal(got_x, x)
    full = teacher.predict(x, verbose=0)
    np.testing.assert_array_equal(logits.argmax(1), full.argmax(1))
    assert np.mean(full.argmax(1) == y) > 0.85


def _epoch(shards, batch_size=128, **kwargs):
    batches = list(shards.batches(batch_size, **kwargs))
    x = np.concatenate([packed["student_inputs"] for packed, _ in batches])
    logits = np.concatenate([packed["teacher_outputs"]["output"] for packed, _ in batches])
    return x, logits, np.concatenate([y for _, y in batches]), batches


def test_round_trip_keeps_inputs_labels_and_teacher_outputs(fashion, teacher, tmp_path):
    x, y = fashion
    summary = write_teacher_shards(teacher, (x, y), tmp_path, rows_per_shard=256)
    assert (summary["rows"], summary["shards"], summary["written"]) == (600, 3, 3)
    shards = TeacherShards(tmp_path)
    assert (shards.rows, shards.keys, shards.has_labels) == (600, ["output"], True)
    # 600 uint8 images, 600 int64 labels and 600 x 10 float32 logits, plus .npy headers
    assert 600 * (784 + 8 + 40) < shards.nbytes == summary["bytes"] < 600 * (784 + 8 + 40) + 3000
    got_x, logits, got_y, batches = _epoch(shards, shuffle=False)
    assert [len(labels) for _, labels in batches] == [128, 128, 128, 128, 88]
    assert got_x.dtype == np.uint8
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    np.testing.assert_allclose(logits, teacher.predict(x, verbose=0), atol=1e-5)


def test_shuffled_epochs_differ_and_hold_every_example_once(fashion, teacher, tmp_path):
    x, y = fashion
    write_teacher_shards(teacher, (x, y), tmp_path, rows_per_shard=100)
    dataset = TeacherShards(tmp_path).dataset(batch_size=64, seed=3)
    assert int(dataset.cardinality()) == 10
    epochs = [np.concatenate([labels.numpy() for _, labels in dataset]) for _ in range(2)]
    assert not np.array_equal(epochs[0], epochs[1])
    for labels in epochs:
        np.testing.assert_array_equal(np.sort(labels), np.sort(y))


def test_top_k_keeps_the_largest_logits_and_the_softmax_mass(fashion, teacher, tmp_path):
    x, y = fashion
    full = teacher.predict(x, verbose=0)
    write_teacher_shards(teacher, (x, y), tmp_path / "full")
    write_teacher_shards(teacher, (x, y), tmp_path / "top3", top_k=3)
    _, logits, _, _ = _epoch(TeacherShards(tmp_path / "top3"), shuffle=False)
    top = np.argsort(-full, axis=1)[:, :3]
    np.testing.assert_allclose(
        np.take_along_axis(logits, top, 1), np.take_along_axis(full, top, 1), atol=1e-5
    )
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(full))
    np.testing.assert_allclose(
        np.take_along_axis(probabilities, top, 1), np.take_along_axis(expected, top, 1), atol=1e-5
    )
    others = np.ones_like(full, bool)
    np.put_along_axis(others, top, False, axis=1)
    rest = np.where(others, expected, 0).sum(1) / 7  # the other 7 classes share their mass
    np.testing.assert_allclose(np.where(others, probabilities, 0).max(1), rest, atol=1e-5)
    full_bytes, top_bytes = (
        TeacherShards(tmp_path / "full").nbytes,
        TeacherShards(tmp_path / "top3").nbytes,
    )
    # float32 x 10 = 40 bytes an example against 3 float32 + 3 uint8 + 1 float32 = 19
    assert full_bytes - top_bytes == pytest.approx(600 * 21, abs=600)


def test_rerun_reuses_shards_and_a_new_teacher_rewrites_them(fashion, tmp_path):
    x, y = fashion
    teacher = small_cnn(4, "teacher", num_classes=10, input_shape=(28, 28, 1))
    write_teacher_shards(teacher, (x, y), tmp_path, rows_per_shard=200)
    again = write_teacher_shards(teacher, (x, y), tmp_path, rows_per_shard=200)
    assert (again["written"], again["reused"], again["teacher_seconds"]) == (0, 3, 0)
    teacher.get_layer("logits").kernel.assign(teacher.get_layer("logits").kernel * 2.0)
    changed = write_teacher_shards(teacher, (x, y), tmp_path, rows_per_shard=200)
    assert (changed["written"], changed["reused"]) == (3, 0)
    _, logits, _, _ = _epoch(TeacherShards(tmp_path), shuffle=False)
    np.testing.assert_allclose(logits, teacher.predict(x, verbose=0), atol=1e-5)


def test_a_crash_keeps_finished_shards_and_a_rerun_resumes(fashion, teacher, tmp_path):
    x, y = fashion

    def batches(fail):
        for start in range(0, 600, 100):
            if fail and start == 300:
                raise KeyboardInterrupt
            yield x[start : start + 100], y[start : start + 100]

    with pytest.raises(KeyboardInterrupt):
        write_teacher_shards(teacher, batches(True), tmp_path, rows_per_shard=150)
    with pytest.raises(ValueError, match="No finished teacher cache"):
        TeacherShards(tmp_path)
    resumed = write_teacher_shards(teacher, batches(False), tmp_path, rows_per_shard=150)
    assert (resumed["reused"], resumed["written"]) == (2, 2)
    np.testing.assert_array_equal(_epoch(TeacherShards(tmp_path), shuffle=False)[0], x)


def test_processes_write_their_own_shards_and_read_disjoint_equal_parts(fashion, teacher, tmp_path):
    x, y = fashion
    for index in (0, 1):
        part = slice(index * 300, (index + 1) * 300)
        write_teacher_shards(
            teacher, (x[part], y[part]), tmp_path, rows_per_shard=100, process_index=index
        )
    shards = TeacherShards(tmp_path)
    assert shards.rows == 600 and shards.steps(64, process_count=2) == 4
    seen = []
    for index in (0, 1):
        _, _, labels, batches = _epoch(shards, 64, seed=0, process_index=index, process_count=2)
        assert [len(b[1]) for b in batches] == [64] * 4
        seen.append(labels)
    assert len(np.concatenate(seen)) == 512
    with pytest.raises(ValueError, match="process_index"):
        shards.batches(64, process_index=2, process_count=2)


def test_augmented_views_store_what_the_teacher_saw(fashion, teacher, tmp_path):
    x, y = fashion
    augmentation = keras.layers.RandomFlip("horizontal", seed=0)
    write_teacher_shards(teacher, (x[:200], y[:200]), tmp_path, views=3, augmentation=augmentation)
    stored, logits, labels, _ = _epoch(TeacherShards(tmp_path), shuffle=False)
    assert stored.shape == (600, 28, 28, 1) and stored.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.tile(y[:200], 3))
    flipped_rows = (stored == np.tile(x[:200][:, :, ::-1], (3, 1, 1, 1))).reshape(600, -1).all(1)
    same_rows = (stored == np.tile(x[:200], (3, 1, 1, 1))).reshape(600, -1).all(1)
    assert np.all(flipped_rows | same_rows) and 0.3 < flipped_rows.mean() < 0.7
    np.testing.assert_allclose(logits, teacher.predict(stored, verbose=0), atol=1e-5)


def test_fit_from_shards_equals_fit_from_cached_arrays(fashion, teacher, tmp_path):
    x, y = fashion
    write_teacher_shards(teacher, (x, y), tmp_path, rows_per_shard=256)
    results = []
    for source in ("shards", "arrays", "misaligned"):
        keras.utils.set_random_seed(0)
        student = model_of_kind("sequential_never_called", tmp_path, num_classes=10)
        distiller = tfkd.Distiller(teacher, student, temperature=2.0)
        distiller.compile(
            optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy"
        )
        if source == "shards":
            dataset = TeacherShards(tmp_path).dataset(batch_size=100, shuffle=False)
            distiller.fit(dataset, epochs=2, verbose=0)
        else:
            cached = distiller.predict_teacher(x)
            if source == "misaligned":  # a reader off by one example in the first batch
                logits = cached[teacher_cache.OUTPUT]
                logits[:100] = np.roll(logits[:100], 1, axis=0)
            packed = tfkd.distill.with_teacher_outputs(x, cached)
            distiller.fit(packed, y, batch_size=100, epochs=2, shuffle=False, verbose=0)
        results.append(student.get_weights())
    shards, arrays, misaligned = results
    # Equal to float32 rounding: oneDNN may sum in another order for the two input paths,
    # and two epochs of SGD carry that on (weights up to about 9 then differed by up to
    # 1.4e-5 in a CI run with one thread, 4.2e-5 in another run; 0 on JAX and PyTorch).
    for got, want in zip(shards, arrays):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # That tolerance still tells a wrong teacher output: with 100 of 600 rows off by one,
    # the weights differed by up to 7.1 (TensorFlow), 0.39 (JAX) and 180 (PyTorch).
    assert not all(
        np.allclose(got, want, rtol=1e-4, atol=1e-4) for got, want in zip(shards, misaligned)
    )
    assert max(np.abs(got - want).max() for got, want in zip(shards, misaligned)) > 1e-3


def test_feature_layers_and_a_dataset_source(fashion, tmp_path):
    x, y = fashion
    teacher = small_cnn(6, "teacher", num_classes=10, input_shape=(28, 28, 1))
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(70)
    write_teacher_shards(teacher, dataset, tmp_path, layers=["features"], rows_per_shard=250)
    shards = TeacherShards(tmp_path)
    assert shards.keys == ["layer:features", "output"]
    packed, _ = next(shards.batches(600, shuffle=False))
    features = keras.Model(teacher.inputs, teacher.get_layer("features").output)
    np.testing.assert_allclose(
        packed["teacher_outputs"]["layer:features"], features.predict(x, verbose=0), atol=1e-5
    )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"views": 2}, ValueError, "views=2, augmentation=None"),
        ({"top_k": 10}, ValueError, "top_k=10"),
        ({"top_k": 0}, ValueError, "top_k"),
        ({"rows_per_shard": 0}, ValueError, "rows_per_shard"),
        ({"process_index": -1}, ValueError, "process_index"),
        ({"layers": "features"}, TypeError, "layers"),
        ({"augmentation": "flip"}, TypeError, "augmentation"),
    ],
)
def test_bad_arguments_are_named(fashion, teacher, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        write_teacher_shards(teacher, fashion, tmp_path, **kwargs)


def test_bad_data_is_refused(fashion, teacher, tmp_path):
    x, y = fashion
    with pytest.raises(TypeError, match="dict"):
        write_teacher_shards(teacher, {"image": x}, tmp_path)
    with pytest.raises(ValueError, match="Labels must be one integer"):
        write_teacher_shards(teacher, (x, y.astype("float32")), tmp_path)
    with pytest.raises(ValueError, match="no examples"):
        write_teacher_shards(teacher, iter([]), tmp_path)
    nan_teacher = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Lambda(lambda t: t * np.nan),
        ]
    )
    with pytest.raises(ValueError, match="NaN or infinite"):
        write_teacher_shards(nan_teacher, (x, y), tmp_path / "nan")


def _written(fashion, teacher, directory, **kwargs):
    x, y = fashion
    write_teacher_shards(teacher, (x, y), directory, rows_per_shard=300, **kwargs)
    return directory / "p000-s000000"


def test_damaged_or_crafted_files_are_refused(fashion, teacher, tmp_path):
    shard = _written(fashion, teacher, tmp_path)
    np.save(shard / "t0.full.npy", np.zeros((300, 5), "float32"))
    with pytest.raises(ValueError, match="does not hold what its shard.json says"):
        list(TeacherShards(tmp_path).batches(64))
    np.save(shard / "t0.full.npy", np.array([object()] * 300, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="cannot be read"):
        list(TeacherShards(tmp_path).batches(64))
    manifest = tmp_path / "process-000.json"
    content = json.loads(manifest.read_text())
    manifest.write_text(json.dumps(dict(content, shards=["../../etc"])))
    with pytest.raises(ValueError, match="not a list of shards"):
        TeacherShards(tmp_path)
    manifest.write_text("[1, 2")
    with pytest.raises(ValueError, match="cannot be read"):
        TeacherShards(tmp_path)


def test_crafted_top_k_indices_are_refused(fashion, teacher, tmp_path):
    shard = _written(fashion, teacher, tmp_path, top_k=2)
    np.save(shard / "t0.indices.npy", np.full((300, 2), 200, "uint8"))
    with pytest.raises(ValueError, match="top-k class index outside"):
        list(TeacherShards(tmp_path).batches(64, shuffle=False))


def test_a_never_called_sequential_teacher_is_built_on_the_data(fashion, tmp_path):
    x, y = fashion
    keras.utils.set_random_seed(2)
    teacher = model_of_kind("sequential_never_called", tmp_path, num_classes=10)
    write_teacher_shards(teacher, (x, y), tmp_path / "cache", rows_per_shard=250)
    _, logits, _, _ = _epoch(TeacherShards(tmp_path / "cache"), shuffle=False)
    np.testing.assert_allclose(logits, teacher.predict(x, verbose=0), atol=1e-5)
