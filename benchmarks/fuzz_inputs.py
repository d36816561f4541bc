"""Fuzzing every kind of file tfkd parses (issue 16, item 2).

Each real input file is mutated `--mutations` times (seeded: bit flips, byte sets,
truncations, splices of a chunk of the file elsewhere in it) and parsed by tfkd's own
reader. Each mutation must end one of three ways:

- `same`: it loads, exactly as the original does (e.g. a flip in a gzip header's
  timestamp);
- `changed`: it loads with other contents. Allowed for formats with no checksum (a
  YAML config, a CSV, a vocabulary, a `.tflite`): a changed byte there is a changed
  file. For the gzip and zip files, whose checksums catch changed data, it is listed;
- `error`: it raises the reader's documented error (its type is in the table below).

Anything else is a failure: another exception type, a crash of the process (each
target runs in a worker process, restarted after a crash, so a crash is recorded
against its mutation), a hang (no answer within `--timeout` seconds), or a
`MemoryError` under the worker's address-space limit (`--memory-limit-mb`; the TFLite
worker, which loads TensorFlow, runs without one and reports its peak instead).

    python benchmarks/fuzz_inputs.py                       # 1,000 mutations a file
    python benchmarks/fuzz_inputs.py --mutations 20 --targets config csv  # quick

Writes `benchmarks/results/fuzz_inputs.json` (`--output`): per target the file, its
size, the outcomes by kind, the failures (mutation index, kind, message), the peak
resident memory of its workers and the seconds taken. Exits 1 if any mutation failed.
"""

import argparse
import hashlib
import importlib
import json
import os
import pathlib
import pickle
import platform
import random
import resource
import select
import subprocess
import sys
import tempfile
import time
import zipfile

from provenance import git_commit, machine

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# Targets: where the real file is, how tfkd reads it, and the errors it documents.


def _animal_mnist():
    from tfkd.datasets import _sources

    return _sources._locate_animal_mnist()[0]


def _mnist():
    from tfkd.datasets import _sources

    return _sources._locate_mnist()[0]


def _idx():
    from tfkd.datasets import _sources

    return _sources._locate_fashion_mnist()[3]  # t10k labels: 5 KB


def _checkpoint():
    # `tfkd.transfer.mobilenet_v2` is the builder function; the module holds the path.
    module = importlib.import_module("tfkd.transfer.torchvision_weights")
    return module._default_weights_path()


def _config():
    return ROOT / "examples" / "pipeline_fashion_mnist.yaml"


def _tweets():
    from tfkd.datasets import _tweets

    return _tweets._locate(None)


def _vocabulary():
    from tfkd.transfer import text

    return pathlib.Path(text.minilm_dir()) / "vocab.txt"


def _tflite(work_dir):
    """A float `.tflite` of the bundled Fashion-MNIST CNN teacher, exported once."""
    path = pathlib.Path(work_dir) / "teacher.tflite"
    if not path.is_file():
        import keras

        import tfkd

        teacher = keras.saving.load_model(
            ROOT / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"
        )
        tfkd.export_tflite(teacher, path)
    return path


def _keras_teacher(_work_dir=None):
    return ROOT / "saved_models" / "fashion_mnist_cnn_teacher" / "model.keras"


def _read_keras(path):
    import numpy as np

    from tfkd.pipeline import _keras_file

    model = _keras_file.load_keras(path)
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    return [np.asarray(weight) for weight in model.get_weights()], model.predict(x, verbose=0)


def _keras_member(member):
    """Locates `member` of the `.keras` teacher, extracted into the work directory: its
    mutations are packed into a valid zip (`_read_keras_member`), so that they reach
    Keras's parsing of the config and of the HDF5 weights behind the zip's checksums."""

    def locate(work_dir):
        path = pathlib.Path(work_dir) / member
        if not path.is_file():
            with zipfile.ZipFile(_keras_teacher()) as archive:
                path.write_bytes(archive.read(member))
        return path

    return locate


def _read_keras_member(member):
    def read(path):
        packed = path.parent / "packed.keras"
        with zipfile.ZipFile(_keras_teacher()) as source, zipfile.ZipFile(packed, "w") as out:
            for info in source.infolist():
                data = path.read_bytes() if info.filename == member else source.read(info)
                out.writestr(info.filename, data)
        return _read_keras(packed)

    return read


def _read_pickle(path):
    from tfkd.datasets import _pickle

    return _pickle._load_gzipped_pickle(path)


def _read_idx(path):
    from tfkd.datasets import _idx

    return _idx._read_idx_gz(path)


def _read_checkpoint(path):
    from tfkd.transfer import _torch_checkpoint

    return _torch_checkpoint.read_state_dict(path)


def _read_config(path):
    from tfkd.pipeline import load_config

    return load_config(path).pipeline.get_config()


def _read_tweets(path):
    from tfkd.datasets import load_tweets

    splits = load_tweets(path)
    return splits.train, splits.test


