"""What tfkd knows about each data set, independent of where its files live."""

import dataclasses

_FASHION_MNIST_CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_MNIST_CLASS_NAMES = tuple(str(digit) for digit in range(10))
# From the animal-mnist package's METADATA, which lists the classes in
# alphabetical order; label i of the data matches the i-th name (checked by
# looking at the silhouettes of every class).
_ANIMAL_MNIST_CLASS_NAMES = (
    "Bear",
    "Bird",
    "Cat",
    "Cow",
    "Dog",
    "Elephant",
    "Giraffe",
    "Horse",
    "Sheep",
    "Zebra",
)


@dataclasses.dataclass(frozen=True)
class _DatasetSpec:
    """Static facts about one data set: classes, split sizes, tfds identity."""

    name: str
    class_names: tuple
    num_train_examples: int
    num_test_examples: int
    tfds_version: str
    description: str
    homepage: str
    image_shape: tuple = (28, 28)


_SPECS = {
    spec.name: spec
    for spec in (
        _DatasetSpec(
            name="fashion_mnist",
            class_names=_FASHION_MNIST_CLASS_NAMES,
            num_train_examples=60_000,
            num_test_examples=10_000,
            tfds_version="3.0.1",
            description=(
                "Fashion-MNIST is a dataset of Zalando's article images "
                "consisting of a training set of 60,000 examples and a test set "
                "of 10,000 examples. Each example is a 28x28 grayscale image, "
                "associated with a label from 10 classes."
            ),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        ),
        _DatasetSpec(
            name="mnist",
            class_names=_MNIST_CLASS_NAMES,
            num_train_examples=60_000,
            num_test_examples=10_000,
            tfds_version="3.0.1",
            description="The MNIST database of handwritten digits.",
            homepage="http://yann.lecun.com/exdb/mnist/",
        ),
        _DatasetSpec(
            name="animal_mnist",
            class_names=_ANIMAL_MNIST_CLASS_NAMES,
            num_train_examples=8_000,
            num_test_examples=2_000,
            tfds_version="1.0.0",
            description=(
                "Animal-MNIST: 10,000 28x28 grayscale silhouettes of 10 animal "
                "classes (1,000 each), split by tfkd into 8,000 train and 2,000 "
                "test images (200 per class) with a fixed seed."
            ),
            homepage="https://pypi.org/project/animal-mnist/",
        ),
    )
}


def _available():
    return sorted(_SPECS)


def _get_spec(name):
    """Returns the spec of `name`, or raises the house-style `ValueError`."""
    if not isinstance(name, str):
        raise TypeError(
            f"Expected `name` to be a string. Received: name={name!r} of type "
            f"{type(name).__name__}. Available: {_available()}"
        )
    if name not in _SPECS:
        raise ValueError(f"Unknown dataset. Received: name={name!r}. Available: {_available()}")
    return _SPECS[name]
