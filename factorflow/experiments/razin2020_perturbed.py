"""Razin & Cohen (NeurIPS 2020), Sec. 3: the perturbed 2x2 problems, where low rank, not low
norm, picks the solution.

Setting: observed w12 = z = -2, w21 = z' = 0.5, w22 = eps (w11 unobserved), eps in {0, 0.01,
0.05, 0.1, 0.5}, loss ``half_sse``, deep matrix factorizations of width 2 and depth 2, 3, 4,
per-layer std 8e-3, balanced or not, gradient flow (LSODA, rtol 1e-7, atol 1e-10, BDF
fallback) down the loss levels 1e-2, 1e-4, 1e-6, 1e-8, each level the exact crossing, every
accepted step recorded (:mod:`factorflow.completion2x2`, as ``razin2020-2x2``).

Every solution has det = eps w11 + 1. The authors' statement: if sign det W(0) = sign(z z')
(here < 0), the flow keeps it and ||W(t)|| = Omega(min(|z|, |z'|) / (|eps| + sqrt(2 l(t)))); the
constant (c = 0.875 for l <= 1/32) is derived in :func:`factorflow.theory.perturbed_norm_lower_bound`.
The flow approaches the rank-1 completion w11 = -1/eps from below (|w11| eps -> 1 as l -> 0),
not the least nuclear norm completion w11 = -eps (||W||_* = 2.5, det > 0).

Runs: det(W(0)) < 0 balanced and unbalanced, det(W(0)) > 0 as the control, every eps; eps = 0
stops at loss 1e-6 (each decade costs more as |w11| grows). At depth 2, eps <= 0.1, the float64
floor is reached and det flips (such runs are listed, not judged).

Scales (2 shared cores, one torch thread, measured): ``quick`` depth 3, one seed, to loss 1e-8
(15 runs, ~18 s of CPU; 1e-8 is where |w11| eps is judged: 0.986 at eps 0.01); ``paper`` 180
runs to 1e-8 (~9 min); ``smoke`` one eps, two levels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np
import torch

from factorflow import completion2x2 as c2
from factorflow import theory
from factorflow.config import OptimizerConfig
from factorflow.experiment import Claim, Context, Experiment, NotJudged, Result, at_least, at_most
from factorflow.objectives import DMFObjective
from factorflow.problems.matrix import razin_2x2_perturbed

SOURCE = "Razin & Cohen, Implicit Regularization in Deep Learning May Not Be Explainable by Norms"
SLIDES = f"{SOURCE}, NeurIPS 2020, Sec. 3 and the authors' slides (perturbed 2x2 problems)"
Z, Z_PRIME = -2.0, 0.5


@dataclass(frozen=True)
class Settings:
    """``inits``: (det_sign, balanced) pairs (-1: the prediction's setting, +1: the control);
    ``floor``: float64-floor threshold (:mod:`factorflow.det_sign`); ``judge_level``: where
    |w11| eps -> 1 is judged."""

    depths: tuple[int, ...] = (2, 3, 4)
    eps: tuple[float, ...] = (0.0, 0.01, 0.05, 0.1, 0.5)
    inits: tuple[tuple[int, bool], ...] = ((-1, True), (-1, False), (1, True), (1, False))
    init: str = "normal"
    init_scale: float = 8e-3
    seeds: int = 3
    loss: str = "half_sse"
    levels: tuple[float, ...] = (1e-2, 1e-4, 1e-6, 1e-8)
    eps0_min_level: float = 1e-6
    flow: OptimizerConfig = OptimizerConfig(name="flow", method="LSODA", rtol=1e-7, atol=1e-10)
    flow_fallback: str = "BDF"
    flow_max_steps: int = 1000
    flow_max_evals: int = 20_000
    floor: float = 1e-12
    erank_max: float = 1.01
    judge_level: float = 1e-8
    eps_w11_min: float = 0.98

    def __post_init__(self) -> None:
        c2.check_grid(self.depths, (self.init_scale,), 0.125, levels=self.levels)
        if any(s not in (-1, 1) for s, _ in self.inits):
            raise ValueError(f"det signs must be -1 or +1, got {self.inits}")
        if any(e < 0 for e in self.eps):
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        if self.flow.name != "flow":
            raise ValueError("flow must be a flow OptimizerConfig")


PAPER = Settings()
QUICK = dataclasses.replace(PAPER, depths=(3,), inits=((-1, True), (-1, False), (1, True)), seeds=1)
SMOKE = dataclasses.replace(QUICK, eps=(0.5,), inits=((-1, True), (1, True)), levels=(1e-2, 1e-4))

RUN = {"run_id": "str", "optimizer": "str", "depth": "int", "eps": "float", "det_sign": "int"}
RUN |= {"init": "str", "init_scale": "float", "balanced": "bool", "seed": "int"}
RUN |= {"init_fro_norm": "float"}
EXTRA = {"abs_w11_times_eps": "float", "one_over_eps": "float", "w11_bound_det_neg": "float"}
COLUMNS = {**RUN, **c2.STATE_COLUMNS, **EXTRA}


def _extra(eps: float) -> Any:
    def extra(r: dict[str, Any]) -> dict[str, Any]:
        bound = theory.perturbed_w11_lower_bound(r["loss"], eps) if 0 < r["loss"] < 0.125 else None
        w = r["abs_w11"] * eps if eps > 0 else None
        inv = 1 / eps if eps > 0 else None
        return {"abs_w11_times_eps": w, "one_over_eps": inv, "w11_bound_det_neg": bound}

    return extra


def run(s: Settings, ctx: Context) -> list[dict[str, Any]]:
    """One flow run per (depth, eps, init, seed); rows and trajectories."""
    rows: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    stop = dict(fallback=s.flow_fallback, max_steps=s.flow_max_steps, max_evals=s.flow_max_evals)
    for depth, eps in product(s.depths, s.eps):
        objective = DMFObjective(razin_2x2_perturbed(eps).to(torch.float64, ctx.device), s.loss)
        levels = tuple(x for x in s.levels if eps > 0 or x >= s.eps0_min_level)
        for (det_sign, bal), seed in product(s.inits, range(s.seeds)):
            init = {"init": s.init, "init_scale": s.init_scale, "balanced": bal, "seed": seed}
            dev = {"det_sign": det_sign, "device": ctx.device}
            out, n0 = c2.flow_from_init(objective, depth, levels, s.flow, {**init, **dev}, **stop)
            sgn, b = ("neg" if det_sign < 0 else "pos"), ("bal" if bal else "unbal")
            rid = f"flow_d{depth}_eps{eps:g}_{sgn}_{b}_s{seed}"
            base = {"run_id": rid, "optimizer": "flow", "depth": depth, "eps": eps}
            base |= {"det_sign": det_sign, **init, "init_fro_norm": n0}
            c2.record(out, base, depth, rows, arrays, _extra(eps))
            ctx.log(f"{rid}: {out.status}, loss {out.final.loss:.3g}")
    ctx.save_arrays("trajectories", **arrays)
    return rows


def _ids(r: Result, **eq: Any) -> list[str]:
    if not (ids := c2.select_runs(r.rows, **eq)):
        raise NotJudged(f"no runs with {eq}")
    return ids


def _an(r: Result, ids: list[str]) -> dict[str, dict[str, Any]]:
    return c2.det_analyses(c2.split_runs(r.arrays("trajectories")), ids, r.settings.floor)


def _kept(r: Result) -> tuple[list[str], list[str]]:
    """Balanced det(W(0)) < 0 runs that kept det < 0 throughout, and those that flipped."""
    an = _an(r, _ids(r, det_sign=-1, balanced=True))
    return [k for k, a in an.items() if not a["n_flips"]], [
        k for k, a in an.items() if a["n_flips"]
    ]


def _eps(r: Result) -> dict[str, float]:
    return dict(zip(r.rows["run_id"], r.rows["eps"], strict=True))


def _det_kept(r: Result) -> dict[str, Any]:
    ids = _ids(r, det_sign=-1, balanced=True)
    return c2.det_sign_summary(c2.split_runs(r.arrays("trajectories")), ids, r.settings.floor)


def _unbalanced(r: Result) -> Any:
    an = _an(r, _ids(r, det_sign=-1, balanced=False))
    flips = {k: a["first_flip_loss"] for k, a in an.items() if a["n_flips"]}
    raise NotJudged(f"descriptive: {len(flips)} of {len(an)} unbalanced det(W(0)) < 0 runs "
                    f"flipped det (first flip at loss {flips or 'none'})")  # fmt: skip


def _ratio(r: Result, ids: list[str], bound: Any, value: str, emax: float) -> dict[str, Any]:
    tr, eps = c2.split_runs(r.arrays("trajectories")), _eps(r)
    for t in tr.values():
        t["spectral_norm"] = np.linalg.norm(t["W"], ord=2, axis=(1, 2))
    sel = lambda t: (t["det"] < 0) & (t["loss"] > 0) & (np.sqrt(2 * t["loss"]) <= emax)  # noqa: E731
    return c2.bound_ratio(tr, ids, sel, lambda loss, rid: bound(loss, eps[rid]), value)


def _w11_bound(r: Result) -> dict[str, Any]:
    return _ratio(r, list(_eps(r)), theory.perturbed_w11_lower_bound, "abs_w11", 0.5 - 1e-12)


def _norm_bound(r: Result) -> dict[str, Any]:
    out = _ratio(r, _ids(r, det_sign=-1), theory.perturbed_norm_lower_bound, "spectral_norm", 0.25)
    return {**out, "c": theory.perturbed_norm_constant(Z, Z_PRIME)}


def _eps_w11(r: Result) -> dict[str, Any]:
    kept, left = _kept(r)
    x = r.rows[r.rows["run_id"].isin(kept) & (r.rows["eps"] > 0) & r.rows["reached"]]
    lv = r.settings.judge_level
    at = x[np.isclose(x["level"].astype(float), lv)]
    if at.empty:
        raise NotJudged(f"no run kept det < 0 down to loss {lv:g} (lowest level reached: "
                        f"{x['level'].min() if len(x) else None}); excluded: {left}")  # fmt: skip
    by = {f"{lvl:g}": float(g["abs_w11_times_eps"].min()) for lvl, g in x.groupby("level")}
    return {"min_at_judge_level": float(at["abs_w11_times_eps"].min()), "min_by_level": by,
            "runs": len(at), "excluded_flipped": left}  # fmt: skip


def _rank_not_norm(r: Result) -> dict[str, Any]:
    kept, left = _kept(r)
    ids = [i for i in kept if _eps(r)[i] > 0]
    if not ids:
        raise NotJudged(f"no balanced det(W(0)) < 0 run with eps > 0 kept det < 0 ({left})")
    out = c2.rank_one_approach(r.rows, ids, r.settings.erank_max, Z, Z_PRIME)
    return {**out, "excluded_flipped": left}


def _eps0_unbounded(r: Result) -> dict[str, Any]:
    kept, left = _kept(r)
    ids = [i for i in kept if _eps(r)[i] == 0]
    if not ids:
        raise NotJudged(f"no balanced det(W(0)) < 0 run at eps = 0 kept det < 0 ({left})")
    return {**c2.grows_above(r.rows, ids, "w11_bound_det_neg"), "excluded_flipped": left}


def _control(r: Result) -> Any:
    ids = _ids(r, det_sign=1)
    low = r.rows[r.rows["run_id"].isin(ids)].sort_values("loss").groupby("run_id").first()
    med = low[low["eps"] > 0].groupby(["depth", "eps"])["abs_w11_times_eps"].median()
    raise NotJudged("descriptive: median |w11| eps at the lowest loss of the det(W(0)) > 0 runs "
                    f"by (depth, eps): {({k: round(v, 4) for k, v in med.items()})}")  # fmt: skip


CLAIMS = (
    Claim(
        "det-negative-kept",
        "Gradient flow from balanced init with det(W(0)) < 0 keeps det < 0 (until the float64 "
        "floor, if reached)",
        paper="det keeps its sign under gradient flow (depth >= 2)",
        source=f"{SOURCE}, NeurIPS 2020, Sec. 4 (theorem)",
        measure=_det_kept,
        checks=(at_most("runs_not_kept_until_floor", 0),),
    ),
    Claim(
        "det-negative-unbalanced",
        "From unbalanced init with det(W(0)) < 0 the sign is kept only approximately",
        paper=None,
        source="factorflow's own observation (the theorem is exact for balanced init only)",
        measure=_unbalanced,
        checks=(at_most("flipped", 0),),
    ),
    Claim(
        "w11-bound-det-negative",
        "At every recorded loss l with det(W) < 0: |w11| >= (2 - e)(0.5 - e) / (eps + e), "
        "e = sqrt(2 l) < 1/2 (the finite-loss form of |w11| > 1/eps)",
        paper="det < 0 forces |w11| > 1/eps for exact solutions",
        source=f"{SOURCE}, NeurIPS 2020, Sec. 3; the finite-loss form derived in factorflow",
        measure=_w11_bound,
        checks=(at_least("min_ratio", 1.0),),
    ),
    Claim(
        "norm-bound-det-negative",
        "From det(W(0)) < 0 (the sign of z z'), ||W(t)|| >= c min(|z|, |z'|) / (|eps| + "
        "sqrt(2 l(t))) with c = 0.875 at every recorded state with det < 0 and l <= 1/32 "
        "(||W|| the spectral norm, the smallest of the usual norms)",
        paper="||W(t)|| = Omega(min{|z|, |z'|} / (|eps| + sqrt(2 l(t))))",
        source=SLIDES,
        measure=_norm_bound,
        checks=(at_least("min_ratio", 1.0),),
    ),
    Claim(
        "w11-eps-to-1",
        "With det < 0 kept (balanced, det(W(0)) < 0, eps > 0) the flow approaches the rank-1 "
        "completion: |w11| eps -> 1 as the loss -> 0, at least {s.eps_w11_min:g} at loss "
        "{s.judge_level:g}",
        paper="|w11| eps -> 1 as l -> 0",
        source=SLIDES,
        measure=_eps_w11,
        checks=(at_least("min_at_judge_level", PAPER.eps_w11_min),),
    ),
    Claim(
        "rank-not-norm",
        "From det(W(0)) < 0 the flow converges to the rank-1 completion |w11| = 1/eps (gap "
        "|1 - |w11| eps| shrinking level to level, effective rank < {s.erank_max:g} at the "
        "lowest loss), not to the minimum nuclear norm completion (|w11| = eps, ||W||_* = 2.5)",
        paper="implicit regularization lowers rank, not norms",
        source=f"{SOURCE}, NeurIPS 2020, Sec. 3",
        measure=_rank_not_norm,
        checks=(at_most("runs_failing", 0),),
    ),
    Claim(
        "eps0-w11-unbounded",
        "eps = 0 and det(W(0)) < 0: no solution keeps det < 0, so |w11| grows level to level, "
        "above (2 - e)(0.5 - e) / e at each",
        paper="eps = 0: all norms driven to infinity",
        source=SLIDES,
        measure=_eps0_unbounded,
        checks=(at_most("runs_failing", 0),),
    ),
    Claim(
        "det-positive-control",
        "With det(W(0)) > 0 nothing forces |w11| up (det > 0 solutions exist for w11 > -1/eps)",
        paper=None,
        source="factorflow's own control run",
        measure=_control,
        checks=(at_most("median", 1.0),),
    ),
)

EXPERIMENT = Experiment(
    id="razin2020-perturbed",
    title="Perturbed 2x2 problems: det < 0 forces ||W|| ~ 1/(eps + sqrt(2 l)); the flow picks "
    "rank 1, not min norm",
    paper=f"{SOURCE} (NeurIPS 2020), Sec. 3 (perturbed observations)",
    settings=Settings,
    scales={"quick": QUICK, "paper": PAPER, "smoke": SMOKE},
    columns=COLUMNS,
    claims=CLAIMS,
    run=run,
    part="Determinant and norms",
)
