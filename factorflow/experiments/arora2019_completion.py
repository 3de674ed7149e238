"""Arora, Cohen, Hu & Luo (2019), Sec. 5: deep matrix factorization beats nuclear-norm minimization
on low-rank matrix completion (PAPERS.md, section A).

Problem: W* = U V^T, U, V in R^{100x5} i.i.d. N(0, 1), scaled to ||W*||_F = 100 (RMS entry 1);
2000 or 5000 entries observed (sampled without replacement). Model: depth-N factorization
W = W_N ... W_1, all widths 100, init ``gaussian`` (layer j i.i.d. N(0, s_j^2),
s_j = init_scale^(1/N) / sqrt(100), so ||W(0)||_F ~ 10 init_scale), loss ``mse``
(mean over observations, no 1/2). Stop at train loss <= 1e-6 (or 1e6 iterations). Baseline:
min ||X||_* s.t. |X_ij - M_ij| <= 1e-3 on the observed entries (cvxpy + SCS).

Optimizers: the authors' ``group_rmsprop`` (one scalar second moment per run; lr 1e-3,
beta 0.99, eps 1e-4) and ``flow`` (gradient flow by an adaptive RK45 integrator, rtol 1e-7). Since
group RMSProp rescales the whole gradient of a run by one scalar, for small lr it follows the
gradient-flow path with a changed clock; the claim ``flow_matches_group_rmsprop`` checks that the
two end at the same error.

Seeds: seed s draws the problem (ground truth and observed set, ``synthetic_completion(..., s)``)
and the initial factors (``init_dmf(seeds=[s, ...])``): the spread shown is over problem draws and
initializations together.

Batching: with ``batch=True`` the runs of one depth, optimizer and problem (the init scales)
train as one batch; each run draws its init from its own generator, so a discrete-optimizer run
is the same alone or in a batch, and a flow run agrees to the integration tolerance (the batch
shares one step size). The default ``batch=None`` batches on CUDA only: on CPU the work is
compute-bound 100x100 products, and measured on 2 busy cores, 16 GD runs gained only 1.18x from
batching, while four flow runs of depth 3 (init scales 1e-3..1e-6, 2000 observations) took
55.6 s as one batch and 30.7 s one at a time (the batch must take the small steps that any of
its runs needs, for as long as any run is still moving).

Scales: ``quick`` = 1 seed, init scales {1e-3, 1e-6} (two, so the depth-2 trend is measurable),
depths 1-3 by flow, group RMSProp for depth 3 at init 1e-3 and 2000 observations only;
``paper`` = 5 seeds, the paper's four init scales, depths 1-4 by flow, group RMSProp for depths
2-4, all init scales and both observation counts on seed 0. Any field of :class:`Settings` can be
overridden through ``options`` (e.g. ``{"shape": [20, 20], "rank": 2, "n_obs": [120]}``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factorflow import metrics
from factorflow.dynamics import Flow, GroupRMSProp, Schedule, Stop, TrainResult, train
from factorflow.experiments.common import claim, n_seeds, save_figure
from factorflow.factorizations.dmf import end_to_end, init_dmf
from factorflow.objectives import DMFObjective
from factorflow.problems.matrix import MatrixCompletion, MatrixSensing, synthetic_completion

ID = "arora2019-completion"
TITLE = "Depth beats nuclear-norm minimization: 100x100 rank-5 completion (Arora et al. 2019)"
PAPER = (
    "Arora, Cohen, Hu, Luo. Implicit Regularization in Deep Matrix Factorization. NeurIPS 2019 "
    "(arXiv:1905.13655), Sec. 5 and its figure of reconstruction error, nuclear norm and "
    "effective rank vs ||W(0)||_F"
)

#: The paper's published numbers (PAPERS.md section A; ~ = read off a figure).
PAPER_NUMBERS = {
    "recon_mse_2000": {"nnm": 1.06e-1, "depth1": 0.819, "depth2": 5.92e-2, "depth3": 2.58e-5},
    "depth2_range_2000": "~2.5e-2 (small init) to ~1.1e-1 (large init)",
    "nuclear_norm_2000": {"nnm": 210.15, "depth3/4": "~219.4", "ground_truth": "~219.5"},
    "effective_rank_2000": {"nnm": "~9.45", "depth3/4": "~4.93", "depth2": "~6.6 to 10.1"},
    "recon_mse_5000": {"nnm": "~8e-7", "depth3/4": "~4e-6", "depth2": "5e-6 to 9e-5"},
}


@dataclass(frozen=True)
class Settings:
    """Everything one run of the experiment depends on (stored in ``summary["config"]``)."""

    shape: tuple[int, int] = (100, 100)
    rank: int = 5
    n_obs: tuple[int, ...] = (2000, 5000)
    depths: tuple[int, ...] = (1, 2, 3, 4)
    init: str = "gaussian"
    init_scales: tuple[float, ...] = (1e-3, 1e-4, 1e-5, 1e-6)
    loss: str = "mse"
    loss_below: float = 1e-6
    # gradient flow
    optimizers: tuple[str, ...] = ("flow", "group_rmsprop")
    flow_method: str = "RK45"
    flow_rtol: float = 1e-7
    flow_atol: float = 1e-10
    flow_max_evals: int = 200_000
    # the authors' optimizer, and the subset of the grid it runs on
    rmsprop_lr: float = 1e-3
    rmsprop_beta: float = 0.99
    rmsprop_eps: float = 1e-4
    max_steps: int = 1_000_000
    rmsprop_depths: tuple[int, ...] = (2, 3, 4)
    rmsprop_init_scales: tuple[float, ...] = (1e-3, 1e-4, 1e-5, 1e-6)
    rmsprop_n_obs: tuple[int, ...] = (2000, 5000)
    rmsprop_seeds: int = 1
    # nuclear-norm baseline
    nnm: bool = True
    nnm_tol: float = 1e-3
    nnm_solver: str = "admm"  # "admm" (factorflow's, checked against SCS) or "scs" (CVXPY)
    nnm_n_obs: tuple[int, ...] | None = None  # None: every n_obs
    # execution
    batch: bool | None = None  # None: batch on CUDA, one run at a time on CPU
    dtype: str = "float64"


QUICK = Settings(
    depths=(1, 2, 3),
    init_scales=(1e-3, 1e-6),
    rmsprop_depths=(3,),
    rmsprop_init_scales=(1e-3,),
    rmsprop_n_obs=(2000,),
)
PAPER_SCALE = Settings()
SEEDS = {"quick": 1, "paper": 5}


# --------------------------------------------------------------------------- settings


def apply_options(base: Any, options: dict[str, Any]) -> Any:
    """``base`` (a frozen settings dataclass) with the fields named in ``options`` replaced.

    Lists become tuples and numbers are cast to the field's type; an unknown key raises
    ``ValueError`` naming the known ones (a misspelt option never passes silently)."""
    known = {f.name: f for f in dataclasses.fields(base)}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for this experiment; known: {sorted(known)}")
    changes: dict[str, Any] = {}
    for key, value in options.items():
        current = getattr(base, key)
        if current is None and isinstance(value, list | tuple):
            value = tuple(value)
        elif isinstance(current, tuple):
            value = tuple(value) if isinstance(value, list | tuple) else (value,)
            if current and all(isinstance(v, int | float) for v in value):
                kind = type(current[0])
                value = tuple(kind(v) for v in value)
        elif isinstance(current, bool) or key == "batch":
            if not isinstance(value, bool | None):
                raise ValueError(f"option {key} must be true or false, got {value!r}")
        elif isinstance(current, int | float) and value is not None:
            value = type(current)(value)
        changes[key] = value
    return dataclasses.replace(base, **changes)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the enclosed training on one CPU thread (torch intra-op and numpy's BLAS), restoring
    the previous settings after.

    Measured on 2 shared, busy cores: a depth-3 100x100 gradient evaluation took ~8 ms on one
    torch thread and ~180 ms on two; scipy's RK45 calls ``np.dot`` on its stacked stages every
    step, and a threaded OpenBLAS made each flow step ~4x slower. The matrices here (100x100,
    or 671-wide for the ratings) are too small to gain from a second thread. numpy's BLAS is
    limited through ``threadpoolctl`` when it is installed (it ships with scikit-learn)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover
            yield
            return
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(previous)


# --------------------------------------------------------------------------- one grid


Problem = MatrixCompletion | MatrixSensing


@dataclass(frozen=True)
class BaselineResult:
    """The convex baseline's solution on one problem, in the form the grid needs."""

    X: np.ndarray | None
    status: str
    solve_time_s: float
    max_violation: float
    error: str | None = None
    solver: str = "scs"


