"""SIGTERM handled as Ctrl-C: a batch system's time limit (Slurm sends SIGTERM first) or a plain
``kill`` then runs the same clean-up as an interrupt: the talk records the experiment as
interrupted and writes its report, the runner removes its partial folder and says which cells
it kept for ``--resume``, worker pools are stopped. Installed by the command line in the main
process (:func:`sigterm_interrupts`) and by a talk's experiment processes, which their talk
stops with SIGTERM (:func:`raise_on_sigterm`); cell and sweep workers keep the default, as
their pools end them with SIGTERM or SIGKILL."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

__all__ = ["Terminated", "raise_on_sigterm", "sigterm_interrupts"]


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; a KeyboardInterrupt, so every layer's interrupt handling applies."""


def _raise(signum: int, frame: object) -> None:
    raise Terminated(f"terminated by signal {signum}")


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (outside the main thread, where no
    handler can be set, nothing changes); the previous handler is restored after it."""
    try:
        old = signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def raise_on_sigterm() -> None:
    """For the rest of this process, SIGTERM raises :class:`Terminated`: for a worker process
    that its parent stops by SIGTERM so that its clean-up runs, whatever SIGINT disposition it
    inherited (a job started in the background of a script ignores SIGINT)."""
    signal.signal(signal.SIGTERM, _raise)
