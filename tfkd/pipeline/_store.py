"""The output directory: each stage's model and entry, written atomically, found again on rerun.

A stage is finished when `stages/<name>/entry.json` exists, holds the stage's current
fingerprint, and the model file it names has the checksum recorded in it. The entry
is written last, after the model file, so a run killed at any point leaves either a
finished stage or one that reruns; never one that is trusted half-written.

Keras is imported inside the functions that load models: `tfkd report` reads entries
without it.
"""

import contextlib
import json
import math
import os
import pathlib
import shutil

from tfkd import _atomic, _hashing, models
from tfkd.pipeline._keras_file import load_keras

ENTRY = "entry.json"
LOCK = ".lock"


class DirectoryInUse(RuntimeError):
    """Another `tfkd run` (or `Pipeline.execute`) writes into this output directory."""


class Store:
    def __init__(self, directory):
        self.directory = pathlib.Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self):
        """Holds the directory for one run: two runs writing into it would share temporary
        files and could record one run's metrics against the other's model. The lock is
        the operating system's, so a run that crashed or was killed leaves none behind.

        Raises:
            DirectoryInUse: if another process (or another run in this one) holds it.
        """
        with open(self.directory / LOCK, "a+") as file:
            try:
                _lock_file(file)
            except OSError:
                file.seek(0)
                holder = file.read().strip() or "unknown"
                raise DirectoryInUse(
                    f"Output directory {os.fspath(self.directory)!r} is in use by another run "
                    f"(process {holder}). Wait for it to finish, or give another output "
                    "directory (`tfkd run --output`, `Pipeline.execute(output_dir=...)`)."
                ) from None
            file.seek(0)
            file.truncate()
            file.write(f"{os.getpid()}\n")
            file.flush()
            yield  # closing the file releases the lock

    def stage_directory(self, name):
        return self.directory / "stages" / name

    def log_directory(self, name):
        return self.directory / "logs" / name

    def finished(self, name, fingerprint):
        """The stage's entry if it finished with this fingerprint and its file is intact."""
        entry = read_entry(self.stage_directory(name) / ENTRY, name)
        if entry is None or entry.get("fingerprint") != fingerprint:
            return None
        model_path = self.stage_directory(name) / entry.get("artifact", "")
        if not model_path.is_file() or _hashing.file_sha256(model_path) != entry.get("sha256"):
            return None
        return entry

    def begin(self, name):
        """Forgets a stage's old entry, so that a crash in its rerun is never mistaken for
        done, and its old files: before, a rerun under other settings left them beside the
        new ones (a micro stage's C files of its old `c_name`, `quantization: auto`'s
        candidates after a plain export)."""
        directory = self.stage_directory(name)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / ENTRY).unlink(missing_ok=True)  # first: a crash below leaves no entry
        for leftover in directory.iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        # TensorBoard would show the old run's curves with the new ones.
        shutil.rmtree(self.log_directory(name), ignore_errors=True)
        return directory

    def save_model(self, name, model):
        """Writes a Keras model as `model.keras` (atomically); returns the file name."""
        from tfkd.export import TFLiteModel

        if isinstance(model, TFLiteModel):  # the export stage wrote its file already
            return os.path.relpath(model.path, self.stage_directory(name))
        path = self.stage_directory(name) / "model.keras"
        models.save(model, path)
        return path.name

    def finish(self, name, entry):
        """Records the stage as finished: the entry, with the model file's checksum, last."""
        entry = dict(
            entry, sha256=_hashing.file_sha256(self.stage_directory(name) / entry["artifact"])
        )
        write_json(self.stage_directory(name) / ENTRY, entry)
        return entry

    def load_model(self, name, entry):
        from tfkd.export import TFLiteModel

        path = self.stage_directory(name) / entry["artifact"]
        if path.suffix == ".tflite":
            return TFLiteModel(path)
        return load_keras(path)

    def entries(self, names):
        """The entries of the named stages that finished, in that order."""
        entries = [read_entry(self.stage_directory(name) / ENTRY, name) for name in names]
        return [entry for entry in entries if entry is not None]


# The types of an entry's keys (JSON's: int for a float that is whole): those that tfkd
# reads, the report's figures among them. Other keys are kept as they are.
_ENTRY_TYPES = {
    "name": str,
    "stage": str,
    "fingerprint": str,
    "artifact": str,
    "sha256": str,
    "upstream": dict,
    "details": (dict, type(None)),
    "classification": (dict, type(None)),
    "format": (str, type(None)),
    # Every stage measures these (a parameter count may be unknown: a loaded .tflite's).
    **dict.fromkeys(
        ("seconds", "teacher_seconds", "accuracy", "latency_ms", "bytes"), (int, float)
    ),
    **dict.fromkeys(("parameters", "nonzero_parameters"), (int, float, type(None))),
}
_ENTRY_REQUIRED = (
    "name",
    "stage",
    "fingerprint",
    "artifact",
    "sha256",
    "seconds",
    "accuracy",
    "latency_ms",
    "bytes",
)


def read_entry(path, name):
    """The entry of stage `name` at `path`; None where there is none, or where it is not
    one tfkd wrote (another name, a key of another type, a required key missing): the
    stage then reruns, and the report leaves it
    out. Before, an edited entry (a list, a key removed) stopped a rerun and `tfkd report`
    with Python's error."""
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(entry, dict) or entry.get("name") != name:
        return None
    if any(key not in entry for key in _ENTRY_REQUIRED):
        return None
    if any(key in entry and not isinstance(entry[key], kind) for key, kind in _ENTRY_TYPES.items()):
        return None
    if bool in {type(entry.get(key)) for key in _ENTRY_TYPES}:
        return None
    upstream = entry.get("upstream", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in upstream.items()):
        return None
    figures = [entry[key] for key in ("seconds", "accuracy", "latency_ms", "bytes")]
    if not all(math.isfinite(value) and value >= 0 for value in figures) or entry["bytes"] < 1:
        return None  # a file of 0 bytes, a NaN: the report divides by and formats them
    return entry if entry["artifact"] else None


def output_id(entry):
    """What identifies a finished stage's output: its fingerprint and its file's checksum."""
    return f"{entry['fingerprint']}:{entry['sha256'][:16]}"


def _lock_file(file):
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def fingerprint(kind, config_digest, upstream, options):
    """What decides whether a finished stage can be reused: its kind, its arguments (as
    `config_digest`), the outputs it read (`upstream`) and the run's options (data,
    seed, quick, library versions). `tfkd report` recomputes it from `config.json`."""
    description = {"stage": kind, "config": config_digest, "upstream": upstream, **options}
    return _digest(description)


def _digest(value, default=None):
    return _hashing.json_sha256(value, default)[:16]


def config_digest(stage_config, default):
    """A stage's arguments (its `fingerprint()`, without its name), digested."""
    return _digest({k: v for k, v in stage_config.items() if k != "name"}, default)


def write_json(path, value):
    _atomic.write_bytes(path, (json.dumps(value, indent=2, default=_plain) + "\n").encode())


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
