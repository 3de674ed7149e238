"""An experiment's cells on several local processes: independent units of work (models, grid
cells, fits) computed by ``workers`` spawned processes, each value stored the moment it arrives.

Why: at paper scale one experiment can be hours of cells that share nothing (IRMAE's eight
models: ~22 h one after another on an idle core, ``docs/irmae-notes.md``), while the other cores
of the machine sit idle once the talk's shorter experiments are done. Cells are deterministic
functions of the settings and their key (:mod:`factorflow.cells`), so where one runs never
changes its value.

Rules, for a user's sake:

- values come back in the order of ``items``, whatever order the workers finish in;
- each finished value is stored at once (:meth:`CellStore.put`), so an interrupted run keeps it
  for ``--resume``; cells a previous attempt stored are loaded, not computed;
- a failing cell stops new cells from starting; the running ones finish and are stored, then the
  first error is raised (nothing finished is lost);
- Ctrl-C, or a parent that dies, stops the workers (each worker watches its parent);
- ``workers`` = 1 computes in this process, exactly as :meth:`CellStore.get` would.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from factorflow._signals import idle_on_sigterm
from factorflow._threads import set_threads

__all__ = [
    "check_workers",
    "init_interruptible",
    "interrupt_processes",
    "map_cells",
    "watch_parent",
]

#: How worker processes start: a fresh interpreter (safe with torch's thread pools and CUDA).
MP_CONTEXT = "spawn"


def check_workers(workers: Any) -> None:
    """A ValueError unless ``workers`` (``--workers``) is an integer >= 1."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers must be an integer >= 1, got {workers!r}")


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:  # the parent died: its results would be lost anyway
            os._exit(1)
        time.sleep(1.0)


def watch_parent(parent: int) -> None:
    """In a worker process: end it (``os._exit(1)``) within a second of its parent ``parent``
    (a pid) dying, however the parent died, even by SIGKILL; a worker's own workers then follow
    it. A process-pool initializer (the talk's experiment processes, the cell workers)."""
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def init_interruptible(parent: int) -> None:
    """Initializer of a pool process that its parent ``parent`` (a pid) may stop: it ends with
    its parent (:func:`watch_parent`); its tasks, run inside ``_signals.sigterm_interrupts()``,
    take SIGTERM as Ctrl-C (the task's clean-up runs, then it fails with KeyboardInterrupt),
    and while idle it ignores SIGTERM (``_signals.idle_on_sigterm``): see
    :func:`interrupt_processes`."""
    watch_parent(parent)
    idle_on_sigterm()


def interrupt_processes(
    processes: Sequence[Any], running: Sequence[Any], grace_s: float = 30.0
) -> None:
    """Stop the tasks of pool processes started with :func:`init_interruptible`: SIGTERM each
    of ``processes`` (``multiprocessing.Process``), wait up to ``grace_s`` seconds for the
    ``running`` futures (``concurrent.futures``) to end, then kill the processes if any has
    not. SIGTERM, not SIGINT: a process started in the background of a script ignores SIGINT."""
    import concurrent.futures as cf

    for p in processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGTERM)
    if cf.wait(running, timeout=grace_s).not_done:
        for p in processes:
            p.kill()


def _init_worker(threads: int, parent: int) -> None:
    set_threads(threads)
    watch_parent(parent)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def map_cells(
    items: Sequence[tuple[str, Callable[[], Any]]],
    *,
    workers: int = 1,
    store: Any = None,
    log: Callable[[str], None] = print,
    threads: int = 1,
    on_done: Callable[[str, Any], None] | None = None,
) -> list[Any]:
    """The values of the cells ``items`` = ``[(key, compute), ...]``, in that order.

    ``store``: a :class:`factorflow.cells.CellStore` (or None: nothing kept). ``workers`` > 1
    runs the cells not yet stored on that many spawned processes (at most one per cell), each
    with ``threads`` torch/BLAS threads; ``compute`` must then pickle (a module-level function,
    or a :func:`functools.partial` of one). Longest cells first makes the best use of the
    workers: they start in the order given. Keys must be unique. ``on_done(key, value)`` is
    called in this process for each cell as its value is kept or loaded (progress lines: in
    the order the cells finish)."""
    keys = [k for k, _ in items]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"cell keys used twice: {dup}")
    check_workers(workers)
    values: dict[str, Any] = {}
    todo = []
    for key, compute in items:
        found, value = store.load(key) if store is not None else (False, None)
        if found:
            values[key] = value
            if on_done is not None:
                on_done(key, value)
        else:
            todo.append((key, compute))
    if workers == 1 or len(todo) <= 1:
        for key, compute in todo:
            value, seconds = _timed(compute)
            if store is not None:
                store.put(key, value, seconds)
            values[key] = value
            if on_done is not None:
                on_done(key, value)
        return [values[k] for k in keys]
    n = min(workers, len(todo))
    log(f"{len(todo)} cells on {n} worker processes ({len(values)} kept)")
    done: queue.SimpleQueue = queue.SimpleQueue()
    error: BaseException | None = None
    ctx = multiprocessing.get_context(MP_CONTEXT)
    with ctx.Pool(n, initializer=_init_worker, initargs=(threads, os.getpid())) as pool:
        pending, running = list(todo), 0
        while pending or running:
            while pending and running < n and error is None:
                key, compute = pending.pop(0)
                pool.apply_async(
                    _timed,
                    (compute,),
                    callback=lambda r, k=key: done.put((k, r, None)),
                    error_callback=lambda e, k=key: done.put((k, None, e)),
                )
                running += 1
            if not running:  # nothing left, or nothing more starts after an error
                break
            key, result, exc = done.get()
            running -= 1
            if exc is not None:
                log(f"cell {key} failed: {type(exc).__name__}: {exc}")
                if error is None:
                    error = exc
                    if running:
                        log(f"waiting for the {running} running cells to finish and be kept")
                continue
            value, seconds = result
            if store is not None:
                store.put(key, value, seconds)
            values[key] = value
            log(f"cell {key} done in {seconds:.1f} s ({len(values)}/{len(keys)})")
            if on_done is not None:
                on_done(key, value)
        pool.close()  # every cell has finished: let the workers exit (terminate() kills them)
        pool.join()
    if error is not None:
        raise error
    return [values[k] for k in keys]
