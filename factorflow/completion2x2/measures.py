"""The measurements the 2x2 claims are judged on: functions of the tidy rows and the per-run
trajectory arrays that :mod:`factorflow.completion2x2.runs` writes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from factorflow.completion2x2.runs import NORMS
from factorflow.det_sign import det_sign_analysis, sign_kept_mask

__all__ = [
    "run_table",
    "select_runs",
    "by_level",
    "rank_one_approach",
    "grows_above",
    "det_analyses",
    "det_sign_summary",
    "level_change",
    "bound_ratio",
    "norms_monotone",
    "gd_flow_agreement",
]


def run_table(rows: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """One row per run (its first state row), with ``run_id`` and ``columns``."""
    cols = ["run_id", *[c for c in columns if c != "run_id"]]
    return rows.drop_duplicates("run_id")[cols].reset_index(drop=True)


def select_runs(rows: pd.DataFrame, depth_min: int = 0, **eq: Any) -> list[str]:
    """Ids of the runs whose run columns equal ``eq`` and whose depth is >= ``depth_min``."""
    t = rows.drop_duplicates("run_id")
    mask = (t["depth"] >= depth_min).to_numpy(dtype=bool)
    for k, v in eq.items():
        mask &= (t[k] == v).to_numpy(dtype=bool)
    return list(t.loc[mask, "run_id"])


def by_level(rows: pd.DataFrame, run_ids: Iterable[str]) -> dict[str, pd.DataFrame]:
    """Each run's rows at the levels it reached, from the highest level down."""
    x = rows[rows["run_id"].isin(list(run_ids)) & rows["reached"].astype(bool)]
    x = x.sort_values("level", ascending=False)
    return {str(k): g for k, g in x.groupby("run_id", sort=True)}


def rank_one_approach(
    rows: pd.DataFrame, run_ids: Iterable[str], erank_max: float, z: float, z_prime: float
) -> dict[str, Any]:
    """Perturbed problem, runs with eps > 0: does each run approach the rank-1 completion
    |w11| = 1/eps rather than the minimum nuclear norm one? A run passes when the gap
    |1 - |w11| eps| shrinks from level to level, and at its lowest level the effective rank is
    below ``erank_max`` and the nuclear norm above the least one
    (:func:`factorflow.theory.min_nuclear_completion`). ``{"runs_failing", "runs": {id: ...}}``."""
    from factorflow.theory import min_nuclear_completion

    bad, per = 0, {}
    for rid, g in by_level(rows, run_ids).items():
        eps = float(g["eps"].iloc[0])
        gap = [float(abs(1 - w * eps)) for w in g["abs_w11"]]
        low = g.iloc[-1]
        nuc_min = min_nuclear_completion(eps, z, z_prime)[1]
        ok = all(b < a for a, b in zip(gap, gap[1:], strict=False))
        ok = ok and low["effective_rank"] < erank_max and low["nuclear_norm"] > nuc_min
        bad += not ok
        per[rid] = {
            "gap_by_level": gap,
            "effective_rank": float(low["effective_rank"]),
            "nuclear_norm": float(low["nuclear_norm"]),
            "min_nuclear_norm": nuc_min,
        }
    return {"runs_failing": bad, "runs": per}


def grows_above(rows: pd.DataFrame, run_ids: Iterable[str], bound: str) -> dict[str, Any]:
    """Runs whose |w11| fails to grow strictly from level to level (at least two levels) or to
    stay at or above the column ``bound`` at each: ``{"runs_failing", "abs_w11_by_level"}``."""
    bad, per = 0, {}
    for rid, g in by_level(rows, run_ids).items():
        w = list(g["abs_w11"])
        ok = len(w) >= 2 and all(b > a for a, b in zip(w, w[1:], strict=False))
        bad += not (ok and bool((g["abs_w11"] >= g[bound]).all()))
        per[rid] = {f"{lv:g}": float(v) for lv, v in zip(g["level"], w, strict=True)}
    return {"runs_failing": bad, "abs_w11_by_level": per}


def det_analyses(
    runs: dict[str, dict[str, np.ndarray]], run_ids: Iterable[str], floor: float
) -> dict[str, dict[str, Any]]:
    """:func:`factorflow.det_sign.det_sign_analysis` of each run's recorded trajectory."""
    out = {}
    for rid in run_ids:
        t = runs[rid]
        out[rid] = det_sign_analysis(t["det"], t["floor_measure"], t["loss"], t["time"], floor)
    return out


