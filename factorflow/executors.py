"""Where the units of work of a sweep run: in this process, local processes, Dask, or Slurm.

A unit of work is a picklable call ``fn(*task)`` (for sweeps: ``run_batch(config_dict, out)``,
which fits and writes its run folders and returns a small status dict). Every executor has the
same interface::

    with make_executor("local", workers=2) as ex:
        for index, result in ex.run(fn, tasks):
            ...   # result: what fn returned, or the exception that stopped the task

Results arrive in completion order, tagged with the task's index. The choice of executor changes
where the work runs, never what it computes.

- ``local`` (default): ``workers=1`` runs each task in this process; ``workers=N > 1`` uses a
  :class:`concurrent.futures.ProcessPoolExecutor` (started from a fork server, torch threads split
  between them).
- ``dask``: a Dask distributed client, connected to ``scheduler`` (an address such as
  ``tcp://host:8786``; a clear error if nothing answers within ``connect_timeout_s``) or, without
  one, to a fresh ``LocalCluster(n_workers=workers, threads_per_worker=1)``.
- ``slurm``: submitit's ``AutoExecutor(folder=...)`` (Slurm when ``sbatch`` is available, else
  submitit's local executor; ``cluster="local"``/``"debug"`` forces one); ``parameters`` go to
  ``update_parameters`` (e.g. ``slurm_partition``, ``timeout_min``, ``gpus_per_node``).

dask/distributed and submitit are the optional extra ``cluster``: they are imported only when
their executor is asked for.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "EXECUTORS",
    "DaskExecutor",
    "Executor",
    "InProcessExecutor",
    "ProcessExecutor",
    "SubmititExecutor",
    "check_executor_args",
    "make_executor",
]

EXECUTORS = ("local", "dask", "slurm")

Task = tuple[Any, ...]


def import_optional(module: str, feature: str, extra: str = "cluster") -> ModuleType:
    """Import ``module`` or raise an ImportError that says which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"{feature} needs the package {module.split('.')[0]!r}, which is not installed: "
            f"pip install 'factorflow[{extra}]'"
        ) from e


class Executor:
    """Runs tasks somewhere; use as a context manager so workers are released."""

    name = "base"

    def run(self, fn: Callable[..., Any], tasks: Sequence[Task]) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, result)`` as tasks finish; ``result`` is ``fn(*tasks[index])`` or the
        exception that stopped it (an error raised by ``fn`` or by the executor itself)."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        """Release workers; cancel what has not run yet."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessExecutor(Executor):
    """Run each task in this process, one after another (``--workers 1``)."""

    name = "local"

    def run(self, fn: Callable[..., Any], tasks: Sequence[Task]) -> Iterator[tuple[int, Any]]:
        for i, task in enumerate(tasks):
            try:
                result = fn(*task)
            except Exception as e:  # KeyboardInterrupt propagates: the sweep stops
                result = e
            yield i, result

    def describe(self) -> str:
        return "local (in process)"


def _init_worker(n_threads: int, parent_pid: int | None = None) -> None:
    """Set the worker's torch threads and, given ``parent_pid``, start a watchdog that ends the
    worker as soon as that process is gone: a sweep killed with SIGKILL leaves no workers
    running and writing (the fork server, not the sweep, is their parent, so the kernel's
    parent-death signal would not reach them)."""
    import torch

    torch.set_num_threads(n_threads)
    if parent_pid is not None:
        import threading

        threading.Thread(
            target=_exit_with_parent, args=(parent_pid,), daemon=True, name="parent-watchdog"
        ).start()


#: Seconds between the worker watchdog's checks that the sweep process still exists.
PARENT_CHECK_S = 0.5


def _exit_with_parent(parent_pid: int) -> None:
    import time

    while True:
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            os._exit(1)  # the sweep is gone: stop at once, without cleanup handlers
        except PermissionError:  # pragma: no cover - the pid now belongs to another user
            os._exit(1)
        time.sleep(PARENT_CHECK_S)


def _mp_context() -> multiprocessing.context.BaseContext:
    """A fork server that has imported factorflow (and torch) once, so each worker starts as a
    cheap fork of a process that has run no threads; spawn where fork servers do not exist."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["factorflow.sweep"])
        return ctx
    return multiprocessing.get_context("spawn")


class ProcessExecutor(Executor):
    """A pool of ``workers`` local processes (started from a fork server); each gets
    ``cpu_count // workers`` torch threads."""

    name = "local"

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        threads = max(1, (os.cpu_count() or 1) // workers)
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=_mp_context(),
            initializer=_init_worker,
            initargs=(threads, os.getpid()),
        )

    def run(self, fn: Callable[..., Any], tasks: Sequence[Task]) -> Iterator[tuple[int, Any]]:
        futures = {self._pool.submit(fn, *task): i for i, task in enumerate(tasks)}
        for fut in as_completed(futures):
            try:
                result = fut.result()
            except Exception as e:  # e.g. BrokenProcessPool when a worker died
                result = e
            yield futures[fut], result

    def describe(self) -> str:
        return f"local ({self.workers} processes)"

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            # Ctrl-C or SIGTERM: stop the running batches too, not wait for them (a sweep
            # started in a script's background ignores SIGINT in every process); a killed
            # batch leaves nothing half-written and runs again when the sweep is rerun
            for proc in list((getattr(self._pool, "_processes", None) or {}).values()):
                proc.kill()
        self.close()


