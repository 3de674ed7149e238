"""The shape every experiment has: settings, a run that returns tidy rows, and claims as data.

An experiment module defines one :class:`Experiment` named ``EXPERIMENT``::

    EXPERIMENT = Experiment(
        id="arora2019-sensing",
        title="...",
        paper="Arora, Cohen, Hu, Luo. NeurIPS 2019, appendix (matrix sensing)",
        settings=Settings,                       # a frozen dataclass, every field typed
        scales={"quick": QUICK, "paper": PAPER, "smoke": SMOKE},  # presets as data
        columns=COLUMNS,                         # the row schema: column -> kind
        claims=(Claim(...), ...),
        run=run,                                 # (settings, Context) -> list of row dicts
    )

The run only trains and measures; everything around it (output folder, device, threads,
seeds, timing, metadata, atomic writes, ``summary.json``, claims, figures) belongs to the
shared runner, :func:`factorflow.runner.run_experiment`. Large arrays (trajectories) go to
``Context.save_arrays``; figures are drawn later from the result folder alone
(:mod:`factorflow.plotting`, registered by experiment id).

A :class:`Claim` is data: the statement, the paper's value and where it comes from, a
measurement (a function of the result: rows, settings, saved arrays), and checks with their
tolerances. ``holds`` is True/False, or None with a reason when it could not be judged (a
measurement raises :class:`NotJudged`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from factorflow.context import Context
from factorflow.typed import build_dataclass, config_to_dict

__all__ = [
    "COLUMN_KINDS",
    "Check",
    "Claim",
    "Context",
    "Experiment",
    "NotJudged",
    "Result",
    "at_least",
    "at_most",
    "between",
    "is_true",
    "within",
]

#: Column kinds of a row schema: how a value is checked.
COLUMN_KINDS = ("str", "int", "float", "bool", "json")


class NotJudged(Exception):  # noqa: N818 - it is an outcome, not an error
    """Raised by a claim's measurement when the result cannot judge it (the reason is shown)."""


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class Check:
    """One judgement of a measured value: ``measured[key] op value`` (``key`` None: the whole
    measured value). ``op`` is one of ``<=``, ``>=``, ``<``, ``>``, ``within`` (``|x - value|
    <= rel |value|``), ``between`` (``value[0] <= x <= value[1]``), ``true``."""

    key: str | None
    op: str
    value: Any = None
    rel: float | None = None

    def __post_init__(self) -> None:
        if self.op not in ("<=", ">=", "<", ">", "within", "between", "true"):
            raise ValueError(f"unknown check op {self.op!r}")
        if self.op == "within" and not (self.rel is not None and self.rel >= 0):
            raise ValueError("a 'within' check needs rel >= 0")

    def describe(self) -> str:
        """The check as text, e.g. ``depth3_mean <= 0.0001``."""
        x = self.key or "measured"
        if self.op == "within":
            return f"{x} within {self.rel:.0%} of {self.value:g}"
        if self.op == "between":
            return f"{self.value[0]:g} <= {x} <= {self.value[1]:g}"
        if self.op == "true":
            return f"{x} is true"
        return f"{x} {self.op} {self.value:g}"

    def failure(self, measured: Any) -> str:
        """The check and the value it read, for a failed claim's reason, e.g. ``depth3_mean <=
        0.0001 (measured 0.0037)``."""
        x = measured if self.key is None else _lookup(measured, self.key)
        if self.op == "true":
            shown = "true" if x else "false"
        elif isinstance(x, int | float | np.number) and not isinstance(x, bool):
            shown = f"{float(x):.4g}"
        else:
            shown = repr(x)
        return f"{self.describe()} (measured {shown})"

    def __call__(self, measured: Any) -> bool:
        """Whether ``measured`` passes; a missing or non-finite value raises NotJudged."""
        x = measured if self.key is None else _lookup(measured, self.key)
        if self.op == "true":
            if x is None:
                raise NotJudged(f"no value for {self.key}")
            return bool(x)
        if x is None or not isinstance(x, int | float | np.number) or not math.isfinite(x):
            raise NotJudged(f"no finite value for {self.key or 'the measurement'} ({x!r})")
        x = float(x)
        v = self.value
        return {
            "<=": lambda: x <= v,
            ">=": lambda: x >= v,
            "<": lambda: x < v,
            ">": lambda: x > v,
            "within": lambda: abs(x - v) <= self.rel * abs(v),
            "between": lambda: v[0] <= x <= v[1],
        }[self.op]()


