"""Tensor completion by CP factorization from small init against the memorizer and masked CP-ALS:
the cells Razin & Cohen (NeurIPS 2020, appendix) run, as tidy rows, and the quantities their
claims read off them.

:func:`recovery_cell` fits one observed target (a :class:`~factorflow.problems.completion.
Completion` of a known ``W*``): the memorizer and masked CP-ALS at the target's rank, a CP
factorization with ``R = prod(dims) / max(dims)`` components from inits ``N(0, init^2)`` trained
by a discrete optimizer under the authors' patience stop rule (:func:`factorflow.dynamics.
train_patience`; rows ``stop_rule = "paper"`` at the patience stop and ``"mse<1e-06"`` at the
first crossing), and optionally gradient flow stopped exactly at each of a list of losses in
turn (one row per loss). Each row says which ``optimizer`` produced it. :func:`add_ranks` then
estimates the CP rank of chosen rows' fitted tensors (smallest R whose CP-ALS fit reaches
mse < 1e-6, :func:`factorflow.baselines.tensor.capped_tensor_rank`).

Metrics: ``rel_fro_error = ||W - W*||_F / ||W*||_F`` and ``recon_mse`` over the full tensor;
``n_large_components`` = components with norm above ``large_frac`` times the largest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from factorflow.baselines.tensor import capped_tensor_rank, masked_cp_als, memorizer
from factorflow.config import OptimizerConfig
from factorflow.dynamics import Patience, Schedule, Stop, train, train_patience
from factorflow.experiment import NotJudged
from factorflow.factorizations.cp import component_norms, cp_predict, cp_to_tensor, init_cp
from factorflow.fit import build_optimizer
from factorflow.objectives import CPObjective
from factorflow.problems.completion import Completion

__all__ = [
    "COLUMNS",
    "PAPER_STOP",
    "DenseCPObjective",
    "add_ranks",
    "als_comparison",
    "init_batch",
    "init_effect",
    "order4_recovered",
    "recovered",
    "recovery_cell",
    "solution_rank",
    "tensor_rel_errors",
]

PAPER_STOP = "paper"  #: stop_rule of the rows stopped by the authors' patience rule

#: The row schema: one row per fitted tensor (a run, or a baseline on one observed target).
COLUMNS = {
    "setting": "str",  # recovery | recovery_extra_target | als_comparison
    "method": "str",  # cp_gd | cp_flow | memorizer | masked_cp_als
    "optimizer": "str",  # group_rmsprop (or the grid's discrete optimizer), flow:<integrator>, als, none
    "order": "int",
    "dims": "json",
    "target_rank": "int",
    "target_seed": "int",
    "n_obs": "int",
    "obs_frac": "float",
    "R": "int",
    "init_scale": "float",
    "stop_rule": "str",
    "loss": "str",
    "seed": "int",
    "final_loss": "float",
    "rel_fro_error": "float",
    "recon_mse": "float",
    "estimated_rank": "int",
    "estimated_rank_capped": "bool",
    "n_large_components": "int",
    "status": "str",
    "steps": "int",
    "nfev": "int",
    "flow_time": "float",
}


class DenseCPObjective(CPObjective):
    """:class:`CPObjective` predicting through the full tensor (``cp_predict(method="dense")``):
    at 8^3 to 16^3 entries one batched matrix product is cheaper than gathering ``(B, m, R)``
    blocks (measured: ~3x per gradient at 8^4, R = 512, m = 500, B = 10). Same values up to
    rounding."""

    def residuals(self, factors: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(factors) != self.obs.order:
            raise ValueError(
                f"{len(factors)} factors for an order-{self.obs.order} tensor of shape "
                f"{self.obs.shape}"
            )
        dims = tuple(int(f.shape[1]) for f in factors)
        if dims != tuple(self.obs.shape):
            raise ValueError(f"factor dims {dims} do not match the observed shape {self.obs.shape}")
        return cp_predict(factors, self.obs.indices, method="dense") - self.obs.values


def tensor_rel_errors(W: torch.Tensor, W_star: torch.Tensor) -> torch.Tensor:
    """``||W_b - W*||_F / ||W*||_F`` for a batch ``W`` ``(B, *dims)`` -> ``(B,)``."""
    diff = (W.reshape(W.shape[0], -1) - W_star.reshape(1, -1).to(W)).norm(dim=1)
    return diff / W_star.norm()


def init_batch(
    dims: Sequence[int],
    R: int,
    runs: Sequence[tuple[float, int]],
    base_seed: int,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> list[torch.Tensor]:
    """Factors ``[(B, d_n, R)]`` for runs ``[(init_scale, seed), ...]``: seed ``s`` draws N(0, 1)
    factors once (CPU generator ``base_seed + s``), scaled by each run's init scale, so the inits
    of one seed start from the same direction."""
    draws: dict[int, list[torch.Tensor]] = {}
    for _, s in runs:
        if s not in draws:
            gen = torch.Generator().manual_seed(base_seed + s)
            draws[s] = init_cp(dims, R, 1.0, generator=gen, dtype=dtype, device=device)
    return [torch.cat([i * draws[s][n] for i, s in runs], dim=0) for n in range(len(dims))]


def _row(base: dict[str, Any], W_star: torch.Tensor, tensor: Any, cnorms: Any, large_frac: float,
         **fields: Any) -> dict[str, Any]:  # fmt: skip
    W = torch.as_tensor(np.asarray(tensor)).reshape(W_star.shape)
    row = {**base, **fields}
    row["rel_fro_error"] = float(tensor_rel_errors(W[None], W_star)[0])
    row["recon_mse"] = float(((W - W_star) ** 2).mean())
    if cnorms is not None:
        c = np.asarray(cnorms)
        row["n_large_components"] = int((c > large_frac * c.max()).sum())
    return row


def recovery_cell(
    setting: str,
    W_star: torch.Tensor,
    obs: Completion,
    *,
    target_rank: int,
    target_seed: int,
    inits: Sequence[float],
    n_runs: int,
    gd: OptimizerConfig,
    patience: Patience,
    max_steps: int,
    flow: OptimizerConfig | None = None,
    flow_inits: Sequence[float] = (),
    flow_losses: Sequence[float] = (),
    flow_max_evals: int = 10_000,
    loss: str = "mse",
    batch_inits: bool = True,
    base_seed: int = 10_000,
    als_seed: int = 0,
    large_frac: float = 0.1,
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
) -> tuple[list[dict[str, Any]], list[np.ndarray], dict[str, np.ndarray]]:
    """Fit one observed target (see the module doc): ``n_runs`` seeds x ``inits`` by ``gd``
    (a discrete optimizer) under ``patience`` (pass 1 capped at ``max_steps``), in one batch
    (``batch_inits``) or one per init; flow (``flow``, when given) at ``flow_inits`` to each of
    ``flow_losses`` in turn, at most ``flow_max_evals`` gradient evaluations per loss. Empty
    ``inits`` runs no discrete optimizer (a cell fitted by the flow alone). Returns
    ``(rows, fitted tensors (one per row), accepted flow times per phase)``."""
    if gd.name == "flow":
        raise ValueError("the CP-GD optimizer must be discrete; flow rows come from `flow`")
    dims, W_star = tuple(obs.shape), W_star.detach().cpu().to(torch.float64)
    R = math.prod(sorted(dims)[:-1])
    objective = DenseCPObjective(obs.to(torch.float64, device), loss)
    base = {k: None for k in COLUMNS} | {
        "setting": setting, "order": len(dims), "dims": list(dims), "target_rank": target_rank,
        "target_seed": target_seed, "n_obs": obs.n_obs, "obs_frac": obs.n_obs / math.prod(dims),
    }  # fmt: skip
    rows, tensors, arrays = [], [], {}
    mem = memorizer(obs)
    rows.append(_row(base, W_star, mem, None, large_frac, method="memorizer", optimizer="none",
                     final_loss=0.0, status="exact"))  # fmt: skip
    als = masked_cp_als(obs, target_rank, random_state=als_seed)
    fit = float(np.mean((als[tuple(obs.indices.numpy().T)] - obs.values.numpy()) ** 2))
    rows.append(_row(base, W_star, als, None, large_frac, method="masked_cp_als", optimizer="als",
                     R=target_rank, loss="mse", final_loss=fit, status="done"))  # fmt: skip
    tensors += [mem, als]
    probes = {"tensor": lambda p: cp_to_tensor(p).reshape(p[0].shape[0], -1),
              "cnorms": component_norms}  # fmt: skip
    first_rule = f"mse<{patience.loss_below:g}"
    groups = [list(inits)] if batch_inits else [[i] for i in inits]
    for group in [g for g in groups if g]:
        runs = [(init, s) for init in group for s in range(n_runs)]
        p0 = init_batch(dims, R, runs, base_seed, device=device)
        res = train_patience(p0, objective, build_optimizer(gd), patience, max_steps, probes)
        log(f"  {setting} m={obs.n_obs} {gd.name} inits {group}: replay to {res.horizon} steps, "
            f"{sum(res.wall_s):.1f}s")  # fmt: skip
        f = res.first
        for b, (init, s) in enumerate(runs):
            run = {"method": "cp_gd", "optimizer": gd.name, "R": R, "init_scale": init,
                   "loss": loss, "seed": s}  # fmt: skip
            for rule, vals, fl, st, stat in (
                (PAPER_STOP, res.values, res.loss[b], res.steps[b], res.status[b]),
                (first_rule, res.first_values, f.final_loss[b], f.steps[b], f.status[b]),
            ):
                rows.append(_row(base, W_star, vals["tensor"][b], vals["cnorms"][b], large_frac,
                                 **run, stop_rule=rule, final_loss=float(fl), steps=int(st),
                                 status=stat))  # fmt: skip
                tensors.append(np.asarray(vals["tensor"][b]).reshape(dims))
    for init in flow_inits if flow is not None else ():
        params = init_batch(dims, R, [(init, s) for s in range(n_runs)], base_seed, device=device)
        for phase, thr in enumerate(flow_losses):
            res = train(params, objective, build_optimizer(flow),
                        Stop(loss_below=thr, max_evals=flow_max_evals), Schedule(per_decade=2))  # fmt: skip
            params = res.params
            W, c = cp_to_tensor([p.detach() for p in params]), component_norms(params)
            method, nfev = res.info.get("method"), int(res.info.get("nfev", res.n_evals))
            key = f"o{len(dims)}_r{target_rank}_m{obs.n_obs}_i{init:g}_p{phase}"
            arrays[key] = np.asarray(res.info.get("accepted_t", [0.0]), dtype=np.float64)
            log(f"  flow {key}: {method}, {nfev} evals, statuses {res.status}")
            for s in range(n_runs):
                rows.append(_row(base, W_star, W[s].cpu().numpy(), c[s].cpu().numpy(),
                                 large_frac, method="cp_flow", optimizer=f"flow:{method}", R=R,
                                 init_scale=init, stop_rule=f"mse<{thr:g}", loss=loss, seed=s,
                                 final_loss=float(res.final_loss[s]), steps=int(res.steps[s]),
                                 status=res.status[s], nfev=nfev,
                                 flow_time=float(res.time[s])))  # fmt: skip
                tensors.append(W[s].cpu().numpy())
    return rows, tensors, arrays


def add_ranks(
    rows: list[dict[str, Any]],
    tensors: Sequence[np.ndarray],
    wanted: Callable[[dict[str, Any]], bool],
    max_rank: int,
) -> None:
    """Set ``estimated_rank`` / ``estimated_rank_capped`` (capped: more than ``max_rank``) of the
    rows for which ``wanted(row)``, from their fitted tensors (identical tensors estimated once)."""
    cache: dict[bytes, tuple[int, bool]] = {}
    for row, tensor in zip(rows, tensors, strict=True):
        if not wanted(row):
            continue
        key = np.ascontiguousarray(tensor).tobytes()
        if key not in cache:
            cache[key] = capped_tensor_rank(tensor, max_rank)
        row["estimated_rank"], row["estimated_rank_capped"] = cache[key]


# ------------------------------------------------------------------------ claim measurements


def _sel(rows: pd.DataFrame, init: float | None = None, **eq: Any) -> pd.DataFrame:
    mask = pd.Series(True, index=rows.index)
    for k, v in eq.items():
        col = rows[k]
        mask &= col.isin(v) if isinstance(v, list | tuple) else (col == v).fillna(False)
    if init is not None:
        mask &= np.isclose(rows["init_scale"].astype(float), init, rtol=1e-9, atol=0.0)
    return rows[mask]


def _med(x: pd.Series) -> float | None:
    x = x.dropna().astype(float)
    return float(np.median(x)) if len(x) else None


def recovered(rows: pd.DataFrame, n_obs: int, stop_loss: float = 1e-6) -> dict[str, Any]:
    """Rank-1 order-3 CP-GD at ``n_obs`` observations, init 1e-3, paper stop, over every target
    instance: the median ``rel_fro_error`` (and quartiles, per instance), with instance 0's
    first-crossing and flow errors beside it."""
    cell = dict(order=3, target_rank=1, n_obs=n_obs)
    gd = _sel(rows, 1e-3, **cell, setting=["recovery", "recovery_extra_target"], method="cp_gd",
              stop_rule=PAPER_STOP)  # fmt: skip
    if gd.empty:
        raise NotJudged(f"no CP-GD rows at order 3, rank 1, {n_obs} observations, init 1e-3")
    err = gd["rel_fro_error"].astype(float)
    inst0 = _sel(rows, 1e-3, **cell, setting="recovery", method="cp_gd")
    first = inst0[inst0["stop_rule"] == f"mse<{stop_loss:g}"]
    paper = inst0[inst0["stop_rule"] == PAPER_STOP]
    flow = _sel(rows, 1e-3, **cell, setting="recovery", method="cp_flow")
    return {
        "median_rel_fro_error": float(err.median()),
        "quartiles": [float(q) for q in err.quantile([0.25, 0.75])],
        "median_per_target_instance": {
            str(k): float(v) for k, v in err.groupby(gd["target_seed"]).median().items()
        },
        "n_runs": len(gd),
        "instance0_per_run_rel_fro_error": [float(x) for x in paper["rel_fro_error"]],
        "instance0_per_run_final_train_mse": [float(x) for x in paper["final_loss"]],
        "instance0_per_run_n_large_components": [int(x) for x in paper["n_large_components"]],
        "instance0_first_crossing_median_rel_fro_error": _med(first["rel_fro_error"]),
        "instance0_flow_median_rel_fro_error": {
            str(k): _med(g["rel_fro_error"]) for k, g in flow.groupby("stop_rule", sort=False)
        },
    }


def solution_rank(rows: pd.DataFrame, n_obs: int) -> dict[str, Any]:
    """Estimated ranks at ``n_obs`` (order 3, rank 1, instance 0): the median over CP-GD runs at
    init 1e-3 (paper stop) and the memorizer's (with its cap flag)."""
    cell = dict(setting="recovery", order=3, target_rank=1, n_obs=n_obs)
    gd = _sel(rows, 1e-3, **cell, method="cp_gd", stop_rule=PAPER_STOP)
    mem = _sel(rows, **cell, method="memorizer")
    ranks = gd["estimated_rank"].dropna()
    if ranks.empty or mem.empty or pd.isna(mem["estimated_rank"].iloc[0]):
        raise NotJudged("ranks not estimated in this run (rank_for = 'none' or cell not run)")
    return {
        "cp_gd_median_rank": float(np.median(ranks.astype(float))),
        "cp_gd_estimated_ranks": [int(r) for r in ranks],
        "memorizer_estimated_rank": int(mem["estimated_rank"].iloc[0]),
        "memorizer_rank_capped": bool(mem["estimated_rank_capped"].iloc[0]),
    }


