"""Registered experiments: one module per published result, discovered automatically.

Each module in this package that defines ``ID`` is an experiment. It also defines ``TITLE``,
``PAPER`` (citation) and ``run(out_dir, *, scale, seeds, device, options) -> summary``; the
summary follows DESIGN.md ("Contracts"): ``{"experiment", "scale", "config", "rows", "claims",
"figures", "elapsed_s"}``. :func:`reproduce` writes ``out_dir/summary.json``.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["EXPERIMENTS", "reproduce"]


def _discover() -> dict[str, ModuleType]:
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name == "common":
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        exp_id = getattr(mod, "ID", None)
        if exp_id is None:
            continue
        if exp_id in found:
            raise RuntimeError(f"experiment id {exp_id!r} registered twice")
        found[exp_id] = mod
    return found


EXPERIMENTS: dict[str, ModuleType] = _discover()


def reproduce(
    exp_id: str,
    out_dir: Path,
    *,
    scale: str = "quick",
    seeds: int | None = None,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run experiment ``exp_id`` and write ``out_dir/summary.json``; returns the summary."""
    if exp_id not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {exp_id!r}; registered: {sorted(EXPERIMENTS)}")
    if scale not in ("quick", "paper"):
        raise ValueError(f"scale must be quick or paper, got {scale!r}")
    if seeds is not None and seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    from factorflow.results import write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    summary = EXPERIMENTS[exp_id].run(
        out_dir, scale=scale, seeds=seeds, device=device, options=opts
    )
    summary = {"experiment": exp_id, "scale": scale, **summary}
    summary["elapsed_s"] = time.perf_counter() - t0
    write_json(out_dir / "summary.json", summary)
    return summary
