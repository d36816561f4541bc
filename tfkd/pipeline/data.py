"""`Data`: the train and test arrays a pipeline runs on, and their fingerprint."""

import hashlib

import numpy as np

from tfkd._checks import check_flag, check_number, check_seed
from tfkd.pipeline import _sources
from tfkd.pipeline._sources import check_labelled_per_class, class_counts, load_errors
from tfkd.pipeline.stage import invalid_argument

QUICK_TRAIN_SIZE = 2000
QUICK_TEST_SIZE = 500
UNLABELED = _sources.UNLABELED


class Data:
    """Train and test arrays with integer labels, as a pipeline uses them.

    Images of shape `(n, height, width)` get a channel axis; they are kept as uint8
    (Keras models cast each batch to their input's float dtype) or float32. Every stage
    trains on the train split and is measured on the test split.

    Training labels equal to `tfkd.distill.UNLABELED` (-1) mark unlabelled images:
    stages that train on labels alone (`train`, `transfer`, `prune` and
    `quantize_aware` without a teacher) skip them; stages with a teacher train on
    every image, with the task loss on the labelled ones only. `labelled_per_class`
    makes them: the pipeline then keeps every training image but the labels of `N`
    per class only, drawn with its seed (`with_labels_hidden`).

    Args:
        x_train, y_train, x_test, y_test: numpy arrays; labels are class ids (integers,
            whole-number floats, or one-hot rows); inputs are images or, for text, token
            ids `(n, sequence_length)`.
        name: a name for reports. Defaults to `"data"`.
        num_classes: the number of classes. Defaults to `max(label) + 1`.
        labelled_per_class: `N`, the training labels to keep per class when the
            pipeline runs; every class needs `N` labelled examples. Defaults to
            `None` (keep every label).
        class_names: a name per class, for the report's per-class results.
            Defaults to the data set's names for `load`, else `"0"`, `"1"`, ...
        tokenizer: for token ids, the `tfkd.text.WordPieceTokenizer` that made them:
            an `export` stage writes its files beside the `.tflite`. Defaults to `None`.

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
        tokenizer=None,
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
        if self.x_train.shape[1:] != self.x_test.shape[1:]:  # before: failed after training
            raise ValueError(
                "`x_train` and `x_test` must hold examples of the same shape. Received: "
                f"x_train of shape {self.x_train.shape} and x_test of shape {self.x_test.shape}."
            )
        if not isinstance(name, str) or not name:  # the report reads it as a string
            raise TypeError(f"`name` must be a non-empty string. Received: name={name!r}")
        self.name = name
        if num_classes is None and isinstance(class_names, list | tuple):
            largest = max(int(self.y_train.max()), int(self.y_test.max()))
            if largest >= len(class_names):  # before: blamed a num_classes never given
                raise ValueError(
                    f"`class_names` must name every class: the labels go up to {largest}, "
                    f"{largest + 1} classes. Received: {len(class_names)} class_names "
                    f"{list(class_names)[:10]}."
                )
            num_classes = len(class_names)
        if num_classes is None:  # one-hot rows say how many classes (one may be absent)
            num_classes = _one_hot_width(y_train)
        self.num_classes = _check_classes(num_classes, self.y_train, self.y_test)
        self.class_names = _check_class_names(class_names, self.num_classes)
        self.labelled_per_class = check_labelled_per_class(labelled_per_class, self.y_train)
        self.tokenizer = _check_tokenizer(tokenizer)
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
                (`[train, test]` by default; `tfkd.datasets.load_tfds`);
            csv: texts, a `.csv` file (with `test_split`) or a folder of `train.csv` and
                `test.csv` (`tfkd.datasets.load_csv`: columns `text` and `label`; an
                empty training label marks an unlabelled text), tokenized into
                `sequence_length` (64) token ids by the `vocabulary` of the teacher:
                `"minilm"` (the default) or a BERT `vocab.txt`; `encoding` (`"utf-8"`,
                with or without Excel's byte-order mark, by default).
            train_size, test_size: keep the first examples of each split only (drawn
                from every class in proportion where a split is stored class by class).

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
        (x_train, y_train), (x_test, y_test), class_names, name, tokenizer = _sources.read(
            name, source
        )
        data = cls(x_train, y_train, x_test, y_test, name=name, class_names=class_names)
        data.tokenizer = tokenizer
        data = data.subset(train_size, test_size)
        return data.subset(labelled_per_class=labelled_per_class)

    def subset(self, train_size=None, test_size=None, labelled_per_class="same"):
        """The first `train_size` / `test_size` examples (all when `None`), keeping
        `labelled_per_class` unless another is given. A split stored class by class
        (an image folder's, a sorted file's) gives as many examples drawn from every
        class in proportion instead, and `notes` says so: its first examples were of
        the first classes only."""
        if labelled_per_class == "same":
            labelled_per_class = self.labelled_per_class
        notes = list(self.notes)
        train = _first_or_spread(self.y_train, train_size, "training split", notes)
        test = _first_or_spread(self.y_test, test_size, "test split", notes)
        data = Data(
            self.x_train[train],
            self.y_train[train],
            self.x_test[test],
            self.y_test[test],
            name=self.name,
            num_classes=self.num_classes,
            labelled_per_class=labelled_per_class,
            class_names=self.class_names,
        )
        data.notes, data.tokenizer = notes, self.tokenizer
        return data

    def quick(self):
        """A few thousand examples, for a smoke run.

        Labels are hidden after the subset is taken; when a class of the subset has
        fewer than `labelled_per_class` examples, the quick run keeps that many per
        class instead, and `notes` says so, as it says which classes have no example
        in the subset.
        """
        data = self.subset(QUICK_TRAIN_SIZE, QUICK_TEST_SIZE, labelled_per_class=None)
        if self.labelled_per_class is None:
            return data
        counts = class_counts(data.y_train, self.num_classes)
        classes = np.unique(self.y_train[self.y_train != UNLABELED])  # the full data's
        missing = [int(label) for label in classes if not counts[label]]
        notes = [
            f"quick run: no training example of class(es) {missing} among its "
            f"{len(data.y_train):,}, so none of their labels is kept"
        ] * bool(missing)
        if len(missing) == len(classes):
            raise invalid_argument(
                "labelled_per_class",
                f"A quick run keeps {len(data.y_train):,} training examples, and none of "
                "them has a label, so none can be kept. Received: "
                f"labelled_per_class={self.labelled_per_class!r}. Run without --quick.",
            )
        fewest = int(min(counts[label] for label in classes if counts[label]))
        if fewest >= self.labelled_per_class:
            data = data.subset(labelled_per_class=self.labelled_per_class)
            data.notes.extend(notes)
            return data
        data = data.subset(labelled_per_class=fewest)
        data.notes.extend(notes)
        data.notes.append(
            f"quick run: labelled_per_class={self.labelled_per_class} lowered to {fewest}, "
            f"the fewest examples of a class among the quick run's {len(data.y_train):,}"
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
        data.tokenizer = self.tokenizer
        return data

    def labelled(self):
        """`(x_train, y_train)` of the training examples that have a label."""
        if not np.any(self.y_train == UNLABELED):
            return self.x_train, self.y_train
        mask = self.y_train != UNLABELED
        return self.x_train[mask], self.y_train[mask]

    def augmented_copies(self, copies, seed=0, shift=2, flip=True):
        """`shifted_copies` of the training images, with their labels: `(x, y)`."""
        x = shifted_copies(self.x_train, copies, seed, shift, flip)
        return x, np.tile(self.y_train, copies)

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])

    @property
    def fingerprint(self):
        """A hash of the arrays, the number of classes and their names, and the tokenizer
        that made token ids: a stage reruns when they change. Before, the classes were
        left out: a model of 4 outputs was reused for data of 3 classes (and every later
        stage failed on it), and renamed classes kept the old names in the report. And the
        tokenizer: a text model sized for 17 tokens was reused with a vocabulary of 517,
        and the export wrote the new vocabulary beside it (new words' ids past its
        Embedding, which LiteRT refused to run)."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for array in (self.x_train, self.y_train, self.x_test, self.y_test):
                digest.update(str((array.shape, array.dtype.str)).encode())
                digest.update(np.ascontiguousarray(array).data)
            digest.update(repr((self.num_classes, list(self.class_names))).encode())
            if self.tokenizer is not None:
                tokenizer = self.tokenizer
                tokens = sorted(tokenizer.vocabulary.items(), key=lambda item: item[1])
                digest.update(
                    repr((tokens, tokenizer.sequence_length, tokenizer.lowercase)).encode()
                )
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
        notes = list(self.notes) + self._untrained_classes_note()
        if notes:
            description["notes"] = notes
        return description

    def _untrained_classes_note(self):
        """A note naming the classes with test examples and no labelled training example:
        no stage can learn them (before, a run said nothing, and the report read "N per
        class")."""
        trained = set(np.unique(self.y_train[self.y_train != UNLABELED]).tolist())
        missing = [int(c) for c in np.unique(self.y_test) if int(c) not in trained]
        if not missing:
            return []
        names = [self.class_names[c] for c in missing]
        return [
            f"no labelled training example of class(es) {names}, which the test split has "
            f"{int(np.isin(self.y_test, missing).sum()):,} of: no stage learns them"
        ]


