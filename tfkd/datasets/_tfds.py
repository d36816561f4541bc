"""`write_tfds`: prepares a data set for `tfds.load` without any download."""

import functools
import os

from tfkd.datasets._catalog import _get_spec
from tfkd.datasets._load import load


def write_tfds(name: str, data_dir: str | os.PathLike) -> str:
    """Writes a data set in TensorFlow Datasets format, offline.

    `tfds.load("fashion_mnist")` downloads, and the files installed by Debian
    fail tfds's checksums. This writes the arrays of `tfkd.datasets.load(name)`
    under tfds's official name and version (`fashion_mnist` 3.0.1, `mnist`
    3.0.1; `animal_mnist` 1.0.0, which has no official builder), with features
    `image` (uint8, `(28, 28, 1)`) and `label` (`ClassLabel` with the class
    names of `tfkd.datasets.info(name)`), and splits `"train"` and `"test"`.
    Afterwards, in any process, `tfds.load(name, data_dir=data_dir,
    download=False)` works and yields the examples in the order of `load(name)`.
    If the data set is already there, nothing is rewritten.

    Args:
        name: one of `tfkd.datasets.available()`.
        data_dir: the tfds data directory to write into (what `tfds.load` takes
            as `data_dir`, or `TFDS_DATA_DIR`).

    Returns:
        The path of the written data set, `<data_dir>/<name>/<version>`.

    Raises:
        ValueError: if `name` is not a known data set or `data_dir` is empty.
        TypeError: if `name` is not a string or `data_dir` not a path.
        NotADirectoryError: if `data_dir` is an existing file.
        ImportError: if `tensorflow-datasets` is not installed.
        FileNotFoundError: if the data files are not installed.

    Example:

    ```python
    tfkd.datasets.write_tfds("fashion_mnist", "/tmp/tfds")
    train_ds = tfds.load("fashion_mnist", split="train", data_dir="/tmp/tfds",
                         download=False, as_supervised=True)
    ```
    """
    _get_spec(name)
    _check_data_dir(data_dir)
    tfds = _import_tfds()
    builder = _builder_class(name)(data_dir=os.fspath(data_dir))
    download_config = tfds.download.DownloadConfig(try_download_gcs=False)
    builder.download_and_prepare(download_config=download_config)
    return os.fspath(builder.data_dir)


def _check_data_dir(data_dir):
    if not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(
            "`data_dir` must be a directory path (str or os.PathLike). Received: "
            f"data_dir={data_dir!r} of type {type(data_dir).__name__}."
        )
    path = os.fspath(data_dir)
    if not path:
        raise ValueError(
            "`data_dir` must name a directory. Received: data_dir=''. Pass e.g. '/tmp/tfds'."
        )
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(
            f"`data_dir` must be a directory, and this is a file. Received: data_dir={path!r}."
        )


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "`tfkd.datasets.write_tfds` requires tensorflow-datasets. Install it "
            "with `pip install tensorflow-datasets importlib_resources`. "
            f"Received: {error}"
        ) from error
    return tfds


@functools.cache
def _builder_class(name):
    """Returns a `GeneratorBasedBuilder` class named `name`, built once.

    tfds registers builders by name when their class is defined and refuses a
    second `fashion_mnist`; `skip_registration=True` leaves its registry alone,
    and the explicit `name` makes the files land where tfds's own builder (or
    `tfds.builder_from_directory`) looks for them.
    """
    tfds = _import_tfds()
    spec = _get_spec(name)

    class _OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = spec.name
        VERSION = tfds.core.Version(spec.tfds_version)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description=spec.description,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(*spec.image_shape, 1)),
                        "label": tfds.features.ClassLabel(names=spec.class_names),
                    }
                ),
                supervised_keys=("image", "label"),
                homepage=spec.homepage,
                # Keep the order of `load(name)` instead of tfds's hash order.
                disable_shuffling=True,
            )

        def _split_generators(self, dl_manager):
            (x_train, y_train), (x_test, y_test) = load(name)
            return {
                "train": self._generate_examples(x_train, y_train),
                "test": self._generate_examples(x_test, y_test),
            }

        def _generate_examples(self, images, labels):
            for index, (image, label) in enumerate(zip(images, labels, strict=True)):
                yield index, {"image": image[..., None], "label": int(label)}

    return _OfflineBuilder
