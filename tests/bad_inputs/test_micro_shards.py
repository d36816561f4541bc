"""Bad inputs to the microcontroller bundle and the sharded teacher cache (issues 19, 20).

Every case is refused before any work: no TFLM run, no teacher forward pass (the one
finished cache the `TeacherShards` cases read is written by a Dense teacher on 8 rows).
"""

import keras
import numpy as np

from tests.bad_inputs._cases import Case, check, parametrize, tmp
from tfkd.distill import TeacherShards, write_teacher_shards
from tfkd.export import micro_bundle
from tfkd.pipeline import Micro


def _tflite():
    path = tmp("m.tflite")
    path.write_bytes(b"abcd1234")
    return path


def _teacher():
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


_X = np.zeros((8, 3), "float32")


def _shards():
    write_teacher_shards(_teacher(), _X, tmp("cache"))
    return TeacherShards(tmp("cache"))


def _empty_folder():
    tmp("empty").mkdir()
    return str(tmp("empty"))


CASES = [
    Case(micro_bundle, lambda: micro_bundle(3, tmp("b")), TypeError, "path", "path=3"),
    Case(
        micro_bundle,
        lambda: micro_bundle(_tflite(), tmp("b"), name="2model"),
        ValueError,
        "name",
        "name='2model'",
    ),
    Case(
        micro_bundle,
        lambda: micro_bundle(_tflite(), tmp("b"), arena_margin=-1),
        ValueError,
        "arena_margin",
        "arena_margin=-1",
    ),
    Case(
        micro_bundle,
        lambda: micro_bundle(_tflite(), tmp("b"), arena_limit=0),
        ValueError,
        "arena_limit",
        "arena_limit=0",
    ),
    Case(
        micro_bundle,
        lambda: micro_bundle(_tflite(), tmp("b"), np.array(["a", "b"])),
        ValueError,
        "data",
        "<U1",
    ),
    Case(Micro, lambda: Micro(c_name="a b"), ValueError, "c_name", "c_name='a b'"),
    Case(Micro, lambda: Micro(arena_margin=20), ValueError, "arena_margin", "arena_margin=20"),
    Case(Micro, lambda: Micro(arena_limit="1MB"), TypeError, "arena_limit", "'1MB'"),
    Case(Micro, lambda: Micro(samples=0), ValueError, "samples", "0"),
    Case(
        write_teacher_shards,
        lambda: write_teacher_shards(_teacher(), _X, tmp("c"), top_k=0),
        ValueError,
        "top_k",
        "top_k=0",
    ),
    Case(
        write_teacher_shards,
        lambda: write_teacher_shards(_teacher(), _X, tmp("c"), views=0),
        ValueError,
        "views",
        "views=0",
    ),
    Case(
        write_teacher_shards,
        lambda: write_teacher_shards(_teacher(), _X, tmp("c"), process_index=-1),
        ValueError,
        "process_index",
        "process_index=-1",
    ),
    Case(
        write_teacher_shards,
        lambda: write_teacher_shards("teacher.keras", _X, tmp("c")),
        TypeError,
        "teacher",
        "builtins.str",
    ),
    Case(
        write_teacher_shards,
        lambda: write_teacher_shards(_teacher(), _X, 3),
        TypeError,
        "directory",
        "directory=3",
    ),
    Case(TeacherShards, lambda: TeacherShards(3), TypeError, "directory", "directory=3"),
    Case(
        TeacherShards,
        lambda: TeacherShards(_empty_folder()),
        ValueError,
        "directory",
        "empty'",
    ),
    Case(
        TeacherShards,
        lambda: _shards().batches(batch_size=0),
        ValueError,
        "batch_size",
        "batch_size=0",
    ),
    Case(
        TeacherShards,
        lambda: _shards().batches(8, process_index=3, process_count=2),
        ValueError,
        "process_index",
        "process_index=3",
    ),
]


@parametrize(CASES)
def test_bad_input_is_refused(case):
    check(case)