class DaskExecutor(Executor):
    """Dask distributed: an existing scheduler, or a LocalCluster of ``workers`` processes."""

    name = "dask"

    def __init__(
        self,
        scheduler: str | None = None,
        workers: int = 1,
        connect_timeout_s: float = 10.0,
    ) -> None:
        distributed = import_optional("distributed", "the dask executor")
        self._distributed = distributed
        self._cluster = None
        if scheduler:
            try:
                self.client = distributed.Client(
                    scheduler, timeout=connect_timeout_s, set_as_default=False
                )
            except (OSError, TimeoutError, ValueError) as e:
                raise RuntimeError(
                    f"no Dask scheduler answered at {scheduler!r} within "
                    f"{connect_timeout_s:g} s ({e}); start one (dask scheduler) or check the address"
                ) from None
            self._where = f"dask scheduler {scheduler}"
        else:
            self._cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            self.client = distributed.Client(self._cluster, set_as_default=False)
            self._where = f"dask LocalCluster ({workers} workers)"

    def run(self, fn: Callable[..., Any], tasks: Sequence[Task]) -> Iterator[tuple[int, Any]]:
        tag = uuid.uuid4().hex[:8]
        futures = [
            self.client.submit(fn, *task, key=f"factorflow-{tag}-{i}", pure=False)
            for i, task in enumerate(tasks)
        ]
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for fut in self._distributed.as_completed(futures, loop=self.client.loop):
                try:
                    result = fut.result()
                except Exception as e:
                    result = e
                yield index[fut.key], result
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def describe(self) -> str:
        return self._where

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


class SubmititExecutor(Executor):
    """Slurm (or submitit's local executor) through ``submitit.AutoExecutor``; each task is one
    job of a job array, logs under ``folder``."""

    name = "slurm"

    def __init__(
        self,
        folder: str | Path,
        cluster: str | None = None,
        parameters: dict[str, Any] | None = None,
        poll_s: float = 0.5,
    ) -> None:
        submitit = import_optional("submitit", "the slurm executor")
        self.folder = Path(folder)
        self._ex = submitit.AutoExecutor(folder=self.folder / "%j", cluster=cluster)
        if parameters:
            self._ex.update_parameters(**parameters)
        self.poll_s = poll_s
        self._pending: dict[int, Any] = {}

    def run(self, fn: Callable[..., Any], tasks: Sequence[Task]) -> Iterator[tuple[int, Any]]:
        if not tasks:
            return
        with self._ex.batch():
            jobs = [self._ex.submit(fn, *task) for task in tasks]
        self._pending = dict(enumerate(jobs))
        while self._pending:
            done = [i for i, job in self._pending.items() if job.done()]
            for i in done:
                job = self._pending.pop(i)
                try:
                    result = job.result()
                except Exception as e:  # the job failed or was killed: its error and log
                    result = e
                yield i, result
            if self._pending and not done:
                time.sleep(self.poll_s)

    def describe(self) -> str:
        return f"submitit ({self._ex.cluster}), logs in {self.folder}"

    def close(self) -> None:
        for job in self._pending.values():
            try:
                job.cancel(check=False)
            except Exception:  # best effort: the job may already be gone
                pass
        self._pending = {}


def check_executor_args(kind: str, workers: int = 1, scheduler: str | None = None) -> None:
    """Validate the executor choice without starting anything."""
    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor {kind!r}; choose one of {list(EXECUTORS)}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if scheduler and kind != "dask":
        raise ValueError("--scheduler is only for --executor dask")


def make_executor(
    kind: str = "local",
    *,
    workers: int = 1,
    scheduler: str | None = None,
    folder: str | Path | None = None,
    cluster: str | None = None,
    parameters: dict[str, Any] | None = None,
    connect_timeout_s: float = 10.0,
) -> Executor:
    """The executor named ``kind`` (one of :data:`EXECUTORS`)."""
    check_executor_args(kind, workers, scheduler)
    if kind == "local":
        return InProcessExecutor() if workers == 1 else ProcessExecutor(workers)
    if kind == "dask":
        return DaskExecutor(scheduler, workers, connect_timeout_s)
    if folder is None:
        raise ValueError("the slurm executor needs a folder for its job logs")
    return SubmititExecutor(folder, cluster=cluster, parameters=parameters)
