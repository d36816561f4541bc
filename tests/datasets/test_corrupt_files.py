"""Corrupt data files (issue 16.2): every change is an error naming the file, of the type
the reader documents, never changed data or another exception."""

import gzip
import io
import pickle
import zipfile

import numpy as np
import pytest

import tfkd
from tests.helpers import forged_zip_sizes
from tfkd.datasets import _idx, _pickle


def _with_bad_crc(compressed):
    """The gzip stream with its CRC-32 trailer changed: the data itself is intact."""
    crc = int.from_bytes(compressed[-8:-4], "little") ^ 1
    return compressed[:-8] + crc.to_bytes(4, "little") + compressed[-4:]


def test_a_pickle_whose_gzip_crc_fails_is_refused(tmp_path):
    # The unpickler stops at the pickle's end, before gzip checks its CRC: the changed
    # data loaded as if intact.
    array = np.random.default_rng(0).integers(0, 255, (300, 28, 28), dtype=np.uint8)
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(pickle.dumps(array, protocol=2)))
    np.testing.assert_array_equal(_pickle._load_gzipped_pickle(path), array)
    path.write_bytes(_with_bad_crc(path.read_bytes()))
    with pytest.raises(pickle.UnpicklingError, match="images.gz"):
        _pickle._load_gzipped_pickle(path)


def test_a_pickle_with_data_after_it_or_a_broken_stream_is_refused(tmp_path):
    path = tmp_path / "labels.gz"
    path.write_bytes(gzip.compress(pickle.dumps(np.arange(5), protocol=2) + b"extra"))
    with pytest.raises(pickle.UnpicklingError, match="data follows the pickle"):
        _pickle._load_gzipped_pickle(path)
    compressed = bytearray(gzip.compress(pickle.dumps(np.arange(5000), protocol=2)))
    compressed[20] ^= 0xFF  # inside the deflate stream
    path.write_bytes(bytes(compressed))
    with pytest.raises(pickle.UnpicklingError, match="labels.gz"):
        _pickle._load_gzipped_pickle(path)


def test_a_pickle_is_inflated_once_and_a_large_one_streamed_twice(tmp_path, monkeypatch):
    # The opcodes' check and the unpickler each inflated the file (MNIST: 210 MB, 0.6 s).
    opened = []
    monkeypatch.setattr(gzip, "open", lambda *a, **k: opened.append(1) or _gzip_open(*a, **k))
    array = np.random.default_rng(0).integers(0, 255, (30, 28, 28), dtype=np.uint8)
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(pickle.dumps((array, np.arange(30)), protocol=2)))
    loaded = _pickle._load_gzipped_pickle(path)
    assert len(opened) == 1
    # Past `_MOST_BUFFERED`, each pass inflates the file again (after the one that
    # finds it too large), and the same is refused.
    monkeypatch.setattr(_pickle, "_MOST_BUFFERED", 1000)
    streamed = _pickle._load_gzipped_pickle(path)
    assert len(opened) == 1 + 3
    for got, want in zip((loaded, streamed), ((array, np.arange(30)),) * 2):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    path.write_bytes(_with_bad_crc(path.read_bytes()))
    with pytest.raises(pickle.UnpicklingError, match="images.gz.*CRC"):
        _pickle._load_gzipped_pickle(path)
    path.write_bytes(gzip.compress(pickle.dumps(array, protocol=2) + b"extra"))
    with pytest.raises(pickle.UnpicklingError, match="data follows the pickle"):
        _pickle._load_gzipped_pickle(path)


_gzip_open = gzip.open


