"""Norms are not the implicit regularizer: the 2x2 completion problem (Razin & Cohen 2020).

Setting (PAPERS.md section C): the 2x2 matrix ``[[?, 1], [1, 0]]`` (observed (0, 1) = 1,
(1, 0) = 1, (1, 1) = 0; w11 unobserved), loss ``half_sse`` (half the sum of squared residuals),
deep matrix factorizations of depth N = 2, 3, 4 and width 2, every layer i.i.d.
``N(0, alpha^2)`` (``init="normal"``, ``init_scale = alpha`` is the per-layer std; the achieved
||W(0)||_F is recorded), resampled until det(W(0)) > 0. Every exact solution has det = -1, so a
run that keeps det > 0 can only fit the observations with |w11| -> infinity, and every norm and
quasi-norm with it, while the effective rank goes to 1.

What is run:

* ``flow``: gradient flow (scipy LSODA, rtol 1e-7, atol 1e-10), one run per integrator call, from
  every (depth, alpha, balanced or not, seed), down the loss levels ``flow_levels``
  (1.3e-1 ... 1e-4, 1e-6). Each level is one ``train`` call with ``Stop(loss_below=level)``
  resumed from the previous level's final factors (flow is memoryless), so the state at every
  level is the exact crossing located by the engine, not the nearest recorded point. Every
  accepted integrator step is recorded (for the figures and the det-sign checks). If LSODA
  does not finish a segment within ``flow_max_steps`` accepted steps (a restarted LSODA can stay
  in its non-stiff mode with stability-limited steps once |w11| is large), that segment is redone
  with ``flow_fallback`` (BDF) from the same state; rows name the method used and the run table
  lists every attempt (``segments``).
  Flow runs are not batched: with LSODA a batch of B runs shares one step size and a
  finite-difference Jacobian of B times the size, and measured ~1.5x *more* wall time than the
  same runs one at a time (depth 4, 3 seeds, to 1e-4).
* ``gd``: plain GD at the paper's lr 3e-3, all runs of one depth batched into one tensor program
  (B runs cost about one run per step), down the levels ``gd_levels`` (again one call per level,
  so each level's row is the first step at or below it), with a step budget ``gd_max_steps``
  shared by the batch; runs that run out of budget report the loss they reached.

Balanced init (``balanced=True``) re-splits the same kind of draw into balanced factors with the
same W(0) (``init_dmf(balance=True)``), the setting in which the theorem (det keeps its sign
under gradient flow for N >= 2) is exact.

Two numerical facts the claims report (measured, see the summary's ``runs``):

* Float64 floor. Under balanced flow det(W) = prod_j det(W_j) decays but keeps its sign. At
  depth 2 it decays exponentially in time, and once |det| / ||W||_F^2 (about sigma_2/sigma_1) is
  ~1e-16 the small singular mode of the factors is below what float64 resolves: the conserved
  balance W_2^T W_2 = W_1 W_1^T is only known to rounding (relative eps ~ 2e-16 of O(1)
  entries), which ties |det W_1| to |det W_2| only while det(W_j)^2 >> eps ||W_j||^4. From there
  the small mode evolves like an unbalanced one and det flips (at alpha 8e-3 the floor is
  reached near loss 0.1-0.2 and det flips near loss 0.024-0.028, for every rtol from 1e-7 to
  1e-12 and for LSODA, BDF, Radau alike, the end point after the flip depending on the method;
  at alpha 1e-3 the longer escape from zero reaches the floor already at loss 0.5-0.85 and det
  flips at loss 0.06-0.11). The ``floor_measure`` q = (sigma_2/sigma_1)^(2/N) is that squared
  small/large ratio of each balanced factor; a run "reached the floor" once q < ``floor``
  (1e-12, ~4500 eps; for N = 2 this is |det| < 1e-12 ||W||^2). Sign checks count only rows
  before the floor, and the claims say when it was reached.
* Unbalanced init. With i.i.d. layers of equal std the unbalancedness W_{j+1}^T W_{j+1} -
  W_j W_j^T is as large as the factors themselves at init, at every alpha. Near W = 0 the end
  to end matrix aligns with the negative gradient -grad l(0) = [[0, 1], [1, 0]] (det -1): at
  depth 2 the linear phase gives W(t) ~ e^{2t} M A^T A (det < 0) for any generic unbalanced
  init. So det flips while W is still ~0 (loss > 0.9) in most unbalanced runs at every alpha
  (paper grid: 16 of 18, the same seeds at alpha 8e-3 and 1e-3; the two depth-4 runs of seed 1
  never flipped), and those runs then reach a finite solution (det -> -1) or follow the
  |w11| -> infinity path with det ~ 0-. In a scan of seeds 0-11 (depth 3, alpha 8e-3) two runs
  flipped late instead, at loss 2.9e-4 and 1.4e-4.

Cost (2 shared CPU cores, one torch thread, measured; ``summary["timing"]`` has each run's):
quick ~50 s (flow: 12 runs to 1e-6, ~51k gradient evaluations, ~28 s; GD: one depth-2 batch of
4 runs, 32k steps at ~0.3 ms per batch step, ~10 s; figures ~8 s). Paper: flow for all 36 runs
to 1e-6 ~160k evaluations, 2-4 min; GD at lr 3e-3 needs ~t/lr steps with t the flow time to the
level, ~3.7e6 steps (depth 3) and 2.7e6-5.9e6 (depth 4) at alpha 8e-3, at 0.3-0.8 ms per batch
step, so ~1-3 hours for one batch per depth (depth 2 takes ~25 s). GD runs at alpha 8e-3 only:
at alpha 1e-3 depth 4 needs t ~ 3e5-9e5, i.e. ~1e8-3e8 steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factorflow import metrics
from factorflow.dynamics import GD, Flow, Schedule, Stop, train
from factorflow.experiments.common import claim, n_seeds, scaled_config
from factorflow.factorizations.dmf import end_to_end, init_dmf
from factorflow.objectives import DMFObjective
from factorflow.problems.matrix import MatrixCompletion, razin_2x2
from factorflow.results import run_metadata
from factorflow.theory import w11_lower_bound

ID = "razin2020-2x2"
TITLE = "Implicit regularization drives every norm to infinity while lowering rank (2x2 problem)"
PAPER = (
    "Razin & Cohen 2020, Implicit Regularization in Deep Learning May Not Be Explainable by "
    "Norms (NeurIPS), Sec. 3-4 / Fig. 1"
)

#: |w11| at loss 1e-4 for depth 3 and 4 (PAPERS.md section C, read off the figure)
PAPER_W11_AT_1E4 = 70.0
#: |w11| at the losses the paper's figure marks (depth 3 and 4, read off, about +-10%)
PAPER_W11_POINTS = {1.3e-1: 1.7, 1.3e-2: 6.0, 1.3e-3: 19.5, 1.3e-4: 62.0}
#: GD iterations to loss 1e-4 (depth 3, depth 4)
PAPER_GD_STEPS = {3: 3.3e6, 4: 4.6e6}
#: discrete depth-2 runs level off at |w11| in this range (det flipped)
PAPER_GD_DEPTH2_W11 = (0.7, 7.0)
#: read-off tolerance: +-10% on linear axes, a factor 10^(1/4) on log axes (PAPERS.md)
READ_OFF_LINEAR = 0.10
READ_OFF_LOG = 10**0.25


@dataclass(frozen=True)
class Razin2x2Config:
    """Everything the experiment depends on (saved in ``summary["config"]``).

    ``seeds`` / ``gd_seeds``: explicit seed lists (None: ``range(n)`` with n from the ``seeds``
    argument or the scale; ``gd_seeds`` None means the flow seeds). ``flow_levels`` /
    ``gd_levels``: the loss levels where rows are taken (descending). ``floor``: threshold of
    the float64 floor measure (module doc). ``monotone_rtol``: a norm counts as decreasing
    between consecutive recorded rows only if it drops by more than this relative amount
    (rounding of the recorded values).
    """

    depths: tuple[int, ...] = (2, 3, 4)
    init: str = "normal"
    init_scales: tuple[float, ...] = (8e-3, 1e-3)
    balanced: tuple[bool, ...] = (True, False)
    seeds: tuple[int, ...] | None = None
    loss: str = "half_sse"
    flow_levels: tuple[float, ...] = (1.3e-1, 1.3e-2, 1e-2, 1.3e-3, 1e-3, 1.3e-4, 1e-4, 1e-6)
    flow_method: str = "LSODA"
    flow_fallback: str = "BDF"
    flow_rtol: float = 1e-7
    flow_atol: float = 1e-10
    flow_max_steps: int = 1000
    flow_max_evals: int = 20_000
    lr: float = 3e-3
    gd_depths: tuple[int, ...] = (2, 3, 4)
    gd_init_scales: tuple[float, ...] = (8e-3,)
    gd_balanced: tuple[bool, ...] = (True, False)
    gd_seeds: tuple[int, ...] | None = None
    gd_levels: tuple[float, ...] = (1.3e-1, 1.3e-2, 1e-2, 1.3e-3, 1e-3, 1.3e-4, 1e-4)
    gd_max_steps: int = 10_000_000
    gd_per_decade: int = 40
    floor: float = 1e-12
    norm_loss_max: float = 0.3
    erank_max: float = 1.01
    monotone_rtol: float = 1e-9
    gd_flow_rtol: float = 1e-2

    def __post_init__(self) -> None:
        for name in (
            "depths",
            "init_scales",
            "balanced",
            "flow_levels",
            "gd_depths",
            "gd_init_scales",
            "gd_balanced",
            "gd_levels",
        ):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("seeds", "gd_seeds"):
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(int(s) for s in v))
        if any(d < 2 for d in (*self.depths, *self.gd_depths)):
            raise ValueError("depths must be >= 2 (the det-sign theorem is for N >= 2)")
        if any(not s > 0 for s in (*self.init_scales, *self.gd_init_scales)):
            raise ValueError("init scales must be > 0")
        for name in ("flow_levels", "gd_levels"):
            lv = getattr(self, name)
            if any(not 0 < x < 1 for x in lv) or list(lv) != sorted(lv, reverse=True):
                raise ValueError(f"{name} must be descending losses in (0, 1), got {lv}")
        if min(self.gd_max_steps, self.flow_max_steps, self.flow_max_evals) < 1:
            raise ValueError("gd_max_steps, flow_max_steps and flow_max_evals must be >= 1")


#: per-scale defaults; ``options`` override any field (unknown keys are an error)
SCALES: dict[str, dict[str, Any]] = {
    # all 36 flow runs (3 depths x balanced/unbalanced x alpha 8e-3, 1e-3 x 3 seeds) to 1e-6;
    # GD at alpha 8e-3 (18 runs, batched per depth) to 1e-4: hours, see the module doc
    "paper": {},
    # ~1-2 minutes on 2 cores: flow at alpha 8e-3 for every depth, balanced and unbalanced,
    # 2 seeds, to 1e-6; GD only at depth 2 (the depth where discrete GD flips det), 1e5 steps
    "quick": {"init_scales": (8e-3,), "gd_depths": (2,), "gd_max_steps": 100_000},
}


def make_config(scale: str, options: dict[str, Any]) -> Razin2x2Config:
    """The scale's config with ``options`` applied (unknown keys raise ``ValueError``)."""
    return scaled_config(Razin2x2Config, SCALES, scale, options, ID)


