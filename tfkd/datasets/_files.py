"""The user's own data: a folder of images, a `.npz` file, or a prepared tfds data set.

Each reader returns `(x_train, y_train), (x_test, y_test), class_names`. Each has a
`*_errors` function that finds what is wrong with its arguments and files without
reading the data (nor importing TensorFlow), so that a config is refused before any
work, with the file or folder named.
"""

import math
import os
import zipfile

import numpy as np

from tfkd import _checks

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
COLOR_MODES = {"grayscale": 1, "rgb": 3, "rgba": 4}
# The first bytes of each image format keras.utils.image_dataset_from_directory reads.
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"GIF87a", b"GIF89a")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def load_directory(directory, image_size, color_mode="rgb", test_split=None, seed=0):
    """Images in class sub-folders, read with `keras.utils.image_dataset_from_directory`.

    Two layouts: `directory/train/<class>/` and `directory/test/<class>/` (the same
    classes), or `directory/<class>/` with `test_split`, the fraction of each class's
    images kept for testing, drawn with `seed`. Class names are the folder names, in
    alphabetical order (label `i` is the `i`-th name), as Keras orders them.

    Args:
        directory: the folder.
        image_size: `(height, width)` every image is resized to.
        color_mode: `"grayscale"`, `"rgb"` or `"rgba"`. Defaults to `"rgb"`.
        test_split: a fraction in (0, 1) for the one-folder layout; `None` for the
            train/test layout. Defaults to `None`.
        seed: draws the test images of the one-folder layout. Defaults to `0`.

    Returns:
        `(x_train, y_train), (x_test, y_test), class_names`: `x` of shape
        `(N, height, width, channels)` with values in [0, 255], uint8 (float32 when
        resizing interpolated the pixels), `y` int64.

    Raises:
        ValueError, TypeError: the first of `directory_errors`.
        ValueError: an image that the header check let through cannot be decoded;
            the message names its file.

    Example:

    ```python
    (x_train, y_train), (x_test, y_test), names = tfkd.datasets.load_directory(
        "flowers", image_size=(96, 96), test_split=0.2
    )
    ```
    """
    errors = directory_errors(directory, image_size, color_mode, test_split, seed)
    if errors:
        raise errors[0]
    directory = os.fspath(directory)
    if test_split is None:
        train, names = _read_images(os.path.join(directory, "train"), image_size, color_mode)
        test, _ = _read_images(os.path.join(directory, "test"), image_size, color_mode, names)
        return train, test, names
    (x, y), names = _read_images(directory, image_size, color_mode)
    test = _stratified_test_indices(y, test_split, seed)
    train = np.setdiff1d(np.arange(len(y)), test)
    return (x[train], y[train]), (x[test], y[test]), names


def directory_errors(directory, image_size, color_mode="rgb", test_split=None, seed=0):
    """What is wrong with `load_directory`'s arguments and folder, found by listing the
    files and reading each one's first bytes: errors with an `argument` attribute."""
    errors = []
    for argument, check in (
        ("image_size", lambda: _check_image_size(image_size)),
        ("color_mode", lambda: _check_color_mode(color_mode)),
        (
            "test_split",
            lambda: _checks.check_number(
                "test_split",
                test_split,
                low=0,
                high=1,
                low_open=True,
                high_open=True,
                allow_none=True,
            ),
        ),
        ("seed", lambda: _checks.check_seed(seed)),
    ):
        try:
            check()
        except (TypeError, ValueError) as error:
            errors.append(_error(argument, str(error), type(error)))
    if not isinstance(directory, str | os.PathLike):
        return [
            _error(
                "directory",
                f"`directory` must be a folder path. Received: directory={directory!r} of "
                f"type {type(directory).__name__}",
                TypeError,
            ),
            *errors,
        ]
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return [
            *errors,
            _error("directory", f"Folder not found. Received: directory={directory!r}"),
        ]
    if test_split is None:
        if not all(os.path.isdir(os.path.join(directory, split)) for split in ("train", "test")):
            return [
                *errors,
                _error(
                    "directory",
                    f"`directory` must hold `train/` and `test/` folders of class folders, or, "
                    f"with `test_split`, class folders only. Received: directory={directory!r} "
                    f"holding {sorted(os.listdir(directory))[:10]}",
                ),
            ]
        train = _class_folder_errors(os.path.join(directory, "train"))
        test = _class_folder_errors(os.path.join(directory, "test"))
        errors += train[1] + test[1]
        if not train[1] and not test[1] and train[0] != test[0]:
            errors.append(
                _error(
                    "directory",
                    "`train/` and `test/` must hold the same class folders. Received: "
                    f"train classes {train[0]}, test classes {test[0]} in {directory!r}",
                )
            )
        return errors
    splits = [os.path.join(directory, split) for split in ("train", "test")]
    if all(os.path.isdir(split) and _subfolders(split) for split in splits):
        # Read as two classes, "test" and "train", their class folders' images mixed.
        return [
            *errors,
            _error(
                "test_split",
                "`directory` holds `train/` and `test/` folders of class folders, which are "
                "its splits, and `test_split` splits class folders. Received: "
                f"test_split={test_split!r} with directory={directory!r}. Remove `test_split`.",
            ),
        ]
    return errors + _class_folder_errors(directory)[1]