def init_effect(rows: pd.DataFrame, n_obs: int) -> dict[str, Any]:
    """Median CP-GD error at init 1e-2 over that at init 1e-3 (``ratio``), at ``n_obs``, over the
    instances run at both inits (instance 0)."""
    cell = dict(setting="recovery", order=3, target_rank=1, n_obs=n_obs, method="cp_gd",
                stop_rule=PAPER_STOP)  # fmt: skip
    hi = _med(_sel(rows, 1e-2, **cell)["rel_fro_error"])
    lo = _med(_sel(rows, 1e-3, **cell)["rel_fro_error"])
    if hi is None or lo is None or lo <= 0:
        raise NotJudged(f"no CP-GD rows at both inits at {n_obs} observations")
    return {"median_init_1e-2": hi, "median_init_1e-3": lo, "ratio": hi / lo}


def als_comparison(rows: pd.DataFrame) -> dict[str, Any]:
    """The comparison cell: median CP-GD error (paper stop) over masked CP-ALS's
    (``gd_over_als`` < 1: CP-GD is better)."""
    gd = _sel(rows, setting="als_comparison", method="cp_gd", stop_rule=PAPER_STOP)
    als = _sel(rows, setting="als_comparison", method="masked_cp_als")
    mem = _sel(rows, setting="als_comparison", method="memorizer")
    if gd.empty or als.empty:
        raise NotJudged("the CP-ALS comparison was not run")
    g, a = _med(gd["rel_fro_error"]), float(als["rel_fro_error"].iloc[0])
    return {
        "cp_gd_median_rel_fro_error": g,
        "masked_cp_als_rel_fro_error": a,
        "memorizer_rel_fro_error": _med(mem["rel_fro_error"]),
        "gd_over_als": g / a,
    }


