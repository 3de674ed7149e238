"""Progress lines for long work: a heartbeat while a block runs."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

__all__ = ["heartbeat"]


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