def _lookup(measured: Any, key: str) -> Any:
    node = measured
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def at_most(key: str | None, bound: float) -> Check:
    """``measured[key] <= bound``."""
    return Check(key, "<=", bound)


def at_least(key: str | None, bound: float) -> Check:
    """``measured[key] >= bound``."""
    return Check(key, ">=", bound)


def within(key: str | None, target: float, rel: float) -> Check:
    """``|measured[key] - target| <= rel |target|``."""
    return Check(key, "within", target, rel)


def between(key: str | None, lo: float, hi: float) -> Check:
    """``lo <= measured[key] <= hi``."""
    return Check(key, "between", (lo, hi))


def is_true(key: str | None) -> Check:
    """``measured[key]`` is true (a condition the measurement computed)."""
    return Check(key, "true")


# --------------------------------------------------------------------------- result


@dataclass
class Result:
    """A finished (or just-run) result folder, as claims and figures see it: ``rows`` (the tidy
    table), ``settings`` (the typed settings), ``summary`` (summary.json) and the saved arrays
    (``arrays(name)``: the ``name.npz`` file written by :meth:`Context.save_arrays`)."""

    dir: Path
    summary: dict[str, Any]
    rows: pd.DataFrame
    settings: Any

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        """The arrays saved under ``name`` (a FileNotFoundError naming the file if absent)."""
        from factorflow.results import read_npz

        return read_npz(self.dir / f"{name}.npz")

    def select(self, **eq: Any) -> pd.DataFrame:
        """Rows whose columns equal the given values (None matches missing values)."""
        mask = pd.Series(True, index=self.rows.index)
        for k, v in eq.items():
            col = self.rows[k] if k in self.rows else pd.Series(None, index=self.rows.index)
            mask &= col.isna() if v is None else (col == v)
        return self.rows[mask]


# --------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim:
    """A claim of the paper, as data.

    ``text`` is the statement (``{s.field}`` is filled from the settings); ``paper`` the paper's
    value (a number, a range, a dict; None when the paper gives none) and ``source`` where it
    comes from ("Arora et al. 2019, Fig. 2, read off the figure"); ``measure(result)`` returns
    the measured value (a number or a dict of numbers, JSON-able) or raises :class:`NotJudged`;
    ``checks`` are all required to hold. ``note`` is shown beside the outcome."""

    id: str
    text: str
    paper: Any
    source: str
    measure: Callable[[Result], Any]
    checks: tuple[Check, ...]
    note: str = ""

    def __post_init__(self) -> None:
        if not self.id or not self.text or not self.source:
            raise ValueError("a claim needs an id, a text and the source of its paper value")
        if not self.checks:
            raise ValueError(f"claim {self.id}: needs at least one check")

    def evaluate(self, result: Result) -> dict[str, Any]:
        """``{"id", "text", "paper", "source", "measured", "tolerance", "holds", "reason"}``;
        an exception in the measurement is not judged, with the exception as the reason."""
        try:
            text = self.text.format(s=result.settings)
        except (AttributeError, KeyError, IndexError, ValueError):
            text = self.text
        out: dict[str, Any] = {
            "id": self.id,
            "text": text,
            "paper": self.paper,
            "source": self.source,
            "measured": None,
            "tolerance": "; ".join(c.describe() for c in self.checks),
            "holds": None,
            "reason": None,
        }
        try:
            measured = self.measure(result)
            out["measured"] = measured
            failed = [c.failure(measured) for c in self.checks if not c(measured)]
        except NotJudged as e:
            out["reason"] = str(e)
            return out
        except Exception as e:  # a bug or missing data: visible, never a pass
            out["reason"] = f"measurement failed: {type(e).__name__}: {e}"
            return out
        out["holds"] = not failed
        out["reason"] = ("fails: " + "; ".join(failed)) if failed else self.note or None
        return out


# --------------------------------------------------------------------------- experiment


