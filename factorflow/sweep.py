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

import copy
import dataclasses
import difflib
import hashlib
import itertools
import json
import os
import platform
import re
import shutil
import tempfile
import time
import tomllib
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from factorflow.config import RunConfig, config_from_dict, config_to_dict
from factorflow.fit import fit
from factorflow.results import (
    check_out_dir,
    is_complete_run,
    read_json,
    run_metadata,
    write_json,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SweepBatch",
    "SweepResult",
    "SweepSpec",
    "expand",
    "load_grid",
    "parse_grid",
    "run_batch",
    "run_sweep",
    "runs_table",
    "write_runs_table",
]


@dataclass(frozen=True)
class SweepSpec:
    """A sweep: the base config table and the grid (dotted field -> list of values)."""

    base: dict[str, Any]
    grid: dict[str, list[Any]]


@dataclass(frozen=True)
class SweepBatch:
    """One combination of the grid: its swept values (dotted field -> value, seeds excluded),
    its folder name, and its strictly built config (all its seeds)."""

    name: str
    settings: dict[str, Any]
    config: RunConfig


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
# Grid files


def _flatten_grid(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten_grid(value, f"{path}."))
        else:
            out[path] = value
    return out


def _config_fields() -> dict[str, list[str]]:
    """Sweepable dotted fields: top-level scalars and ``section.field``."""
    top: list[str] = []
    sections: dict[str, list[str]] = {}
    for f in dataclasses.fields(RunConfig):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            sections[f.name] = [g.name for g in dataclasses.fields(default)]
        else:
            top.append(f.name)
    return {"": top, **sections}


def _check_field(path: str) -> None:
    fields = _config_fields()
    allowed = list(fields[""]) + [f"{s}.{k}" for s, ks in fields.items() if s for k in ks]
    if path in allowed:
        return
    if path in fields and path:
        raise ValueError(
            f"grid field {path!r} is a config section; sweep its fields, e.g. "
            f"{path + '.' + fields[path][0]!r}"
        )
    close = difflib.get_close_matches(path, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"grid field {path!r} is not a config field{hint}; allowed: {allowed}")


