"""Writes Animal-MNIST (10 animal classes, bundled offline) as a folder of PNG images,
`<output>/train/<class>/*.png` and `<output>/test/<class>/*.png`: the layout a user's
own images come in, for `examples/pipeline_image_folder.yaml`.

    python examples/write_image_folder.py --output data/animal_mnist_png
"""

import argparse
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import tfkd  # noqa: E402


def write(output, per_class=None):
    """Writes the images (the first `per_class` of each class per split, or all); returns
    the number of files written. Files already there are kept."""
    import tensorflow as tf

    (x_train, y_train), (x_test, y_test) = tfkd.datasets.load("animal_mnist")
    names = tfkd.datasets.info("animal_mnist")["class_names"]
    written = 0
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        for label, name in enumerate(names):
            folder = pathlib.Path(output) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            indices = np.flatnonzero(y == label)[:per_class]
            for index in indices:
                path = folder / f"{index:05d}.png"
                if not path.exists():
                    tf.io.write_file(str(path), tf.io.encode_png(x[index][..., None]))
                    written += 1
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", type=pathlib.Path, default=pathlib.Path("data/animal_mnist_png")
    )
    parser.add_argument("--per-class", type=int, default=None, help="images per class and split")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    count = write(args.output, args.per_class)
    print(f"{count:,} images written to {args.output} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
