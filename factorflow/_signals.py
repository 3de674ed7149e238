"""SIGTERM handled as Ctrl-C: a batch system's time limit (Slurm sends SIGTERM first) or a plain
``kill`` then runs the same clean-up as an interrupt: the talk records the experiment as
interrupted and writes its report, the runner removes its partial folder and says which cells
it kept for ``--resume``, worker pools are stopped. Installed by the command line in the main
process (:func:`sigterm_interrupts`) and by a talk's experiment processes, which their talk
stops with SIGTERM: such a process ignores SIGTERM while it is idle (:func:`idle_on_sigterm`;
it has nothing to clean up, and its pool ends it) and takes it as an interrupt while it runs an
experiment (inside :func:`sigterm_interrupts`). Cell and sweep workers keep the default, as
their pools end them with SIGTERM or SIGKILL.

Only the first SIGTERM interrupts: later ones are ignored until the block ends, so a batch
system or a talk that signals again does not break off the clean-up the first one started
(SIGKILL still ends the process at once)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

__all__ = ["Terminated", "idle_on_sigterm", "sigterm_interrupts"]


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; a KeyboardInterrupt, so every layer's interrupt handling applies."""


def _ignore(signum: int, frame: object) -> None:
    """A Python-level no-op, unlike ``SIG_IGN``, which the processes this one spawns would
    inherit (and then outlive a pool's SIGTERM)."""


def _raise(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, _ignore)  # the first one interrupts; the clean-up runs on
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


def idle_on_sigterm() -> None:
    """For the rest of this process, SIGTERM does nothing outside :func:`sigterm_interrupts`
    blocks: for a pool process that runs its tasks inside such a block, so that SIGTERM stops a
    task (its clean-up runs, then it fails with :class:`Terminated`) but leaves an idle process
    quiet (before, it raised in the pool's queue read and printed a traceback)."""
    signal.signal(signal.SIGTERM, _ignore)
