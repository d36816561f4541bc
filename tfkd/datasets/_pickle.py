"""Reads pickled numpy arrays without letting the file run code."""

import codecs
import gzip
import importlib
import pickle

import numpy as np

# Globals that pickles of numpy arrays name, by (module, name). Pickles written
# by numpy 1.x say `numpy.core`; numpy 2 moved it to `numpy._core` (the old
# path still imports, with a warning), so both spellings map to the new one.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    **{
        (f"numpy.{core}.multiarray", name): ("multiarray", name)
        for core in ("core", "_core")
        for name in ("_reconstruct", "scalar")
    },
    # Python 3 writes bytes in protocol 2 as `_codecs.encode(str, "latin1")`.
    ("_codecs", "encode"): ("_codecs", "encode"),
    # Protocol 5 pickles of contiguous arrays.
    **{
        (f"numpy.{core}.numeric", "_frombuffer"): ("numeric", "_frombuffer")
        for core in ("core", "_core")
    },
}


def _numpy_core_module(name):
    try:
        return importlib.import_module(f"numpy._core.{name}")
    except ImportError:  # numpy < 2
        return importlib.import_module(f"numpy.core.{name}")


class _NumpyUnpickler(pickle.Unpickler):
    """An unpickler that only admits the globals numpy arrays need.

    A pickle can call any importable function while it loads (`os.system`,
    `builtins.eval`, ...), so a data file from a package is not trusted: every
    global it names is checked against a short allow-list.
    """

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"Refused to unpickle the global '{module}.{name}': a data file "
                f"may hold numpy arrays only. Received: global='{module}.{name}'. "
                f"Accepted: {sorted('.'.join(key) for key in _ALLOWED_GLOBALS)}. "
                "The file is corrupt or not what it claims to be; reinstall the "
                "package that provides it."
            )
        target_module, target_name = _ALLOWED_GLOBALS[(module, name)]
        if target_module == "numpy":
            return getattr(np, target_name)
        if target_module == "_codecs":
            return codecs.encode
        return getattr(_numpy_core_module(target_module), target_name)


def _load_gzipped_pickle(path):
    """Loads a gzipped pickle of numpy arrays (Python 2 pickles included).

    Args:
        path: path of the `.gz` file.

    Returns:
        The unpickled object: numpy arrays, possibly nested in tuples/lists.

    Raises:
        pickle.UnpicklingError: if the pickle names anything but numpy arrays.
    """
    with gzip.open(path, "rb") as file:
        # latin1 is how numpy recommends reading Python 2 pickles of arrays.
        return _NumpyUnpickler(file, encoding="latin1").load()
