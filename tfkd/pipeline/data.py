"""`Data`: the train and test arrays a pipeline runs on, and their fingerprint."""

import hashlib
import os

import numpy as np

from tfkd import datasets
from tfkd.pipeline.stage import invalid_argument

QUICK_TRAIN_SIZE = 2000
QUICK_TEST_SIZE = 500
# The label of a training example whose label is hidden: `tfkd.distill.UNLABELED`, which
# the Distiller reads. Written out because reading a config must not import Keras.
UNLABELED = -1


class Data:
    """Train and test arrays with integer labels, as a pipeline uses them.

    Images of shape `(n, height, width)` get a channel axis. Every stage trains on
    the train split and is measured on the test split.

    Training labels equal to `tfkd.distill.UNLABELED` (-1) mark unlabelled images:
    stages that train on labels alone (`train`, `transfer`, `prune` and
    `quantize_aware` without a teacher) skip them; stages with a teacher train on
    every image, with the task loss on the labelled ones only. `labelled_per_class`
    makes them: the pipeline then keeps every training image but the labels of `N`
    per class only, drawn with its seed (`with_labels_hidden`).

    Args:
        x_train, y_train, x_test, y_test: numpy arrays; labels are class ids.
        name: a name for reports. Defaults to `"data"`.
        num_classes: the number of classes. Defaults to `max(label) + 1`.
        labelled_per_class: `N`, the training labels to keep per class when the
            pipeline runs; every class needs `N` labelled examples. Defaults to
            `None` (keep every label).
        class_names: a name per class, for the report's per-class results.
            Defaults to the data set's names for `load`, else `"0"`, `"1"`, ...

    Example:

    >>> data = tfkd.pipeline.Data.load("fashion_mnist", labelled_per_class=100)
    >>> data.with_labels_hidden(seed=0).describe()["labelled_examples"]
    1000
    """

    def __init__(
        self,
        x_train,
        y_train,
        x_test,
        y_test,
        name="data",
        num_classes=None,
        labelled_per_class=None,
        class_names=None,
    ):
        self.x_train, self.x_test = _as_inputs(x_train, "x_train"), _as_inputs(x_test, "x_test")
        self.y_train, self.y_test = _as_labels(y_train, "y_train"), _as_labels(y_test, "y_test")
        for x, y, split in (
            (self.x_train, self.y_train, "train"),
            (self.x_test, self.y_test, "test"),
        ):
            if len(x) != len(y):
                raise ValueError(
                    f"`x_{split}` and `y_{split}` differ in length. Received: x_{split} of "
                    f"length {len(x)} and y_{split} of length {len(y)}"
                )
            if not len(x):
                raise ValueError(f"`x_{split}` is empty: the {split} split needs examples.")
        self.name = name
        if num_classes is None and isinstance(class_names, list | tuple):
            num_classes = len(class_names)
        self.num_classes = _check_classes(num_classes, self.y_train, self.y_test)
        self.class_names = _check_class_names(class_names, self.num_classes)
        self.labelled_per_class = _check_labelled_per_class(labelled_per_class, self.y_train)
        self.notes = []
        self._fingerprint = None

    @classmethod
    def load(
        cls,
        name=None,
        train_size=None,
        test_size=None,
        labelled_per_class=None,
        **source,
    ):
        """A data set by name (`tfkd.datasets`), or the user's own: optionally its first
        examples only (`labelled_per_class`: see the class).

        Args:
            name: one of `tfkd.datasets.available()`; or instead, one of:
            directory: a folder of images in class folders (`tfkd.datasets.load_directory`),
                with `image_size` ([height, width], required), `color_mode` (`"rgb"` by
                default) and, for one folder of classes without `train/` and `test/`,
                `test_split` (a fraction, drawn with `split_seed`, 0 by default);
            npz: a `.npz` file with `x_train`, `y_train`, `x_test`, `y_test`
                (`tfkd.datasets.load_npz`);
            tfds: a TensorFlow Datasets name prepared in `data_dir`, with `split`
                (`[train, test]` by default; `tfkd.datasets.load_tfds`).
            train_size, test_size: keep the first examples of each split only.

        Raises:
            ValueError, TypeError: the first of `load_errors`, before anything is read.

        Example:

        ```python
        data = tfkd.pipeline.Data.load(directory="flowers", image_size=[96, 96],
                                       test_split=0.2)
        ```
        """
        errors = load_errors(name, train_size, test_size, labelled_per_class, **source)
        if errors:
            raise errors[0]
        kind = _source_kind(name, source)
        if kind == "name":
            (x_train, y_train), (x_test, y_test) = datasets.load(name)
            class_names = datasets.info(name)["class_names"]
        elif kind == "directory":
            arguments = {
                key: source[key]
                for key in ("image_size", "color_mode", "test_split")
                if key in source
            }
            (x_train, y_train), (x_test, y_test), class_names = datasets.load_directory(
                source["directory"], seed=source.get("split_seed", 0), **arguments
            )
            name = os.path.basename(os.path.normpath(source["directory"]))
        elif kind == "npz":
            (x_train, y_train), (x_test, y_test), class_names = datasets.load_npz(source["npz"])
            name = os.path.splitext(os.path.basename(source["npz"]))[0]
        else:
            splits = source.get("split", ("train", "test"))
            (x_train, y_train), (x_test, y_test), class_names = datasets.load_tfds(
                source["tfds"], source["data_dir"], tuple(splits)
            )
            name = source["tfds"]
        data = cls(x_train, y_train, x_test, y_test, name=name, class_names=class_names)
        data = data.subset(train_size, test_size)
        return data.subset(labelled_per_class=labelled_per_class)

    def subset(self, train_size=None, test_size=None, labelled_per_class="same"):
        """The first `train_size` / `test_size` examples (all when `None`), keeping
        `labelled_per_class` unless another is given."""
        if labelled_per_class == "same":
            labelled_per_class = self.labelled_per_class
        data = Data(
            self.x_train[:train_size],
            self.y_train[:train_size],
            self.x_test[:test_size],
            self.y_test[:test_size],
            name=self.name,
            num_classes=self.num_classes,
            labelled_per_class=labelled_per_class,
            class_names=self.class_names,
        )
        data.notes = list(self.notes)
        return data

    def quick(self):
        """A few thousand examples, for a smoke run.

        Labels are hidden after the subset is taken; when a class of the subset has
        fewer than `labelled_per_class` examples, the quick run keeps that many per
        class instead, and `notes` says so.
        """
        data = self.subset(QUICK_TRAIN_SIZE, QUICK_TEST_SIZE, labelled_per_class=None)
        if self.labelled_per_class is None:
            return data
        fewest = int(_class_counts(data.y_train).min())
        if fewest >= self.labelled_per_class:
            return data.subset(labelled_per_class=self.labelled_per_class)
        data = data.subset(labelled_per_class=fewest)
        data.notes.append(
            f"quick run: labelled_per_class={self.labelled_per_class} lowered to {fewest}, "
            f"the fewest examples of a class among the first {len(data.y_train):,}"
        )
        return data

    def with_labels_hidden(self, seed=0):
        """This data with all but `labelled_per_class` training labels per class set to
        `UNLABELED`, the kept ones drawn at random per class with `seed`. The images
        and the test split are unchanged; without `labelled_per_class`, returns `self`.
        """
        if self.labelled_per_class is None:
            return self
        rng = np.random.default_rng(seed)
        y_train = np.full_like(self.y_train, UNLABELED)
        for label in np.unique(self.y_train[self.y_train != UNLABELED]):
            members = np.flatnonzero(self.y_train == label)
            kept = rng.choice(members, self.labelled_per_class, replace=False)
            y_train[kept] = label
        data = Data(
            self.x_train,
            y_train,
            self.x_test,
            self.y_test,
            name=self.name,
            num_classes=self.num_classes,
            class_names=self.class_names,
        )
        data.labelled_per_class, data.notes = self.labelled_per_class, list(self.notes)
        return data

    def labelled(self):
        """`(x_train, y_train)` of the training examples that have a label."""
        if not np.any(self.y_train == UNLABELED):
            return self.x_train, self.y_train
        mask = self.y_train != UNLABELED
        return self.x_train[mask], self.y_train[mask]

    def augmented_copies(self, copies, seed=0, shift=2, flip=True):
        """`copies` fixed, randomly shifted (and flipped) copies of the training images.

        Each copy shifts every image by up to `shift` pixels in each direction (zero
        fill) and flips half of them left-right. Fixed by `seed`, so a teacher's outputs
        on them can be computed once and cached. Returns `(x, y)`.
        """
        if self.x_train.ndim != 4:
            raise ValueError(
                "Augmented copies need images of shape (n, height, width, channels). "
                f"Received: x_train of shape {self.x_train.shape}"
            )
        rng = np.random.default_rng(seed)
        n, height, width, _ = self.x_train.shape
        padded = np.pad(self.x_train, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
        images = []
        for _ in range(copies):
            rows = rng.integers(0, 2 * shift + 1, n)
            columns = rng.integers(0, 2 * shift + 1, n)
            copy = np.stack(
                [
                    padded[i, r : r + height, c : c + width]
                    for i, (r, c) in enumerate(zip(rows, columns))
                ]
            )
            flipped = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
            copy[flipped] = copy[flipped, :, ::-1]
            images.append(copy)
        return np.concatenate(images), np.tile(self.y_train, copies)

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])

    @property
    def fingerprint(self):
        """A hash of the arrays: a stage reruns when its data change."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for array in (self.x_train, self.y_train, self.x_test, self.y_test):
                digest.update(str((array.shape, array.dtype.str)).encode())
                digest.update(np.ascontiguousarray(array).data)
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def describe(self):
        description = {
            "name": self.name,
            "train_examples": len(self.x_train),
            "test_examples": len(self.x_test),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
        }
        if self.labelled_per_class is not None or np.any(self.y_train == UNLABELED):
            description["labelled_per_class"] = self.labelled_per_class
            description["labelled_examples"] = int(np.sum(self.y_train != UNLABELED))
        if self.notes:
            description["notes"] = list(self.notes)
        return description


# The keys of each source besides the one that names it, and the keys every source takes.
SOURCE_KEYS = {
    "name": (),
    "directory": ("image_size", "color_mode", "test_split", "split_seed"),
    "npz": (),
    "tfds": ("data_dir", "split"),
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
        return [
            invalid_argument(
                argument if name is not None else "data",
                "The data must be given by exactly one of `name` (a data set of "
                f"tfkd.datasets: {datasets.available()}), `directory`, `npz` or `tfds`. "
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
    for size_argument, value in (("train_size", train_size), ("test_size", test_size)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1
        ):
            errors.append(
                invalid_argument(
                    size_argument,
                    f"`{size_argument}` must be a positive integer. "
                    f"Received: {size_argument}={value!r}",
                )
            )
    try:
        _check_labelled_per_class(labelled_per_class)
    except ValueError as error:
        return [*errors, error]
    if labelled_per_class is None or errors or kind != "name":
        return errors  # other sources' class counts are checked when they are read
    info = datasets.info(name)
    examples = min(info["num_train_examples"], train_size or info["num_train_examples"])
    if labelled_per_class * info["num_classes"] > examples:
        errors.append(
            invalid_argument(
                "labelled_per_class",
                "`labelled_per_class` asks for more labels than there are training examples: "
                f"{labelled_per_class} per class x {info['num_classes']} classes > "
                f"{examples:,}. Received: labelled_per_class={labelled_per_class}. Use at "
                f"most {examples // info['num_classes']}, or more training data "
                "(`train_size`).",
            )
        )
    return errors


def _source_kind(name, source):
    return "name" if name is not None else next(k for k in SOURCE_KEYS if source.get(k))


def _shown_source(name, source):
    given = {"name": name, **source} if name is not None else source
    return ", ".join(f"{key}={value!r}" for key, value in given.items()) or "nothing"


def _as_inputs(x, name):
    x = np.asarray(x)
    if x.ndim == 0:
        raise TypeError(
            f"`{name}` must be an array of examples (numpy, or a list). "
            f"Received: {name}={x.item()!r} of type {type(x.item()).__name__}"
        )
    if x.ndim == 3:  # grayscale images: add the channel axis that Conv2D wants
        x = x[..., None]
    # Images become float32; integer token ids (2D) stay as they are.
    return x.astype("float32") if x.ndim >= 3 and x.dtype != np.float32 else x


def _class_counts(y):
    return np.bincount(y[y != UNLABELED])


def _check_labelled_per_class(value, y_train=None):
    """`value` when it is None, or a positive int that every class of `y_train` has."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise invalid_argument(
            "labelled_per_class",
            "`labelled_per_class` must be a positive integer, the labels to keep per class. "
            f"Received: labelled_per_class={value!r}",
        )
    if y_train is not None:
        counts = _class_counts(y_train)
        short = {label: int(count) for label, count in enumerate(counts) if count < value}
        if short:
            raise invalid_argument(
                "labelled_per_class",
                f"`labelled_per_class` exceeds the training examples of {len(short)} "
                f"class(es). Received: labelled_per_class={value!r}; examples of those "
                f"classes: {short}. Use at most {min(short.values())} or more training data.",
            )
    return int(value)