@dataclass(frozen=True)
class Experiment:
    """One published result (see the module doc). ``part`` is the talk section it belongs to
    (None: not part of the talk)."""

    id: str
    title: str
    paper: str
    settings: type
    scales: Mapping[str, Any]
    columns: Mapping[str, str]
    claims: tuple[Claim, ...]
    run: Callable[[Any, Context], list[dict[str, Any]]]
    part: str | None = None
    aliases: tuple[str, ...] = ()  # short names that `factorflow reproduce` also accepts

    def __post_init__(self) -> None:
        if not dataclasses.is_dataclass(self.settings):
            raise TypeError(f"{self.id}: settings must be a dataclass")
        names = {f.name for f in dataclasses.fields(self.settings)}
        if "seeds" not in names:
            raise TypeError(f"{self.id}: settings need a 'seeds' field (the number of seeds)")
        for scale in ("quick", "paper", "smoke"):
            if not isinstance(self.scales.get(scale), self.settings):
                raise TypeError(f"{self.id}: scales[{scale!r}] must be a {self.settings.__name__}")
        bad = {k: v for k, v in self.columns.items() if v not in COLUMN_KINDS}
        if bad:
            raise TypeError(f"{self.id}: unknown column kinds {bad}; use {COLUMN_KINDS}")
        ids = [c.id for c in self.claims]
        if len(set(ids)) != len(ids):
            raise TypeError(f"{self.id}: claim ids repeat: {ids}")

    def settings_for(self, scale: str = "quick", options: Mapping[str, Any] | None = None) -> Any:
        """The scale's preset with ``options`` applied (``{"depths": [3], "flow.rtol": 1e-8}``:
        dotted keys reach nested settings), strictly typed: an unknown key, a wrong type or a
        wrong length is a ValueError naming the option, the expected type and the value."""
        if scale not in self.scales:
            raise ValueError(f"scale must be one of {sorted(self.scales)}, got {scale!r}")
        data = config_to_dict(self.scales[scale])
        for key, value in (options or {}).items():
            node = data
            parts = key.split(".")
            for p in parts[:-1]:
                if not isinstance(node.get(p), dict):
                    raise ValueError(f"unknown option {key!r} for {self.id}")
                node = node[p]
            if parts[-1] not in node:
                known = sorted(_keys(data))
                raise ValueError(f"unknown option {key!r} for {self.id}; known: {known}")
            node[parts[-1]] = value
        try:
            s = build_dataclass(self.settings, data)
        except ValueError as e:
            raise ValueError(f"{self.id}: {str(e).replace('config key', 'option')}") from None
        if s.seeds < 1:
            raise ValueError(f"{self.id}: seeds must be >= 1, got {s.seeds}")
        return s

    def rows_frame(self, rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """``rows`` checked against the schema: every key a declared column, every value of its
        kind (None allowed); a DataFrame with exactly the declared columns."""
        cols = list(self.columns)
        for i, row in enumerate(rows):
            extra = sorted(set(row) - set(cols))
            if extra:
                raise ValueError(f"{self.id}: row {i} has undeclared columns {extra}")
            for k, v in row.items():
                if v is not None and not _is_kind(v, self.columns[k]):
                    raise ValueError(
                        f"{self.id}: row {i} column {k!r} must be {self.columns[k]}, got {v!r}"
                    )
        frame = pd.DataFrame(
            [{c: r.get(c) for c in cols} for r in rows], columns=cols, dtype=object
        )
        return frame.astype({c: _DTYPES[k] for c, k in self.columns.items()})


#: pandas dtypes of the column kinds: nullable integers and booleans (None stays missing, an int
#: stays an int), floats with NaN for missing, objects for strings and JSON values.
_DTYPES = {"str": object, "int": "Int64", "float": "float64", "bool": "boolean", "json": object}


def _keys(d: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        out += _keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


def _is_kind(v: Any, kind: str) -> bool:
    if kind == "json":
        return True
    if kind == "bool":
        return isinstance(v, bool | np.bool_)
    if kind == "str":
        return isinstance(v, str)
    if kind == "int":
        return isinstance(v, int | np.integer) and not isinstance(v, bool)
    return isinstance(v, int | float | np.number) and not isinstance(v, bool)  # float