def _read_vocabulary(path):
    from tfkd.text import WordPieceTokenizer

    tokenizer = WordPieceTokenizer(path, sequence_length=16)
    return sorted(tokenizer.vocabulary.items()), tokenizer(["a fuzzed tweet, isn't it"])


def _read_tflite(path):
    import numpy as np

    from tfkd import TFLiteModel

    model = TFLiteModel(path)
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    return model.predict(x)


def _config_error():
    from tfkd.pipeline import ConfigError

    return (ConfigError,)


TARGETS = {
    # name: (locate the file, read it, documented errors, needs TensorFlow)
    "animal_mnist_pickle": (_animal_mnist, _read_pickle, lambda: (pickle.UnpicklingError,), False),
    "mnist_pickle": (_mnist, _read_pickle, lambda: (pickle.UnpicklingError,), False),
    "idx": (_idx, _read_idx, lambda: (ValueError,), False),
    "checkpoint": (
        _checkpoint,
        _read_checkpoint,
        lambda: (ValueError, pickle.UnpicklingError),
        False,
    ),
    # The same file under a name without torchvision's hash, so that mutations reach
    # the zip and pickle parsing behind the hash check.
    "checkpoint_unnamed": (
        _checkpoint,
        _read_checkpoint,
        lambda: (ValueError, pickle.UnpicklingError),
        False,
    ),
    "config": (_config, _read_config, _config_error, False),
    "tflite": (_tflite, _read_tflite, lambda: (ValueError,), True),
    # The pipeline's `.keras` reader (`load` stages, model paths, a resumed run's stages).
    "keras": (_keras_teacher, _read_keras, lambda: (ValueError,), True),
    # Its config and HDF5 weights, mutated inside a valid zip.
    "keras_config": (
        _keras_member("config.json"),
        _read_keras_member("config.json"),
        lambda: (ValueError,),
        True,
    ),
    "keras_weights": (
        _keras_member("model.weights.h5"),
        _read_keras_member("model.weights.h5"),
        lambda: (ValueError,),
        True,
    ),
    "csv": (_tweets, _read_tweets, lambda: (ValueError,), False),
    "vocabulary": (_vocabulary, _read_vocabulary, lambda: (ValueError,), False),
}
# Formats with no checksum: a changed byte may load as a changed file.
NO_CHECKSUM = {
    "config",
    "tflite",
    "csv",
    "vocabulary",
    "checkpoint_unnamed",
    "keras_config",
    "keras_weights",
}
# Names the mutated copy takes instead of the original's.
RENAMED = {"checkpoint_unnamed": "mobilenet_v2.pth"}


# Mutations.


def mutate(data, rng):
    """One seeded mutation of `data` (bytes): `(kind, mutated bytes)`."""
    kind = rng.choice(["bit_flips", "byte_sets", "truncation", "splice"])
    data = bytearray(data)
    if kind == "bit_flips":
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(data))
            data[position] ^= 1 << rng.randrange(8)
    elif kind == "byte_sets":
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(data))
            data[position] = rng.choice([0x00, 0x01, 0x7F, 0x80, 0xFF, rng.randrange(256)])
    elif kind == "truncation":
        data = data[: rng.randrange(len(data))]
    else:
        length = rng.randint(1, min(4096, len(data)))
        source = rng.randrange(len(data) - length + 1)
        chunk = data[source : source + length]
        target = rng.randrange(len(data))
        if rng.random() < 0.5:
            data[target : target + length] = chunk  # overwrite
        else:
            data[target:target] = chunk  # insert
    return kind, bytes(data)


def digest(value):
    """A digest of what a reader returned (arrays, dicts, lists, scalars)."""
    import numpy as np

    hasher = hashlib.sha256()

    def visit(item):
        if isinstance(item, np.ndarray):
            hasher.update(f"array{item.dtype.str}{item.shape}".encode())
            hasher.update(np.ascontiguousarray(item).tobytes())
        elif isinstance(item, dict):
            hasher.update(b"dict")
            for key in sorted(item, key=str):
                hasher.update(repr(key).encode())
                visit(item[key])
        elif isinstance(item, (list, tuple)):
            hasher.update(f"seq{len(item)}".encode())
            for element in item:
                visit(element)
        else:
            hasher.update(repr(item).encode())

    visit(value)
    return hasher.hexdigest()


# The worker: parses mutations [start, stop) of one target, a line each.