def det_sign_summary(
    runs: dict[str, dict[str, np.ndarray]], run_ids: Iterable[str], floor: float
) -> dict[str, Any]:
    """The det-sign story of a group of runs (:func:`det_analyses`): ``runs``,
    ``runs_sign_changed`` (a det of 0 counts as a change), ``runs_not_kept_until_floor``,
    ``runs_reaching_floor``, ``runs_flipped_only_after_floor``, the per-run ``loss_at_floor``
    and ``loss_at_first_flip`` (None: not reached / never flipped), and
    ``min_rel_det_fitting`` (the least det / ||W||_F^2 times the initial sign over the states
    with loss < 0.5)."""
    ids = list(run_ids)
    an = list(det_analyses(runs, ids, floor).values())
    fit = [
        float(
            np.min(
                a["initial_det_sign"] * runs[i]["rel_det"][runs[i]["loss"] < 0.5], initial=np.inf
            )
        )
        for i, a in zip(ids, an, strict=True)
    ]
    return {
        "runs": len(ids),
        "runs_sign_changed": sum(a["n_flips"] > 0 for a in an),
        "runs_not_kept_until_floor": sum(not a["sign_kept_until_floor"] for a in an),
        "runs_reaching_floor": sum(a["floor_reached"] for a in an),
        "runs_flipped_only_after_floor": sum(a["flipped_only_after_floor"] for a in an),
        "loss_at_floor": [a["floor_loss"] for a in an],
        "loss_at_first_flip": [a["first_flip_loss"] for a in an],
        "min_rel_det_fitting": min(fit, default=None),
    }


def level_change(rows: pd.DataFrame, run_ids: Iterable[str], a: float, b: float) -> float | None:
    """max over the runs of | |w11| at level ``b`` / |w11| at level ``a`` - 1 | (None when a
    run did not reach both levels)."""
    out = 0.0
    for g in by_level(rows, run_ids).values():
        w = dict(zip(g["level"].astype(float), g["abs_w11"], strict=True))
        if a not in w or b not in w:
            return None
        out = max(out, abs(w[b] / w[a] - 1))
    return out


def bound_ratio(
    runs: dict[str, dict[str, np.ndarray]],
    run_ids: Iterable[str],
    select: Callable[[dict[str, np.ndarray]], np.ndarray],
    bound: Callable[[np.ndarray, str], np.ndarray],
    value: str = "abs_w11",
) -> dict[str, Any]:
    """min over the selected recorded states of ``value / bound(loss, run_id)``:
    ``{"rows_checked", "min_ratio", "at_run", "at_loss"}`` (ratio None when no state is
    selected). ``select(traj)`` is a boolean (T,) mask."""
    best: tuple[float, str, float] | None = None
    n = 0
    for rid in run_ids:
        t = runs[rid]
        sel = np.asarray(select(t), dtype=bool)
        if not sel.any():
            continue
        n += int(sel.sum())
        ratio = t[value][sel] / bound(t["loss"][sel], rid)
        i = int(np.argmin(ratio))
        if best is None or ratio[i] < best[0]:
            best = (float(ratio[i]), rid, float(t["loss"][sel][i]))
    return {
        "rows_checked": n,
        "min_ratio": None if best is None else best[0],
        "at_run": None if best is None else best[1],
        "at_loss": None if best is None else best[2],
    }


def norms_monotone(
    runs: dict[str, dict[str, np.ndarray]], run_ids: Iterable[str], floor: float, loss_max: float
) -> dict[str, Any]:
    """On each run's recorded states with loss < ``loss_max`` that come before the first det
    sign change and before the float64 floor (:func:`factorflow.det_sign.sign_kept_mask`): the
    largest relative drop of each norm of :data:`NORMS` and the largest relative rise of the
    effective rank between consecutive states (0 when monotone), and ``rows_checked``."""
    worst = {k: 0.0 for k in NORMS}
    worst_er, n = 0.0, 0
    for rid in run_ids:
        t = runs[rid]
        mask = sign_kept_mask(t["det"], t["floor_measure"], floor) & (t["loss"] < loss_max)
        if mask.sum() < 2:
            continue
        n += int(mask.sum())
        for k in NORMS:
            x = t[k][mask]
            worst[k] = max(worst[k], float(((x[:-1] - x[1:]) / x[:-1]).max(initial=0.0)))
        er = t["effective_rank"][mask]
        worst_er = max(worst_er, float(((er[1:] - er[:-1]) / er[:-1]).max(initial=0.0)))
    return {"rows_checked": n, "max_relative_drop": worst, "max_relative_rise_erank": worst_er}


def gd_flow_agreement(
    rows: pd.DataFrame, exclude: Iterable[str] = (), keys: tuple[str, ...] = ()
) -> dict[str, Any]:
    """|w11| of GD against gradient flow from the same init (same ``keys`` columns and seed) at
    each level both reached with the same det sign; flow runs in ``exclude`` are left out.
    ``{"pairs", "max_rel_diff", "at_run", "at_level", "median_rel_diff"}``."""
    on = ["depth", *keys, "seed", "level"]
    r = rows[rows["reached"].astype(bool)]
    fl = r[(r["optimizer"] == "flow") & ~r["run_id"].isin(list(exclude))]
    m = r[r["optimizer"] == "gd"].merge(fl, on=on, suffixes=("_gd", "_flow"))
    m = m[np.sign(m["det_gd"]) == np.sign(m["det_flow"])]
    if m.empty:
        return {"pairs": 0, "max_rel_diff": None}
    rel = (m["abs_w11_gd"] - m["abs_w11_flow"]).abs() / m["abs_w11_flow"].clip(lower=1e-300)
    i = int(np.argmax(rel.to_numpy()))
    return {
        "pairs": len(m),
        "max_rel_diff": float(rel.iloc[i]),
        "at_run": str(m["run_id_gd"].iloc[i]),
        "at_level": float(m["level"].iloc[i]),
        "median_rel_diff": float(np.median(rel)),
    }
