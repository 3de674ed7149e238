"""Registered experiments: one module per published result.

Each module defines ``TITLE``, ``PAPER`` and ``run(out_dir, *, scale, seeds, device, options)
-> summary`` which writes ``out_dir/summary.json`` (DESIGN.md "Contracts") and its figures.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["EXPERIMENTS", "reproduce"]

EXPERIMENTS: dict[str, ModuleType] = {}


def _register() -> None:
    import importlib

    for mod_name in ():
        mod = importlib.import_module(f"factorflow.experiments.{mod_name}")
        EXPERIMENTS[mod.ID] = mod


_register()


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
    from factorflow.results import write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary = EXPERIMENTS[exp_id].run(
        out_dir, scale=scale, seeds=seeds, device=device, options=dict(options or {})
    )
    summary.setdefault("experiment", exp_id)
    summary.setdefault("scale", scale)
    summary["elapsed_s"] = time.perf_counter() - t0
    write_json(out_dir / "summary.json", summary)
    return summary
