"""Deep matrix factorizations on the 2x2 completion problems of Razin & Cohen (2020), run down a
list of loss levels (the measurements their claims are judged on are in
:mod:`factorflow.completion2x2.measures`).

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
of those two alone (:mod:`~factorflow.completion2x2.measures`), so claims and figures are
judged and drawn from the result files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from factorflow import metrics
from factorflow.config import OptimizerConfig
from factorflow.dynamics.levels import LevelsRun, LevelState, flow_levels_run, gd_levels_batch
from factorflow.factorizations.dmf import end_to_end, init_dmf

__all__ = [
    "METRICS",
    "NORMS",
    "STATE_COLUMNS",
    "check_grid",
    "flow_2x2",
    "flow_from_init",
    "gd_2x2",
    "init_2x2",
    "record",
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