def _subfolders(folder):
    return sorted(
        entry for entry in os.listdir(folder) if os.path.isdir(os.path.join(folder, entry))
    )


def load_npz(path):
    """Arrays `x_train`, `y_train`, `x_test`, `y_test` (and optionally `class_names`, an
    array of strings) from a `.npz` file, read without pickle: no file can run code.

    Returns:
        `(x_train, y_train), (x_test, y_test), class_names` (`None` when the file has
        none).

    Example:

    ```python
    np.savez("data.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    (x_train, y_train), (x_test, y_test), _ = tfkd.datasets.load_npz("data.npz")
    ```
    """
    errors = npz_errors(path)
    if errors:
        raise errors[0]
    try:
        with np.load(os.fspath(path), allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in (*NPZ_KEYS, "class_names") if key in stored}
    except (ValueError, EOFError, zipfile.BadZipFile) as error:  # checked sizes, cut data
        raise ValueError(
            f"`npz` cannot be read ({type(error).__name__}: {error}). Received: "
            f"npz={os.fspath(path)!r}. Save plain numeric arrays (and `class_names` as strings)."
        ) from None
    except MemoryError:  # what the file really holds, past this process's memory
        raise ValueError(
            f"`npz` holds more than this process can allocate. Received: npz="
            f"{os.fspath(path)!r} ({os.path.getsize(path)} bytes)."
        ) from None
    names = arrays.get("class_names")
    names = None if names is None else [str(name) for name in names.tolist()]
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"]), names


