"""Deep matrix factorizations on the 2x2 completion problems of Razin & Cohen (2020), run down a
list of loss levels, and the measurements their claims are judged on.

A run is one depth-N, width-2 factorization from an i.i.d. ``N(0, alpha^2)`` init (resampled
until det(W(0)) has the requested sign; ``balanced=True`` re-splits the draw into balanced
factors with the same W(0)), trained by gradient flow (:func:`flow_2x2`, one run per integrator
call, with an integrator fallback) or plain GD (:func:`gd_2x2`, a batch of runs as one tensor
program) down descending loss levels (:mod:`factorflow.dynamics.levels`: the state at each level
is the exact crossing, for GD the first step at or below it). Every accepted integrator step (or
GD's log-spaced steps) is recorded with the end-to-end matrix W.

Results are kept as tidy rows (:func:`state_rows`: one per level reached, plus the final state
of a run that stopped early) and per-run trajectory arrays (:func:`trajectory_arrays`, keys
``<run_id>/<field>``, read back with :func:`split_runs`). The measurements below are functions
of those two alone, so claims and figures are judged and drawn from the result files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch

from factorflow import metrics
from factorflow.config import OptimizerConfig
from factorflow.det_sign import det_sign_analysis, sign_kept_mask
from factorflow.dynamics.levels import LevelsRun, LevelState, flow_levels_run, gd_levels_batch
from factorflow.factorizations.dmf import end_to_end, init_dmf

__all__ = [
    "METRICS",
    "NORMS",
    "STATE_COLUMNS",
    "bound_ratio",
    "by_level",
    "check_grid",
    "det_sign_summary",
    "det_analyses",
    "flow_2x2",
    "flow_from_init",
    "gd_2x2",
    "gd_flow_agreement",
    "grows_above",
    "init_2x2",
    "level_change",
    "norms_monotone",
    "rank_one_approach",
    "record",
    "run_table",
    "select_runs",
    "split_runs",
    "state_rows",
    "trajectory_arrays",
    "trajectory_metrics",
]

#: metrics of W kept per state and per recorded trajectory point (``metrics.matrix_metrics``)
METRICS = (
    "w11",
    "abs_w11",
    "det",
    "rel_det",
    "nuclear_norm",
    "fro_norm",
    "schatten_0.5",
    "schatten_2/N",
    "effective_rank",
    "floor_measure",
)
NORMS = ("nuclear_norm", "fro_norm", "schatten_0.5", "schatten_2/N")
#: columns :func:`state_rows` adds to a run's base columns
STATE_COLUMNS = {
    "level": "float",
    "reached": "bool",
    "status": "str",
    "loss": "float",
    **{k: "float" for k in METRICS},
    "time": "float",
    "steps": "int",
    "method": "str",
    "n_evals": "int",
}


def check_grid(
    depths: Iterable[int], init_scales: Iterable[float], upper: float = 1.0, **levels: Any
) -> None:
    """ValueError unless every depth is >= 2 (the det-sign theorem is for N >= 2), every init
    scale > 0, and each of ``levels`` (name -> tuple) is descending losses in (0, ``upper``)."""
    if min(depths) < 2 or min(init_scales) <= 0:
        raise ValueError("depths must be >= 2 (the theorem is for N >= 2) and init scales > 0")
    for name, lv in levels.items():
        if not lv or any(not 0 < x < upper for x in lv) or list(lv) != sorted(lv, reverse=True):
            raise ValueError(f"{name} must be descending losses in (0, {upper:g}), got {lv}")


def trajectory_metrics(W: Any, depth: int) -> dict[str, np.ndarray]:
    """:data:`METRICS` of end-to-end matrices ``W`` (T, 2, 2) as float64 arrays (T,)."""
    m = metrics.matrix_metrics(torch.as_tensor(np.asarray(W, dtype=np.float64)), depth)
    return {k: m[k].numpy().copy() for k in METRICS}


def init_2x2(
    depth: int,
    *,
    init: str,
    init_scale: float,
    balanced: bool,
    det_sign: int,
    seed: int,
    device: Any = "cpu",
) -> tuple[list[torch.Tensor], float]:
    """One run's initial 2x2 factors (float64, (1, 2, 2) each) with sign det(W(0)) =
    ``det_sign``, and the achieved ||W(0)||_F."""
    f0, n0 = init_dmf(
        (2, 2), depth, init=init, init_scale=init_scale, seeds=[seed], width=2,
        balance=balanced, det_sign=det_sign, device=device,
    )  # fmt: skip
    return f0, float(n0[0])


def flow_2x2(
    objective: Callable,
    factors: list[torch.Tensor],
    levels: tuple[float, ...],
    flow: OptimizerConfig,
    *,
    fallback: str,
    max_steps: int,
    max_evals: int,
) -> LevelsRun:
    """Gradient flow of one run down ``levels`` (``flow.method``, ``rtol``, ``atol``; the
    ``fallback`` integrator for a segment not finished in ``max_steps`` / ``max_evals``),
    recording W at every accepted step."""
    return flow_levels_run(
        factors, objective, levels, method=flow.method, fallback=fallback, rtol=flow.rtol,
        atol=flow.atol, max_steps=max_steps, max_evals=max_evals, probes={"W": end_to_end},
    )  # fmt: skip


def gd_2x2(
    objective: Callable,
    factors: list[torch.Tensor],
    levels: tuple[float, ...],
    gd: OptimizerConfig,
    *,
    max_steps: int,
    per_decade: int,
) -> list[LevelsRun]:
    """Plain GD at ``gd.lr`` for a batch of runs (factors (B, 2, 2)) down ``levels``, with one
    step budget ``max_steps`` for the batch, recording W ``per_decade`` times per decade."""
    return gd_levels_batch(
        factors, objective, levels, lr=gd.lr, max_steps=max_steps, per_decade=per_decade,
        probes={"W": end_to_end},
    )  # fmt: skip


def flow_from_init(
    objective: Callable,
    depth: int,
    levels: tuple[float, ...],
    flow: OptimizerConfig,
    init: dict[str, Any],
    **stop: Any,
) -> tuple[LevelsRun, float]:
    """:func:`init_2x2` (``init``: its keyword arguments) then :func:`flow_2x2` (``stop``:
    ``fallback``, ``max_steps``, ``max_evals``): the run and the achieved ||W(0)||_F."""
    f0, n0 = init_2x2(depth, **init)
    return flow_2x2(objective, f0, levels, flow, **stop), n0


def record(
    run: LevelsRun,
    base: dict[str, Any],
    depth: int,
    rows: list[dict[str, Any]],
    arrays: dict[str, np.ndarray],
    extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> None:
    """Append the run's :func:`state_rows` (each updated with ``extra(row)``) to ``rows`` and its
    :func:`trajectory_arrays` (under ``base["run_id"]``) to ``arrays``."""
    for r in state_rows(run, base, depth):
        rows.append({**r, **(extra(r) if extra else {})})
    arrays.update(trajectory_arrays(base["run_id"], run, depth))


def state_rows(run: LevelsRun, base: dict[str, Any], depth: int) -> list[dict[str, Any]]:
    """One row per level reached (the state there), plus the final state (``level`` None,
    ``reached`` False, the run's status) when the run stopped early: ``base`` plus
    :data:`STATE_COLUMNS`."""
    states: list[LevelState] = list(run.levels)
    if run.status != "converged":
        states.append(run.final)
    rows = []
    for s in states:
        m = trajectory_metrics(s.values["W"][None], depth)
        rows.append(
            {
                **base,
                "level": s.level,
                "reached": s.level is not None,
                "status": "converged" if s.level is not None else run.status,
                "loss": float(s.loss),
                **{k: float(v[0]) for k, v in m.items()},
                "time": float(s.time),
                "steps": int(s.steps),
                "method": s.method,
                "n_evals": int(run.n_evals),
            }
        )
    return rows


def trajectory_arrays(run_id: str, run: LevelsRun, depth: int) -> dict[str, np.ndarray]:
    """The run's recorded trajectory as ``<run_id>/<field>`` arrays: ``time``, ``step``,
    ``loss``, ``W`` and every metric of :data:`METRICS`."""
    tr = run.traj
    out = {f"{run_id}/{k}": tr[k] for k in ("time", "step", "loss", "W")}
    out.update({f"{run_id}/{k}": v for k, v in trajectory_metrics(tr["W"], depth).items()})
    return out


def split_runs(arrays: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """``{run_id: {field: array}}`` from :func:`trajectory_arrays`' keys (a run id holds no
    ``/``)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, v in arrays.items():
        rid, _, name = key.partition("/")  # run ids hold no "/"; field names may
        out.setdefault(rid, {})[name] = v
    return out


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
