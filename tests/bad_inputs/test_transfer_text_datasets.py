"""Bad inputs to `tfkd.transfer`, `tfkd.text` and `tfkd.datasets` are refused (issue 16.9).

Every case is refused before any weights are read or a MobileNetV2 / MiniLM is built:
backbones here are one-layer models, and bad files are written to a temporary folder.
"""

import os
import tempfile

import keras
import numpy as np

import tfkd
from tests.bad_inputs._cases import Case, check, parametrize

transfer, text, datasets = tfkd.transfer, tfkd.text, tfkd.datasets

EXEMPT = {
    "tfkd.transfer.TransferHistory": "a result type that fine_tune returns; users never build it",
    "tfkd.transfer.imagenet_class_names": "a function that takes no arguments",
    "tfkd.transfer.minilm_dir": "a function that takes no arguments",
    "tfkd.datasets.available": "a function that takes no arguments",
    "tfkd.datasets.TextSplits": "a result type that load_tweets returns; users never build it",
}


VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world"]


def _backbone():
    """A feature-map backbone of one layer, (4, 4, 1) -> (4, 4, 2)."""
    return keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 1)], name="tiny")


def _dense():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])


def _images(n=4):
    return np.zeros((n, 4, 4, 1), "float32")


def _data(labels=(0, 1, 0, 1)):
    return _images(len(labels)), np.array(labels)


def _unbatched():
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(_data())


def _ids():
    return np.array([[2, 4, 3, 0], [2, 4, 5, 3], [2, 3, 0, 0]], "int32")


