"""Razin & Cohen (NeurIPS 2020), Sec. 3-4 and Fig. 1: norms are not the implicit regularizer.

Setting: the 2x2 matrix [[?, 1], [1, 0]] (w11 unobserved), loss ``half_sse``, deep matrix
factorizations of depth N = 2, 3, 4 and width 2, every layer i.i.d. N(0, alpha^2) (``alpha`` the
per-layer std; the achieved ||W(0)||_F is a column), resampled until det(W(0)) > 0. Every exact
solution has det = -1, so a run that keeps det > 0 fits the observations only with |w11| ->
infinity, and every norm and quasi-norm with it, while the effective rank goes to 1.

Runs (:mod:`factorflow.completion2x2`): gradient flow (LSODA, rtol 1e-7, atol 1e-10, BDF as the
fallback for a segment LSODA does not finish) from every (depth, alpha, balanced or not, seed)
down the loss levels ``flow_levels``, the state at each level the exact crossing
(:func:`factorflow.dynamics.flow_levels_run`), every accepted step recorded; plain GD at the
paper's lr 3e-3 (all runs of one depth batched) down ``gd_levels``. Balanced init re-splits the
same draw into balanced factors (where "det keeps its sign" is exact). Rows: one per run and
level; trajectories: ``trajectories.npz``.

Two numerical facts (:mod:`factorflow.det_sign`): at depth 2 balanced flow reaches the float64
floor ((sigma_2/sigma_1)^(2/N) < 1e-12, near loss 0.1 at alpha 8e-3) and det then flips (near
0.024, for every rtol 1e-7 to 1e-12 and LSODA, BDF, Radau alike); from unbalanced init det
flips while W is still ~0 (loss > 0.9) in most runs (the linear phase aligns W with -grad l(0),
det < 0; paper grid: 16 of 18).

Scales (2 shared cores, one torch thread, measured): ``quick`` alpha 8e-3, 2 seeds, flow at
depths 2-4 to 1e-6 (12 runs, ~52k evaluations, ~33 s) and GD at depth 2 only (4 runs, 32k
batch steps, ~18 s). ``paper``: 36 flow runs to 1e-6 and GD at alpha 8e-3 to 1e-4 (3-6 million
steps per run): 355 s in all with the engine's tiny-problem loop (hours before it; README).
``smoke``: depth 2, one balanced seed, two levels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
import torch

from factorflow import completion2x2 as c2
from factorflow.config import OptimizerConfig
from factorflow.experiment import (
    Claim,
    Context,
    Experiment,
    NotJudged,
    Result,
    at_least,  # noqa: I001
    at_most,
    within,
)
from factorflow.objectives import DMFObjective
from factorflow.problems.matrix import razin_2x2
from factorflow.theory import w11_lower_bound

SOURCE = "Razin & Cohen, Implicit Regularization in Deep Learning May Not Be Explainable by Norms"
FIG = f"{SOURCE}, NeurIPS 2020, Fig. 1 (depth 3 and 4), read off the figure (about +-15 %)"
READ_OFF = 0.15  # relative accuracy of a value read off a linear axis
READ_OFF_LOG = 10**0.25  # a quarter decade on a log axis
W11_POINTS = {1.3e-2: 6.0, 1.3e-3: 19.5, 1.3e-4: 62.0}  # |w11| at these losses, Fig. 1
GD_STEPS = {3: 3.3e6, 4: 4.6e6}  # GD iterations to loss 1e-4
GD_DEPTH2_W11 = (0.7, 7.0)  # where discrete depth-2 runs level off


@dataclass(frozen=True)
class Settings:
    """``flow_levels`` / ``gd_levels``: descending losses where rows are taken; ``floor``: the
    float64-floor threshold of (sigma_2/sigma_1)^(2/N); ``monotone_rtol``: a norm "decreases"
    only if it drops by more than this; ``level_off_rtol``: GD's |w11| has levelled off when it
    changes by less than this over the decade of loss from 1e-3 to 1e-4."""

    depths: tuple[int, ...] = (2, 3, 4)
    init: str = "normal"
    init_scales: tuple[float, ...] = (8e-3, 1e-3)
    balanced: tuple[bool, ...] = (True, False)
    seeds: int = 3
    loss: str = "half_sse"
    flow_levels: tuple[float, ...] = (1.3e-1, 1.3e-2, 1e-2, 1.3e-3, 1e-3, 1.3e-4, 1e-4, 1e-6)
    flow: OptimizerConfig = OptimizerConfig(name="flow", method="LSODA", rtol=1e-7, atol=1e-10)
    flow_fallback: str = "BDF"
    flow_max_steps: int = 1000
    flow_max_evals: int = 20_000
    gd: OptimizerConfig = OptimizerConfig(name="gd", lr=3e-3)
    gd_depths: tuple[int, ...] = (2, 3, 4)
    gd_init_scales: tuple[float, ...] = (8e-3,)
    gd_balanced: tuple[bool, ...] = (True, False)
    gd_levels: tuple[float, ...] = (1.3e-1, 1.3e-2, 1e-2, 1.3e-3, 1e-3, 1.3e-4, 1e-4)
    gd_max_steps: int = 10_000_000
    gd_per_decade: int = 40
    floor: float = 1e-12
    norm_loss_max: float = 0.3
    erank_max: float = 1.01
    monotone_rtol: float = 1e-9
    gd_flow_rtol: float = 1e-2
    level_off_rtol: float = 0.05

    def __post_init__(self) -> None:
        depths, scales = (*self.depths, *self.gd_depths), (*self.init_scales, *self.gd_init_scales)
        c2.check_grid(depths, scales, flow_levels=self.flow_levels, gd_levels=self.gd_levels)
        if self.flow.name != "flow" or self.gd.name != "gd":
            raise ValueError("flow must be a flow OptimizerConfig and gd a gd one")
        if min(self.gd_max_steps, self.flow_max_steps, self.flow_max_evals) < 1:
            raise ValueError("gd_max_steps, flow_max_steps and flow_max_evals must be >= 1")


PAPER = Settings()
QUICK = dataclasses.replace(
    PAPER, init_scales=(8e-3,), seeds=2, gd_depths=(2,), gd_max_steps=100_000
)
SMOKE = dataclasses.replace(
    QUICK,
    depths=(2,),
    balanced=(True,),
    seeds=1,
    flow_levels=(1.3e-1, 1e-2),
    gd_balanced=(True,),
    gd_levels=(0.5, 1.3e-1),
    gd_max_steps=4000,
)

RUN = ("run_id", "optimizer", "lr", "depth", "init", "init_scale", "balanced", "seed")
BOUND = lambda r: {"w11_lower_bound": w11_lower_bound(r["loss"]) if 0 < r["loss"] < 0.5 else None}  # noqa: E731
COLUMNS = {
    **dict(zip(RUN, ("str", "str", "float", "int", "str", "float", "bool", "int"), strict=True)),
    "init_fro_norm": "float",
    **c2.STATE_COLUMNS,
    "w11_lower_bound": "float",
}


def run(s: Settings, ctx: Context) -> list[dict[str, Any]]:
    """Flow runs one at a time, then GD one batch per depth; rows and trajectories."""
    objective = DMFObjective(razin_2x2().to(torch.float64, ctx.device), s.loss)
    rows: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    kw = {"init": s.init, "det_sign": 1, "device": ctx.device}
    stop = dict(fallback=s.flow_fallback, max_steps=s.flow_max_steps, max_evals=s.flow_max_evals)
    for depth, alpha, bal, seed in product(s.depths, s.init_scales, s.balanced, range(s.seeds)):
        run_id = f"flow_d{depth}_a{alpha:g}_{'bal' if bal else 'unbal'}_s{seed}"
        init = {"init_scale": alpha, "balanced": bal, "seed": seed, **kw}
        out, n0 = c2.flow_from_init(objective, depth, s.flow_levels, s.flow, init, **stop)
        base = dict(zip(RUN, (run_id, "flow", None, depth, s.init, alpha, bal, seed), strict=True))
        c2.record(out, {**base, "init_fro_norm": n0}, depth, rows, arrays, BOUND)
        ctx.log(f"{run_id}: {out.status}, loss {out.final.loss:.3g}, {out.n_evals} evaluations")
    for depth in s.gd_depths:
        combos = list(product(s.gd_init_scales, s.gd_balanced, range(s.seeds)))
        inits = [c2.init_2x2(depth, init_scale=a, balanced=b, seed=k, **kw) for a, b, k in combos]
        factors = [torch.cat([f[j] for f, _ in inits]) for j in range(depth)]
        gd_kw = {"max_steps": s.gd_max_steps, "per_decade": s.gd_per_decade}
        outs = c2.gd_2x2(objective, factors, s.gd_levels, s.gd, **gd_kw)
        for (alpha, bal, seed), (_, n0), out in zip(combos, inits, outs, strict=True):
            run_id = f"gd_d{depth}_a{alpha:g}_{'bal' if bal else 'unbal'}_s{seed}"
            vals = (run_id, "gd", s.gd.lr, depth, s.init, alpha, bal, seed)
            base = {**dict(zip(RUN, vals, strict=True)), "init_fro_norm": n0}
            c2.record(out, base, depth, rows, arrays, BOUND)
            ctx.log(f"{run_id}: {out.status}, loss {out.final.loss:.3g}, {out.final.steps} steps")
    ctx.save_arrays("trajectories", **arrays)
    return rows


def _runs(r: Result, depth_min: int = 0, **eq: Any) -> list[str]:
    """Run ids whose run matches ``eq`` and has depth >= ``depth_min`` (NotJudged if none)."""
    ids = c2.select_runs(r.rows, depth_min, **eq)
    if not ids:
        raise NotJudged(f"no runs with {eq}" + (f", depth >= {depth_min}" if depth_min else ""))
    return ids


def _signs(r: Result, ids: list[str]) -> dict[str, Any]:
    return c2.det_sign_summary(c2.split_runs(r.arrays("trajectories")), ids, r.settings.floor)


def _level(r: Result, level: float, **eq: Any) -> Any:
    """Rows at ``level`` with depth >= 3 and det > 0 (and ``eq``)."""
    x = r.rows
    m = (x["depth"] >= 3) & np.isclose(x["level"].astype(float).fillna(-1), level) & (x["det"] > 0)
    for k, v in eq.items():
        m &= x[k] == v
    if not m.any():
        raise NotJudged(f"no depth >= 3 row with det > 0 at loss {level:g}")
    return x[m]


def _unbalanced_flips(r: Result) -> Any:
    ids = _runs(r, optimizer="flow", balanced=False)
    first = _signs(r, ids)["loss_at_first_flip"]
    near0 = sum(x is not None and x > 0.9 for x in first)
    late = [float(f"{x:.3g}") for x in first if x is not None and x <= 0.9]
    raise NotJudged(
        f"descriptive: {sum(x is not None for x in first)} of {len(ids)} unbalanced flow runs "
        f"flipped det, {near0} while W was still ~0 (loss > 0.9); later first flips at loss "
        f"{late or 'none'}"
    )


def _bound_2x2(r: Result) -> dict[str, Any]:
    return c2.bound_ratio(
        c2.split_runs(r.arrays("trajectories")),
        list(r.rows["run_id"].unique()),
        lambda t: (t["det"] > 0) & (t["loss"] > 0) & (t["loss"] < 0.5),
        lambda loss, _: w11_lower_bound(loss),
    )


def _w11_at_1e4(r: Result) -> dict[str, Any]:
    v = _level(r, 1e-4)["abs_w11"]
    return {"runs": len(v), "min": float(v.min()), "max": float(v.max()), "mean": float(v.mean())}


def _w11_points(r: Result) -> dict[str, Any]:
    out: dict[str, Any] = {}
    dev = 0.0
    for lv, ref in W11_POINTS.items():
        v = _level(r, lv)["abs_w11"]
        out[f"{lv:g}"] = {"paper": ref, "min": float(v.min()), "max": float(v.max())}
        dev = max(dev, abs(v.min() / ref - 1), abs(v.max() / ref - 1))
    return {**out, "worst_rel_dev": float(dev)}


def _w11_at_013(r: Result) -> Any:
    v = _level(r, 1.3e-1)["abs_w11"]
    raise NotJudged(
        f"measured |w11| {v.min():.3g} to {v.max():.3g} (paper ~1.7); at loss 0.13 W is far "
        "from any solution, so |w11| there depends on the init draw, and the paper gives alpha "
        "8e-3 and det(W(0)) > 0 but not the draw (seed, balanced or not)"
    )


def _norms_grow(r: Result) -> dict[str, Any]:
    s = r.settings
    tr = c2.split_runs(r.arrays("trajectories"))
    out = c2.norms_monotone(tr, _runs(r, optimizer="flow"), s.floor, s.norm_loss_max)
    out["worst_norm_drop"] = max(out["max_relative_drop"].values())
    out["effective_rank_at_1e-4_max"] = float(
        _level(r, 1e-4, optimizer="flow")["effective_rank"].max()
    )
    return out


def _gd_depth2(r: Result) -> dict[str, Any]:
    ids = _runs(r, optimizer="gd", depth=2)
    out = _signs(r, ids)
    out["runs_not_flipped"] = out["runs"] - out["runs_sign_changed"]
    out["max_rel_change_1e-3_to_1e-4"] = c2.level_change(r.rows, ids, 1e-3, 1e-4)
    if out["max_rel_change_1e-3_to_1e-4"] is None:
        raise NotJudged("GD did not reach loss 1e-3 and 1e-4 (the levelling-off decade)")
    final = r.rows[r.rows["run_id"].isin(ids)].groupby("run_id")["abs_w11"].last()
    return {**out, "final_abs_w11_min": final.min(), "final_abs_w11_max": final.max()}


def _gd_vs_flow(r: Result) -> dict[str, Any]:
    ids = _runs(r, optimizer="flow")
    floor = [i for i, x in zip(ids, _signs(r, ids)["loss_at_floor"], strict=True) if x is not None]
    out = c2.gd_flow_agreement(r.rows, exclude=floor, keys=("init_scale", "balanced"))
    if not out["pairs"]:
        raise NotJudged("no GD run with a flow run from the same init at a common level")
    return out


def _gd_steps(r: Result) -> dict[str, Any]:
    x = r.rows
    at = x[np.isclose(x["level"].astype(float).fillna(-1), 1e-4) & x["depth"].isin(list(GD_STEPS))]
    gd = at[at["optimizer"] == "gd"]
    if gd.empty:
        fl = at[(at["optimizer"] == "flow") & (at["det"] > 0) & (at["init_scale"] == 8e-3)]
        est = (fl["time"] / r.settings.gd.lr).round(-4).astype(int).tolist()
        raise NotJudged(f"GD did not run to loss 1e-4 at depth 3 or 4 (flow time / lr: {est})")
    ratio = [s / GD_STEPS[d] for d, s in zip(gd["depth"], gd["steps"], strict=True)]
    return {"steps": gd["steps"].tolist(), "min_ratio": min(ratio), "max_ratio": max(ratio)}


THEOREM = f"{SOURCE}, NeurIPS 2020, Sec. 4 (det keeps its sign under gradient flow, N >= 2)"
CLAIMS = (
    Claim(
        "det-sign-balanced-deep",
        "Under gradient flow from balanced init, det(W) > 0 at every recorded state (depth 3, 4)",
        paper="det keeps its sign for depth >= 2 (exact from balanced init)",
        source=THEOREM,
        measure=lambda r: _signs(r, _runs(r, 3, optimizer="flow", balanced=True)),
        checks=(at_most("runs_sign_changed", 0),),
    ),
    Claim(
        "det-sign-balanced-depth2",
        "Under gradient flow from balanced init at depth 2, det(W) is kept until the float64 "
        "floor ((sigma_2/sigma_1)^(2/N) < {s.floor:g}); past it the sign is set by rounding and "
        "this simulation cannot test the theorem",
        paper="det keeps its sign for depth >= 2 (exact from balanced init)",
        source=THEOREM,
        measure=lambda r: _signs(r, _runs(r, optimizer="flow", balanced=True, depth=2)),
        checks=(at_most("runs_not_kept_until_floor", 0),),
    ),
    Claim(
        "det-sign-unbalanced",
        "From unbalanced init the sign of det is kept only approximately: where it flipped",
        paper=None,
        source="factorflow's own observation (the theorem is exact for balanced init only)",
        measure=_unbalanced_flips,
        checks=(at_most("flipped", 0),),
    ),
    Claim(
        "w11-lower-bound",
        "|w11| >= (1 - sqrt(2 l))^2 / sqrt(2 l) at every recorded loss l < 1/2 with det(W) > 0",
        paper=">= 68.7 at l = 1e-4 (a bound derived from the problem, theory.w11_lower_bound)",
        source=f"{SOURCE}, NeurIPS 2020, Sec. 3 (det > 0 forces |w11| to grow as l -> 0)",
        measure=_bound_2x2,
        checks=(at_least("min_ratio", 1.0),),
    ),
    Claim(
        "w11-at-1e-4",
        "At loss 1e-4, |w11| is about 70 for depth 3 and 4 (runs with det > 0 there)",
        paper=70.0,
        source=FIG,
        measure=_w11_at_1e4,
        checks=(within("min", 70.0, READ_OFF), within("max", 70.0, READ_OFF)),
    ),
    Claim(
        "w11-vs-loss-points",
        "|w11| at losses 1.3e-2, 1.3e-3, 1.3e-4 is about 6, 19.5, 62 (depth 3 and 4, det > 0)",
        paper={f"{k:g}": v for k, v in W11_POINTS.items()},
        source=FIG,
        measure=_w11_points,
        checks=(at_most("worst_rel_dev", READ_OFF),),
    ),
    Claim(
        "w11-at-0.13",
        "|w11| at loss 0.13 is about 1.7 (depth 3 and 4, det > 0)",
        paper=1.7,
        source=FIG,
        measure=_w11_at_013,
        checks=(within(None, 1.7, READ_OFF),),
    ),
    Claim(
        "norms-grow-rank-falls",
        "Once the loss is below {s.norm_loss_max:g}, the nuclear and Frobenius norms and the "
        "Schatten quasi-norms (p = 0.5, 2/N) all increase as the loss decreases (no drop above "
        "{s.monotone_rtol:g} relative between recorded flow states, before any det flip or the "
        "float64 floor), while the effective rank falls to < {s.erank_max:g} at loss 1e-4 "
        "(depth >= 3, det > 0)",
        paper="all norms -> infinity while the rank is lowered",
        source=f"{SOURCE}, NeurIPS 2020, Sec. 4 and Fig. 1",
        measure=_norms_grow,
        checks=(
            at_most("worst_norm_drop", PAPER.monotone_rtol),
            at_most("max_relative_rise_erank", PAPER.monotone_rtol),
            at_most("effective_rank_at_1e-4_max", PAPER.erank_max),
        ),
    ),
    Claim(
        "gd-depth2-flips",
        "Plain GD at lr {s.gd.lr:g}, depth 2: det flips sign in every run and |w11| levels off "
        "(changes by less than {s.level_off_rtol:.0%} over the decade of loss 1e-3 -> 1e-4, where a "
        "det > 0 run grows about 3x), at |w11| between 0.7 and 7 (+-15 %)",
        paper={"final_abs_w11_range": list(GD_DEPTH2_W11), "det_flipped": True},
        source=f"{SOURCE}, NeurIPS 2020, Fig. 1 (depth 2, GD), read off the figure",
        measure=_gd_depth2,
        checks=(
            at_most("runs_not_flipped", 0),
            at_most("max_rel_change_1e-3_to_1e-4", PAPER.level_off_rtol),
            at_least("final_abs_w11_min", GD_DEPTH2_W11[0] * (1 - READ_OFF)),
            at_most("final_abs_w11_max", GD_DEPTH2_W11[1] * (1 + READ_OFF)),
        ),
    ),
    Claim(
        "gd-tracks-flow",
        "Plain GD at lr {s.gd.lr:g} and gradient flow from the same init reach the same |w11| "
        "at each loss level (relative difference <= {s.gd_flow_rtol:g}; pairs with the same det "
        "sign, flow runs that reached the float64 floor left out)",
        paper=None,
        source="factorflow's own check (GD at a small lr follows the flow)",
        measure=_gd_vs_flow,
        checks=(at_most("max_rel_diff", PAPER.gd_flow_rtol),),
    ),
    Claim(
        "gd-iterations-to-1e-4",
        "GD at lr {s.gd.lr:g} needs ~3.3e6 (depth 3) and ~4.6e6 (depth 4) iterations to reach "
        "loss 1e-4 (judged only where GD ran there; a quarter decade, read off a log axis)",
        paper={f"depth{d}": v for d, v in GD_STEPS.items()},
        source=f"{SOURCE}, NeurIPS 2020, Fig. 1 (iteration colour bar), read off the figure",
        measure=_gd_steps,
        checks=(
            at_least("min_ratio", 1 / READ_OFF_LOG),
            at_most("max_ratio", READ_OFF_LOG),
        ),
    ),
)

EXPERIMENT = Experiment(
    id="razin2020-2x2",
    title="Implicit regularization drives every norm to infinity while lowering rank (2x2 problem)",
    paper=f"{SOURCE} (NeurIPS 2020), Sec. 3-4 / Fig. 1",
    settings=Settings,
    scales={"quick": QUICK, "paper": PAPER, "smoke": SMOKE},
    columns=COLUMNS,
    claims=CLAIMS,
    run=run,
    part="Determinant and norms",
)