def npz_errors(path):
    """What is wrong with `path` for `load_npz`, from the file's index of arrays."""
    if not isinstance(path, str | os.PathLike):
        return [
            _error(
                "npz",
                f"`npz` must be a file path. Received: npz={path!r} of type {type(path).__name__}",
                TypeError,
            )
        ]
    if not os.path.isfile(path):
        return [_error("npz", f"File not found. Received: npz={os.fspath(path)!r}")]
    try:
        with np.load(os.fspath(path), allow_pickle=False) as stored:
            keys = set(stored.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        return [
            _error(
                "npz",
                f"Not a readable .npz file ({type(error).__name__}: {error}). "
                f"Received: npz={os.fspath(path)!r}",
            )
        ]
    missing = [key for key in NPZ_KEYS if key not in keys]
    if missing:
        return [
            _error(
                "npz",
                f"The .npz file lacks the arrays {missing}. Received: npz={os.fspath(path)!r} "
                f"holding {sorted(keys)}. It needs {list(NPZ_KEYS)}.",
            )
        ]
    problem = npz_sizes_problem(path, (*NPZ_KEYS, "class_names"))
    if problem:
        return [_error("npz", f"The .npz file {problem}. Received: npz={os.fspath(path)!r}")]
    return []


def npz_sizes_problem(path, keys=None):
    """What is wrong with the sizes the arrays `keys` (None: all) of the `.npz` file
    declare, before any is read, or None: the zip's sizes bounded by the file's, a member
    stored or deflated as numpy writes them and inflating no further than DEFLATE can
    (about 1,032-fold), each `.npy` header's shape and dtype the bytes the member holds,
    no object dtype. So an array takes the memory its file really holds (upscaled images
    deflate 178-fold), never what a header or the zip's index claims: a header declaring
    7 TiB ended in a MemoryError."""
    size = os.path.getsize(path)
    with zipfile.ZipFile(path) as archive:
        infos = {info.filename: info for info in archive.infolist()}
        stored = sum(info.compress_size for info in infos.values())
        if stored > size:
            return f"declares {stored} compressed bytes, more than its {size}"
        if keys is None:
            keys = [name[: -len(".npy")] for name in infos if name.endswith(".npy")]
        for key in keys:
            info = infos.get(f"{key}.npy")
            if info is None:
                continue
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                return f"holds {key!r} compressed with method {info.compress_type}, not numpy's"
            if info.file_size > _MOST_INFLATION * info.compress_size + _INFLATE_FREE:
                return (
                    f"declares {info.file_size} bytes for {key!r}, stored in "
                    f"{info.compress_size}: more than DEFLATE can inflate them to"
                )
            with archive.open(info) as member:
                problem = npy_problem(member, info.file_size, repr(key))
            if problem:
                return problem
    return None


def npy_problem(stream, size, name):
    """What is wrong with the `.npy` array that `stream` (at its start) holds in `size`
    bytes, from its header, before its data is read; None if nothing. `name` names it."""
    try:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            return f"holds {name} in .npy version {version}, which is not read"
        read = getattr(np.lib.format, f"read_array_header_{version[0]}_0")
        shape, _, dtype = read(stream)
    except ValueError as error:
        return f"holds {name} with a bad .npy header ({error})"
    header = stream.tell()
    if dtype.hasobject:
        return f"holds {name} of dtype {dtype}, which only pickle can read"
    declared = math.prod(shape) * dtype.itemsize
    if declared != size - header:
        return (
            f"declares {name} of shape {shape} and dtype {dtype} ({declared} bytes), where it "
            f"stores {size - header}"
        )
    return None


# DEFLATE inflates a byte to at most about 1,032 (258 bytes from 2 bits), plus its
# blocks' headers: a member's declared size past this is not what its bytes inflate to.
_MOST_INFLATION = 1100
_INFLATE_FREE = 2**20


def load_tfds(name, data_dir, splits=("train", "test")):
    """A TensorFlow Datasets data set already prepared in `data_dir` (no download), as
    arrays: its `image` and `label` features, and the label's class names.

    Args:
        name: the data set's tfds name, e.g. `"fashion_mnist"`.
        data_dir: the tfds data folder that holds it (see `write_tfds`).
        splits: the training and test split names. Defaults to `("train", "test")`.

    Example:

    ```python
    tfkd.datasets.write_tfds("fashion_mnist", "/tmp/tfds")
    (x_train, y_train), (x_test, y_test), names = tfkd.datasets.load_tfds(
        "fashion_mnist", "/tmp/tfds"
    )
    ```
    """
    errors = tfds_errors(name, data_dir, splits)
    if errors:
        raise errors[0]
    from tfkd.datasets._tfds import _import_tfds

    tfds = _import_tfds()
    builder = tfds.builder(name, data_dir=os.fspath(data_dir))
    if not builder.is_prepared():
        raise ValueError(
            f"The tfds data set is not prepared in `data_dir` (tfkd never downloads). "
            f"Received: tfds={name!r}, data_dir={os.fspath(data_dir)!r}. Prepare it there "
            "first, e.g. with `tfkd.datasets.write_tfds` or `tfds.load(..., download=True)`."
        )
    arrays = []
    for split in splits:
        if split not in builder.info.splits:
            raise ValueError(
                f"Unknown split. Received: split={split!r} for tfds={name!r}. Splits: "
                f"{sorted(builder.info.splits)}"
            )
        images, labels = [], []
        dataset = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        for image, label in tfds.as_numpy(dataset.batch(1024)):
            images.append(image)
            labels.append(label)
        arrays.append((np.concatenate(images), np.concatenate(labels).astype(np.int64)))
    label = builder.info.features["label"]
    names = list(label.names) if hasattr(label, "names") else None
    return arrays[0], arrays[1], names


def tfds_errors(name, data_dir, splits=("train", "test")):
    """What is wrong with `load_tfds`'s arguments, without importing tfds."""
    errors = []
    if not isinstance(name, str) or not name:
        errors.append(
            _error(
                "tfds",
                f"`tfds` must be a tfds data set name. Received: tfds={name!r}",
                TypeError if not isinstance(name, str) else ValueError,
            )
        )
    if not isinstance(data_dir, str | os.PathLike):
        errors.append(
            _error(
                "data_dir",
                "`data_dir` must be the tfds data folder (tfkd never downloads). Received: "
                f"data_dir={data_dir!r}",
                TypeError,
            )
        )
    elif not os.path.isdir(data_dir):
        errors.append(
            _error("data_dir", f"Folder not found. Received: data_dir={os.fspath(data_dir)!r}")
        )
    valid = isinstance(splits, list | tuple) and len(splits) == 2
    if not valid or not all(isinstance(split, str) and split for split in splits):
        errors.append(
            _error(
                "split",
                "`split` must be two split names, training then test, e.g. [train, test]. "
                f"Received: split={splits!r}",
            )
        )
    return errors


def _error(argument, message, error=ValueError):
    exception = error(message)
    exception.argument = argument
    return exception


def _check_image_size(image_size):
    valid = isinstance(image_size, list | tuple) and len(image_size) == 2
    if not valid or not all(_checks.is_integer(size) and size > 0 for size in image_size):
        raise ValueError(
            "`image_size` must be [height, width], two positive integers. "
            f"Received: image_size={image_size!r}"
        )


def _check_color_mode(color_mode):
    if color_mode not in COLOR_MODES:
        raise ValueError(
            f"Unknown color mode. Received: color_mode={color_mode!r}. Accepted: "
            f"{list(COLOR_MODES)}"
        )


def _class_folder_errors(folder):
    """`(class names, errors)` of a folder of class folders."""
    classes = _subfolders(folder)
    if len(classes) < 2:
        return classes, [
            _error(
                "directory",
                "A classifier needs at least 2 class folders in `directory`. Received: "
                f"{folder!r} with {classes or 'no'} class folder"
                f"{'s' if len(classes) != 1 else ''}",
            )
        ]
    errors = []
    for name in classes:
        files = _image_files(os.path.join(folder, name))
        if not files:
            errors.append(
                _error(
                    "directory",
                    f"A class folder of `directory` holds no images "
                    f"({', '.join(IMAGE_SUFFIXES)}). Received: {os.path.join(folder, name)!r}",
                )
            )
        for path in files:
            with open(path, "rb") as file:
                start = file.read(8)
            if not start.startswith(_SIGNATURES):
                errors.append(
                    _error(
                        "directory", f"Not a readable image in `directory`. Received: file {path!r}"
                    )
                )
                break
    return classes, errors


def _image_files(folder):
    return sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_SUFFIXES)
    )