# --------------------------------------------------------------------------------------------
# measured quantities of the end-to-end 2x2 matrix (shared with razin2020-perturbed)
# --------------------------------------------------------------------------------------------


def matrix_metrics(W: np.ndarray, depth: int) -> dict[str, np.ndarray]:
    """Metrics of end-to-end matrices ``W`` (T, 2, 2), each (T,).

    ``w11`` (signed) and ``abs_w11``; ``det``; ``rel_det = det / ||W||_F^2`` (scale-free, in
    [-1/2, 1/2]); ``nuclear_norm``, ``fro_norm``, ``schatten_0.5`` and ``schatten_2/N``
    ((sum_i sigma_i^p)^(1/p), quasi-norms for p < 1; Razin & Cohen 2020 Sec. 4);
    ``effective_rank`` (Roy & Vetterli); ``floor_measure = (sigma_2 / sigma_1)^(2/N)``, the
    squared small/large singular value ratio of each balanced factor (module doc).
    """
    Wt = torch.as_tensor(np.asarray(W, dtype=np.float64))
    sv = metrics.singular_values(Wt)
    fro = metrics.frobenius_norm(Wt)
    det = metrics.determinant(Wt)
    ratio = torch.where(sv[..., 0] > 0, sv[..., 1] / sv[..., 0], torch.zeros_like(fro))
    p = 2.0 / depth
    out = {
        "w11": Wt[..., 0, 0],
        "abs_w11": Wt[..., 0, 0].abs(),
        "det": det,
        "rel_det": det / fro.square(),
        "nuclear_norm": metrics.nuclear_norm(Wt),
        "fro_norm": fro,
        "schatten_0.5": metrics.schatten_norm(Wt, 0.5),
        "schatten_2/N": metrics.schatten_norm(Wt, p),
        "effective_rank": metrics.effective_rank(Wt),
        "floor_measure": ratio.pow(p),
    }
    return {k: v.numpy().copy() for k, v in out.items()}


