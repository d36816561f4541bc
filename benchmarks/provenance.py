"""What the benchmark scripts record about the code they ran."""

import os
import pathlib
import platform
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent


def git_commit():
    """The repository's HEAD commit, or None outside a git checkout (a copy of the tree)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# The widest vector extension decides which CPU kernels TensorFlow and oneDNN run, hence the
# rounding: the same seed on two machines can train two different models (BENCHMARKS.md, "Why
# the same seed moves").
_VECTOR_EXTENSIONS = ("avx512f", "avx2", "avx", "sse4_2", "asimd")


def machine(cpuinfo="/proc/cpuinfo"):
    """`"x86_64, 2 CPU cores, <CPU model>, avx512f"`: what a figure was measured on.

    The model and the widest vector extension come from `cpuinfo` (Linux's /proc/cpuinfo) and
    are left out where it cannot be read."""
    parts = [platform.machine(), f"{os.cpu_count()} CPU cores"]
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as file:
            info = file.read(1 << 20)
    except OSError:
        return ", ".join(parts)
    fields = {}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    model = fields.get("model name") or fields.get("Hardware") or fields.get("CPU part")
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    widest = next((name for name in _VECTOR_EXTENSIONS if name in flags), None)
    return ", ".join(parts + [part for part in (model, widest) if part])
