"""What the benchmark scripts record about the code they ran."""

import pathlib
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