NORMS = ("nuclear_norm", "fro_norm", "schatten_0.5", "schatten_2/N")


def sign_changes(det: np.ndarray, loss: np.ndarray, t: np.ndarray) -> list[dict[str, float]]:
    """Where the sign of det changes between consecutive recorded rows (T,): the loss and time
    of the last row before and the first row after (a zero counts as a sign of its own)."""
    s = np.sign(det)
    idx = np.nonzero(s[1:] != s[:-1])[0]
    return [
        {
            "loss_before": float(loss[i]),
            "loss_after": float(loss[i + 1]),
            "time_before": float(t[i]),
            "time_after": float(t[i + 1]),
            "det_after": float(det[i + 1]),
        }
        for i in idx
    ]


def _probe_W(params: list[torch.Tensor]) -> torch.Tensor:
    return end_to_end(params)


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def flow_levels_run(
    factors: list[torch.Tensor],
    objective: DMFObjective,
    levels: tuple[float, ...],
    *,
    method: str = "LSODA",
    fallback: str = "BDF",
    rtol: float = 1e-7,
    atol: float = 1e-10,
    max_steps: int = 1000,
    max_evals: int = 20_000,
) -> dict[str, Any]:
    """Gradient flow of ONE run (factors (1, ...)) down the loss ``levels``, one engine call per
    level, each resumed from the previous level's exact crossing state.

    A segment that ``method`` does not finish within ``max_steps`` accepted steps or
    ``max_evals`` evaluations is redone from the same state with ``fallback`` (which gets
    ``max_evals`` only). Restarted LSODA can stay in its non-stiff (Adams) mode with
    stability-limited steps once |w11| is large: measured, from the 1.3e-4 state of a depth-3 run,
    ~3000 accepted steps and 6000 evaluations without reaching 1e-4, against 219 evaluations for
    BDF; normal segments take a few hundred accepted steps.

    Returns ``traj`` (``time``, ``step`` (accepted integrator steps, cumulative), ``loss``,
    ``W`` (T, 2, 2)), ``levels`` (one dict per level reached: level, loss, time, steps, W, method),
    ``segments`` (per level: the methods tried, their evaluations and statuses), ``status``
    ("converged" when every level was reached), ``n_evals`` (all attempts), ``wall_s``.
    """
    t0 = time.perf_counter()
    params = factors
    t_off, step_off, n_evals = 0.0, 0, 0
    parts: list[dict[str, np.ndarray]] = []
    reached: list[dict[str, Any]] = []
    segments: list[dict[str, Any]] = []
    status, methods = "converged", []
    for k, level in enumerate(levels):
        res = None
        tries = []
        for meth in (method, fallback):
            stop = (
                Stop(loss_below=level, max_steps=max_steps, max_evals=max_evals)
                if meth == method
                else Stop(loss_below=level, max_evals=max_evals)
            )
            res = train(
                params,
                objective,
                Flow(method=meth, rtol=rtol, atol=atol),
                stop,
                Schedule(accepted=True),
                {"W": _probe_W},
            )
            n_evals += res.n_evals
            tries.append({"method": res.method, "evals": res.n_evals, "status": res.status[0]})
            if res.status[0] == "converged" or meth == fallback:
                break
        assert res is not None
        segments.append({"level": level, "tries": tries})
        methods.append(res.method)
        tr = res.run_trajectory(0)
        sl = slice(1 if k > 0 else 0, None)  # a resumed segment's first row is the last one
        parts.append(
            {
                "time": tr.time[sl] + t_off,
                "step": tr.step[sl].astype(np.int64) + step_off,
                "loss": tr.values["loss"][sl].astype(np.float64),
                "W": tr.values["W"][sl].astype(np.float64),
            }
        )
        t_off += float(res.time[0])
        step_off += int(res.steps[0])
        if res.status[0] != "converged":
            status = res.status[0]
            break
        params = res.params
        reached.append(
            {
                "level": level,
                "loss": float(res.final_loss[0]),
                "time": t_off,
                "steps": step_off,
                "W": end_to_end(params)[0].detach().cpu().double().numpy(),
                "method": res.method,
            }
        )
    return {
        "traj": _concat(parts),
        "levels": reached,
        "segments": segments,
        "status": status,
        "n_evals": n_evals,
        "wall_s": time.perf_counter() - t0,
        "methods": methods,
        "final_loss": float(parts[-1]["loss"][-1]),
        "final_W": parts[-1]["W"][-1],
        "final_time": float(parts[-1]["time"][-1]),
        "final_steps": int(parts[-1]["step"][-1]),
    }