def worker(args):
    name = args.worker
    locate, read, documented, needs_tensorflow = TARGETS[name]
    if args.memory_limit_mb and not needs_tensorflow:
        limit = args.memory_limit_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    path = pathlib.Path(locate(args.work_dir) if needs_tensorflow else locate())
    documented = documented()
    original = path.read_bytes()
    expected = digest(read(path))
    # The original name: a reader may check it (torchvision's names hold a hash).
    mutated_path = pathlib.Path(args.work_dir) / f"{name}-mutated" / RENAMED.get(name, path.name)
    mutated_path.parent.mkdir(exist_ok=True)
    print(json.dumps(["ready"]), flush=True)
    for index in range(args.start, args.stop):
        rng = random.Random(f"{args.seed}-{name}-{index}")
        kind, data = mutate(original, rng)
        mutated_path.write_bytes(data)
        try:
            result = digest(read(mutated_path))
            outcome = "same" if result == expected else "changed"
            detail = ""
        except documented as error:
            outcome, detail = "error", type(error).__name__
        except Exception as error:  # noqa: BLE001 (what the fuzzing looks for)
            outcome, detail = "other", f"{type(error).__name__}: {str(error)[:200]}"
        print(json.dumps([index, kind, outcome, detail]), flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(["peak_rss_mb", round(peak, 1)]), flush=True)


# The parent: runs workers, restarts them after a crash or hang, tallies.


def fuzz_target(name, args, work_dir):
    start, stop = 0, dict(args.limit).get(name, args.mutations)
    outcomes, failures, peaks = {}, [], []
    began = time.perf_counter()
    while start < stop:
        command = [
            sys.executable,
            __file__,
            "--worker",
            name,
            "--start",
            str(start),
            "--stop",
            str(stop),
            "--seed",
            str(args.seed),
            "--work-dir",
            str(work_dir),
            "--memory-limit-mb",
            str(args.memory_limit_mb),
        ]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        # The first answer waits for imports and the original file's parse.
        timeout = args.timeout + 120
        answered = False
        while True:
            ready, _, _ = select.select([process.stdout], [], [], timeout)
            if not ready:  # a hang: recorded against the mutation it was on
                process.kill()
                process.wait()
                failures.append({"index": start, "outcome": "hang"})
                outcomes["hang"] = outcomes.get("hang", 0) + 1
                start += 1
                break
            line = process.stdout.readline()
            if not line:  # the worker ended: finished, or crashed on mutation `start`
                process.wait()
                if not answered:  # it failed before the first mutation: a setup error
                    raise RuntimeError(
                        f"The {name} worker failed before fuzzing (exit {process.returncode})"
                        f": {process.stderr.read()[-2000:]}"
                    )
                if start < stop:
                    stderr = process.stderr.read()[-300:]
                    failures.append(
                        {
                            "index": start,
                            "outcome": "crash",
                            "detail": f"exit {process.returncode}: {stderr}",
                        }
                    )
                    outcomes["crash"] = outcomes.get("crash", 0) + 1
                    start += 1
                break
            record = json.loads(line)
            if record[0] == "ready":
                answered = True
                continue
            if record[0] == "peak_rss_mb":
                peaks.append(record[1])
                continue
            index, kind, outcome, detail = record
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if outcome == "other" or (outcome == "changed" and name not in NO_CHECKSUM):
                failures.append(
                    {
                        "index": index,
                        "mutation": kind,
                        "outcome": outcome,
                        **({"detail": detail} if detail else {}),
                    }
                )
            if outcome == "error":
                outcomes.setdefault("error_types", {})
                outcomes["error_types"][detail] = outcomes["error_types"].get(detail, 0) + 1
            start = index + 1
            timeout = args.timeout
    return {
        "outcomes": outcomes,
        "failures": failures,
        "peak_rss_mb": max(peaks, default=None),
        "seconds": round(time.perf_counter() - began, 1),
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mutations", type=int, default=1000)
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=list(TARGETS))
    parser.add_argument(
        "--limit",
        nargs="*",
        default=[],
        type=lambda text: (text.split("=")[0], int(text.split("=")[1])),
        help="fewer mutations for some targets, e.g. mnist_pickle=100 (220 MB decoded)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per mutation")
    parser.add_argument("--memory-limit-mb", type=int, default=3072)
    parser.add_argument(
        "--output", type=pathlib.Path, default=ROOT / "benchmarks/results/fuzz_inputs.json"
    )
    parser.add_argument("--worker", choices=sorted(TARGETS), help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    began = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(prefix="tfkd_fuzz_") as work_dir:
        for name in args.targets:
            result = fuzz_target(name, args, work_dir)
            results[name] = result
            result["mutations"] = dict(args.limit).get(name, args.mutations)
            failed = len(result["failures"])
            print(
                f"[{time.perf_counter() - began:7.1f} s] {name}: {result['outcomes']}, "
                f"{failed} failures, peak {result['peak_rss_mb']} MB, {result['seconds']} s",
                flush=True,
            )
    report = {
        "command": "python benchmarks/fuzz_inputs.py " + " ".join(sys.argv[1:]),
        "mutations_per_file": args.mutations,
        "limits": dict(args.limit),
        "seed": args.seed,
        "memory_limit_mb": args.memory_limit_mb,
        "machine": machine(),
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "seconds": round(time.perf_counter() - began, 1),
        "targets": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"Wrote {args.output}. Finished in {report['seconds']:.0f} s.")
    return 1 if any(result["failures"] for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