def _last_flow_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The flow rows at the lowest loss each run reached (the last ``mse<...`` phase): the
    flow's analogue of the paper stop, which drives the loss far below its threshold."""
    if rows.empty:
        return rows
    thr = rows["stop_rule"].str.removeprefix("mse<").astype(float)
    return rows[np.isclose(thr, thr.min(), rtol=1e-9, atol=0.0)]  # losses below 1e-8 too


def order4_recovered(rows: pd.DataFrame, min_obs: int = 1000) -> dict[str, Any]:
    """Rank-1 order-4 CP fits at init 1e-3: median error per observation count ``>= min_obs``
    and the worst of these medians, from group RMSProp's rows at the paper stop, or, where the
    grid ran order 4 with the flow (no such rows), from the flow's rows at its lowest loss.
    ``optimizer`` and ``stop_rule`` say which rows were read."""
    cell = dict(setting="recovery", order=4, target_rank=1)
    gd = _sel(rows, 1e-3, **cell, method="cp_gd", stop_rule=PAPER_STOP)
    gd = gd[gd["n_obs"] >= min_obs]
    if gd.empty:
        flow = _sel(rows, 1e-3, **cell, method="cp_flow")
        gd = _last_flow_rows(flow[flow["n_obs"] >= min_obs])
    if gd.empty:
        raise NotJudged(f"order 4 not run at this scale (no rows with >= {min_obs} observations)")
    meds = {str(k): float(v) for k, v in gd.groupby("n_obs")["rel_fro_error"].median().items()}
    return {
        "median_by_n_obs": meds,
        "worst_median": max(meds.values()),
        "optimizer": sorted(str(x) for x in gd["optimizer"].dropna().unique()),
        "stop_rule": sorted(str(x) for x in gd["stop_rule"].dropna().unique()),
    }
