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
        if os.path.isfile(temporary):
            # mkstemp's file is its owner's alone (0600); others read what open() makes.
            os.chmod(temporary, 0o666 & ~umask())
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


def umask():
    """The process's umask, read without setting it where Linux shows it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it
    os.umask(mask)
    return mask
