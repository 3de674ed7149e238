"""Sweeps: a grid of run configs, expanded, run anywhere, resumable, and read back as a table.

A grid file is TOML with a ``[base]`` table (a :class:`~factorflow.config.RunConfig`, loss
required) and a ``[grid]`` table mapping dotted config fields to lists of values::

    [base]
    loss = "mse"
    problem = { shape = [6, 6], rank = 1, n_obs = 20 }
    stop = { loss_below = 1e-4, max_steps = 2000 }

    [grid]
    "model.depth" = [2, 3]
    "model.init_scale" = [1e-2, 1e-3]
    seeds = [0, 1, 2]            # one run per seed; runs that differ only by seed form one batch

Every combination of the non-seed fields is one *batch*: one :func:`~factorflow.fit.fit` call
(one tensor program) over all seeds. Its folder ``DIR/runs/<name>/seed_<s>`` is named from its
settings (readable ``field=value`` parts plus a short hash of the whole config) and written
atomically, batch by batch, so a rerun of an interrupted sweep skips what is finished and
repeats nothing. ``DIR/sweep.json`` records the base and grid; a different grid in the same
folder is refused. A batch that raises is recorded in ``DIR/failures/<name>.json``; the rest go
on. :func:`runs_table` reads any folder of run folders back as a pandas DataFrame.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from factorflow.config import config_from_dict, config_to_dict
from factorflow.fit import fit
from factorflow.grids import SweepBatch, SweepSpec, expand, load_grid, parse_grid
from factorflow.results import (
    check_out_dir,
    is_complete_run,
    read_json,
    run_metadata,
    write_json,
)
from factorflow.runs import brief_table, flatten, runs_table, write_runs_table

__all__ = [  # the runs table lives in factorflow.runs; its names are kept here too
    "SweepBatch",
    "SweepResult",
    "SweepSpec",
    "expand",
    "load_grid",
    "parse_grid",
    "run_batch",
    "brief_table",
    "run_sweep",
    "runs_table",
    "write_runs_table",
]


@dataclass
class SweepResult:
    """What a sweep did: runs in the grid, skipped (already there), run now, and failures."""

    out_dir: Path
    n_runs: int
    n_skipped: int
    n_ran: int
    failures: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0


# ---------------------------------------------------------------------------------------------
# The unit of work


def _is_run_dir(path: Path) -> bool:
    """A finished run folder: config.json and summary.json both readable (a truncated one is
    unfinished and is written again)."""
    return is_complete_run(path)


def run_batch(config: dict[str, Any], out: str) -> dict[str, Any]:
    """Fit the seeds of ``config`` missing under ``out`` (one batch) and write
    ``out/seed_<s>``; picklable, so any executor can run it.

    A new batch folder is written whole into a temporary sibling and renamed into place, so
    it is either complete or absent. Returns ``{"name", "status": "ok"|"skipped"|"failed",
    "seeds", "wall_s", "host", ...}`` with ``error`` and ``traceback`` when it failed (the
    exception is caught here so one failing batch does not stop a sweep)."""
    t0 = time.perf_counter()
    target = Path(out)
    status: dict[str, Any] = {"name": target.name, "host": platform.node(), "seeds": []}
    try:
        cfg = config_from_dict(config)
        seeds = [s for s in cfg.seeds if not _is_run_dir(target / f"seed_{s}")]
        status["seeds"] = seeds
        if not seeds:
            return {**status, "status": "skipped", "wall_s": time.perf_counter() - t0}
        runs = fit(replace(cfg, seeds=tuple(seeds)))
        if target.exists():  # a partial batch folder: complete it seed by seed (each atomic)
            for run in runs:
                run.write(target / f"seed_{run.config.seeds[0]}", overwrite=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
            try:
                for run in runs:
                    run.write(tmp / f"seed_{run.config.seeds[0]}")
                os.replace(tmp, target)
            except OSError:
                if not target.exists():
                    raise
                status["note"] = "another worker wrote this batch first; kept its folder"
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return {
            **status,
            "status": "ok",
            "run_status": [r.summary["status"] for r in runs],
            "wall_s": time.perf_counter() - t0,
        }
    except Exception as e:
        return {
            **status,
            "status": "failed",
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(),
            "wall_s": time.perf_counter() - t0,
        }


# ---------------------------------------------------------------------------------------------
# Running a sweep


def _normalized(spec: SweepSpec) -> dict[str, Any]:
    base = config_to_dict(config_from_dict(spec.base))
    return json.loads(json.dumps({"base": base, "grid": spec.grid}))


def _describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    parts = []
    for part in ("base", "grid"):
        a, b = flatten(old.get(part, {})), flatten(new.get(part, {}))
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                parts.append(f"{part} {k}: {a.get(k)!r} in sweep.json, {b.get(k)!r} now")
    return "; ".join(parts[:6]) + (" ..." if len(parts) > 6 else "")


def _prepare_dir(out: Path, spec: SweepSpec, batches: list[SweepBatch]) -> None:
    """Create or check ``out``: its sweep.json must match, and its run folders must be this
    sweep's (same names, same configs)."""
    record = _normalized(spec)
    sweep_json = out / "sweep.json"
    runs_dir = out / "runs"
    loose = sorted(p.name for p in out.glob("seed_*")) + (
        ["summary.json"] if (out / "summary.json").is_file() else []
    )
    if loose:
        raise ValueError(
            f"{out} holds the output of `factorflow run` or `reproduce` ({', '.join(loose[:3])}), "
            "not a sweep's; use a new --out folder"
        )
    if sweep_json.is_file():
        old = read_json(sweep_json)
        old = {"base": old.get("base"), "grid": old.get("grid")}
        if old != record:
            raise ValueError(
                f"{out} holds a different sweep ({_describe_difference(old, record)}); "
                "use a new --out folder (runs of different sweeps are not mixed)"
            )
    elif runs_dir.is_dir() and any(not p.name.startswith(".") for p in runs_dir.iterdir()):
        raise ValueError(
            f"{runs_dir} holds run folders but {out} has no sweep.json: not this sweep's "
            "output; use a new --out folder"
        )
    expected = {b.name: b for b in batches}
    if runs_dir.is_dir():
        for d in sorted(runs_dir.iterdir()):
            if d.name.startswith("."):  # leftovers of an interrupted atomic write
                if d.is_dir():
                    shutil.rmtree(d, ignore_errors=True)
                else:
                    d.unlink(missing_ok=True)
                continue
            if d.name not in expected:
                raise ValueError(
                    f"{d} is not a run of this sweep (its grid has no such combination); "
                    "use a new --out folder"
                )
            cfg = expected[d.name].config
            for seed_dir in sorted(d.glob("seed_*")):
                if not _is_run_dir(seed_dir):
                    continue
                got = read_json(seed_dir / "config.json")["config"]
                seed = got.get("seeds", [None])[0]
                want = json.loads(json.dumps(config_to_dict(replace(cfg, seeds=(seed,)))))
                if seed not in cfg.seeds or got != want:
                    raise ValueError(
                        f"{seed_dir} was written with different settings than this sweep's; "
                        "use a new --out folder"
                    )
    if not sweep_json.is_file():
        write_json(
            sweep_json,
            {**record, "batches": {b.name: b.settings for b in batches}, "meta": run_metadata()},
        )


