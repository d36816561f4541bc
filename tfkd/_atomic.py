"""Atomic file writes: a crash leaves the old file or the new one, never a partial one."""

import contextlib
import os
import tempfile


@contextlib.contextmanager
def writing(path, suffix=".part"):
    """Yields a temporary path beside `path` to write to; on success it replaces `path`,
    on any error (Ctrl-C included) it is removed. `suffix` ends the temporary name, for
    writers that read the format from it (`model.save` wants `.keras`)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(descriptor)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def write_bytes(path, content):
    """Writes `content` to `path` through a temporary file in the same directory."""
    with writing(path) as temporary, open(temporary, "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