def parse_grid(data: dict[str, Any]) -> SweepSpec:
    """Validate the tables of a grid file: ``[base]`` (a config table with a loss) and a
    non-empty ``[grid]`` of known dotted fields, each a non-empty list."""
    unknown = sorted(set(data) - {"base", "grid"})
    if unknown:
        raise ValueError(f"a grid file has only [base] and [grid] tables; unknown: {unknown}")
    base = data.get("base")
    if not isinstance(base, dict):
        raise ValueError("the grid file needs a [base] table (a run config; loss required)")
    if "loss" not in base:
        raise ValueError('[base] must name its loss: loss = "mse" or "half_sse"')
    grid_table = data.get("grid")
    if not isinstance(grid_table, dict) or not grid_table:
        raise ValueError(
            'the [grid] table is empty: list at least one field to sweep, e.g. "model.depth" = [2, 3]'
        )
    grid = _flatten_grid(grid_table)
    for path, values in grid.items():
        _check_field(path)
        if not isinstance(values, list):
            raise ValueError(f"grid field {path!r} must be a list of values, got {values!r}")
        if not values:
            raise ValueError(f"grid field {path!r} has no values (an empty list)")
    if "seeds" in grid:
        seeds = grid["seeds"]
        if any(isinstance(s, bool) or not isinstance(s, int) for s in seeds):
            raise ValueError(f"grid seeds must be integers, got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"grid seeds must be distinct, got {seeds!r}")
    return SweepSpec(base=base, grid=grid)


def load_grid(path: str | Path) -> SweepSpec:
    """Read and validate a grid TOML file (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"grid file {p} does not exist")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{p}: not valid TOML: {e}") from None
    return parse_grid(data)


# ---------------------------------------------------------------------------------------------
# Expansion and names


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    node = data
    parts = path.split(".")
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ValueError(f"cannot set {path!r}: {p!r} in [base] is not a table")
        node = child
    node[parts[-1]] = value


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "x".join(_fmt_value(x) for x in v)
    return str(v)


def _config_hash(cfg: RunConfig) -> str:
    d = config_to_dict(cfg)
    d.pop("seeds")
    text = json.dumps(d, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def batch_name(settings: dict[str, Any], cfg: RunConfig, max_len: int = 120) -> str:
    """Stable folder name: ``field=value`` parts of the swept settings (in grid order) plus an
    8-hex hash of the full config without its seeds, e.g. ``model.depth=2_model.init_scale=0.01_3f2a9c1b``."""
    readable = "_".join(f"{k}={_fmt_value(v)}" for k, v in settings.items())
    readable = re.sub(r"[^A-Za-z0-9._=+-]", "-", readable)[:max_len]
    h = _config_hash(cfg)
    return f"{readable}_{h}" if readable else h


def expand(spec: SweepSpec) -> list[SweepBatch]:
    """All combinations of the grid (seeds kept together in each batch), every config built
    strictly before anything runs; a bad value names its combination."""
    seeds = spec.grid.get("seeds")
    keys = [k for k in spec.grid if k != "seeds"]
    batches: list[SweepBatch] = []
    seen: dict[str, dict[str, Any]] = {}
    for values in itertools.product(*(spec.grid[k] for k in keys)):
        settings = dict(zip(keys, values, strict=True))
        data = copy.deepcopy(spec.base)
        for k, v in settings.items():
            _set(data, k, copy.deepcopy(v))
        if seeds is not None:
            data["seeds"] = list(seeds)
        try:
            cfg = config_from_dict(data)
        except ValueError as e:
            where = ", ".join(f"{k}={v!r}" for k, v in settings.items()) or "[base]"
            raise ValueError(f"grid combination {where}: {e}") from None
        name = batch_name(settings, cfg)
        if name in seen:
            raise ValueError(
                f"grid combinations {seen[name]} and {settings} give the same config "
                "(a repeated value?)"
            )
        seen[name] = settings
        batches.append(SweepBatch(name, settings, cfg))
    return batches


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


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    parts = []
    for part in ("base", "grid"):
        a, b = _flat(old.get(part, {})), _flat(new.get(part, {}))
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


# ---------------------------------------------------------------------------------------------
# Reading results back


def _cell(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, list | dict) else v


def runs_table(root: str | Path) -> pd.DataFrame:
    """One row per run folder found under ``root`` (recursively; a run folder holds
    ``config.json`` and ``summary.json``): ``run`` (its path relative to ``root``), the
    flattened config fields (dotted names; the run's ``seed`` instead of ``seeds``), then the
    final metrics of its summary. Lists are JSON strings. Rows sorted by ``run``."""
    import pandas as pd

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    rows = []
    unreadable: list[dict[str, str]] = []
    for summary_path in sorted(root.rglob("summary.json")):
        d = summary_path.parent
        rel = d.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not (d / "config.json").is_file():
            continue
        try:
            config = read_json(d / "config.json").get("config", {})
            summary = read_json(summary_path)
            if not isinstance(config, dict) or not isinstance(summary, dict):
                raise ValueError(f"{d}: config.json or summary.json is not a run's")
        except (OSError, ValueError, AttributeError) as e:
            unreadable.append({"run": rel.as_posix(), "error": str(e)})
            continue
        flat = _flat(config)
        seeds = flat.pop("seeds", None)
        row: dict[str, Any] = {"run": rel.as_posix()}
        row["seed"] = summary.get(
            "seed", seeds[0] if isinstance(seeds, list) and len(seeds) == 1 else seeds
        )
        row.update({k: _cell(v) for k, v in flat.items()})
        for k, v in summary.items():
            if k == "seed":
                continue
            row[f"final.{k}" if k in row else k] = _cell(v)
        rows.append(row)
    if not rows:
        df = pd.DataFrame(columns=["run", "seed"])
    else:
        df = pd.DataFrame(rows).sort_values("run", kind="stable").reset_index(drop=True)
    df.attrs["unreadable"] = unreadable  # runs whose files could not be read, with the reason
    return df


def write_runs_table(root: str | Path) -> tuple[pd.DataFrame, Path | None]:
    """:func:`runs_table` of ``root``, also written to ``root/runs.csv`` when the folder can be
    written (a read-only finished sweep is still listed; the path is then None)."""
    df = runs_table(root)
    path = Path(root) / "runs.csv"
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return df, None
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        df.to_csv(tmp, index=False)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return df, None
    return df, path


SHOWN_METRICS = (
    "status",
    "final_loss",
    "steps",
    "time",
    "recon_mse",
    "rel_fro_error",
    "effective_rank",
    "nuclear_norm",
)


def brief_table(df: pd.DataFrame) -> pd.DataFrame:
    """The columns worth printing: config fields that vary between runs, the seed, and the main
    final metrics."""
    if df.empty:
        return df
    config_cols = [
        c
        for c in df.columns
        if ("." in c or c in ("loss", "dtype", "device"))
        and not c.startswith("final.")
        and df[c].astype(str).nunique() > 1
    ]
    cols = ["run", *config_cols, "seed", *[m for m in SHOWN_METRICS if m in df.columns]]
    return df[cols]