def gd_levels_batch(
    factors: list[torch.Tensor],
    objective: DMFObjective,
    levels: tuple[float, ...],
    *,
    lr: float,
    max_steps: int,
    per_decade: int,
) -> list[dict[str, Any]]:
    """Plain GD for a batch of B runs (factors (B, ...)) down the loss ``levels``, one engine
    call per level for the runs still going (each level's state is the first step at or below
    it). ``max_steps`` is the batch's budget over all levels (so no run takes more steps).

    Returns one dict per run, shaped like :func:`flow_levels_run`'s (``steps`` = GD steps,
    ``time`` = steps * lr).
    """
    B = factors[0].shape[0]
    params = factors
    active = list(range(B))
    parts: list[list[dict[str, np.ndarray]]] = [[] for _ in range(B)]
    reached: list[list[dict[str, Any]]] = [[] for _ in range(B)]
    status = ["converged"] * B
    steps_done = np.zeros(B, dtype=np.int64)
    used = 0
    walls = np.zeros(B)
    for k, level in enumerate(levels):
        if not active:
            break
        budget = max_steps - used
        if budget < 1:
            for b in active:
                status[b] = "max_steps"
            break
        res = train(
            params,
            objective,
            GD(lr),
            Stop(loss_below=level, max_steps=budget),
            Schedule(per_decade=per_decade),
            {"W": _probe_W},
        )
        used += int(res.steps.max())
        nxt = []
        for i, b in enumerate(active):
            walls[b] += res.wall_s
            tr = res.run_trajectory(i)
            sl = slice(1 if k > 0 else 0, None)
            st = tr.step[sl].astype(np.int64) + steps_done[b]
            parts[b].append(
                {
                    "time": st * lr,
                    "step": st,
                    "loss": tr.values["loss"][sl].astype(np.float64),
                    "W": tr.values["W"][sl].astype(np.float64),
                }
            )
            steps_done[b] += int(res.steps[i])
            if res.status[i] == "converged":
                nxt.append(i)
                reached[b].append(
                    {
                        "level": level,
                        "loss": float(res.final_loss[i]),
                        "time": float(steps_done[b] * lr),
                        "steps": int(steps_done[b]),
                        "W": end_to_end([p[i : i + 1] for p in res.params])[0]
                        .detach()
                        .cpu()
                        .double()
                        .numpy(),
                        "method": "gd",
                    }
                )
            else:
                status[b] = res.status[i]
        active = [active[i] for i in nxt]
        params = [p[nxt] for p in res.params]
    out = []
    for b in range(B):
        tr = _concat(parts[b])
        out.append(
            {
                "traj": tr,
                "levels": reached[b],
                "status": status[b],
                "n_evals": int(steps_done[b]),
                "wall_s": float(walls[b]),
                "batch_wall_s": None,
                "methods": ["gd"],
                "final_loss": float(tr["loss"][-1]),
                "final_W": tr["W"][-1],
                "final_time": float(tr["time"][-1]),
                "final_steps": int(tr["step"][-1]),
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# per-run analysis
# --------------------------------------------------------------------------------------------


def _f(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def analyse_run(out: dict[str, Any], depth: int, floor: float) -> dict[str, Any]:
    """Sign changes of det along the recorded trajectory, where the float64 floor was reached
    (first row with floor_measure < ``floor``), and whether det kept its initial sign until
    then. Adds ``metrics`` (per-row arrays) to ``out`` and returns the analysis dict."""
    tr = out["traj"]
    m = matrix_metrics(tr["W"], depth)
    out["metrics"] = m
    det, loss, t = m["det"], tr["loss"], tr["time"]
    flips = sign_changes(det, loss, t)
    below = np.nonzero(m["floor_measure"] < floor)[0]
    i_floor = int(below[0]) if below.size else None
    pre = slice(0, i_floor if i_floor is not None else len(det))
    s0 = np.sign(det[0])
    kept_pre = bool(np.all(np.sign(det[pre]) == s0))
    return {
        "initial_det_sign": int(s0),
        "flips": flips,
        "n_flips": len(flips),
        "first_flip_loss": flips[0]["loss_after"] if flips else None,
        "final_det_sign": int(np.sign(det[-1])),
        "floor_reached": i_floor is not None,
        "floor_loss": None if i_floor is None else float(loss[i_floor]),
        "floor_time": None if i_floor is None else float(t[i_floor]),
        "sign_kept_until_floor": kept_pre,
        "min_rel_det": _f(np.min(m["rel_det"])),
        "min_floor_measure": _f(np.min(m["floor_measure"])),
        "final_loss": out["final_loss"],
    }


def level_rows(
    out: dict[str, Any], base: dict[str, Any], depth: int, levels: tuple[float, ...]
) -> list[dict[str, Any]]:
    """One row per reached level (the exact state there), plus a ``final`` row (``level`` None)
    for a run that stopped before its last level (the loss it reached)."""
    rows = []
    states = list(out["levels"])
    if len(states) < len(levels):
        states.append(
            {
                "level": None,
                "loss": out["final_loss"],
                "time": out["final_time"],
                "steps": out["final_steps"],
                "W": out["final_W"],
                "method": out["methods"][-1],
            }
        )
    for s in states:
        m = {k: float(v[0]) for k, v in matrix_metrics(s["W"][None], depth).items()}
        loss = float(s["loss"])
        rows.append(
            {
                **base,
                "level": s["level"],
                "reached": s["level"] is not None,
                "status": out["status"] if s["level"] is None else "converged",
                "loss": loss,
                "w11": m["w11"],
                "abs_w11": m["abs_w11"],
                "det": m["det"],
                "rel_det": m["rel_det"],
                "nuclear_norm": m["nuclear_norm"],
                "fro_norm": m["fro_norm"],
                "schatten_0.5": m["schatten_0.5"],
                "schatten_2/N": m["schatten_2/N"],
                "effective_rank": m["effective_rank"],
                "floor_measure": m["floor_measure"],
                "w11_lower_bound": w11_lower_bound(loss) if 0 < loss < 0.5 else None,
                "time": s["time"],
                "steps": s["steps"],
                "method": s["method"],
            }
        )
    return rows


def save_trajectories(path: Path, runs: list[dict[str, Any]], outs: list[dict[str, Any]]) -> None:
    """All recorded trajectories in one ``.npz``: ``<run_id>/<field>`` for time, step, loss, W
    and every metric of :func:`matrix_metrics` (the figures read only this file and the rows)."""
    arrays: dict[str, np.ndarray] = {}
    for r, o in zip(runs, outs, strict=True):
        rid = r["run_id"]
        for k in ("time", "step", "loss", "W"):
            arrays[f"{rid}/{k}"] = o["traj"][k]
        for k, v in o["metrics"].items():
            arrays[f"{rid}/{k}"] = v
    np.savez_compressed(path, **arrays)


# --------------------------------------------------------------------------------------------
# claims
# --------------------------------------------------------------------------------------------


def _sign_ok_mask(o: dict[str, Any], floor: float) -> np.ndarray:
    """Boolean mask (T,) of the rows before the first det sign change and before the floor."""
    det, fm = o["metrics"]["det"], o["metrics"]["floor_measure"]
    mask = np.ones(det.shape[0], dtype=bool)
    bad = np.nonzero((np.sign(det) != np.sign(det[0])) | (fm < floor))[0]
    if bad.size:
        mask[bad[0] :] = False
    return mask


def _claims(
    cfg: Razin2x2Config, runs: list[dict], outs: list[dict], rows: list[dict]
) -> list[dict]:
    claims = []
    flow = [(r, o) for r, o in zip(runs, outs, strict=True) if r["optimizer"] == "flow"]
    gd = [(r, o) for r, o in zip(runs, outs, strict=True) if r["optimizer"] == "gd"]

    # 1. balanced flow, depth >= 3: det > 0 at every recorded row
    deep = [(r, o) for r, o in flow if r["balanced"] and r["depth"] >= 3]
    if deep:
        pos = [bool(np.all(o["metrics"]["det"] > 0)) for _, o in deep]
        floor_hit = [r for r, _ in deep if r["analysis"]["floor_reached"]]
        lowest = min(r["analysis"]["final_loss"] for r, _ in deep)
        after = [
            float(np.min(o["metrics"]["rel_det"][o["traj"]["loss"] < 0.5]))
            for _, o in deep
            if np.any(o["traj"]["loss"] < 0.5)
        ]
        claims.append(
            claim(
                "det-sign-balanced-deep",
                "Under gradient flow from balanced init, det(W) never changes sign (depth 3, 4)",
                paper="det keeps its sign for depth >= 2 (exact from balanced init)",
                measured={
                    "runs": len(deep),
                    "runs_det_positive_at_every_row": int(sum(pos)),
                    "lowest_loss": lowest,
                    "min_det_over_fro2_once_fitting": min(after) if after else None,
                    "min_det_raw": min(float(np.min(o["metrics"]["det"])) for _, o in deep),
                    "min_floor_measure": min(r["analysis"]["min_floor_measure"] for r, _ in deep),
                    "runs_reaching_float64_floor": len(floor_hit),
                },
                holds=all(pos),
                detail=(
                    "det / ||W||_F^2 is scale-free; W(0) is tiny, so raw det starts ~1e-13..1e-26. "
                    f"floor_measure (sigma_2/sigma_1)^(2/N) stayed above {cfg.floor:g} in "
                    f"{len(deep) - len(floor_hit)} of {len(deep)} runs (the sign is resolved)."
                ),
            )
        )

    # 2. balanced flow, depth 2: kept until the float64 floor
    d2 = [(r, o) for r, o in flow if r["balanced"] and r["depth"] == 2]
    if d2:
        an = [r["analysis"] for r, _ in d2]
        kept = [a["sign_kept_until_floor"] for a in an]
        floor_losses = [a["floor_loss"] for a in an if a["floor_loss"] is not None]
        flip_losses = [a["first_flip_loss"] for a in an if a["first_flip_loss"] is not None]
        flips_after_floor = [
            a["first_flip_loss"] is not None
            and a["floor_loss"] is not None
            and a["first_flip_loss"] <= a["floor_loss"]
            for a in an
        ]
        all_floor = all(a["floor_reached"] for a in an)
        claims.append(
            claim(
                "det-sign-balanced-depth2",
                "Under gradient flow from balanced init at depth 2, det(W) keeps its sign until "
                f"float64 resolution (sigma_2/sigma_1 < {cfg.floor:g}) is reached",
                paper="det keeps its sign for depth >= 2 (exact from balanced init)",
                measured={
                    "runs": len(d2),
                    "runs_sign_kept_until_floor": int(sum(kept)),
                    "runs_reaching_floor": int(sum(a["floor_reached"] for a in an)),
                    "loss_at_floor": floor_losses,
                    "loss_at_first_flip": flip_losses,
                    "flips_only_after_floor": int(sum(flips_after_floor)),
                    "final_det_sign": [a["final_det_sign"] for a in an],
                },
                holds=all(kept),
                detail=(
                    "NOT a pass for 'never changes sign': det decays exponentially and "
                    + (
                        "every run reached the float64 floor"
                        if all_floor
                        else "some runs reached the float64 floor"
                    )
                    + "; after it the sign is set by rounding (the flips happen there, and the "
                    "end point then depends on the integrator), so beyond the floor this "
                    "simulation cannot test the theorem."
                ),
            )
        )

    # 3. unbalanced flow: where det flipped
    unb = [(r, o) for r, o in flow if not r["balanced"]]
    if unb:
        by_scale = {}
        for a_s in sorted({r["init_scale"] for r, _ in unb}, reverse=True):
            first = [r["analysis"]["first_flip_loss"] for r, _ in unb if r["init_scale"] == a_s]
            late = [x for x in first if x is not None and x <= 0.9]
            by_scale[f"{a_s:g}"] = {
                "runs": len(first),
                "flipped": int(sum(x is not None for x in first)),
                "flipped_while_W_near_zero(loss>0.9)": int(
                    sum(x is not None and x > 0.9 for x in first)
                ),
                "first_flip_losses_below_0.9": late,
            }
        table = {}
        for depth in sorted({r["depth"] for r, _ in unb}):
            for a_s in sorted({r["init_scale"] for r, _ in unb}, reverse=True):
                sel = [r for r, _ in unb if r["depth"] == depth and r["init_scale"] == a_s]
                if not sel:
                    continue
                first = [r["analysis"]["first_flip_loss"] for r in sel]
                table[f"depth{depth}_alpha{a_s:g}"] = {
                    "runs": len(sel),
                    "flipped": int(sum(x is not None for x in first)),
                    "first_flip_loss": first,
                    "flipped_while_W_near_zero(loss>0.9)": int(
                        sum(x is not None and x > 0.9 for x in first)
                    ),
                    "flipped_during_fitting(loss<0.5)": int(
                        sum(x is not None and x < 0.5 for x in first)
                    ),
                    "det_sign_at_1e-4": [_sign_at(r, 1e-4) for r in sel],
                    f"det_sign_at_{min(cfg.flow_levels):g}": [
                        _sign_at(r, min(cfg.flow_levels)) for r in sel
                    ],
                }
        claims.append(
            claim(
                "det-sign-unbalanced",
                "From unbalanced init the sign of det is kept only approximately: where it "
                "flipped, and how that moves with the init scale",
                paper=(
                    "flow from per-layer std 8e-3: det flipped at depth 2 before loss 1e-4, at "
                    "depth 3 between loss 1e-4 and 1e-6"
                ),
                measured={"by_depth_and_scale": table, "by_init_scale": by_scale},
                holds=None,
                detail=(
                    "descriptive (no pass/fail): first_flip_loss is the loss at the first "
                    "recorded row with the new sign (None: never flipped). Flips at loss ~1 "
                    "happen while W is still ~0 (the linear phase aligns W with "
                    "-grad l(0) = [[0,1],[1,0]], det < 0)."
                ),
            )
        )

    # 4. the w11 lower bound at every recorded row with det > 0, loss < 1/2
    ratios = []
    for _, o in flow + gd:
        m, loss = o["metrics"], o["traj"]["loss"]
        sel = (m["det"] > 0) & (loss < 0.5) & (loss > 0)
        if np.any(sel):
            ratios.append(m["abs_w11"][sel] / w11_lower_bound(loss[sel]))
    if ratios:
        r_all = np.concatenate(ratios)
        claims.append(
            claim(
                "w11-lower-bound",
                "|w11| >= (1 - sqrt(2 l))^2 / sqrt(2 l) at every recorded loss l < 1/2 with "
                "det(W) > 0 (theory.w11_lower_bound)",
                paper=">= 68.7 at l = 1e-4, >= 17.6 at l = 1.3e-3 (derived bound)",
                measured={
                    "rows_checked": int(r_all.size),
                    "min_ratio_w11_to_bound": float(r_all.min()),
                },
                holds=bool(r_all.min() >= 1.0),
            )
        )

    # 5. |w11| ~ 70 at loss 1e-4 for depth 3 and 4 (runs with det > 0 there)
    sel = [
        x for x in rows if x["depth"] >= 3 and x["level"] == 1e-4 and x["det"] > 0 and x["reached"]
    ]
    if sel:
        by = {}
        for opt in ("flow", "gd"):
            v = [x["abs_w11"] for x in sel if x["optimizer"] == opt]
            if v:
                by[opt] = {"runs": len(v), "min": min(v), "mean": float(np.mean(v)), "max": max(v)}
        vals = [x["abs_w11"] for x in sel]
        claims.append(
            claim(
                "w11-at-1e-4",
                "At loss 1e-4, |w11| is about 70 for depth 3 and 4 (runs with det > 0 there)",
                paper=PAPER_W11_AT_1E4,
                measured=by,
                holds=all(
                    abs(v - PAPER_W11_AT_1E4) <= READ_OFF_LINEAR * PAPER_W11_AT_1E4 for v in vals
                ),
                detail=f"tolerance: the figure read-off accuracy, +-{READ_OFF_LINEAR:.0%}",
            )
        )

    # 6. the paper's intermediate points
    pts = {}
    ok = []
    for lv, ref in PAPER_W11_POINTS.items():
        v = [
            x["abs_w11"]
            for x in rows
            if x["depth"] >= 3
            and x["level"] is not None
            and math.isclose(x["level"], lv)
            and x["det"] > 0
        ]
        if v:
            within = [abs(u - ref) <= READ_OFF_LINEAR * ref for u in v]
            pts[f"{lv:g}"] = {
                "paper": ref,
                "min": min(v),
                "max": max(v),
                "runs": len(v),
                "within_read_off": all(within),
            }
            ok.extend(within)
    if pts:
        claims.append(
            claim(
                "w11-vs-loss-points",
                "|w11| at losses 1.3e-1, 1.3e-2, 1.3e-3, 1.3e-4 (depth 3 and 4, det > 0)",
                paper={f"{k:g}": v for k, v in PAPER_W11_POINTS.items()},
                measured=pts,
                holds=all(ok),
                detail=f"tolerance +-{READ_OFF_LINEAR:.0%} (figure read-off)",
            )
        )

    # 7. norms increase, effective rank -> 1 (flow runs, rows before any flip / the floor)
    worst = {k: 0.0 for k in NORMS}
    worst_er = 0.0
    n_rows = 0
    for _, o in flow:
        mask = _sign_ok_mask(o, cfg.floor) & (o["traj"]["loss"] < cfg.norm_loss_max)
        if mask.sum() < 2:
            continue
        n_rows += int(mask.sum())
        for k in NORMS:
            x = o["metrics"][k][mask]
            drop = (x[:-1] - x[1:]) / x[:-1]
            worst[k] = max(worst[k], float(drop.max(initial=0.0)))
        er = o["metrics"]["effective_rank"][mask]
        worst_er = max(worst_er, float(((er[1:] - er[:-1]) / er[:-1]).max(initial=0.0)))
    er_1e4 = [
        x["effective_rank"]
        for x in rows
        if x["optimizer"] == "flow" and x["depth"] >= 3 and x["level"] == 1e-4 and x["det"] > 0
    ]
    if n_rows:
        claims.append(
            claim(
                "norms-grow-rank-falls",
                f"Once the loss is below {cfg.norm_loss_max:g}, the nuclear and Frobenius norms and "
                "the Schatten quasi-norms (p = 0.5, 2/N) all increase as the loss decreases, while "
                f"the effective rank approaches 1 (< {cfg.erank_max:g} at loss 1e-4, depth >= 3, "
                "det > 0)",
                paper="all norms -> infinity while the rank is lowered",
                measured={
                    "rows_checked": n_rows,
                    "max_relative_drop": worst,
                    "max_relative_rise_effective_rank": worst_er,
                    "effective_rank_at_1e-4_max": max(er_1e4) if er_1e4 else None,
                },
                holds=all(v <= cfg.monotone_rtol for v in worst.values())
                and bool(er_1e4)
                and max(er_1e4) < cfg.erank_max,
                detail=(
                    "flow runs, recorded rows (every accepted step) with loss below the "
                    "threshold, up to the first det sign change or the float64 floor; a norm "
                    f"'decreases' if it drops by more than {cfg.monotone_rtol:g} relative"
                ),
            )
        )

    # 8. discrete GD at depth 2
    g2 = [(r, o) for r, o in gd if r["depth"] == 2]
    if g2:
        an = [r["analysis"] for r, _ in g2]
        fin = [abs(float(o["final_W"][0, 0])) for _, o in g2]
        flipped = [a["n_flips"] > 0 for a in an]
        after_floor = [
            a["floor_loss"] is not None
            and a["first_flip_loss"] is not None
            and a["first_flip_loss"] <= a["floor_loss"]
            for a in an
        ]
        bal_after = [x for (r, _), x in zip(g2, after_floor, strict=True) if r["balanced"]]
        note = (
            f"{sum(bal_after)} of {len(bal_after)} balanced GD runs flipped only after reaching "
            "the float64 floor (as the flow does, though at a larger loss), so their flip is not "
            "the step size alone; unbalanced runs flip while W is ~0, like the flow"
            if bal_after
            else "no balanced GD runs"
        )
        claims.append(
            claim(
                "gd-depth2-flips",
                f"Plain GD at lr {cfg.lr:g}, depth 2: det flips sign and |w11| levels off",
                paper={"final_abs_w11_range": list(PAPER_GD_DEPTH2_W11), "det_flipped": True},
                measured={
                    "runs": len(g2),
                    "flipped": int(sum(flipped)),
                    "balanced": [r["balanced"] for r, _ in g2],
                    "first_flip_loss": [a["first_flip_loss"] for a in an],
                    "loss_at_float64_floor": [a["floor_loss"] for a in an],
                    "final_loss": [a["final_loss"] for a in an],
                    "final_abs_w11": fin,
                },
                holds=all(flipped),
                detail=(
                    "holds = every depth-2 GD run flipped det; the |w11| values differ by seed "
                    "and init (the paper's range is its own runs); " + note
                ),
            )
        )

    # 9. GD tracks flow (same init, same det sign at the level, no float64 floor on the way)
    diffs = []
    idx = {(r["depth"], r["init_scale"], r["balanced"], r["seed"]): (r, o) for r, o in flow}
    for r, o in gd:
        key = (r["depth"], r["init_scale"], r["balanced"], r["seed"])
        if key not in idx:
            continue
        fr, fo = idx[key]
        if fr["analysis"]["floor_reached"]:
            continue
        fl = {s["level"]: s for s in fo["levels"]}
        for s in o["levels"]:
            f = fl.get(s["level"])
            if f is None:
                continue
            wg, wf = float(s["W"][0, 0]), float(f["W"][0, 0])
            dg, df = np.linalg.det(s["W"]), np.linalg.det(f["W"])
            if np.sign(dg) != np.sign(df):
                continue
            diffs.append(
                {
                    "run": r["run_id"],
                    "level": s["level"],
                    "rel_diff": abs(wg - wf) / max(abs(wf), 1e-300),
                }
            )
    if diffs:
        worst_d = max(diffs, key=lambda d: d["rel_diff"])
        claims.append(
            claim(
                "gd-tracks-flow",
                f"Plain GD at lr {cfg.lr:g} and gradient flow from the same init reach the same "
                f"|w11| at each loss level (relative difference <= {cfg.gd_flow_rtol:g})",
                paper=None,
                measured={
                    "pairs": len(diffs),
                    "max_rel_diff": worst_d["rel_diff"],
                    "at": {"run": worst_d["run"], "level": worst_d["level"]},
                    "median_rel_diff": float(np.median([d["rel_diff"] for d in diffs])),
                },
                holds=worst_d["rel_diff"] <= cfg.gd_flow_rtol,
                detail=(
                    "pairs with the same det sign at the level; runs whose flow reached the "
                    "float64 floor (balanced depth 2) are excluded: their end point is set by "
                    "rounding (flow) or the step size (GD)"
                ),
            )
        )

    # 10. GD iterations to 1e-4 (measured if GD got there, else flow time / lr)
    steps = {}
    ok_steps = []
    for depth, ref in PAPER_GD_STEPS.items():
        g = [
            x["steps"]
            for x in rows
            if x["optimizer"] == "gd" and x["depth"] == depth and x["level"] == 1e-4
        ]
        f = [
            x["time"] / cfg.lr
            for x in rows
            if x["optimizer"] == "flow"
            and x["depth"] == depth
            and x["level"] == 1e-4
            and x["init_scale"] == 8e-3
            and x["det"] > 0
        ]
        if g or f:
            steps[f"depth{depth}"] = {
                "paper": ref,
                "gd_measured": g or None,
                "flow_time_over_lr (alpha 8e-3, det > 0)": f or None,
            }
            use = g if g else f
            ok_steps.extend(ref / READ_OFF_LOG <= s <= ref * READ_OFF_LOG for s in use)
    if steps:
        any_gd = any(v["gd_measured"] for v in steps.values())
        claims.append(
            claim(
                "gd-iterations-to-1e-4",
                f"GD at lr {cfg.lr:g} needs ~3.3e6 (depth 3) and ~4.6e6 (depth 4) iterations to "
                "reach loss 1e-4",
                paper={f"depth{d}": v for d, v in PAPER_GD_STEPS.items()},
                measured=steps,
                holds=all(ok_steps) if ok_steps else None,
                detail=(
                    "judged on "
                    + ("the measured GD steps" if any_gd else "flow time / lr (GD not run there)")
                    + f"; tolerance a factor {READ_OFF_LOG:.2f} (1/4 decade, figure read-off)"
                ),
            )
        )
    return claims


def _sign_at(run: dict[str, Any], level: float) -> int | None:
    for s in run.get("_levels", []):
        if s["level"] == level:
            return int(np.sign(np.linalg.det(s["W"])))
    return None


# --------------------------------------------------------------------------------------------
# the experiment
# --------------------------------------------------------------------------------------------


def _run_id(opt: str, depth: int, alpha: float, balanced: bool, seed: int) -> str:
    return f"{opt}_d{depth}_a{alpha:g}_{'bal' if balanced else 'unbal'}_s{seed}"


def run(
    out_dir: Path,
    *,
    scale: str = "quick",
    seeds: int | None = None,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the experiment at ``scale`` (``options`` override :class:`Razin2x2Config` fields) and
    return the summary; trajectories go to ``out_dir/razin2020_2x2_trajectories.npz``."""
    from factorflow.fit import resolve_device
    from factorflow.plotting.razin2020 import (
        plot_det_vs_loss,
        plot_norms_vs_loss,
        plot_w11_vs_loss,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = make_config(scale, dict(options or {}))
    dev = resolve_device(device)
    seed_list = (
        list(cfg.seeds)
        if cfg.seeds is not None
        else list(range(n_seeds(seeds, scale, quick=2, paper=3)))
    )
    gd_seeds = list(cfg.gd_seeds) if cfg.gd_seeds is not None else seed_list
    problem: MatrixCompletion = razin_2x2().to(torch.float64, dev)
    objective = DMFObjective(problem, cfg.loss)

    runs: list[dict[str, Any]] = []
    outs: list[dict[str, Any]] = []

    def register(base: dict[str, Any], out: dict[str, Any]) -> None:
        a = analyse_run(out, base["depth"], cfg.floor)
        info = {
            **base,
            "status": out["status"],
            "final_loss": out["final_loss"],
            "time": out["final_time"],
            "steps": out["final_steps"],
            "n_evals": out["n_evals"],
            "wall_s": out["wall_s"],
            "methods": sorted(set(out["methods"])),
            "fallback_levels": [g["level"] for g in out.get("segments", []) if len(g["tries"]) > 1],
            "analysis": a,
            "_levels": out["levels"],
        }
        runs.append(info)
        outs.append(out)

    def init(depth: int, alpha: float, balanced: bool, seed: int) -> tuple[list, torch.Tensor]:
        """The 2x2 initial factors of one run (det(W(0)) > 0) and the achieved ||W(0)||_F."""
        return init_dmf(
            (2, 2),
            depth,
            init=cfg.init,
            init_scale=alpha,
            seeds=[seed],
            width=2,
            balance=balanced,
            det_sign=1,
            device=dev,
        )

    # ---- gradient flow, one run per integrator call
    t_flow = time.perf_counter()
    for depth in cfg.depths:
        for alpha in cfg.init_scales:
            for balanced in cfg.balanced:
                for seed in seed_list:
                    f0, n0 = init(depth, alpha, balanced, seed)
                    out = flow_levels_run(
                        f0,
                        objective,
                        cfg.flow_levels,
                        method=cfg.flow_method,
                        fallback=cfg.flow_fallback,
                        rtol=cfg.flow_rtol,
                        atol=cfg.flow_atol,
                        max_steps=cfg.flow_max_steps,
                        max_evals=cfg.flow_max_evals,
                    )
                    base = {
                        "run_id": _run_id("flow", depth, alpha, balanced, seed),
                        "optimizer": "flow",
                        "lr": None,
                        "depth": depth,
                        "init": cfg.init,
                        "init_scale": alpha,
                        "balanced": balanced,
                        "seed": seed,
                        "init_fro_norm": float(n0[0]),
                    }
                    register(base, out)
    flow_wall = time.perf_counter() - t_flow

    # ---- plain GD, one batch per depth
    t_gd = time.perf_counter()
    gd_steps_run = 0
    gd_walls = {}
    for depth in cfg.gd_depths:
        combos = [
            (alpha, balanced, seed)
            for alpha in cfg.gd_init_scales
            for balanced in cfg.gd_balanced
            for seed in gd_seeds
        ]
        if not combos:
            continue
        parts, norms = [], []
        for alpha, balanced, seed in combos:
            f0, n0 = init(depth, alpha, balanced, seed)
            parts.append(f0)
            norms.append(float(n0[0]))
        factors = [torch.cat([p[j] for p in parts]) for j in range(depth)]
        tb = time.perf_counter()
        res = gd_levels_batch(
            factors,
            objective,
            cfg.gd_levels,
            lr=cfg.lr,
            max_steps=cfg.gd_max_steps,
            per_decade=cfg.gd_per_decade,
        )
        gd_walls[f"depth{depth}"] = time.perf_counter() - tb
        gd_steps_run += max(o["final_steps"] for o in res)
        for (alpha, balanced, seed), n0, out in zip(combos, norms, res, strict=True):
            base = {
                "run_id": _run_id("gd", depth, alpha, balanced, seed),
                "optimizer": "gd",
                "lr": cfg.lr,
                "depth": depth,
                "init": cfg.init,
                "init_scale": alpha,
                "balanced": balanced,
                "seed": seed,
                "init_fro_norm": n0,
            }
            out["batch_wall_s"] = gd_walls[f"depth{depth}"]
            register(base, out)
    gd_wall = time.perf_counter() - t_gd

    rows: list[dict[str, Any]] = []
    for r, o in zip(runs, outs, strict=True):
        base = {
            k: r[k]
            for k in (
                "run_id",
                "optimizer",
                "lr",
                "depth",
                "init",
                "init_scale",
                "balanced",
                "seed",
                "init_fro_norm",
            )
        }
        levels = cfg.flow_levels if r["optimizer"] == "flow" else cfg.gd_levels
        rows.extend(level_rows(o, base, r["depth"], levels))

    claims = _claims(cfg, runs, outs, rows)

    traj_name = "razin2020_2x2_trajectories.npz"
    save_trajectories(out_dir / traj_name, runs, outs)
    run_table = [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]
    figures = [
        plot_w11_vs_loss(out_dir / traj_name, run_table, out_dir, "razin2020_2x2_w11", "flow"),
        plot_norms_vs_loss(out_dir / traj_name, run_table, out_dir, "razin2020_2x2_norms"),
        plot_det_vs_loss(out_dir / traj_name, run_table, out_dir, "razin2020_2x2_det"),
    ]
    if any(r["optimizer"] == "gd" for r in runs):
        figures.append(
            plot_w11_vs_loss(out_dir / traj_name, run_table, out_dir, "razin2020_2x2_gd_w11", "gd")
        )
    figures = [f for f in figures if f]
    return {
        "config": {**asdict(cfg), "seeds": seed_list, "gd_seeds": gd_seeds, "device": str(dev)},
        "meta": run_metadata(),
        "rows": rows,
        "claims": claims,
        "figures": figures,
        "runs": run_table,
        "trajectories": traj_name,
        "timing": {
            "flow_wall_s": flow_wall,
            "flow_runs": sum(r["optimizer"] == "flow" for r in runs),
            "flow_evals": int(sum(r["n_evals"] for r in runs if r["optimizer"] == "flow")),
            "gd_wall_s": gd_wall,
            "gd_batches": gd_walls,
            "gd_batch_steps": gd_steps_run,
            "gd_us_per_batch_step": (1e6 * gd_wall / gd_steps_run) if gd_steps_run else None,
        },
    }