def _read_images(folder, image_size, color_mode, class_names=None):
    """`((x, y), class_names)` of a folder of class folders, in Keras's file order."""
    import keras

    dataset = keras.utils.image_dataset_from_directory(
        folder,
        label_mode="int",
        class_names=class_names,
        color_mode=color_mode,
        image_size=tuple(image_size),
        batch_size=256,
        shuffle=False,
        verbose=False,
    )
    images, labels = [], []
    try:
        for x, y in dataset.as_numpy_iterator():
            # Decoded pixels are whole numbers unless resizing interpolated them: stored as
            # uint8 then, a quarter of float32's memory.
            images.append(x.astype(np.uint8) if np.array_equal(x, np.round(x)) else x)
            labels.append(y)
    except Exception as error:  # a file whose header looked right but does not decode
        bad, reason = _undecodable(dataset.file_paths, color_mode)
        formats = (".gif", ".jpg", ".jpeg")
        hint = (
            " TensorFlow decodes GIF files as 'rgb' only, and JPEG files as 'grayscale' or 'rgb'."
            if str(bad).lower().endswith(formats)
            else ""
        )
        raise ValueError(
            f"Not a readable image in `directory` as color_mode={color_mode!r}. Received: "
            f"file {bad!r} ({reason or type(error).__name__}).{hint}"
        ) from None
    x = np.concatenate(images)  # float32 if any batch was interpolated
    return (x, np.concatenate(labels).astype(np.int64)), list(dataset.class_names)


def _undecodable(paths, color_mode):
    """`(path, TensorFlow's words)` of the first file that does not decode in
    `color_mode`, as Keras decodes it; `(None, None)` if all do. Before, each was decoded
    in its own channels, so a GIF read as 'grayscale' passed and the error named 'file
    None'."""
    import tensorflow as tf

    channels = {"grayscale": 1, "rgb": 3, "rgba": 4}.get(color_mode, 0)
    for path in paths:
        try:
            tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
        except Exception as error:
            words = getattr(error, "message", None) or str(error)
            return path, words.strip().splitlines()[0][:200] if words.strip() else None
    return None, None


def _stratified_test_indices(labels, fraction, seed):
    """Per class, `round(fraction * count)` examples (at least 1), drawn with `seed`."""
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(len(members) - 1, max(1, round(fraction * len(members))))
        test.append(rng.choice(members, count, replace=False))
    return np.sort(np.concatenate(test))
