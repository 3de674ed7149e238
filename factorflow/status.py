"""``factorflow status DIR``: where the results under a folder stand, for runs that span sittings.

For each result name found under ``DIR`` (a result folder ``DIR/<name>/summary.json``, or what
the runner keeps beside one: ``.<name>.cells``, ``.<name>.partial``, ``.<name>.lock``), one of

- ``running``: a live process holds the folder's lock (:mod:`factorflow.folder_lock`; its pid,
  start time and command are shown);
- ``finished``: ``summary.json`` is written (claims held / failed / not judged, and its time);
- ``interrupted``: no live writer, but finished cells or a partial folder are kept: the same
  command with ``--resume`` continues from them;

with the cells kept so far (``.<name>.cells``: finished ``*.pkl``, in progress ``*.partial``)
and how far each cell in progress says it is (e.g. an IRMAE model's epochs and time of
training: :func:`factorflow.cells.cells_progress`). ``DIR`` may also be one result folder, written
or not yet (a first run in progress).
Reads only; never takes a lock.
"""

from __future__ import annotations

import argparse
import contextlib
import re
from pathlib import Path
from typing import Any

from factorflow.cells import cells_progress, count_cells, sittings_time
from factorflow.folder_lock import holder
from factorflow.results import read_json

__all__ = ["add_parser", "folder_states", "format_states"]

_KINDS = ("cells", "partial", "lock")  # what the runner keeps beside a result: .<name>.<kind>
_KEPT = re.compile(rf"\.(.+)\.({'|'.join(_KINDS)})")


def _state(root: Path, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    cells = root / f".{name}.cells"
    if cells.is_dir():
        out["cells_finished"], out["cells_in_progress"] = count_cells(cells)
        out["progress"] = cells_progress(cells)
    who = holder(root / name)
    summary = root / name / "summary.json"
    if who is not None:
        out.update(state="running", holder=who)
    elif summary.is_file():
        data = read_json(summary)
        holds = [c.get("holds") for c in data.get("claims", [])]
        out.update(state="finished", elapsed_s=data.get("elapsed_s"), cells=data.get("cells"))
        out["claims"] = {
            "held": holds.count(True),
            "failed": holds.count(False),
            "not_judged": holds.count(None),
        }
    else:
        out["state"] = "interrupted"
    return out


def folder_states(folder: str | Path) -> list[dict[str, Any]]:
    """The state of every result under ``folder`` (or of ``folder`` itself when it is a result
    folder), by name: ``{"name", "state": "running" | "finished" | "interrupted", ...}`` (see
    the module doc). A ``folder`` not written yet, whose run keeps its cells, partial folder or
    lock beside it (a first run still going), is that one result. ``FileNotFoundError`` when
    ``folder`` is neither."""
    root = Path(folder)
    parent, name = root.resolve().parent, root.resolve().name
    kept = any((parent / f".{name}.{kind}").exists() for kind in _KINDS)
    if (root / "summary.json").is_file() or (kept and not root.is_dir()):
        return [_state(parent, name)]  # one result folder, or a first run that has not ended
    if not root.is_dir():
        raise FileNotFoundError(f"no folder {root}, and no run of that name kept beside it")
    names = set()
    for p in root.iterdir():
        m = _KEPT.fullmatch(p.name)
        if m is not None:
            names.add(m.group(1))
        elif p.is_dir() and (p / "summary.json").is_file():
            names.add(p.name)
    return [_state(root, n) for n in sorted(names)]


def format_states(states: list[dict[str, Any]]) -> str:
    """One line per result: name, state, and what it has (claims, cells, the writer)."""
    lines = []
    width = max((len(s["name"]) for s in states), default=0)
    for s in states:
        what = []
        if s["state"] == "running":
            what.append(s["holder"])
        elif s["state"] == "finished":
            c = s["claims"]
            what.append(
                f"claims {c['held']} held, {c['failed']} failed, {c['not_judged']} not judged"
            )
            if s.get("elapsed_s") is not None:
                what.append(sittings_time(s["elapsed_s"], s.get("cells")))
        if "cells_finished" in s:
            what.append(
                f"cells: {s['cells_finished']} finished, {s['cells_in_progress']} in progress"
            )
        for name, p in s.get("progress", {}).items():
            with contextlib.suppress(KeyError, TypeError, ValueError):
                secs = float(p["elapsed_s"])
                took = f"{secs / 3600:.1f} h" if secs >= 3600 else f"{secs / 60:.1f} min"
                what.append(f"{name} {p['done']:g}/{p['total']:g} {p['unit']} ({took})")
        if s["state"] == "interrupted":
            what.append("the same command with --resume continues")
        lines.append(f"{s['name']:<{width}}  {s['state']:<11}  " + "; ".join(what))
    return "\n".join(lines) if lines else "no results here"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``status`` on the CLI's subparsers (a missing folder is a one-line error)."""
    p = subparsers.add_parser(
        "status",
        help="where the results under DIR stand: running (by whom), finished, or interrupted "
        "(with the cells kept for --resume)",
    )
    p.add_argument(
        "dir",
        help="a talk's output folder (the parent of reproduce results), or one result folder; for a sweep: factorflow runs",
    )
    p.set_defaults(func=lambda args: print(format_states(folder_states(args.dir))) or 0)
    return p
