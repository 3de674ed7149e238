"""Progress lines for long work: a heartbeat while a block runs, and where a worker process's
printed lines go."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["heartbeat", "log_to"]


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
