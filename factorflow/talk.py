"""Reproduce the talk: run its experiments in order, then write the report (:mod:`factorflow.report`).

:func:`reproduce_talk` runs every experiment of the talk (:data:`TALK`, in the talk's order)
into ``DIR/<id>/`` through :func:`factorflow.runner.run_experiment`; one that raises is recorded
as failed (``DIR/<id>/error.txt``, traceback) and the others still run; an id that is not
registered shows as "not available". The state of the whole run is ``DIR/talk.json``, updated
after each experiment, and the report is rewritten after each one too, so an interrupted run
still leaves a report of what finished. With ``resume`` a finished experiment with the same
settings is kept as it is.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factorflow._progress import heartbeat, logging_into
from factorflow.cell_pool import check_workers, init_interruptible, interrupt_processes
from factorflow.cells import sittings_time
from factorflow.folder_lock import hold_folder
from factorflow.report import claim_counts, load_summaries, totals, write_report
from factorflow.results import run_metadata, write_json
from factorflow.talk_schedule import longest_first

__all__ = ["TALK", "TalkItem", "reproduce_talk"]


@dataclass(frozen=True)
class TalkItem:
    """One experiment of the talk: its registry id, the part of the talk it belongs to, and a
    title used when the experiment is not registered."""

    id: str
    part: str
    title: str


#: The talk's experiments in the talk's order, with the part of the talk each belongs to (the
#: title shown is the registered experiment's; an unregistered id shows as "not available").
TALK: tuple[TalkItem, ...] = tuple(
    TalkItem(exp_id, part, exp_id)
    for exp_id, part in (
        ("arora2019-completion", "Matrix completion vs nuclear norm"),
        ("arora2019-dynamics", "Singular value dynamics"),
        ("razin2020-2x2", "Determinant and norms"),
        ("razin2020-perturbed", "Determinant and norms"),
        ("razin2020-tensor-recovery", "Tensor recovery and dynamics"),
        ("razin2021-dynamics", "Tensor recovery and dynamics"),
        ("razin2021-natural-rank", "Tensor rank of natural data"),
        ("jing2020-irmae", "Practical application"),
    )
)

TRACEBACK_LINES = 30


def _select(only: Sequence[str] | None, registered: dict[str, Any]) -> list[TalkItem]:
    if not only:
        return list(TALK)
    by_id = {t.id: t for t in TALK}
    unknown = [i for i in only if i not in by_id and i not in registered]
    if unknown:
        raise ValueError(
            f"--only names unknown experiments {unknown}; the talk's: {[t.id for t in TALK]}"
            + (f", registered: {sorted(registered)}" if registered else "")
        )
    picked = [t for t in TALK if t.id in only]
    extra = [i for i in dict.fromkeys(only) if i not in by_id]
    return picked + [TalkItem(i, "Other experiments", i) for i in extra]


def _excerpt(tb: str, n: int = TRACEBACK_LINES) -> str:
    lines = tb.rstrip().splitlines()
    return "\n".join(lines if len(lines) <= n else ["...", *lines[-n:]])


#: How worker processes start (``jobs > 1``): a fresh interpreter (safe with torch and CUDA).
MP_CONTEXT = "spawn"


def _split_options(options: dict[str, Any], exps: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """``options`` per experiment id: each key goes to the experiments whose settings have its
    first (dotted) part; a key that none has is a ValueError."""
    import dataclasses

    fields = {e.id: {f.name for f in dataclasses.fields(e.settings)} for e in exps}
    unknown = [k for k in options if not any(k.split(".")[0] in f for f in fields.values())]
    if unknown:
        raise ValueError(f"options {unknown} are settings of no experiment of the talk")
    return {
        i: {k: v for k, v in options.items() if k.split(".")[0] in f} for i, f in fields.items()
    }


def _run_experiment(
    exp_id: str,
    exp_dir: Path,
    scale: str,
    seeds: int | None,
    device: str,
    options_by_id: dict[str, dict[str, Any]],
    resume: bool = False,
    workers: int = 1,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run one experiment; return the index entry's update (status, elapsed_s, claims or the
    error and a traceback excerpt). A failure is written to ``exp_dir/error.txt``. With
    ``threads`` (a worker process) torch's thread count is set and the printed progress goes to
    ``DIR/logs/<id>.txt`` (added to it with ``resume``)."""
    import sys

    from factorflow.runner import run_experiment

    t0 = time.perf_counter()
    redirect: Any = contextlib.nullcontext()
    if threads is not None:
        from factorflow._signals import sigterm_interrupts
        from factorflow._threads import set_threads

        set_threads(threads)
        redirect = contextlib.ExitStack()
        redirect.enter_context(sigterm_interrupts())  # an interrupt only while it runs
        redirect.enter_context(logging_into(exp_dir.parent / "logs" / f"{exp_id}.txt", resume))
    with redirect:
        try:
            summary = run_experiment(
                exp_id,
                exp_dir,
                scale=scale,
                seeds=seeds,
                device=device,
                options=options_by_id.get(exp_id, {}),
                overwrite=True,  # the talk's own folder: with resume, other settings rerun
                resume=resume,
                workers=workers,
                threads=None,  # the process's: FACTORFLOW_THREADS (a worker: its parent's)
            )
        except Exception as e:
            tb = traceback.format_exc()
            exp_dir.mkdir(parents=True, exist_ok=True)
            (exp_dir / "error.txt").write_text(tb)
            if threads is not None:
                print(tb, file=sys.stderr)
            return {
                "status": "failed",
                "elapsed_s": time.perf_counter() - t0,
                "error": f"{type(e).__name__}: {e}",
                "traceback": _excerpt(tb),
            }
    return {
        "status": "ok",
        "elapsed_s": time.perf_counter() - t0,
        "kept": bool(summary.get("kept")),  # a finished result of an earlier sitting
        "result_elapsed_s": summary.get("elapsed_s"),  # the result's own run
        "kept_cells": summary.get("cells"),
        "claims": claim_counts(summary.get("claims", [])),
    }


