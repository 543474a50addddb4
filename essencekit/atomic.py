"""Writing files so that readers only ever see a complete file or none."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows.

    ``os.umask`` can only be read by setting it, and for that instant a file created by another
    thread (transfer writes photos from worker threads) would get the wrong mode, so Linux's
    /proc is asked first.
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output_file(path: str | os.PathLike, *, parameter: str = "output") -> None:
    """Refuse, before any work, an output file that cannot be written: a folder, or under a
    file or an unwritable folder (found out only after the work, as a bare "File exists").
    An :class:`~essencekit.errors.OptionError` for ``parameter``."""
    from .errors import OptionError

    path = Path(path)
    if path.is_dir():
        raise OptionError(f"output {path} is a folder, but the output must be a file: name a file", parameter=parameter)
    probe = path.parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OptionError(f"output {path} cannot be written: {probe} is a file, not a folder", parameter=parameter)
    if not os.access(probe, os.W_OK):
        raise OptionError(f"output {path} cannot be written: {probe} is not writable", parameter=parameter)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On any exception (a full disk, Ctrl-C) the temporary file is removed and ``path`` keeps
    whatever it held before, so an interrupted write never leaves a half-written output. The
    file ends with the permissions a plain ``open()`` gives under the user's umask (``mkstemp``
    alone would leave every output private to its owner, 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # the writer may have replaced the file (some libraries write by rename), so set the
        # mode on what is there now, just before it becomes visible
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
