"""Grid files for sweeps: a ``[base]`` run config and a ``[grid]`` of dotted fields to lists of
values, checked strictly and expanded into batches (one per combination of the non-seed fields,
each with a stable folder name). :mod:`factorflow.sweep` runs them."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factorflow.config import RunConfig, config_from_dict, config_to_dict

__all__ = ["SweepBatch", "SweepSpec", "batch_name", "expand", "load_grid", "parse_grid"]


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
