"""One writer per output folder: an advisory lock held while a run writes a folder.

A paper-scale run writes its result folder ``D`` through siblings (``.D.partial``, the cells
and training checkpoints in ``.D.cells``) for hours, across sittings. A second run into the same
``D`` while the first is alive would remove the first one's partial folder and, without
``--resume``, its finished cells. :func:`hold_folder` makes the second run stop at once with a
clear error instead: it takes an exclusive ``flock`` on ``.D.lock`` beside ``D`` (the file
names the holder: process id, start time, command) for as long as the run lasts. The kernel
drops the lock when the holder exits, however it exits (a kill, a lost session), so a lock is
never left stale; the file is removed when the holder finishes. Where ``fcntl`` does not exist
(Windows) no lock is taken.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["FolderBusyError", "hold_folder", "holder", "lock_path"]


class FolderBusyError(RuntimeError):
    """Another live process holds the lock of the folder this run would write."""


def lock_path(folder: str | os.PathLike[str]) -> Path:
    """The lock file of ``folder``: ``.<name>.lock`` beside it (the folder's real path, so
    ``.`` or a link to it name the same lock)."""
    folder = Path(folder).resolve()
    return folder.parent / f".{folder.name}.lock"


def _take(path: Path, folder: Path) -> int:
    """An open descriptor of ``path`` with the exclusive lock taken, or FolderBusyError."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise FolderBusyError(
                f"{folder} is being written by another process ({holder}); wait for it to "
                "finish, or stop it (what it finished is kept: rerun with --resume), or use "
                "another --out"
            ) from None
        try:  # a finishing holder may have removed the file we opened: lock the current one
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            return fd
        os.close(fd)


@contextlib.contextmanager
def hold_folder(folder: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the write lock of ``folder`` for the ``with`` block (see the module doc); raise
    :class:`FolderBusyError` at once, naming the holder, when another process holds it."""
    folder = Path(folder)
    if fcntl is None:  # pragma: no cover - not POSIX
        yield
        return
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _take(path, folder)
    try:
        started = datetime.now(UTC).isoformat(timespec="seconds")
        holder = f"pid {os.getpid()}, since {started}: {' '.join(sys.argv)}"
        os.ftruncate(fd, 0)
        os.write(fd, holder.encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


def holder(folder: str | os.PathLike[str]) -> str | None:
    """Who writes ``folder`` now, as its lock file names it (``pid N, since T: command``), or
    None: no lock file, or its process has ended (killed before it could remove the file). For
    display (``factorflow status``): it reads the file and asks whether the process lives,
    without touching the lock."""
    try:
        text = lock_path(folder).read_text().strip()
    except FileNotFoundError:
        return None
    m = re.match(r"pid (\d+)", text)
    if m is None:
        return None
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    return text
