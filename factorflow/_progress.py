"""Progress lines for long work: a heartbeat while a block runs, and where a worker process's
printed lines go."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["heartbeat", "log_to", "logging_into"]


@contextlib.contextmanager
def heartbeat(
    log: Callable[[str], None] | None, every_s: float, what: str, t0: float, t_start: float
) -> Iterator[None]:
    """Log ``what`` with the elapsed times every ``every_s`` seconds until the block ends."""
    if not log or every_s <= 0:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            now = time.perf_counter()
            log(f"{what}, {now - t0:.0f} s (total elapsed {now - t_start:.0f} s)")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def log_to(file: Any) -> Iterator[None]:
    """Point file descriptors 1 and 2 of this (worker) process at ``file`` while the block runs,
    so processes it starts (``--workers``) print into the same log; restored afterwards."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(file.fileno(), 1)
        os.dup2(file.fileno(), 2)
        yield
    finally:
        for fd, old in zip((1, 2), saved, strict=True):
            os.dup2(old, fd)
            os.close(old)


@contextlib.contextmanager
def logging_into(path: Path, append: bool = False) -> Iterator[None]:
    """While the block runs, everything this process prints (``sys.stdout``, ``sys.stderr``
    and file descriptors 1 and 2, so the processes it starts too) goes to ``path``, line by
    line. ``append``: add to the file after a line with the time (one log over the sittings of
    a resumed run) instead of starting it afresh."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if append else "w", buffering=1) as f:
        if append:
            f.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: resumed\n")
        with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f), log_to(f):
            yield