def run_sweep(
    spec: SweepSpec | str | Path,
    out_dir: str | Path,
    *,
    executor: str = "local",
    workers: int = 1,
    scheduler: str | None = None,
    executor_options: dict[str, Any] | None = None,
    track: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> SweepResult:
    """Run every batch of the grid that is not finished under ``out_dir`` on ``executor``
    (see :func:`factorflow.executors.make_executor`); returns what ran and what failed.

    ``executor_options``: more keyword arguments for the executor (``cluster``,
    ``parameters`` for submitit, ``connect_timeout_s`` for dask). ``track``: also log each
    finished run to ``tensorboard`` or ``wandb`` (see :mod:`factorflow.tracking`)."""
    from tqdm.auto import tqdm

    from factorflow.executors import check_executor_args, make_executor

    t0 = time.perf_counter()
    if not isinstance(spec, SweepSpec):
        spec = load_grid(spec)
    batches = expand(spec)
    check_executor_args(executor, workers, scheduler)
    out = Path(out_dir)
    check_out_dir(out)
    tracker = None
    if track is not None:
        from factorflow.tracking import make_tracker

        tracker = make_tracker(track, out)  # fails early when the package is missing
    out.mkdir(parents=True, exist_ok=True)
    _prepare_dir(out, spec, batches)
    runs_dir, fail_dir = out / "runs", out / "failures"

    n_runs = sum(len(b.config.seeds) for b in batches)
    todo: list[tuple[SweepBatch, list[int]]] = []
    for b in batches:
        missing = [s for s in b.config.seeds if not _is_run_dir(runs_dir / b.name / f"seed_{s}")]
        if missing:
            todo.append((b, missing))
    n_skipped = n_runs - sum(len(m) for _, m in todo)
    result = SweepResult(out, n_runs, n_skipped, 0)
    if not todo:
        if log:
            log(f"sweep: {len(batches)} batches, {n_runs} runs; all done already")
        if tracker is not None:
            tracker.close()
        result.wall_s = time.perf_counter() - t0
        return result
    ex_opts = dict(executor_options or {})
    if executor == "slurm":
        ex_opts.setdefault("folder", out / "submitit")
    ex = make_executor(executor, workers=workers, scheduler=scheduler, **ex_opts)
    if log:
        log(
            f"sweep: {len(batches)} batches, {n_runs} runs; {n_skipped} already done, "
            f"{n_runs - n_skipped} to run on {ex.describe()}"
        )
    tasks = [
        (config_to_dict(replace(b.config, seeds=tuple(m))), str(runs_dir / b.name)) for b, m in todo
    ]
    bar = tqdm(total=n_runs, initial=n_skipped, unit="run", disable=not progress, desc="sweep")
    try:
        with ex:
            for i, status in ex.run(run_batch, tasks):
                b, missing = todo[i]
                if isinstance(status, BaseException):
                    status = {
                        "name": b.name,
                        "status": "failed",
                        "seeds": missing,
                        "error": f"{type(status).__name__}: {status}",
                        "traceback": "".join(traceback.format_exception(status)),
                    }
                fail_path = fail_dir / f"{b.name}.json"
                if status["status"] == "failed":
                    entry = {**status, "settings": b.settings, "config": config_to_dict(b.config)}
                    write_json(fail_path, entry)
                    result.failures.append(entry)
                else:
                    fail_path.unlink(missing_ok=True)
                    result.n_ran += len(missing)
                    if tracker is not None:
                        for s in missing:
                            tracker.log_run(runs_dir / b.name / f"seed_{s}", f"{b.name}/seed_{s}")
                bar.update(len(missing))
                bar.set_postfix(failed=len(result.failures), refresh=False)
    finally:
        bar.close()
        if tracker is not None:
            tracker.close()
    result.wall_s = time.perf_counter() - t0
    return result
