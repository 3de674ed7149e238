"""The runs table: one row per run folder under a folder (a sweep, or `factorflow run` output),
config fields flattened beside the final metrics; unreadable runs listed apart."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from factorflow.results import read_json

__all__ = ["SHOWN_METRICS", "brief_table", "flatten", "runs_table", "write_runs_table"]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _cell(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, list | dict) else v


def runs_table(root: str | Path) -> pd.DataFrame:
    """One row per run folder found under ``root`` (recursively; a run folder holds
    ``config.json`` and ``summary.json``): ``run`` (its path relative to ``root``), the
    flattened config fields (dotted names; the run's ``seed`` instead of ``seeds``), then the
    final metrics of its summary. Lists are JSON strings. Rows sorted by ``run``."""
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
        flat = flatten(config)
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
