"""`Data`: the train and test arrays a pipeline runs on, and their fingerprint."""

import hashlib

import numpy as np

from tfkd import datasets
from tfkd.pipeline.stage import invalid_argument

QUICK_TRAIN_SIZE = 2000
QUICK_TEST_SIZE = 500


class Data:
    """Train and test arrays with integer labels, as a pipeline uses them.

    Images of shape `(n, height, width)` get a channel axis. Every stage trains on
    the train split and is measured on the test split.

    Args:
        x_train, y_train, x_test, y_test: numpy arrays; labels are class ids.
        name: a name for reports. Defaults to `"data"`.
        num_classes: the number of classes. Defaults to `max(label) + 1`.
    """

    def __init__(self, x_train, y_train, x_test, y_test, name="data", num_classes=None):
        self.x_train, self.x_test = _as_inputs(x_train), _as_inputs(x_test)
        self.y_train, self.y_test = _as_labels(y_train, "y_train"), _as_labels(y_test, "y_test")
        for x, y, split in (
            (self.x_train, self.y_train, "train"),
            (self.x_test, self.y_test, "test"),
        ):
            if len(x) != len(y):
                raise ValueError(
                    f"`x_{split}` and `y_{split}` differ in length. Received: {len(x)} and {len(y)}"
                )
        self.name = name
        self.num_classes = int(num_classes or max(self.y_train.max(), self.y_test.max()) + 1)
        self._fingerprint = None

    @classmethod
    def load(cls, name, train_size=None, test_size=None):
        """A data set of `tfkd.datasets` by name, optionally its first examples only."""
        if name not in datasets.available():
            raise invalid_argument(
                "name",
                f"Unknown data set. Received: name={name!r}. Available: {datasets.available()}",
            )
        for argument, value in (("train_size", train_size), ("test_size", test_size)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise invalid_argument(
                    argument, f"`{argument}` must be a positive integer. Received: {value!r}"
                )
        (x_train, y_train), (x_test, y_test) = datasets.load(name)
        data = cls(x_train, y_train, x_test, y_test, name=name)
        return data.subset(train_size, test_size)

    def subset(self, train_size=None, test_size=None):
        """The first `train_size` / `test_size` examples (all when `None`)."""
        return Data(
            self.x_train[:train_size],
            self.y_train[:train_size],
            self.x_test[:test_size],
            self.y_test[:test_size],
            name=self.name,
            num_classes=self.num_classes,
        )

    def quick(self):
        """A few thousand examples, for a smoke run."""
        return self.subset(QUICK_TRAIN_SIZE, QUICK_TEST_SIZE)

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
        return {
            "name": self.name,
            "train_examples": len(self.x_train),
            "test_examples": len(self.x_test),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
        }


def _as_inputs(x):
    x = np.asarray(x)
    if x.ndim == 3:  # grayscale images: add the channel axis that Conv2D wants
        x = x[..., None]
    # Images become float32; integer token ids (2D) stay as they are.
    return x.astype("float32") if x.ndim >= 3 and x.dtype != np.float32 else x


def _as_labels(y, name):
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind not in "iu":
        raise TypeError(f"`{name}` must hold integer class ids. Received: dtype={y.dtype}")
    return y.astype("int64")
