"""Measurements of the natural-rank claims over the grid's rows (a DataFrame with the columns of
:data:`~factorflow.natural_rank.grid.COLUMNS`), for one optimizer's fits. Errors are in 0/1
units; means are over seeds (non-finite values left out); a measurement the rows cannot give
raises :class:`~factorflow.experiment.NotJudged`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from factorflow.experiment import NotJudged

__all__ = [
    "CONTROLS",
    "mean_error",
    "original_test_vs_label_variance",
    "random_rank1_vs_label_variance",
    "random_test_vs_label_variance",
    "rank1_train_gap",
    "train_drop_with_rank",
]

CONTROLS = ("rand_image", "rand_label")


def _fits(rows: pd.DataFrame, optimizer: str) -> pd.DataFrame:
    mine = rows[rows["optimizer"] == optimizer]
    if mine.empty:
        raise NotJudged(f"no {optimizer} fits in this result")
    return mine


def mean_error(rows: pd.DataFrame, key: str, **where: Any) -> float | None:
    """Mean of ``rows[key]`` over the rows matching ``where`` (finite values; None if none)."""
    mask = pd.Series(True, index=rows.index)
    for k, v in where.items():
        mask &= rows[k] == v
    vals = np.asarray(rows.loc[mask, key], dtype=float)
    vals = vals[np.isfinite(vals)]
    return float(np.mean(vals)) if vals.size else None


def _controls(rows: pd.DataFrame) -> list[str]:
    return [v for v in CONTROLS if (rows["variant"] == v).any()]


def rank1_train_gap(rows: pd.DataFrame, optimizer: str) -> dict[str, Any]:
    """Mean R = 1 train error of the original data and of each random control, and the ratio
    of the original's to the lowest control's."""
    rows = _fits(rows, optimizer)
    controls = _controls(rows)
    if not (rows["rank"] == 1).any() or not (rows["variant"] == "original").any() or not controls:
        raise NotJudged("needs R = 1, the original data and a random control")
    m: dict[str, Any] = {
        v: mean_error(rows, "train_error", variant=v, rank=1) for v in ["original", *controls]
    }
    if any(m[v] is None for v in m):
        raise NotJudged(f"no finite R = 1 train error for some variant: {m}")
    worst = min(m[v] for v in controls)  # the control closest to the original
    m["ratio_original_to_lowest_control"] = m["original"] / worst if worst else math.inf
    return m


def random_rank1_vs_label_variance(rows: pd.DataFrame, optimizer: str) -> dict[str, Any]:
    """Each control's mean R = 1 train error, its gap to the train label variance relative to
    it, and the largest absolute relative gap."""
    rows = _fits(rows, optimizer)
    controls = _controls(rows)
    lv = mean_error(rows, "label_variance")
    if not (rows["rank"] == 1).any() or not controls or not lv:
        raise NotJudged("needs R = 1 and a random control")
    m: dict[str, Any] = {}
    for v in controls:
        e = mean_error(rows, "train_error", variant=v, rank=1)
        m[v] = e
        m[f"{v}_relative_gap"] = None if e is None else (e - lv) / lv
    gaps = [m[f"{v}_relative_gap"] for v in controls]
    m["label_variance"] = lv
    m["worst_abs_relative_gap"] = math.inf if None in gaps else max(abs(g) for g in gaps)
    return m


def original_test_vs_label_variance(rows: pd.DataFrame, optimizer: str) -> dict[str, Any]:
    """The original data's mean test error per R, its worst finite single fit (any R, any seed)
    over the test label variance, and the number of fits without a finite test error."""
    rows = _fits(rows, optimizer)
    orig = rows[rows["variant"] == "original"]
    lv = mean_error(rows, "test_label_variance")
    if orig.empty or not lv:
        raise NotJudged("needs the original data")
    per = {f"R{r}": mean_error(orig, "test_error", rank=r) for r in sorted(orig["rank"].unique())}
    errs = np.asarray(orig["test_error"], dtype=float)
    finite = errs[np.isfinite(errs)]
    worst = float(finite.max()) if finite.size else None
    return {
        "test_error": per,
        "worst_single_fit": worst,
        "test_label_variance": lv,
        "worst_to_label_variance": None if worst is None else worst / lv,
        "n_nonfinite": int(errs.size - finite.size),
    }


def random_test_vs_label_variance(rows: pd.DataFrame, optimizer: str) -> dict[str, Any]:
    """Each control's mean test error at the largest R, and the lowest of them over the test
    label variance."""
    rows = _fits(rows, optimizer)
    controls = _controls(rows)
    lv = mean_error(rows, "test_label_variance")
    if not controls or not lv:
        raise NotJudged("needs a random control")
    rmax = int(rows["rank"].max())
    m: dict[str, Any] = {v: mean_error(rows, "test_error", variant=v, rank=rmax) for v in controls}
    low = [m[v] if m[v] is not None else -math.inf for v in controls]
    m.update(rank=rmax, test_label_variance=lv, lowest_to_label_variance=min(low) / lv)
    return m


def train_drop_with_rank(rows: pd.DataFrame, optimizer: str) -> dict[str, Any]:
    """The original data's mean train error at R = 1 and at the largest R, and their ratio."""
    rows = _fits(rows, optimizer)
    orig = rows[rows["variant"] == "original"]
    rmax = int(rows["rank"].max())
    if orig.empty or not (orig["rank"] == 1).any() or rmax <= 1:
        raise NotJudged("needs the original data at R = 1 and at a larger R")
    e1 = mean_error(orig, "train_error", rank=1)
    em = mean_error(orig, "train_error", rank=rmax)
    if e1 is None or em is None or e1 <= 0:
        raise NotJudged(f"no finite positive train errors (R1 {e1}, R{rmax} {em})")
    return {"R1": e1, f"R{rmax}": em, "ratio_largest_R_to_R1": em / e1}