@pytest.mark.parametrize("damage", ["crc", "stream", "truncated"])
def test_a_corrupt_idx_gzip_is_a_value_error_naming_the_file(tmp_path, damage):
    labels = np.arange(256, dtype=np.uint8)
    raw = b"\x00\x00\x08\x01" + len(labels).to_bytes(4, "big") + labels.tobytes()
    compressed = gzip.compress(raw)
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(compressed)
    np.testing.assert_array_equal(_idx._read_idx_gz(path), labels)
    if damage == "crc":
        compressed = _with_bad_crc(compressed)
    elif damage == "stream":
        stream = bytearray(compressed)
        stream[12] ^= 0xFF
        compressed = bytes(stream)
    else:
        compressed = compressed[: len(compressed) // 2]
    path.write_bytes(compressed)
    with pytest.raises(ValueError, match="labels-idx1-ubyte.gz"):
        _idx._read_idx_gz(path)


def test_a_vocabulary_that_is_not_utf8_is_a_value_error_naming_the_file(tmp_path):
    from tfkd.text import WordPieceTokenizer

    path = tmp_path / "vocab.txt"
    path.write_bytes(b"[PAD]\n[UNK]\n[CLS]\n[SEP]\ncaf\xe9\n")
    with pytest.raises(ValueError, match=r"not UTF-8 text.*vocab.txt") as info:
        WordPieceTokenizer(path)
    assert not isinstance(info.value, UnicodeDecodeError)


def test_an_idx_file_declaring_far_more_than_its_size_is_refused_unread(tmp_path):
    # 160 KB of gzipped zeros declaring 200,000 images of 28x28 (157 MB): read whole, as
    # 5,000,000 images from 3.8 MB filled 4.5 GB and ended in a MemoryError.
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as file:
        file.write(b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (200_000, 28, 28)))
        for _ in range(200):
            file.write(bytes(1000 * 784))
    assert path.stat().st_size < 200_000
    with pytest.raises(ValueError, match=r"idx3-ubyte.gz'.*declares 156800016 bytes, more than"):
        _idx._read_idx_gz(path)


def _npz(path, x_train_header, x_train_bytes):
    """An `.npz` whose `x_train` member is `x_train_header` and that many zero bytes."""
    arrays = {"y_train": np.zeros(4, np.int64), "x_test": np.zeros((4, 28, 28), np.uint8)}
    arrays["y_test"] = arrays["y_train"]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x_train.npy", "w", force_zip64=True) as member:
            member.write(x_train_header)
            for start in range(0, x_train_bytes, 2**24):
                member.write(bytes(min(2**24, x_train_bytes - start)))
        for key, array in arrays.items():
            stream = io.BytesIO()
            np.save(stream, array)
            archive.writestr(f"{key}.npy", stream.getvalue())
    return path


def _npy_header(shape, dtype):
    stream = io.BytesIO()
    descr = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(stream, descr)
    return stream.getvalue()


def test_an_npz_whose_index_claims_more_than_deflate_makes_is_refused_unread(tmp_path):
    # The zip's index says 4 GB for 78 KB of a member: numpy allocated what the header
    # (which matched it) declared, before the stream ran out.
    path = tmp_path / "data.npz"
    np.savez_compressed(path, y_train=np.zeros(4), x_test=np.zeros(4), y_test=np.zeros(4))
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x_train.npy", _npy_header((40_000, 100_000), "|u1") + bytes(78_400))
        compressed = archive.getinfo("x_train.npy").compress_size
    forged_zip_sizes(path, "x_train.npy", compressed, 4 * 10**9 + 128)
    with pytest.raises(ValueError, match=r"declares 4000000128 bytes .*more than DEFLATE can"):
        tfkd.datasets.load_npz(path)
    # 70 MB of zeros in 70 KB is what it says: loaded (a 100-fold limit refused real data:
    # images upscaled for an ImageNet backbone deflate 178-fold).
    path = _npz(tmp_path / "zeros.npz", _npy_header((90_000, 28, 28), "|u1"), 90_000 * 784)
    assert tfkd.datasets.load_npz(path)[0][0].shape == (90_000, 28, 28)


@pytest.mark.parametrize(
    "shape, dtype, stored, message",
    [
        # 7 TiB declared: a MemoryError with no word of the file.
        (
            (10**6, 10**6),
            "<f8",
            0,
            r"shape \(1000000, 1000000\) .* \(8000000000000 bytes\), where it st",
        ),
        # Declared 2 GB, none stored: "an array that only pickle can read (EOF ...)".
        ((2 * 10**9,), "|u1", 0, r"\(2000000000 bytes\), where it stores 0"),
    ],
)
def test_an_npz_whose_sizes_do_not_hold_is_refused_unread(tmp_path, shape, dtype, stored, message):
    path = _npz(tmp_path / "data.npz", _npy_header(shape, dtype), stored)
    with pytest.raises(ValueError, match=f"{message}.*npz='.*data.npz'"):
        tfkd.datasets.load_npz(path)
