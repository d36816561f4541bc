"""SHA-256 digests of files and of plain data, for checksums and resume fingerprints."""

import hashlib
import json
import os

import numpy as np


def file_sha256(path):
    """The SHA-256 of the file at `path`, as hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(folder):
    """The SHA-256, as hex, of every file under `folder`: their relative paths and
    contents, in sorted order."""
    digest = hashlib.sha256()
    for root, directories, names in sorted(os.walk(folder)):
        directories.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            digest.update(f"{os.path.relpath(path, folder)}:{file_sha256(path)};".encode())
    return digest.hexdigest()


def path_sha256(path):
    """`folder_sha256` of a folder (a preset), else `file_sha256`: the one hash of a model
    given as a path."""
    return folder_sha256(path) if os.path.isdir(path) else file_sha256(path)


def json_sha256(value, default=None):
    """The SHA-256, as hex, of `value` written as JSON with sorted keys (`default` as in
    `json.dumps`), so that equal values give equal digests."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=default).encode()).hexdigest()


def array_sha256(array):
    """The SHA-256, as hex, of an array's dtype, shape and contents."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}:{array.shape};".encode())
    digest.update(array.data)
    return digest.hexdigest()
