"""tfkd: make Keras models small and fast for edge devices, and keep them accurate.

The public API is declared here and in each subpackage's ``__init__``;
everything else is private. Importing tfkd has no side effects.

`import tfkd` imports every subpackage, which registers tfkd's layers with Keras
(`keras.saving.load_model` then reads `.keras` files that hold them). Only the `tfkd`
command loads subpackages when first used, so that `tfkd --help`, `tfkd check` and
`tfkd report` answer without importing Keras and TensorFlow.
"""

import importlib as _importlib
import os as _os
import sys as _sys

__version__ = "0.1.0"

_SUBPACKAGES = (
    "cluster",
    "datasets",
    "distill",
    "export",
    "metrics",
    "models",
    "pipeline",
    "prune",
    "quantize",
    "text",
    "transfer",
)
_FROM_SUBPACKAGE = {
    "DistillationLoss": "distill",
    "Distiller": "distill",
    "FeatureDistillation": "distill",
    "LogitsDistillation": "distill",
    "TFLiteModel": "export",
    "export_tflite": "export",
    "Pipeline": "pipeline",
}

__all__ = [
    "DistillationLoss",
    "Distiller",
    "FeatureDistillation",
    "LogitsDistillation",
    "Pipeline",
    "TFLiteModel",
    "cluster",
    "datasets",
    "distill",
    "export",
    "export_tflite",
    "metrics",
    "models",
    "pipeline",
    "prune",
    "quantize",
    "text",
    "transfer",
]


def __getattr__(name):
    if name in _SUBPACKAGES:
        return _importlib.import_module(f"tfkd.{name}")
    if name in _FROM_SUBPACKAGE:
        value = getattr(_importlib.import_module(f"tfkd.{_FROM_SUBPACKAGE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tfkd' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


def _import_all():
    """Imports every subpackage, so that Keras can load files holding tfkd's layers."""
    for name in __all__:
        __getattr__(name)


def _is_tfkd_command():
    """Whether this process is the `tfkd` command: its console script or `python -m tfkd`."""
    argv = getattr(_sys, "orig_argv", _sys.argv)
    if "-m" in argv:
        return argv[argv.index("-m") + 1 : argv.index("-m") + 2] == ["tfkd"]
    return bool(_sys.argv) and _os.path.basename(_sys.argv[0]).split(".")[0] == "tfkd"


if not _is_tfkd_command():
    _import_all()