def _optimizer(name: str, s: Settings) -> Flow | GroupRMSProp:
    if name == "flow":
        return Flow(method=s.flow_method, rtol=s.flow_rtol, atol=s.flow_atol)
    if name == "group_rmsprop":
        return GroupRMSProp(lr=s.rmsprop_lr, beta=s.rmsprop_beta, eps=s.rmsprop_eps)
    raise ValueError(f"unknown optimizer {name!r}; choose flow or group_rmsprop")


def _stop(name: str, s: Settings) -> Stop:
    if name == "flow":
        return Stop(loss_below=s.loss_below, max_evals=s.flow_max_evals)
    return Stop(loss_below=s.loss_below, max_steps=s.max_steps)


def _scales_for(
    s: Settings, optimizer: str, depth: int, n_obs: int, seed_index: int
) -> tuple[float, ...]:
    """Init scales this (optimizer, depth, n_obs, seed) trains; empty when not in the grid."""
    if optimizer == "flow":
        return s.init_scales
    if depth in s.rmsprop_depths and n_obs in s.rmsprop_n_obs and seed_index < s.rmsprop_seeds:
        return tuple(x for x in s.rmsprop_init_scales)
    return ()


def _model_rows(
    res: TrainResult,
    init_norms: torch.Tensor,
    problem: Problem,
    base: dict[str, Any],
    scales: Sequence[float],
    wall_s: float,
) -> list[dict[str, Any]]:
    W = end_to_end(res.params).detach().to(torch.float64)
    Ws = problem.ground_truth.to(W)
    sv = metrics.singular_values(W)
    rec = metrics.recon_mse(W, Ws.expand_as(W))
    rel = metrics.rel_fro_error(W, Ws.expand_as(W))
    nuc = metrics.nuclear_norm(W)
    erank = metrics.effective_rank(W)
    rows = []
    for b, scale in enumerate(scales):
        rows.append(
            {
                **base,
                "init_scale": float(scale),
                "init_fro_norm": float(init_norms[b]),
                "status": res.status[b],
                "final_loss": float(res.final_loss[b]),
                "steps": int(res.steps[b]),
                "time": float(res.time[b]),
                "n_evals_batch": int(res.n_evals),
                "batch_size": len(scales),
                "wall_s_batch": float(wall_s),
                "recon_mse": float(rec[b]),
                "rel_fro_error": float(rel[b]),
                "nuclear_norm": float(nuc[b]),
                "effective_rank": float(erank[b]),
                "singular_values": sv[b, :10].cpu().tolist(),
            }
        )
    return rows