def _run_parallel(
    todo: list[tuple[int, TalkItem]],
    jobs: int,
    args: tuple[Any, ...],
    started: Callable[[int, TalkItem], Path],
    finished: Callable[[int, TalkItem, dict[str, Any]], None],
    index: dict[str, Any],
    save: Callable[[], None],
    log: Callable[[str], None] | None,
    heartbeat_s: float,
    t_start: float,
) -> None:
    """Run ``todo`` on ``jobs`` spawned worker processes, longest first."""
    import concurrent.futures as cf
    import multiprocessing

    import torch

    threads = torch.get_num_threads()
    rank = {i: r for r, i in enumerate(longest_first([t.id for _, t in todo], args[0]))}
    order = sorted(todo, key=lambda kt: rank[kt[1].id])
    running: dict[cf.Future[dict[str, Any]], tuple[int, TalkItem, float]] = {}
    pending = list(order)
    ctx = multiprocessing.get_context(MP_CONTEXT)
    with cf.ProcessPoolExecutor(  # each experiment process ends with the talk, however it ends
        max_workers=jobs, mp_context=ctx, initializer=init_interruptible, initargs=(os.getpid(),)
    ) as pool:
        try:
            while pending or running:
                while pending and len(running) < jobs:
                    k, t = pending.pop(0)
                    exp_dir = started(k, t)
                    fut = pool.submit(_run_experiment, t.id, exp_dir, *args, threads)
                    running[fut] = (k, t, time.perf_counter())
                done, _ = cf.wait(
                    running,
                    timeout=heartbeat_s if heartbeat_s > 0 else None,
                    return_when=cf.FIRST_COMPLETED,
                )
                if not done and log:
                    now = time.perf_counter()
                    what = ", ".join(f"{t.id} {now - t0:.0f} s" for k, t, t0 in running.values())
                    log(f"still running: {what} (total elapsed {now - t_start:.0f} s)")
                for fut in done:
                    k, t, t0 = running.pop(fut)
                    try:
                        outcome = fut.result()
                    except Exception as e:  # the worker process itself died
                        outcome = {
                            "status": "failed",
                            "elapsed_s": time.perf_counter() - t0,
                            "error": f"worker process failed: {type(e).__name__}: {e}",
                            "traceback": "",
                        }
                    finished(k, t, outcome)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM to this process only: stop them too
            procs = list((getattr(pool, "_processes", None) or {}).values())
            interrupt_processes(procs, list(running))  # each cleans up, keeps its cells
            for fut, (_k, t, t0) in running.items():
                fut.cancel()
                index["experiments"][t.id].update(
                    status="interrupted", elapsed_s=time.perf_counter() - t0
                )
            save()
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def reproduce_talk(
    out_dir: str | Path,
    *,
    scale: str = "quick",
    seeds: int | None = None,
    device: str = "cpu",
    only: Sequence[str] | None = None,
    options: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = print,
    heartbeat_s: float = 60.0,
    jobs: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """Run the talk's experiments (or ``only`` those ids, in the talk's order) into
    ``out_dir/<id>/``, then write ``out_dir/report.html`` and ``out_dir/report.md``.

    ``scale``, ``seeds``, ``device`` and ``options`` go to every experiment. Progress goes to
    ``log``: a line when each experiment starts and ends, and every ``heartbeat_s`` seconds
    while one runs (0: never). ``jobs`` > 1 runs that many experiments at once, each in its own
    process (spawned, with this process's number of torch threads; its printed progress goes to
    ``out_dir/logs/<id>.txt``), longest first by
    :data:`factorflow.talk_schedule.EXPECTED_SECONDS`; the results are the same
    as with ``jobs=1`` (every experiment seeds its own generators). ``workers``: processes for
    each experiment's independent cells (``run_experiment``'s), so up to ``jobs * workers``
    processes at once. Returns the index
    written to ``out_dir/talk.json``: ``{"scale", "device", "seeds", "meta", "order",
    "experiments": {id: {"status": ok|failed|not available|interrupted, "elapsed_s", ...}},
    "total_s", "claims": {"held", "failed", "not_judged", "total"}}``.

    A folder that holds an earlier talk is refused unless ``resume`` (finished experiments with
    the same settings are kept, the others run) or ``overwrite`` (each result is replaced
    atomically when its new one is complete). An option applies to the experiments whose
    settings have that field; one that no experiment of the talk knows is an error. A folder
    that another live talk writes is refused at once (``folder_lock.FolderBusyError``)."""
    from factorflow import experiments
    from factorflow.fit import resolve_device
    from factorflow.runner import SCALES, check_out_dir

    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if seeds is not None and seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    resolve_device(device)  # a missing GPU is one clear error, not one per experiment
    registered = experiments.EXPERIMENTS
    items = _select(only, registered)
    check_workers(workers)
    out = Path(out_dir)
    check_out_dir(out)
    with hold_folder(out):  # one talk at a time in ``out``
        if (out / "talk.json").is_file() and not (resume or overwrite):
            raise FileExistsError(
                f"{out} already holds a talk; use --resume to keep its finished experiments or "
                "--overwrite to replace them"
            )
        per_exp = _split_options(
            options or {}, [registered[t.id] for t in items if t.id in registered]
        )
        out.mkdir(parents=True, exist_ok=True)
        index: dict[str, Any] = {
            "scale": scale,
            "device": device,
            "seeds": seeds,
            "only": list(only) if only else None,
            "meta": run_metadata(),
            "order": [t.id for t in items],
            "experiments": {},
            "total_s": 0.0,
        }
        for t in items:
            exp = registered.get(t.id)
            index["experiments"][t.id] = {
                "part": t.part,
                "title": exp.title if exp else t.title,
                "paper": exp.paper if exp else None,
                "status": "pending" if exp is not None else "not available",
            }
            if exp is None:
                index["experiments"][t.id]["error"] = (
                    f"experiment {t.id!r} is not registered in this version of factorflow"
                )
        t_start = time.perf_counter()

        def save() -> None:
            index["total_s"] = time.perf_counter() - t_start
            write_json(out / "talk.json", index)
            write_report(out)

        save()
        n = len(items)

        def available(k: int, t: TalkItem) -> bool:
            if index["experiments"][t.id]["status"] != "not available":
                return True
            if log:
                log(f"[{k}/{n}] {t.id}: not available (not registered), skipped")
            return False

        def started(k: int, t: TalkItem) -> Path:
            entry = index["experiments"][t.id]
            exp_dir = out / t.id
            exp_dir.mkdir(parents=True, exist_ok=True)
            (exp_dir / "error.txt").unlink(missing_ok=True)
            if log:
                log(
                    f"[{k}/{n}] {t.id}: {entry['title']} ... running "
                    f"(total elapsed {time.perf_counter() - t_start:.0f} s)"
                )
            entry["status"] = "running"
            return exp_dir

        def finished(k: int, t: TalkItem, outcome: dict[str, Any]) -> None:
            entry = index["experiments"][t.id]
            entry.update(outcome)
            if log and entry["status"] == "failed":
                log(f"[{k}/{n}] {t.id}: FAILED after {entry['elapsed_s']:.1f} s: {entry['error']}")
            elif log:
                counts = entry["claims"]
                took = sittings_time(entry["elapsed_s"], entry.get("kept_cells"))
                how = f"done in {took}"
                if entry.get("kept"):
                    took = sittings_time(entry["result_elapsed_s"], entry.get("kept_cells"))
                    how = f"kept (its run took {took})"
                log(
                    f"[{k}/{n}] {t.id}: {how}; claims "
                    f"{counts['held']} held, {counts['failed']} failed, "
                    f"{counts['not_judged']} not judged"
                )
            save()

        n_available = sum(index["experiments"][t.id]["status"] != "not available" for t in items)
        jobs = max(1, min(int(jobs), n_available))
        args = (scale, seeds, device, per_exp, resume, workers)
        if jobs == 1:
            for k, t in enumerate(items, 1):
                if not available(k, t):
                    continue
                exp_dir = started(k, t)
                t0 = time.perf_counter()
                try:
                    with heartbeat(
                        log, heartbeat_s, f"[{k}/{n}] {t.id}: still running", t0, t_start
                    ):
                        outcome = _run_experiment(t.id, exp_dir, *args)
                except KeyboardInterrupt:
                    index["experiments"][t.id].update(
                        status="interrupted", elapsed_s=time.perf_counter() - t0
                    )
                    save()
                    raise
                finished(k, t, outcome)
        else:
            todo = [(k, t) for k, t in enumerate(items, 1) if available(k, t)]
            _run_parallel(
                todo, jobs, args, started, finished, index, save, log, heartbeat_s, t_start
            )
        index["claims"] = totals(index, load_summaries(out, index))["claims"]
        save()
        if log:
            log(
                f"report: {out / 'report.html'} and {out / 'report.md'} "
                f"(total {index['total_s']:.0f} s)"
            )
        return index