def _with_file(name, content, call):
    """`call(path)` with `content` written to `name` in a new temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(content)
        return call(path)


def _missing(name, call):
    """`call(path)` with a path in a new temporary folder where nothing is."""
    with tempfile.TemporaryDirectory() as folder:
        return call(os.path.join(folder, name))


_TRANSFER_CASES = [
    # BertInputs
    Case(transfer.BertInputs, lambda: transfer.BertInputs(pad_id="0"), TypeError, "pad_id", "'0'"),
    Case(transfer.BertInputs, lambda: transfer.BertInputs(pad_id=-1), ValueError, "pad_id", "-1"),
    Case(
        transfer.BertInputs,
        lambda: transfer.BertInputs()(np.array([2, 4, 3])),
        ValueError,
        "token_ids",
        "(3,)",
    ),
    Case(
        transfer.BertInputs,
        lambda: transfer.BertInputs().compute_output_spec(keras.KerasTensor((2, 8, 1), "int32")),
        ValueError,
        "token_ids",
        "(2, 8, 1)",
    ),
    # GrayscaleToRGB
    Case(
        transfer.GrayscaleToRGB,
        lambda: transfer.GrayscaleToRGB()(np.ones((2, 4, 4, 3))),
        ValueError,
        "inputs",
        "(2, 4, 4, 3)",
    ),
    Case(
        transfer.GrayscaleToRGB,
        lambda: transfer.GrayscaleToRGB().compute_output_shape((None, 4, 4, 2)),
        ValueError,
        "inputs",
        "(None, 4, 4, 2)",
    ),
    Case(
        transfer.GrayscaleToRGB,
        lambda: transfer.GrayscaleToRGB()(np.ones((1,))),
        ValueError,
        "inputs",
        "(1,)",
    ),
    Case(transfer.GrayscaleToRGB, lambda: transfer.GrayscaleToRGB(name=5), ValueError, "name", "5"),
    # MaskedAveragePooling
    Case(
        transfer.MaskedAveragePooling,
        lambda: transfer.MaskedAveragePooling()(np.ones((2, 3)), np.ones((2, 3))),
        ValueError,
        "sequence",
        "(2, 3)",
    ),
    Case(
        transfer.MaskedAveragePooling,
        lambda: transfer.MaskedAveragePooling()(np.ones((2, 3, 4)), np.ones((2, 5))),
        ValueError,
        "padding_mask",
        "(2, 5)",
    ),
    Case(
        transfer.MaskedAveragePooling,
        lambda: transfer.MaskedAveragePooling()(np.ones((2, 3, 4)), np.ones((2, 3, 1))),
        ValueError,
        "padding_mask",
        "(2, 3, 1)",
    ),
    # build_classifier
    Case(
        transfer.build_classifier,
        lambda: transfer.build_classifier("mobilenet_v2", 3),
        TypeError,
        "base",
        "str",
    ),
    Case(
        transfer.build_classifier,
        lambda: transfer.build_classifier(_backbone(), 3, input_shape=(4, 4, 2)),
        ValueError,
        "input_shape",
        "(4, 4, 2)",
    ),
    Case(
        transfer.build_classifier,
        lambda: transfer.build_classifier(_backbone(), 0),
        ValueError,
        "num_classes",
        "0",
    ),
    Case(
        transfer.build_classifier,
        lambda: transfer.build_classifier(_backbone(), 3, dropout="0.2"),
        TypeError,
        "dropout",
        "'0.2'",
    ),
    Case(
        transfer.build_classifier,
        lambda: transfer.build_classifier(_backbone(), 3, pooling="median"),
        ValueError,
        "pooling",
        "'median'",
    ),
    Case(
        transfer.build_classifier,
        lambda: transfer.build_classifier(_backbone(), 3, input_shape=28),
        TypeError,
        "input_shape",
        "28",
    ),
    Case(
        transfer.build_classifier,
        lambda: transfer.build_classifier(_backbone(), 3, image_size=(8,)),
        ValueError,
        "image_size",
        "(8,)",
    ),
    Case(
        transfer.build_classifier,
        lambda: transfer.build_classifier(_backbone(), 3, frozen_batch_norm="yes"),
        TypeError,
        "frozen_batch_norm",
        "'yes'",
    ),
    # feature_extractor
    Case(
        transfer.feature_extractor,
        lambda: transfer.feature_extractor(keras.layers.Dense(2)),
        TypeError,
        "base",
        "Dense",
    ),
    Case(
        transfer.feature_extractor,
        lambda: transfer.feature_extractor(_backbone(), pooling=None),
        ValueError,
        "pooling",
        "None",
    ),
    Case(
        transfer.feature_extractor,
        lambda: transfer.feature_extractor(_backbone(), preprocessing="rescale"),
        TypeError,
        "preprocessing",
        "str",
    ),
    Case(
        transfer.feature_extractor,
        lambda: transfer.feature_extractor(_backbone(), input_shape=(4, 0, 1)),
        ValueError,
        "input_shape",
        "(4, 0, 1)",
    ),
    # extract_features
    Case(
        transfer.extract_features,
        lambda: transfer.extract_features(None, _images()),
        TypeError,
        "base",
        "NoneType",
    ),
    Case(
        transfer.extract_features,
        lambda: transfer.extract_features(_backbone(), _images(), batch_size=0),
        ValueError,
        "batch_size",
        "0",
    ),
    Case(
        transfer.extract_features,
        lambda: transfer.extract_features(_backbone(), _images(), pooling="sum"),
        ValueError,
        "pooling",
        "'sum'",
    ),
    # fine_tune: all refused before training starts
    Case(
        transfer.fine_tune,
        lambda: transfer.fine_tune(_backbone(), 2, _data(), head_learning_rate=-1e-3),
        ValueError,
        "head_learning_rate",
        "-0.001",
    ),
    Case(
        transfer.fine_tune,
        lambda: transfer.fine_tune(_backbone(), 2, _data(), fine_tune_learning_rate=float("nan")),
        ValueError,
        "fine_tune_learning_rate",
        "nan",
    ),
    Case(
        transfer.fine_tune,
        lambda: transfer.fine_tune(_backbone(), 2, _data(), batch_size="64"),
        TypeError,
        "batch_size",
        "'64'",
    ),
    Case(
        transfer.fine_tune,
        lambda: transfer.fine_tune(_backbone(), 2, _data((0, 1, 0, 7))),
        ValueError,
        "train_data",
        "max 7",
    ),
    Case(
        transfer.fine_tune,
        lambda: transfer.fine_tune(_backbone(), 2, _data(), head_epochs=-1),
        ValueError,
        "head_epochs",
        "-1",
    ),
    Case(
        transfer.fine_tune,
        lambda: transfer.fine_tune(_backbone(), 2, _data(), unfreeze=True),
        TypeError,
        "unfreeze",
        "True",
    ),
    Case(
        transfer.fine_tune,
        lambda: transfer.fine_tune(_backbone(), 2, _data(), augmentation="flip"),
        TypeError,
        "augmentation",
        "str",
    ),
    # Before: Keras's "Argument `output` must have rank (ndim) `target.ndim - 1`".
    Case(
        transfer.fine_tune,
        lambda: transfer.fine_tune(_backbone(), 2, _unbatched()),
        ValueError,
        "train_data",
        "one example at a time",
    ),
    # load_torchvision_weights: refused before the checkpoint is read
    Case(
        transfer.load_torchvision_weights,
        lambda: transfer.load_torchvision_weights("mobilenet_v2"),
        TypeError,
        "model",
        "str",
    ),
    Case(
        transfer.load_torchvision_weights,
        lambda: transfer.load_torchvision_weights(_dense(), path=3),
        TypeError,
        "path",
        "path=3",
    ),
    Case(
        transfer.load_torchvision_weights,
        lambda: _missing("weights.pth", lambda p: transfer.load_torchvision_weights(_dense(), p)),
        FileNotFoundError,
        "path",
        "weights.pth'",
    ),
    Case(
        transfer.load_torchvision_weights,
        lambda: _with_file(
            "notes.pth",
            b"not a checkpoint",
            lambda p: transfer.load_torchvision_weights(_dense(), p),
        ),
        ValueError,
        "path",
        "notes.pth'",
    ),
    # mobilenet_v2 and pretrained_mobilenet_v2: refused before building
    Case(
        transfer.mobilenet_v2,
        lambda: transfer.mobilenet_v2(input_shape=(224, 224)),
        ValueError,
        "input_shape",
        "(224, 224)",
    ),
    Case(
        transfer.mobilenet_v2,
        lambda: transfer.mobilenet_v2(input_shape=(224, 224, 1)),
        ValueError,
        "input_shape",
        "(224, 224, 1)",
    ),
    Case(
        transfer.mobilenet_v2,
        lambda: transfer.mobilenet_v2(input_shape=(16, 16, 3)),
        ValueError,
        "input_shape",
        "(16, 16, 3)",
    ),
    Case(
        transfer.mobilenet_v2,
        lambda: transfer.mobilenet_v2(input_shape=224),
        TypeError,
        "input_shape",
        "224",
    ),
    Case(
        transfer.mobilenet_v2,
        lambda: transfer.mobilenet_v2(num_classes=0),
        ValueError,
        "num_classes",
        "0",
    ),
    Case(
        transfer.mobilenet_v2,
        lambda: transfer.mobilenet_v2(include_top=False, pooling="mean"),
        ValueError,
        "pooling",
        "'mean'",
    ),
    Case(
        transfer.mobilenet_v2,
        lambda: transfer.mobilenet_v2(include_top="no"),
        TypeError,
        "include_top",
        "'no'",
    ),
    Case(
        transfer.pretrained_mobilenet_v2,
        lambda: transfer.pretrained_mobilenet_v2((96, 96)),
        ValueError,
        "input_shape",
        "(96, 96)",
    ),
    Case(
        transfer.pretrained_mobilenet_v2,
        lambda: transfer.pretrained_mobilenet_v2((96, 96, 3.5)),
        ValueError,
        "input_shape",
        "(96, 96, 3.5)",
    ),
    Case(
        transfer.pretrained_mobilenet_v2,
        lambda: transfer.pretrained_mobilenet_v2(pooling="avg"),
        ValueError,
        "pooling",
        "'avg'",
    ),
    Case(
        transfer.pretrained_mobilenet_v2,
        lambda: transfer.pretrained_mobilenet_v2(include_top=1),
        TypeError,
        "include_top",
        "1",
    ),
    # preprocess_input
    Case(
        transfer.preprocess_input,
        lambda: transfer.preprocess_input(np.zeros((1, 2, 2, 4))),
        ValueError,
        "images",
        "(1, 2, 2, 4)",
    ),
    Case(
        transfer.preprocess_input,
        lambda: transfer.preprocess_input("cat.jpg"),
        TypeError,
        "images",
        "str",
    ),
    Case(
        transfer.preprocess_input,
        lambda: transfer.preprocess_input(np.full((1, 1, 1, 3), "a")),
        TypeError,
        "images",
        "<U1",
    ),
    Case(
        transfer.preprocess_input,
        lambda: transfer.preprocess_input(np.float32(3.0)),
        ValueError,
        "images",
        "images.shape=()",
    ),
    # pretrained_minilm: refused before keras-hub reads weights
    Case(
        transfer.pretrained_minilm,
        lambda: transfer.pretrained_minilm(3),
        TypeError,
        "path",
        "path=3",
    ),
    Case(
        transfer.pretrained_minilm,
        lambda: _missing("minilm", transfer.pretrained_minilm),
        FileNotFoundError,
        "path",
        "minilm'",
    ),
    Case(
        transfer.pretrained_minilm,
        lambda: _with_file(
            "minilm/config.json", b"{}", lambda p: transfer.pretrained_minilm(os.path.dirname(p))
        ),
        FileNotFoundError,
        "path",
        "['model.safetensors']",
    ),
    # torchvision_normalization
    Case(
        transfer.torchvision_normalization,
        lambda: transfer.torchvision_normalization("255"),
        TypeError,
        "pixel_scale",
        "'255'",
    ),
    Case(
        transfer.torchvision_normalization,
        lambda: transfer.torchvision_normalization(0),
        ValueError,
        "pixel_scale",
        "0",
    ),
    Case(
        transfer.torchvision_normalization,
        lambda: transfer.torchvision_normalization(float("inf")),
        ValueError,
        "pixel_scale",
        "inf",
    ),
]

_TEXT_CASES = [
    # LengthBuckets
    Case(
        text.LengthBuckets,
        lambda: text.LengthBuckets(np.arange(6)),
        ValueError,
        "token_ids",
        "(6,)",
    ),
    Case(
        text.LengthBuckets,
        lambda: text.LengthBuckets(np.full((2, 4), "a")),
        TypeError,
        "token_ids",
        "<U1",
    ),
    Case(
        text.LengthBuckets,
        lambda: text.LengthBuckets(_ids(), labels=[0, 1]),
        ValueError,
        "labels",
        "2 labels",
    ),
    Case(
        text.LengthBuckets,
        lambda: text.LengthBuckets(_ids(), batch_size=0),
        ValueError,
        "batch_size",
        "0",
    ),
    Case(
        text.LengthBuckets,
        lambda: text.LengthBuckets(_ids(), length_multiple=0),
        ValueError,
        "length_multiple",
        "0",
    ),
    Case(
        text.LengthBuckets,
        lambda: text.LengthBuckets(_ids(), shuffle="yes"),
        TypeError,
        "shuffle",
        "'yes'",
    ),
    # WordPieceTokenizer
    Case(
        text.WordPieceTokenizer,
        lambda: _missing("vocab.txt", text.WordPieceTokenizer),
        FileNotFoundError,
        "vocabulary",
        "vocab.txt'",
    ),
    Case(
        text.WordPieceTokenizer,
        lambda: _with_file("vocab.txt", b"\xff\xfe\xfa", text.WordPieceTokenizer),
        ValueError,
        "vocabulary",
        "vocab.txt'",
    ),
    Case(
        text.WordPieceTokenizer,
        lambda: text.WordPieceTokenizer(["hello", "world"]),
        ValueError,
        "vocabulary",
        "a list of 2 tokens",
    ),
    Case(
        text.WordPieceTokenizer,
        lambda: text.WordPieceTokenizer(30522),
        TypeError,
        "vocabulary",
        "30522",
    ),
    Case(
        text.WordPieceTokenizer,
        lambda: text.WordPieceTokenizer(VOCABULARY, sequence_length=2),
        ValueError,
        "sequence_length",
        "2",
    ),
    Case(
        text.WordPieceTokenizer,
        lambda: text.WordPieceTokenizer(VOCABULARY, sequence_length="64"),
        TypeError,
        "sequence_length",
        "'64'",
    ),
    Case(
        text.WordPieceTokenizer,
        lambda: text.WordPieceTokenizer(VOCABULARY, lowercase="yes"),
        TypeError,
        "lowercase",
        "'yes'",
    ),
    Case(
        text.WordPieceTokenizer,
        lambda: text.WordPieceTokenizer(VOCABULARY)(42),
        TypeError,
        "texts",
        "int",
    ),
    Case(
        text.WordPieceTokenizer,
        lambda: text.WordPieceTokenizer(VOCABULARY)(["hello", None]),
        TypeError,
        "texts",
        "NoneType",
    ),
    # conv_classifier
    Case(
        text.conv_classifier,
        lambda: text.conv_classifier(0, 3),
        ValueError,
        "vocabulary_size",
        "0",
    ),
    Case(
        text.conv_classifier,
        lambda: text.conv_classifier(100, "3"),
        TypeError,
        "num_classes",
        "'3'",
    ),
    Case(
        text.conv_classifier,
        lambda: text.conv_classifier(100, 3, hidden_units=-1),
        ValueError,
        "hidden_units",
        "-1",
    ),
    Case(
        text.conv_classifier,
        lambda: text.conv_classifier(100, 3, dropout=1.0),
        ValueError,
        "dropout",
        "1.0",
    ),
    Case(
        text.conv_classifier,
        lambda: text.conv_classifier(100, 3, dropout="0.3"),
        TypeError,
        "dropout",
        "'0.3'",
    ),
]

_DATASETS_CASES = [
    # info and load: refused before any file is read
    Case(datasets.info, lambda: datasets.info(3), TypeError, "name", "3"),
    Case(datasets.info, lambda: datasets.info("cifar10"), ValueError, "name", "'cifar10'"),
    Case(datasets.info, lambda: datasets.info(None), TypeError, "name", "None"),
    Case(datasets.info, lambda: datasets.info(""), ValueError, "name", "''"),
    Case(
        datasets.load, lambda: datasets.load("Fashion_MNIST"), ValueError, "name", "'Fashion_MNIST'"
    ),
    Case(datasets.load, lambda: datasets.load(b"mnist"), TypeError, "name", "b'mnist'"),
    Case(datasets.load, lambda: datasets.load(["mnist"]), TypeError, "name", "['mnist']"),
    # load_tweets
    Case(
        datasets.load_tweets,
        lambda: _missing("tweets.csv", datasets.load_tweets),
        FileNotFoundError,
        "path",
        "tweets.csv'",
    ),
    Case(datasets.load_tweets, lambda: datasets.load_tweets(3), TypeError, "path", "path=3"),
    Case(
        datasets.load_tweets,
        lambda: _with_file("tweets.csv", b"label,tweet\n1,hello\n", datasets.load_tweets),
        ValueError,
        "path",
        "['label', 'tweet']",
    ),
    Case(
        datasets.load_tweets,
        lambda: _with_file("tweets.csv", b"sentiment,text\nangry,hello\n", datasets.load_tweets),
        ValueError,
        "path",
        "'angry'",
    ),
    Case(
        datasets.load_tweets,
        lambda: datasets.load_tweets(test_fraction=1.0),
        ValueError,
        "test_fraction",
        "1.0",
    ),
    Case(
        datasets.load_tweets,
        lambda: datasets.load_tweets(unlabeled_fraction="half"),
        TypeError,
        "unlabeled_fraction",
        "'half'",
    ),
    Case(datasets.load_tweets, lambda: datasets.load_tweets(seed=-1), ValueError, "seed", "-1"),
    # write_tfds: refused before tensorflow-datasets is imported
    Case(
        datasets.write_tfds,
        lambda: datasets.write_tfds("cifar10", "/tmp/tfds"),
        ValueError,
        "name",
        "'cifar10'",
    ),
    Case(datasets.write_tfds, lambda: datasets.write_tfds(3, "/tmp/tfds"), TypeError, "name", "3"),
    Case(
        datasets.write_tfds,
        lambda: datasets.write_tfds("mnist", None),
        TypeError,
        "data_dir",
        "None",
    ),
    Case(
        datasets.write_tfds, lambda: datasets.write_tfds("mnist", ""), ValueError, "data_dir", "''"
    ),
    Case(
        datasets.write_tfds,
        lambda: _with_file("tfds", b"", lambda p: datasets.write_tfds("mnist", p)),
        NotADirectoryError,
        "data_dir",
        "tfds'",
    ),
]


def _first(errors):
    """Raises the first error an `*_errors` check found."""
    raise errors[0]


def _one_class_folder(call):
    """`call(path)` on a folder with train/ and test/ of one class each."""
    with tempfile.TemporaryDirectory() as folder:
        for split in ("train", "test"):
            os.makedirs(os.path.join(folder, split, "cat"))
            with open(os.path.join(folder, split, "cat", "a.png"), "wb") as file:
                file.write(b"\x89PNG\r\n\x1a\n")
        return call(folder)


_FILE_CASES = [
    Case(
        datasets.load_directory,
        lambda: _missing("images", lambda p: datasets.load_directory(p, (28, 28))),
        ValueError,
        "directory",
        "images'",
    ),
    Case(
        datasets.load_directory,
        lambda: datasets.load_directory(".", (28, 0)),
        ValueError,
        "image_size",
        "(28, 0)",
    ),
    Case(
        datasets.load_directory,
        lambda: datasets.load_directory(".", (28, 28), color_mode="cmyk"),
        ValueError,
        "color_mode",
        "'cmyk'",
    ),
    Case(
        datasets.load_directory,
        lambda: datasets.load_directory(".", (28, 28), test_split=1.5),
        ValueError,
        "test_split",
        "1.5",
    ),
    Case(
        datasets.directory_errors,
        lambda: _first(datasets.directory_errors(3, (28, 28))),
        TypeError,
        "directory",
        "3",
    ),
    Case(
        datasets.directory_errors,
        lambda: _one_class_folder(lambda p: _first(datasets.directory_errors(p, (28, 28)))),
        ValueError,
        "directory",
        "['cat']",
    ),
    Case(
        datasets.directory_errors,
        lambda: _first(datasets.directory_errors(".", (28, 28), seed=-1)),
        ValueError,
        "seed",
        "-1",
    ),
    Case(
        datasets.load_npz,
        lambda: _missing("data.npz", datasets.load_npz),
        ValueError,
        "npz",
        "data.npz'",
    ),
    Case(
        datasets.load_npz,
        lambda: _with_file("data.npz", b"not a zip", datasets.load_npz),
        ValueError,
        "npz",
        "data.npz'",
    ),
    Case(datasets.load_npz, lambda: datasets.load_npz(None), TypeError, "npz", "None"),
    Case(datasets.npz_errors, lambda: _first(datasets.npz_errors(3)), TypeError, "npz", "3"),
    Case(
        datasets.npz_errors,
        lambda: _first(_missing("a.npz", datasets.npz_errors)),
        ValueError,
        "npz",
        "a.npz'",
    ),
    Case(
        datasets.npz_errors,
        lambda: _first(_with_file("a.npz", b"PK\x03\x04junk", datasets.npz_errors)),
        ValueError,
        "npz",
        "a.npz'",
    ),
    Case(datasets.load_tfds, lambda: datasets.load_tfds("", "."), ValueError, "tfds", "''"),
    Case(
        datasets.load_tfds, lambda: datasets.load_tfds("mnist", None), TypeError, "data_dir", "None"
    ),
    Case(
        datasets.load_tfds,
        lambda: datasets.load_tfds("mnist", ".", splits="train"),
        ValueError,
        "split",
        "'train'",
    ),
    Case(
        datasets.tfds_errors, lambda: _first(datasets.tfds_errors(3, ".")), TypeError, "tfds", "3"
    ),
    Case(
        datasets.tfds_errors,
        lambda: _first(_missing("tfds", lambda p: datasets.tfds_errors("mnist", p))),
        ValueError,
        "data_dir",
        "tfds'",
    ),
    Case(
        datasets.tfds_errors,
        lambda: _first(datasets.tfds_errors("mnist", ".", ["train"])),
        ValueError,
        "split",
        "['train']",
    ),
]

CASES = _TRANSFER_CASES + _TEXT_CASES + _DATASETS_CASES + _FILE_CASES


@parametrize(CASES)
def test_bad_input_is_refused(case):
    check(case)