def _matrix_row(X: torch.Tensor, W_star: torch.Tensor) -> dict[str, Any]:
    X = X.to(torch.float64)
    return {
        "recon_mse": float(metrics.recon_mse(X, W_star)),
        "rel_fro_error": float(metrics.rel_fro_error(X, W_star)),
        "nuclear_norm": float(metrics.nuclear_norm(X)),
        "effective_rank": float(metrics.effective_rank(X)),
        "singular_values": metrics.singular_values(X)[:10].tolist(),
    }


def run_grid(
    s: Settings,
    seeds: int,
    device: str,
    make_problem: Callable[[int, int], Problem],
    solve_baseline: Callable[[Problem], BaselineResult],
    log: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Train every (seed, n_obs, depth, optimizer, init scale) of the grid ``s`` and solve the
    baseline once per problem. ``make_problem(n_obs, seed)`` builds a CPU float64 problem.

    Returns the rows (one per fitted model, plus one ``ground_truth`` row per problem) and the
    wall time spent per part (``flow``, ``group_rmsprop``, ``nuclear_norm_min``)."""
    dtype = {"float64": torch.float64, "float32": torch.float32}[s.dtype]
    dev = torch.device(device)
    rows: list[dict[str, Any]] = []
    walls = {"flow": 0.0, "group_rmsprop": 0.0, "nuclear_norm_min": 0.0}
    for seed in range(seeds):
        for n_obs in s.n_obs:
            problem_cpu = make_problem(n_obs, seed)
            W_star = problem_cpu.ground_truth.to(torch.float64)
            common = {"n_obs": n_obs, "seed": seed, "problem_seed": seed}
            rows.append(
                {
                    **common,
                    "method": "ground_truth",
                    "depth": None,
                    "optimizer": None,
                    "init": None,
                    "init_scale": None,
                    "init_fro_norm": None,
                    "final_loss": 0.0,
                    **_matrix_row(W_star, W_star),
                }
            )
            if s.nnm and (s.nnm_n_obs is None or n_obs in s.nnm_n_obs):
                t0 = time.perf_counter()
                base = solve_baseline(problem_cpu)
                walls["nuclear_norm_min"] += time.perf_counter() - t0
                nnm_row: dict[str, Any] = {
                    **common,
                    "method": "nuclear_norm_min",
                    "depth": None,
                    "optimizer": base.solver,
                    "init": None,
                    "init_scale": None,
                    "init_fro_norm": None,
                    "status": base.status,
                    "solve_time_s": base.solve_time_s,
                    "max_violation": base.max_violation,
                }
                if base.error:
                    nnm_row["error"] = base.error
                if base.X is not None:
                    X = torch.as_tensor(base.X, dtype=torch.float64)
                    residuals = problem_cpu.residuals(X[None].to(W_star.dtype))
                    nnm_row["final_loss"] = float(residuals.square().mean())
                    nnm_row.update(_matrix_row(X, W_star))
                rows.append(nnm_row)
                log(
                    f"seed {seed} n_obs {n_obs}: nuclear-norm min recon_mse "
                    f"{nnm_row.get('recon_mse', math.nan):.3e} ({base.solve_time_s:.1f} s, "
                    f"{base.solver} {base.status})"
                )
            problem = problem_cpu.to(dtype, dev)
            objective = DMFObjective(problem, s.loss)
            for depth in s.depths:
                for opt_name in s.optimizers:
                    scales = _scales_for(s, opt_name, depth, n_obs, seed)
                    if not scales:
                        continue
                    batch = dev.type == "cuda" if s.batch is None else s.batch
                    groups = [list(scales)] if batch else [[x] for x in scales]
                    for group in groups:
                        factors, norms = init_dmf(
                            problem.shape,
                            depth,
                            init=s.init,
                            init_scale=group,
                            seeds=[seed] * len(group),
                            dtype=dtype,
                            device=dev,
                        )
                        t0 = time.perf_counter()
                        with one_thread():
                            res = train(
                                factors,
                                objective,
                                _optimizer(opt_name, s),
                                _stop(opt_name, s),
                                Schedule(per_decade=2),
                            )
                        wall = time.perf_counter() - t0
                        walls[opt_name] += wall
                        base_row = {
                            **common,
                            "method": "dmf",
                            "depth": depth,
                            "optimizer": opt_name,
                            "lr": s.rmsprop_lr if opt_name == "group_rmsprop" else None,
                            "init": s.init,
                            "loss_name": s.loss,
                        }
                        new = _model_rows(res, norms, problem, base_row, group, wall)
                        rows.extend(new)
                        for r in new:
                            log(
                                f"seed {seed} n_obs {n_obs} depth {depth} {opt_name} init "
                                f"{r['init_scale']:.0e}: recon_mse {r['recon_mse']:.3e} "
                                f"({r['status']}, loss {r['final_loss']:.2e}, "
                                f"{r['steps']} steps, batch {wall:.1f} s)"
                            )
    return rows, walls


# --------------------------------------------------------------------------- claims


def _sel(rows: Sequence[dict[str, Any]], **eq: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(r.get(k) == v for k, v in eq.items())]


def _mean(rows: Sequence[dict[str, Any]], key: str) -> float:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else math.nan


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    rx = np.argsort(np.argsort(x))
    ry = np.argsort(np.argsort(y))
    if len(x) < 2 or np.std(rx) == 0 or np.std(ry) == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def completion_claims(
    rows: Sequence[dict[str, Any]],
    *,
    deep_max: float = 1e-4,
    nnm_min: float = 1e-2,
    erank_tol: float = 0.2,
    nnm_erank_excess: float = 1.5,
    agree_factor: float = 3.0,
    primary: str = "flow",
    paper: dict[str, Any] | None = None,
    what: str = "observations",
    include: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The claims of section A, computed from the rows. ``n_low``/``n_high`` are the smallest and
    largest observation counts in the grid (2000 and 5000 at paper scale); means are over seeds
    and init scales of the ``primary`` optimizer's runs."""
    paper = PAPER_NUMBERS if paper is None else paper
    dmf = _sel(rows, method="dmf")
    ns = sorted({r["n_obs"] for r in rows})
    out: list[dict[str, Any]] = []
    if not ns:
        return out
    n_low, n_high = ns[0], ns[-1]
    low = [r for r in rows if r["n_obs"] == n_low]
    nnm_low = _sel(low, method="nuclear_norm_min")
    gt_low = _sel(low, method="ground_truth")
    deep_depths = sorted({r["depth"] for r in dmf if r["depth"] >= 3})

    # 1. depth >= 3 recovers at n_low, NNM does not
    deep = {d: _sel(low, method="dmf", depth=d, optimizer=primary) for d in deep_depths}
    measured = {f"depth{d}_mean": _mean(v, "recon_mse") for d, v in deep.items() if v}
    measured.update({f"depth{d}_max": max(r["recon_mse"] for r in v) for d, v in deep.items() if v})
    measured["nnm_mean"] = _mean(nnm_low, "recon_mse")
    nnm_low = [r for r in nnm_low if r.get("recon_mse") is not None]  # solved ones
    if nnm_low:
        measured["nnm_min"] = min(r["recon_mse"] for r in nnm_low)
    ok: bool | None
    if not any(deep.values()) or not nnm_low:
        ok, detail = None, "needs depth >= 3 runs and the nuclear-norm baseline at n_low"
    else:
        ok = all(measured[f"depth{d}_mean"] <= deep_max for d, v in deep.items() if v) and (
            measured["nnm_mean"] >= nnm_min
        )
        detail = f"means over seeds and init scales ({primary}); n_low = {n_low}"
    out.append(
        claim(
            "deep_beats_nnm",
            f"at {n_low} {what}, depth >= 3 reaches recon_mse <= {deep_max:g} while "
            f"nuclear-norm minimization stays >= {nnm_min:g}",
            paper=paper.get("recon_mse_2000"),
            measured=measured,
            holds=ok,
            detail=detail,
        )
    )

    # 2. nuclear norm larger than NNM's, effective rank of depth 3 ~ ground truth, NNM's above
    d3 = _sel(low, method="dmf", depth=3, optimizer=primary)
    m2 = {
        "depth3_nuclear_norm": _mean(d3, "nuclear_norm"),
        "nnm_nuclear_norm": _mean(nnm_low, "nuclear_norm"),
        "ground_truth_nuclear_norm": _mean(gt_low, "nuclear_norm"),
        "depth3_effective_rank": _mean(d3, "effective_rank"),
        "nnm_effective_rank": _mean(nnm_low, "effective_rank"),
        "ground_truth_effective_rank": _mean(gt_low, "effective_rank"),
    }
    if not d3 or not nnm_low or not gt_low:
        ok2: bool | None = None
        detail2 = "needs depth-3 runs, the baseline and the ground truth at n_low"
    else:
        ok2 = (
            m2["depth3_nuclear_norm"] > m2["nnm_nuclear_norm"]
            and abs(m2["depth3_effective_rank"] - m2["ground_truth_effective_rank"]) <= erank_tol
            and m2["nnm_effective_rank"] - m2["ground_truth_effective_rank"] >= nnm_erank_excess
        )
        detail2 = (
            f"depth-3 minus NNM nuclear norm {m2['depth3_nuclear_norm'] - m2['nnm_nuclear_norm']:.2f}; "
            f"|erank(depth 3) - erank(W*)| = "
            f"{abs(m2['depth3_effective_rank'] - m2['ground_truth_effective_rank']):.3f}; "
            f"erank(NNM) - erank(W*) = "
            f"{m2['nnm_effective_rank'] - m2['ground_truth_effective_rank']:.3f}"
        )
    out.append(
        claim(
            "depth_gives_up_min_nuclear_norm",
            f"at {n_low} {what}, the depth-3 solution has a larger nuclear norm than the "
            f"nuclear-norm solution, and an effective rank within {erank_tol} of the ground "
            f"truth's, while the nuclear-norm solution's exceeds it by >= {nnm_erank_excess}",
            paper={
                "nuclear_norm": paper.get("nuclear_norm_2000"),
                "effective_rank": paper.get("effective_rank_2000"),
            },
            measured=m2,
            holds=ok2,
            detail=detail2,
        )
    )

    # 3. depth-2 error grows with init scale
    d2 = _sel(low, method="dmf", depth=2, optimizer=primary)
    scales = sorted({r["init_scale"] for r in d2})
    by_scale = {sc: _mean(_sel(d2, init_scale=sc), "recon_mse") for sc in scales}
    if len(scales) < 2:
        ok3: bool | None = None
        detail3 = "needs depth-2 runs at >= 2 init scales"
        rho = math.nan
    else:
        rho = _spearman(scales, [by_scale[sc] for sc in scales])
        ok3 = by_scale[scales[-1]] > by_scale[scales[0]] and rho >= 0.8
        detail3 = (
            "holds when the mean error at the largest init exceeds the one at the smallest and "
            "the Spearman rank correlation of init scale and mean error is >= 0.8"
        )
    out.append(
        claim(
            "depth2_error_grows_with_init",
            f"at {n_low} {what}, the depth-2 reconstruction error grows with the init scale",
            paper=paper.get("depth2_range_2000"),
            measured={"recon_mse_by_init_scale": by_scale, "spearman": rho},
            holds=ok3,
            detail=detail3,
        )
    )

    # 4. everything recovers at n_high (depth 1 excluded: it only fits the observed entries)
    high = [r for r in rows if r["n_obs"] == n_high]
    parts: dict[str, float] = {}
    for d in sorted({r["depth"] for r in dmf if r["depth"] >= 2}):
        v = _sel(high, method="dmf", depth=d)
        if v:
            parts[f"depth{d}_max"] = max(r["recon_mse"] for r in v)
    nnm_high = [r for r in _sel(high, method="nuclear_norm_min") if r.get("recon_mse") is not None]
    if nnm_high:
        parts["nnm_max"] = max(r["recon_mse"] for r in nnm_high)
    if n_high == n_low or not parts:
        ok4: bool | None = None
        detail4 = "needs a second, larger observation count"
    else:
        ok4 = all(v <= deep_max for v in parts.values())
        detail4 = f"largest error over every seed, init scale and optimizer at n_high = {n_high}"
        if not nnm_high:
            detail4 += "; the nuclear-norm baseline was not solved at n_high"
    methods = "nuclear-norm minimization and depth >= 2" if nnm_high else "depth >= 2"
    out.append(
        claim(
            "all_recover_at_high_n",
            f"at {n_high} {what} every method ({methods}) reaches recon_mse <= {deep_max:g}",
            paper=paper.get("recon_mse_5000"),
            measured=parts,
            holds=ok4,
            detail=detail4,
        )
    )

    # 5. flow vs the paper's optimizer
    pairs = []
    for r in _sel(dmf, optimizer="group_rmsprop"):
        twin = _sel(
            dmf,
            optimizer=primary,
            depth=r["depth"],
            n_obs=r["n_obs"],
            seed=r["seed"],
            init_scale=r["init_scale"],
        )
        if twin and primary != "group_rmsprop":
            pairs.append(
                {
                    "depth": r["depth"],
                    "n_obs": r["n_obs"],
                    "seed": r["seed"],
                    "init_scale": r["init_scale"],
                    "recon_mse_group_rmsprop": r["recon_mse"],
                    f"recon_mse_{primary}": twin[0]["recon_mse"],
                    "ratio": twin[0]["recon_mse"] / r["recon_mse"],
                }
            )
    worst = max((max(p["ratio"], 1 / p["ratio"]) for p in pairs), default=math.nan)
    out.append(
        claim(
            "flow_matches_group_rmsprop",
            f"gradient flow and the paper's group RMSProp reach the same final recon_mse within "
            f"a factor {agree_factor:g} on every configuration run with both",
            paper=None,
            measured={"worst_factor": worst, "pairs": pairs},
            holds=None if not pairs else worst <= agree_factor,
            detail=None if pairs else "no configuration was run with both optimizers",
        )
    )
    return out if include is None else [c for c in out if c["id"] in include]


# --------------------------------------------------------------------------- entry point


NNM_SOLVERS = ("admm", "scs")


def check_nnm_solver(name: str) -> str:
    """``name`` if it is one of :data:`NNM_SOLVERS`, else a ValueError naming them."""
    if name not in NNM_SOLVERS:
        raise ValueError(f"nnm_solver must be one of {NNM_SOLVERS}, got {name!r}")
    return name


def _solve_nnm_completion(problem: Problem, tol: float, solver: str) -> BaselineResult:
    """Nuclear-norm minimization on the observed entries, by ``solver``: ``"admm"``
    (:func:`~factorflow.baselines.nuclear_norm.nuclear_norm_min_admm`: 1.1 s at 2000 entries,
    32 s at 5000) or ``"scs"`` (CVXPY + SCS: 13 s and 70 s; ``benchmarks/bench_nuclear_norm.py``,
    one core)."""
    from factorflow.baselines.nuclear_norm import (
        SolverError,
        nuclear_norm_min,
        nuclear_norm_min_admm,
    )

    assert isinstance(problem, MatrixCompletion)
    solve = nuclear_norm_min_admm if check_nnm_solver(solver) == "admm" else nuclear_norm_min
    try:
        res = solve(problem.obs, tol=tol, allow_inaccurate=True)
    except SolverError as e:
        return BaselineResult(None, "failed", math.nan, math.nan, str(e), solver)
    note = None if res.status == "optimal" else f"{res.solver} status {res.status}"
    return BaselineResult(res.X, res.status, res.solve_time_s, res.max_violation, note, solver)


def finish(
    out_dir: Path,
    s: Settings,
    seeds: int,
    device: str,
    rows: list[dict[str, Any]],
    walls: dict[str, float],
    claims: list[dict[str, Any]],
    figure_prefix: str,
    title: str,
) -> dict[str, Any]:
    """Write the figures (drawn from the rows) and assemble the summary."""
    from factorflow.plotting.arora2019 import recovery_figure

    figures = []
    for n in s.n_obs:
        fig = recovery_figure(rows, n_obs=n, title=f"{title}, {n} observations")
        figures.append(save_figure(fig, out_dir, f"{figure_prefix}_{n}"))
    return {
        "config": {
            **dataclasses.asdict(s),
            "seeds": seeds,
            "device": device,
            "wall_s_by_part": walls,
        },
        "rows": rows,
        "claims": claims,
        "figures": figures,
    }


def settings_for(scale: str, options: dict[str, Any]) -> Settings:
    """The scale's defaults with ``options`` applied."""
    if scale not in ("quick", "paper"):
        raise ValueError(f"scale must be quick or paper, got {scale!r}")
    return apply_options(QUICK if scale == "quick" else PAPER_SCALE, options)


def run(
    out_dir: Path,
    *,
    scale: str = "quick",
    seeds: int | None = None,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the grid, solve the baseline, compute the claims, draw one figure per observation
    count (``completion_<n>.png``); returns the summary (see the module doc)."""
    s = settings_for(scale, dict(options or {}))
    check_nnm_solver(s.nnm_solver)
    k = n_seeds(seeds, scale, SEEDS["quick"], SEEDS["paper"])
    Path(out_dir).mkdir(parents=True, exist_ok=True)

    def make_problem(n_obs: int, seed: int) -> Problem:
        return synthetic_completion(s.shape, s.rank, n_obs, seed)

    rows, walls = run_grid(
        s, k, device, make_problem, lambda p: _solve_nnm_completion(p, s.nnm_tol, s.nnm_solver)
    )
    claims = completion_claims(rows)
    return finish(Path(out_dir), s, k, device, rows, walls, claims, "completion", "Completion")