def _check_classes(num_classes, y_train, y_test):
    """`num_classes` (or the labels' count), checked against the labels: JAX trains on a
    zero loss where a label is out of range, instead of failing."""
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer)
    ):
        raise TypeError(f"`num_classes` must be an int >= 2. Received: {num_classes!r}")
    for y, name, hidden in ((y_train, "y_train", UNLABELED), (y_test, "y_test", None)):
        bad = y[(y < 0) & (y != hidden)] if hidden is not None else y[y < 0]
        if bad.size:
            raise ValueError(
                f"`{name}` holds negative labels ({sorted(set(bad.tolist()))[:5]}). Labels are "
                f"class ids 0..num_classes-1"
                + (f"; {UNLABELED} marks an unlabelled training example." if hidden else ".")
            )
    largest = int(max(y_train.max(), y_test.max()))
    count = int(num_classes) if num_classes is not None else largest + 1
    if count < 2 or largest >= count:
        raise ValueError(
            f"`num_classes` must be >= 2 and above every label. Received: num_classes="
            f"{num_classes!r} with labels up to {largest}."
        )
    return count


def _check_class_names(class_names, num_classes):
    if class_names is None:
        return [str(index) for index in range(num_classes)]
    valid = isinstance(class_names, list | tuple) and all(isinstance(n, str) for n in class_names)
    if not valid or len(class_names) != num_classes:
        raise (ValueError if valid else TypeError)(
            f"`class_names` must be a list of {num_classes} strings, one per class. "
            f"Received: class_names={class_names!r}"
        )
    return list(class_names)


def _as_labels(y, name):
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind not in "iu":
        raise TypeError(f"`{name}` must hold integer class ids. Received: dtype={y.dtype}")
    return y.astype("int64")