def _as_inputs(x, name):
    x = np.asarray(x)
    if x.ndim == 0:
        raise TypeError(
            f"`{name}` must be an array of examples (numpy, or a list). "
            f"Received: {name}={x.item()!r} of type {type(x.item()).__name__}"
        )
    if x.ndim == 3:  # grayscale images: add the channel axis that Conv2D wants
        x = x[..., None]
    # Images stay uint8 (a quarter of float32's memory; models cast each batch) or become
    # float32; integer token ids (2D) stay as they are.
    keep = x.ndim < 3 or x.dtype in (np.float32, np.uint8)
    return x if keep else x.astype("float32")


def _check_tokenizer(tokenizer):
    """`None` or a WordPiece tokenizer (what the export stage writes beside the file)."""
    needed = ("vocabulary", "sequence_length", "lowercase")
    if tokenizer is not None and not all(hasattr(tokenizer, name) for name in needed):
        raise TypeError(
            "`tokenizer` must be a tfkd.text.WordPieceTokenizer (the one that made the token "
            f"ids) or None. Received: tokenizer of type {type(tokenizer).__name__}"
        )
    return tokenizer


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
    if count > MOST_CLASSES:  # a label of 10**9 made a name per class: a MemoryError
        raise ValueError(
            f"The labels ask for {count} classes, more than the {MOST_CLASSES} tfkd takes. "
            f"Received: num_classes={num_classes!r} with labels up to {largest}. Labels are "
            "class ids 0..num_classes-1."
        )
    return count


