"""The one runner every experiment goes through: settings, folder, threads, seeds, timing,
metadata, atomic writes, ``summary.json``, claims and figures.

:func:`run_experiment` resolves the typed settings (scale preset + options), checks the output
location before any work, runs the experiment into a temporary sibling folder
(``.<name>.partial``), writes the rows, judges the claims and draws the figures from the files
written there, and renames the folder into place when everything is written. An existing
finished result is never replaced unless ``overwrite`` (then atomically: the old folder is kept
until the new one is complete) and is reused as it is with ``resume`` when its settings are the
same. A failed or interrupted run leaves any earlier result untouched, and keeps the cells it
finished (:mod:`factorflow.cells`, ``.<name>.cells``): ``resume`` continues from them. While
it runs it holds the folder's lock (:mod:`factorflow.folder_lock`): a second run into the same
folder stops at once (FolderBusyError) instead of removing this one's partial folder and cells.

``summary.json``: ``{"experiment", "title", "paper", "scale", "config", "rows", "claims",
"figures", "arrays", "elapsed_s", "meta"}`` (DESIGN.md, "Contracts"), and ``"cells"`` when a
resumed run kept finished cells: ``{"kept", "computed", "kept_seconds"}`` (``elapsed_s`` is this
attempt's time; the kept cells took ``kept_seconds`` more when they were computed), with
``"resumed_seconds"`` when cells it finished had been started by an earlier attempt (their
earlier time).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from factorflow.cell_pool import check_workers
from factorflow.cells import CellStore
from factorflow.experiment import Context, Experiment, Result
from factorflow.folder_lock import hold_folder
from factorflow.results import check_out_dir, jsonable, read_json, run_metadata, write_json
from factorflow.typed import build_dataclass, config_to_dict

__all__ = [
    "SCALES",
    "check_out_dir",
    "get_experiment",
    "judge",
    "load_result",
    "redraw",
    "run_experiment",
]

SCALES = ("quick", "paper", "smoke")


def get_experiment(exp_id: str) -> Experiment:
    """The registered experiment ``exp_id`` (a ValueError listing the registered ones)."""
    from factorflow.experiments import ALIASES, EXPERIMENTS

    exp_id = ALIASES.get(exp_id, exp_id)
    if exp_id not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {exp_id!r}; registered: {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[exp_id]


def load_result(result_dir: str | Path) -> Result:
    """A result folder as :class:`~factorflow.experiment.Result` (rows typed by the
    experiment's schema, settings rebuilt strictly); a missing or corrupt file is an error
    naming it."""
    d = Path(result_dir)
    summary = read_json(d / "summary.json")
    exp = get_experiment(summary.get("experiment", "?"))
    config = {k: v for k, v in summary.get("config", {}).items() if k not in _RUNNER_KEYS}
    settings = build_dataclass(exp.settings, config)
    return Result(d, summary, exp.rows_frame(summary.get("rows", [])), settings)


#: Keys the runner adds to ``summary["config"]`` beside the settings.
_RUNNER_KEYS = ("device",)


def judge(exp: Experiment, result: Result) -> list[dict[str, Any]]:
    """Every claim of ``exp`` evaluated on ``result`` (see :meth:`Claim.evaluate`)."""
    return [jsonable(c.evaluate(result)) for c in exp.claims]


def rejudge(result_dir: str | Path) -> dict[str, Any]:
    """Judge a finished result's claims again with this code, from its stored rows and arrays
    (which stay as they are): after a fix to how a claim is measured, no rerun is needed.
    ``summary.json`` is rewritten (atomically) with the new claims and ``rejudged``: the code
    that judged them (``run_metadata()``) and ``changed``, the claims whose verdict
    (``holds``) changed. Returns the new summary."""
    d = Path(result_dir)
    result = load_result(d)
    exp = get_experiment(result.summary["experiment"])
    before = {c.get("id"): c.get("holds") for c in result.summary.get("claims", [])}
    claims = judge(exp, result)
    changed = [
        {"id": c["id"], "was": before.get(c["id"]), "now": c.get("holds")}
        for c in claims
        if c["id"] not in before or before[c["id"]] != c.get("holds")
    ]
    summary = {**result.summary, "claims": claims}
    summary["rejudged"] = {**run_metadata(), "changed": changed}
    write_json(d / "summary.json", summary)
    return jsonable(summary)


def redraw(result_dir: str | Path, log: Callable[[str], None] = print) -> list[str]:
    """Draw the experiment's figures from the result folder alone, as ``<name>.png`` files in
    it; returns the file names. A figure that fails is logged and skipped (the results stay)."""
    from factorflow.plotting import figure_functions, save_figure

    result = load_result(result_dir)
    names = []
    for draw in figure_functions(result.summary["experiment"]):
        try:
            figs = draw(result)
        except Exception as e:
            log(f"figure {draw.__name__} failed: {type(e).__name__}: {e}")
            continue
        names += [save_figure(fig, result.dir, name) for name, fig in figs.items()]
    return names


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """torch and BLAS limited to ``n`` threads for the block (None: as they are)."""
    if n is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(previous)


def _same_settings(summary: Mapping[str, Any], config: Mapping[str, Any], scale: str) -> bool:
    old = {k: v for k, v in summary.get("config", {}).items() if k not in _RUNNER_KEYS}
    return summary.get("scale") == scale and jsonable(old) == jsonable(config)


def run_experiment(
    exp_id: str,
    out_dir: str | Path,
    *,
    scale: str = "quick",
    seeds: int | None = None,
    device: str = "cpu",
    options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    threads: int | None = 1,
    workers: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run experiment ``exp_id`` at ``scale`` (``quick``, ``paper`` or ``smoke``, a seconds-long
    check) into ``out_dir`` and return its summary (see the module doc).

    ``seeds`` overrides the preset's number of seeds; ``options`` set any settings field (dotted
    keys for nested ones). ``threads``: torch and BLAS threads during the run (1 by default: the
    problems are small, and parallelism comes from processes). ``workers``: processes for the
    experiment's cells (:meth:`Context.map_cells`; an experiment that has no independent cells
    ignores it), each with ``threads`` threads. ``overwrite`` replaces a finished
    result atomically; ``resume`` returns it unchanged if it has the same settings (the returned
    summary then has ``"kept": True``)."""
    from factorflow.fit import resolve_device

    exp = get_experiment(exp_id)
    opts = dict(options or {})
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ValueError(f"--seeds must be an integer >= 1, got {seeds!r}")
        opts["seeds"] = seeds
    check_workers(workers)
    settings = exp.settings_for(scale, opts)
    dev = resolve_device(device)
    out = Path(out_dir)
    check_out_dir(out)
    config = config_to_dict(settings)
    with hold_folder(out):  # one writer: a second run into ``out`` stops at once
        # a folder holding anything but the error note of a failed run is kept unless --overwrite
        held = (
            sorted(p.name for p in out.iterdir() if p.name != "error.txt") if out.is_dir() else []
        )
        if held:
            old = read_json(out / "summary.json") if (out / "summary.json").is_file() else None
            if resume and old is not None and _same_settings(old, config, scale):
                log(f"{exp_id}: finished result with the same settings in {out}; kept")
                return {**old, "kept": True}  # as written, and marked for the caller
            if resume and old is not None and not overwrite:
                raise ValueError(
                    f"{out} holds a result of {old.get('experiment')} with other settings; "
                    "use another --out, or --overwrite to replace it"
                )
            if not overwrite:
                what = (
                    "a result" if old is not None else f"files that are not a result ({held[:3]})"
                )
                raise FileExistsError(
                    f"{out} already holds {what}; use --overwrite to replace it"
                    + (" or --resume to keep it" if old is not None else "")
                )
        tmp = out.parent / f".{out.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        stamp = {"experiment": exp.id, "scale": scale, "config": config, "device": str(dev)}
        cells = CellStore.open(
            out.parent / f".{out.name}.cells", stamp, resume=resume, overwrite=overwrite, log=log
        )
        n_threads = threads if threads is not None else torch.get_num_threads()
        ctx = Context(
            out_dir=tmp, device=dev, scale=scale, log=log, cells=cells, workers=workers,
            threads=n_threads,
        )  # fmt: skip
        t0 = time.perf_counter()
        torch.manual_seed(0)  # experiments seed their own generators; this only pins stray draws
        np.random.seed(0)  # noqa: NPY002
        try:
            with _threads(threads):
                rows = exp.run(settings, ctx)
            frame = exp.rows_frame(rows)
            summary: dict[str, Any] = {
                "experiment": exp.id,
                "title": exp.title,
                "paper": exp.paper,
                "scale": scale,
                "config": {**config, "device": str(dev)},
                "rows": _records(frame),
                "claims": [],
                "figures": [],
                "arrays": list(ctx.saved),
                "elapsed_s": time.perf_counter() - t0,
                "meta": run_metadata(),
            }
            write_json(tmp / "summary.json", summary)
            result = Result(tmp, summary, frame, settings)
            summary["claims"] = judge(exp, result)
            write_json(tmp / "summary.json", summary)
            summary["figures"] = redraw(tmp, log)
            summary["elapsed_s"] = time.perf_counter() - t0
            if cells.kept or cells.resumed_seconds:  # resumed: the earlier attempts' time
                summary["cells"] = cells.summary()
            write_json(tmp / "summary.json", summary)
            _swap_into_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if cells.computed or cells.kept:
                log(
                    f"{exp_id}: stopped; {cells.computed + cells.kept} finished cells kept in "
                    f"{cells.folder}: rerun with --resume to continue from them"
                )
            raise
        cells.remove()
        return jsonable(summary)  # as written: NaN and missing values are null


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain dicts, missing values as None (NaN in a float column stays NaN -> null)."""
    out = []
    for rec in frame.to_dict(orient="records"):
        out.append({k: (None if v is None or v is pd.NA else v) for k, v in rec.items()})
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` folder to ``out``; an existing ``out`` is moved aside first
    and removed only after the rename succeeded."""
    old = out.parent / f".{out.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