# The most classes a data set may have (ImageNet-21k's 21,841 among them).
MOST_CLASSES = 100_000


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


def _one_hot_width(y):
    """The width of one-hot rows `y` (checked by `_as_labels`), else None."""
    shape = np.shape(y)
    return int(shape[1]) if len(shape) == 2 and shape[1] > 1 else None


def _as_labels(y, name):
    """`y` as int64 class ids: from ids (any integer dtype, or floats that are whole
    numbers, as `np.savez` of a float array keeps them) or one-hot rows (`to_categorical`).
    Raises where `y` is neither, naming what it holds."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        one_hot = y.dtype.kind in "iuf" and np.all((y == 0) | (y == 1)) and np.all(y.sum(1) == 1)
        if not one_hot:
            raise ValueError(
                f"`{name}` must hold class ids, or one-hot rows. Received: an array of shape "
                f"{y.shape} whose rows are not one-hot (scores or soft labels? ids in one "
                "row?). Pass the class ids, one per example: y.argmax(axis=-1) for scores, "
                "y.ravel() for a row of ids."
            )
        return y.argmax(axis=1).astype("int64")
    if y.ndim > 2 or (y.ndim == 2 and y.shape[1] != 1):
        raise ValueError(
            f"`{name}` must hold one class id per example. Received: an array of shape {y.shape}."
        )
    y = y.reshape(-1)
    if y.dtype.kind == "f":
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            raise TypeError(
                f"`{name}` must hold integer class ids. Received: dtype={y.dtype}, with "
                f"{y[~whole][0].item()!r} at index {int(np.flatnonzero(~whole)[0])}."
            )
    elif y.dtype.kind not in "iu":
        raise TypeError(f"`{name}` must hold integer class ids. Received: dtype={y.dtype}")
    return y.astype("int64")


def shifted_copies(images, copies, seed=0, shift=2, flip=True):
    """`copies` fixed, randomly shifted (and flipped) copies of `images`, one after another.

    Each copy shifts every image by up to `shift` pixels in each direction (zero fill)
    and flips half of them left-right. Fixed by `seed`, so a teacher's outputs on them
    can be computed once and cached.

    Args:
        images: an array of shape `(n, height, width, channels)`.
        copies: how many copies of each image, an integer >= 1.
        seed: the random seed, an integer in [0, 2**32).
        shift: the largest shift in pixels, an integer >= 0.
        flip: whether half of each copy is flipped left-right.

    Returns:
        An array of `copies * n` images: the first copy of every image, then the second.
    """
    if getattr(images, "ndim", None) != 4:
        raise ValueError(
            "Augmented copies need images of shape (n, height, width, channels). "
            f"Received: images of shape {getattr(images, 'shape', type(images).__name__)}"
        )
    copies = check_number("copies", copies, low=1, integer=True)
    seed = check_seed(seed)
    shift = check_number("shift", shift, low=0, integer=True)
    check_flag("flip", flip)
    rng = np.random.default_rng(seed)
    n, height, width, _ = images.shape
    padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
    result = []
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
        result.append(copy)
    return np.concatenate(result)


def _first_or_spread(labels, size, argument, notes):
    """What `Data.subset` keeps of a split with `labels`: its first `size` examples (a
    slice), or where the split is stored class by class, `size` drawn from every class
    in proportion (largest remainders; seed 0), in their order, with a note. Before,
    `--quick` or a `train_size` on an image folder trained on its first classes alone."""
    if size is None or size >= len(labels) or not _by_class(labels):
        return slice(size)
    groups, kept = _quotas(labels, size)
    random = np.random.default_rng(0)
    chosen = [
        random.choice(np.flatnonzero(labels == group), count, replace=False)
        for group, count in zip(groups, kept)
    ]
    notes.append(
        f"{argument}: {size:,} examples drawn from every class in proportion (seed 0), not "
        "the first: the split is stored class by class"
    )
    return np.sort(np.concatenate(chosen))


def _by_class(labels):
    """Whether a split with `labels` is stored class by class (in any order of the classes:
    the label changes once per group), unlabelled examples left out."""
    labelled = labels[labels != UNLABELED]
    classes = len(np.unique(labelled))
    return classes >= 2 and np.count_nonzero(np.diff(labelled)) == classes - 1


def _quotas(labels, size):
    """`(groups, counts)`: `size` examples shared among the label groups in proportion
    to their sizes (largest remainders)."""
    groups, counts = np.unique(labels, return_counts=True)
    quotas = size * counts / len(labels)
    kept = np.floor(quotas).astype(int)
    kept[np.argsort(kept - quotas)[: size - kept.sum()]] += 1
    return groups, kept


def spread_rows(labels, size, last=False):
    """`(rows, note)`: the indices of `size` examples of a split with `labels` to calibrate
    or check on, its first (`last`: its last) `size`; where the split is stored class by
    class, as many from every class in proportion instead, each class's taken in one seeded
    order (seed 0) from its start (`last`: its end), so the first and the last rows stay
    apart as they do in a mixed split, all in a seeded order, and a note that says so
    (None otherwise). Before,
    an export calibrated a class-ordered split on its first class alone, and its int8
    file scored chance."""
    size = min(size, len(labels))
    if not _by_class(labels):
        return np.arange(len(labels) - size, len(labels)) if last else np.arange(size), None
    groups, kept = _quotas(labels, size)
    random = np.random.default_rng(0)
    rows = []
    for group, count in zip(groups, kept):
        members = random.permutation(np.flatnonzero(labels == group))
        rows.append(members[len(members) - count :] if last else members[:count])
    note = (
        f"{size:,} examples drawn from every class in proportion (seed 0), not the "
        f"{'last' if last else 'first'}: the split is stored class by class"
    )
    # In a seeded order, not sorted: a reader of the first few (the export check's 32,
    # a calibration's 500) would read the first class again.
    return random.permutation(np.concatenate(rows)), note
