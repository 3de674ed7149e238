"""Tensor completion recovery (Razin & Cohen 2020, appendix; PAPERS.md section D).

Setting: an ``8 x 8 x 8`` (order 3) or ``8 x 8 x 8 x 8`` (order 4) target of CP rank 1 (and 3),
factors i.i.d. N(0, 1) scaled so ``||W*||_F = 1``. A CP factorization with ``R`` = the product of
all dims but the largest (64 / 512) components, factors i.i.d. ``N(0, init^2)``, init in
{1e-2, 1e-3}, is fitted to ``n_obs`` observed entries with the loss ``mse`` (mean squared residual
over the observations). Reported against ``n_obs``: the median (and quartiles over seeds) of
``rel_fro_error = ||W - W*||_F / ||W*||_F`` over the full tensor, and the estimated CP rank of
the fitted tensor (the smallest R whose CP-ALS fit reaches ``mse < 1e-6``,
:func:`factorflow.baselines.tensor.estimate_tensor_rank`), next to the "memorizer" (observed
entries, zeros elsewhere) and masked CP-ALS (TensorLy, at the target's rank).

What follows the original code (noamrazin/imp_reg_dl_not_norms; read for its settings, none of
its code is used):

* one fixed target per (order, rank) and one fixed random order of the entries; ``n_obs``
  observes its first ``n_obs`` entries (nested sets); repetitions ("seeds") differ only in the
  random initialization;
* the optimizer: group RMSProp, lr 1e-2, beta 0.99, **eps 1e-6** (that code's default; the
  engine's default 1e-4 is Arora et al.'s);
* the stop rule: the train mse is checked every 100 steps and training stops once it was below
  1e-6 at **three consecutive checks** (its ``StopOnZeroTrainLoss`` with patience 2, validation
  every 100 epochs). The runs thus go on for 200-300 steps past the first crossing of 1e-6, in
  which normalized steps drive the loss far lower (often ~1e-14): this, not the 1e-6 itself,
  is what gives the published errors of ~5e-6. We run it in two passes over the same
  deterministic batch: pass 1 stops each run at its first step with mse <= 1e-6 (reported too,
  ``stop_rule = "mse<1e-06"``); pass 2 replays the batch (no run frozen) up to the last run's
  bound and reads each run's state at its third consecutive check (``stop_rule = "paper"``).

Gradient flow (``method = "cp_flow"``): the same inits (by default init 1e-3 only), one batch
per init scale, integrated by the engine's :class:`~factorflow.dynamics.Flow` ("auto" is RK45
here: the states have thousands of numbers, too many for LSODA's finite-difference Jacobians),
stopped exactly at train mse 1e-6, then continued (flow has no optimizer state, so continuing is
exact) to 1e-9 and 1e-12; one row per threshold. The error left at a threshold is set by that
loss and by the small components left over from the init. Where each phase spends its steps is
written to ``flow_steps.npz`` and summarized in ``summary["flow_steps"]``: the escape from small
init takes few, growing steps; once the target is fitted the system is stiff and RK45's steps are
stability-limited (a nearly constant step size, ~250 time units at 8^3 with 200 observations),
so runs whose remaining directions are flat (a second component that has not died out) need
long times; each phase is capped at ``flow_max_evals`` gradient evaluations and such runs are
reported with status ``max_evals`` (not replaced by GD).

Also: a 16 x 16 x 16 rank-3 target with 10% of its entries observed, CP-GD (same optimizer and
stop rule, R = 256) against masked CP-ALS at the true rank (TensorLy 0.10 ended at relative
error 1.78 on one such instance).

Cost (2 shared CPU cores, ``FACTORFLOW_THREADS=1``; the default two intra-op threads were ~6x
slower under load): ``--scale quick`` ~1 minute. ``--scale paper`` is dominated by order 4 at
init 1e-3: with the original eps = 1e-6 the initial gradients (~init^3) are far below eps, so
group RMSProp is plain GD with lr 1e4 and sits at zero for ~4.4e4 steps (measured: 43,511 steps
to mse 1e-6 at 1000 observations; gradient flow needs t ~ 4.9e8, i.e. 4.9e4 such steps) at
~10-25 ms per step for a batch of 5, and the paper-stop replay (pass 2) repeats them: about
2,000 s per (rank, n_obs) cell, ~9 h for the 16 order-4 cells, plus ~1.5 h for the rest
(order-3 cells took 67-167 s each, order-4 init 1e-2, flow and rank estimates ~3 min per
cell): ~10.5 h in all (an estimate from measured per-cell times; not run end to end).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factorflow.dynamics import Flow, GroupRMSProp, Schedule, Stop, train
from factorflow.experiments.common import claim, n_seeds, scaled_config
from factorflow.factorizations.cp import component_norms, cp_predict, cp_to_tensor, init_cp
from factorflow.objectives import CPObjective
from factorflow.problems.completion import Completion
from factorflow.problems.tensor import low_rank_tensor, paper_setting

ID = "razin2020-tensor-recovery"
TITLE = "Tensor completion: recovery error and tensor rank vs number of observations"
PAPER = (
    "Razin & Cohen 2020, Implicit Regularization in Deep Learning May Not Be Explainable by "
    "Norms (NeurIPS), appendix: tensor completion experiments"
)

PAPER_STOP = "paper"  # stop_rule of the rows that follow the original stop rule


@dataclass(frozen=True)
class RecoveryConfig:
    """Everything the experiment depends on (saved in ``summary["config"]``).

    Recovery grid: ``orders`` x ``target_ranks`` x ``n_obs[order]``, dims ``dim`` per mode,
    ``init_scales`` x ``seeds`` runs per cell (``seeds=None``: the scale's default). Optimizer:
    group RMSProp (``lr``, ``beta``, ``eps``), stop rule: mse < ``stop_loss`` at ``n_checks``
    consecutive checks ``check_every`` steps apart, at most ``max_steps`` steps (an int, or a
    dict order -> int; default 20,000 at order 3 and 150,000 at order 4, where init 1e-3 sits at
    zero for ~5e4 steps: its gradients are far below eps, so the optimizer is GD with lr
    lr/eps = 1e4 until it escapes). ``batch_inits``: one batch for all inits of a cell
    (``True``), one per init (``False``), or ``"auto"``: together at order 3, apart at higher
    orders, where the two inits' run lengths differ ~100x and every step costs ~B. Flow: at
    ``flow_n_obs`` (None: all) and ``flow_inits``, thresholds ``flow_losses``, at most
    ``flow_max_evals`` gradient evaluations per threshold. Ranks: ``rank_for`` = ``"all"``
    (every CP-GD paper-stop, flow and baseline row), ``"claims"`` (only the rows the claims
    read) or ``"none"``; ranks above ``rank_max`` are reported as ``rank_max + 1`` with
    ``estimated_rank_capped``. Comparison: ``comparison_dim``^3 rank ``comparison_rank``,
    ``comparison_frac`` observed, ``comparison_seeds`` inits at ``comparison_init``.
    """

    orders: tuple[int, ...] = (3, 4)
    target_ranks: tuple[int, ...] = (1, 3)
    n_obs: dict[int, tuple[int, ...]] | None = None
    dim: int = 8
    init_scales: tuple[float, ...] = (1e-2, 1e-3)
    seeds: int | None = None
    loss: str = "mse"
    lr: float = 1e-2
    beta: float = 0.99
    eps: float = 1e-6
    stop_loss: float = 1e-6
    check_every: int = 100
    n_checks: int = 3
    extra_checks: int = 1
    max_steps: int | dict[int, int] | None = None
    batch_inits: bool | str = "auto"
    flow: bool = True
    flow_method: str = "auto"
    flow_n_obs: tuple[int, ...] | None = None
    flow_inits: tuple[float, ...] = (1e-3,)
    flow_losses: tuple[float, ...] = (1e-6, 1e-9, 1e-12)
    flow_max_evals: int = 10_000
    rank_for: str = "all"
    rank_max: int = 20
    large_frac: float = 0.1
    claim_n_obs: int = 200
    claim_targets: int = 3
    comparison: bool = True
    comparison_dim: int = 16
    comparison_rank: int = 3
    comparison_frac: float = 0.1
    comparison_seeds: int | None = None
    comparison_init: float = 1e-3
    target_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("orders", "target_ranks", "init_scales", "flow_inits", "flow_losses"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.flow_n_obs is not None:
            object.__setattr__(self, "flow_n_obs", tuple(int(m) for m in self.flow_n_obs))
        n_obs = self.n_obs
        if n_obs is None:
            n_obs = {o: _paper_n_obs(o) for o in self.orders}
        elif not isinstance(n_obs, dict):  # one list for every order
            n_obs = {o: tuple(n_obs) for o in self.orders}
        n_obs = {int(k): tuple(int(m) for m in v) for k, v in n_obs.items()}
        missing = [o for o in self.orders if o not in n_obs]
        if missing:
            raise ValueError(f"n_obs gives no observation counts for orders {missing}")
        object.__setattr__(self, "n_obs", n_obs)
        if any(o < 2 for o in self.orders) or self.dim < 1:
            raise ValueError(f"orders must be >= 2 and dim >= 1, got {self.orders}, {self.dim}")
        for o in self.orders:
            total = self.dim**o
            bad = [m for m in n_obs[o] if not 1 <= m <= total]
            if bad:
                raise ValueError(f"order {o}: n_obs {bad} outside 1..{total}")
        if any(r < 1 for r in self.target_ranks):
            raise ValueError(f"target ranks must be >= 1, got {self.target_ranks}")
        if not all(s > 0 for s in (*self.init_scales, *self.flow_inits, self.comparison_init)):
            raise ValueError("init scales must be > 0")
        if self.rank_for not in ("all", "claims", "none"):
            raise ValueError(f"rank_for must be all, claims or none, got {self.rank_for!r}")
        if self.check_every < 1 or self.n_checks < 1 or self.rank_max < 1:
            raise ValueError("check_every, n_checks and rank_max must be >= 1")
        steps = self.max_steps
        if steps is None:
            steps = {3: 20_000, 4: 150_000}
        if not isinstance(steps, dict):
            steps = {o: int(steps) for o in (*self.orders, 3)}
        steps = {int(k): int(v) for k, v in steps.items()}
        for o in self.orders:
            steps.setdefault(o, max(steps.values()))
        if any(v < 1 for v in steps.values()):
            raise ValueError(f"max_steps must be >= 1, got {steps}")
        object.__setattr__(self, "max_steps", steps)
        if self.batch_inits not in (True, False, "auto"):
            raise ValueError(f"batch_inits must be true, false or 'auto', got {self.batch_inits!r}")
        if not 0 < self.comparison_frac <= 1:
            raise ValueError(f"comparison_frac must be in (0, 1], got {self.comparison_frac}")


def _paper_n_obs(order: int) -> tuple[int, ...]:
    name = {3: "razin2020-order3", 4: "razin2020-order4"}.get(order)
    if name is None:
        raise ValueError(f"no paper observation counts for order {order}; pass n_obs")
    return paper_setting(name).n_observations


#: per-scale defaults; ``options`` override any field (unknown keys are an error)
SCALES: dict[str, dict[str, Any]] = {
    "paper": {},
    # ~1-2 minutes on 2 CPU cores: order 3, rank 1, three observation counts (200 for the
    # claims), both inits, 5 seeds (a batch of 10 runs costs little more per step than one of
    # 6, and the paper-stop errors spread over decades from seed to seed, so 3 seeds give a
    # noisy median); flow only at 200 observations, init 1e-3, at most 2000 gradient
    # evaluations per threshold; ranks only where the claims need them (capped at 9: ">= 10"
    # is what the memorizer claim asks); the 16^3 comparison with one seed.
    "quick": {
        "orders": (3,),
        "target_ranks": (1,),
        "n_obs": {3: (100, 200, 300)},
        "max_steps": {3: 3_000},
        "flow_n_obs": (200,),
        "flow_max_evals": 2_000,
        "rank_for": "claims",
        "rank_max": 9,
        "comparison_seeds": 1,
    },
}


def make_config(scale: str, options: dict[str, Any]) -> RecoveryConfig:
    """The scale's config with ``options`` applied (unknown keys raise ``ValueError``)."""
    base = dict(SCALES.get(scale, {}))
    if "orders" in options and "n_obs" not in options and "n_obs" in base:
        base.pop("n_obs")  # the scale's counts are for its own orders
    return scaled_config(RecoveryConfig, SCALES, scale, options, ID, base=base)


# --------------------------------------------------------------------------------------------
# problem and metrics
# --------------------------------------------------------------------------------------------


class _DenseCPObjective(CPObjective):
    """:class:`CPObjective` predicting through the full tensor (``cp_predict(method="dense")``).

    The tensors here have at most 16^3 = 8^4 = 4096 entries, where one batched matrix product is
    cheaper than gathering ``(B, m, R)`` blocks; ``method="auto"`` picks gathering when
    ``prod(dims) > 8 m`` (measured on 2 CPU cores, float64, B = 10, R = 512, 8^4 with m = 500:
    dense ~3x faster per gradient). Same values up to rounding.
    """

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


def make_target(
    dims: Sequence[int], rank: int, seed: int, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """The target ``(dims)`` (CP rank ``rank``, N(0, 1) factors, ``||W*||_F = 1``) and a random
    order of its entries ``(prod(dims), order)``: the observed set of size m is its first m rows
    (nested sets, as in the original code's ``train_indices_order``). Seeded by ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    W, _ = low_rank_tensor(dims, rank, generator=gen, dtype=dtype)
    perm = torch.randperm(math.prod(dims), generator=gen)
    order = torch.stack(
        [torch.as_tensor(a) for a in np.unravel_index(perm.numpy(), tuple(dims))], dim=1
    ).to(torch.long)
    return W, order


def observe(W: torch.Tensor, order: torch.Tensor, n_obs: int) -> Completion:
    """The first ``n_obs`` entries of ``order`` observed (a :class:`Completion`)."""
    if not 1 <= n_obs <= order.shape[0]:
        raise ValueError(f"cannot observe {n_obs} of {order.shape[0]} entries")
    return Completion.from_array(W, order[:n_obs])


def tensor_rel_errors(W: torch.Tensor, W_star: torch.Tensor) -> torch.Tensor:
    """``||W_b - W*||_F / ||W*||_F`` for a batch ``W`` of shape ``(B, ...)`` -> ``(B,)``
    (Razin & Cohen 2020's reconstruction error, normalized)."""
    B = W.shape[0]
    diff = (W.reshape(B, -1) - W_star.reshape(1, -1).to(W)).norm(dim=1)
    return diff / W_star.norm()


def fitted_tensors(factors: Sequence[torch.Tensor], max_entries: int = 2**27) -> torch.Tensor:
    """Full fitted tensors ``(B, *dims)`` (raises a clear size error above ``max_entries``)."""
    return cp_to_tensor([f.detach() for f in factors], max_entries=max_entries)


def estimate_rank(tensor: np.ndarray, cfg: RecoveryConfig) -> tuple[int, bool]:
    """Papers' rank estimate (smallest R with ALS mse < 1e-6), capped at ``cfg.rank_max``:
    returns ``(rank, capped)``; ``capped`` means "more than ``rank_max``"."""
    import warnings

    from factorflow.baselines.tensor import estimate_tensor_rank

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = estimate_tensor_rank(
            np.asarray(tensor, dtype=np.float64), tol=1e-6, max_rank=cfg.rank_max
        )
    return int(r), bool(r > cfg.rank_max)


# --------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------


def _paper_stop_bound(first_below: int, cfg: RecoveryConfig) -> int:
    """Last step the paper's rule needs to see for a run first below ``stop_loss`` at step k:
    the first check at or after k, plus ``n_checks - 1`` more checks."""
    first_check = max(1, math.ceil(first_below / cfg.check_every)) * cfg.check_every
    return first_check + (cfg.n_checks - 1) * cfg.check_every


def _init_batch(
    dims: Sequence[int],
    R: int,
    runs: Sequence[tuple[float, int]],
    base_seed: int,
    dtype: torch.dtype,
    device: torch.device,
) -> list[torch.Tensor]:
    """Factors for runs ``[(init_scale, seed), ...]``: seed ``s`` draws N(0, 1) factors once
    (CPU generator ``base_seed + s``), scaled by each run's init std (so both inits of a seed
    start from the same direction)."""
    draws: dict[int, list[torch.Tensor]] = {}
    for _, s in runs:
        if s not in draws:
            gen = torch.Generator().manual_seed(base_seed + s)
            draws[s] = init_cp(dims, R, 1.0, generator=gen, dtype=dtype, device=device)
    return [torch.cat([init * draws[s][n] for init, s in runs], dim=0) for n in range(len(dims))]


def _run_rmsprop(
    objective: CPObjective,
    params0: list[torch.Tensor],
    W_star: torch.Tensor,
    cfg: RecoveryConfig,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Group RMSProp with the first-crossing and the paper's stop rule (see module docstring).

    Returns per-run outcomes ``(first, paper, info)``: each outcome has ``tensor`` (numpy, full
    fitted tensor), ``cnorms`` (R,), ``final_loss``, ``steps``, ``status``."""
    B = params0[0].shape[0]
    opt = GroupRMSProp(cfg.lr, beta=cfg.beta, eps=cfg.eps)
    t0 = time.perf_counter()
    res1 = train(
        params0,
        objective,
        opt,
        Stop(loss_below=cfg.stop_loss, max_steps=cfg.max_steps[len(params0)]),  # keyed by order
        Schedule(every=cfg.check_every),
    )
    wall1 = time.perf_counter() - t0
    W1 = fitted_tensors(res1.params)
    c1 = component_norms(res1.params)
    first = [
        {
            "tensor": W1[b].cpu().numpy(),
            "cnorms": c1[b].cpu().numpy(),
            "final_loss": float(res1.final_loss[b]),
            "steps": int(res1.steps[b]),
            "status": res1.status[b],
        }
        for b in range(B)
    ]
    conv = [b for b in range(B) if res1.status[b] == "converged"]
    paper = [dict(o) for o in first]  # runs that never crossed keep their pass-1 state
    wall2, horizon = 0.0, 0
    if conv:
        horizon = max(_paper_stop_bound(int(res1.steps[b]), cfg) for b in conv)
        horizon += cfg.extra_checks * cfg.check_every
        # record only the checks a run can stop at (from the earliest first check on)
        ce = cfg.check_every
        earliest = min(max(1, math.ceil(int(res1.steps[b]) / ce)) * ce for b in conv)
        t0 = time.perf_counter()
        res2 = train(
            params0,
            objective,
            opt,
            Stop(max_steps=horizon),
            Schedule(points=tuple(range(earliest, horizon + 1, ce))),
            probes={
                "tensor": lambda p: cp_to_tensor(p).reshape(p[0].shape[0], -1),
                "cnorms": component_norms,
            },
        )
        wall2 = time.perf_counter() - t0
        tr = res2.trajectory
        checks = [i for i, s in enumerate(tr.step) if s > 0 and int(s) % cfg.check_every == 0]
        shape = tuple(W_star.shape)
        for b in conv:
            below = [bool(tr.values["loss"][i, b] <= cfg.stop_loss) for i in checks]
            hit = next(
                (
                    j + cfg.n_checks - 1
                    for j in range(len(checks) - cfg.n_checks + 1)
                    if all(below[j : j + cfg.n_checks])
                ),
                None,
            )
            i = checks[hit] if hit is not None else len(tr.step) - 1
            paper[b] = {
                "tensor": tr.values["tensor"][i, b].reshape(shape),
                "cnorms": tr.values["cnorms"][i, b],
                "final_loss": float(tr.values["loss"][i, b]),
                "steps": int(tr.step[i]),
                "status": "converged" if hit is not None else "paper_stop_not_reached",
            }
    info = {"wall_pass1_s": wall1, "wall_pass2_s": wall2, "horizon": horizon}
    return first, paper, info


def _run_flow(
    objective: CPObjective, params0: list[torch.Tensor], cfg: RecoveryConfig
) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Gradient flow to each of ``cfg.flow_losses`` in turn (continuing from the previous state).

    Returns ``(outcomes[phase][run], phase_infos)``."""
    params = params0
    outcomes, infos = [], []
    for thr in cfg.flow_losses:
        t0 = time.perf_counter()
        res = train(
            params,
            objective,
            Flow(method=cfg.flow_method),
            Stop(loss_below=thr, max_evals=cfg.flow_max_evals),
            Schedule(per_decade=2),
        )
        wall = time.perf_counter() - t0
        params = res.params
        W = fitted_tensors(params)
        c = component_norms(params)
        at = np.asarray(res.info.get("accepted_t", [0.0]), dtype=np.float64)
        outcomes.append(
            [
                {
                    "tensor": W[b].cpu().numpy(),
                    "cnorms": c[b].cpu().numpy(),
                    "final_loss": float(res.final_loss[b]),
                    "steps": int(res.steps[b]),
                    "status": res.status[b],
                    "flow_time": float(res.time[b]),
                }
                for b in range(params[0].shape[0])
            ]
        )
        dt = np.diff(at)
        infos.append(
            {
                "stop_loss": thr,
                "method": res.info.get("method"),
                "nfev": int(res.info.get("nfev", res.n_evals)),
                "accepted_steps": int(res.info.get("accepted_steps", 0)),
                "t_end": float(at[-1]) if at.size else 0.0,
                "dt_median": float(np.median(dt)) if dt.size else None,
                "dt_last_quarter_median": (
                    float(np.median(dt[-max(1, dt.size // 4) :])) if dt.size else None
                ),
                "statuses": list(res.status),
                "wall_s": wall,
                "accepted_t": at,
            }
        )
    return outcomes, infos


# --------------------------------------------------------------------------------------------
# the experiment
# --------------------------------------------------------------------------------------------


def _row(
    *,
    setting: str,
    dims: Sequence[int],
    target_rank: int,
    n_obs: int,
    method: str,
    outcome: dict[str, Any] | None,
    W_star: torch.Tensor,
    large_frac: float = 0.1,
    **extra: Any,
) -> dict[str, Any]:
    """One tidy row; ``outcome`` carries the fitted tensor (dropped from the row)."""
    total = math.prod(dims)
    row: dict[str, Any] = {
        "setting": setting,
        "method": method,
        "order": len(dims),
        "dims": list(dims),
        "target_rank": target_rank,
        "n_obs": n_obs,
        "obs_frac": n_obs / total,
        "R": None,
        "init_scale": None,
        "optimizer": None,
        "stop_rule": None,
        "loss": None,
        "seed": None,
        "final_loss": None,
        "rel_fro_error": None,
        "recon_mse": None,
        "estimated_rank": None,
        "estimated_rank_capped": None,
        "n_large_components": None,
        "status": None,
        "steps": None,
    }
    row.update(extra)
    if outcome is not None:
        W = torch.as_tensor(outcome["tensor"])
        err = float(tensor_rel_errors(W[None], W_star.cpu())[0])
        row["rel_fro_error"] = err
        row["recon_mse"] = float(((W - W_star.cpu()) ** 2).mean())
        for k in ("final_loss", "steps", "status", "flow_time"):
            if k in outcome:
                row[k] = outcome[k]
        if outcome.get("cnorms") is not None:
            c = np.asarray(outcome["cnorms"])
            row["n_large_components"] = int((c > large_frac * c.max()).sum())
    return row


def _needs_rank(row: dict[str, Any], cfg: RecoveryConfig) -> bool:
    if cfg.rank_for == "none" or row["setting"] == "recovery_extra_target":
        return False
    if row["method"] == "cp_gd" and row["stop_rule"] != PAPER_STOP:
        return False  # supplementary rows (first crossing of the stop loss)
    if cfg.rank_for == "all":
        return True
    # "claims": the rank-1 order-3 cell at claim_n_obs
    if (
        row["setting"] != "recovery"
        or row["order"] != 3
        or row["target_rank"] != 1
        or row["n_obs"] != cfg.claim_n_obs
    ):
        return False
    if row["method"] == "memorizer":
        return True
    return row["method"] == "cp_gd" and math.isclose(row["init_scale"] or 0.0, 1e-3)


def run(
    out_dir: Path,
    *,
    scale: str = "quick",
    seeds: int | None = None,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the experiment at ``scale`` (``options`` override :class:`RecoveryConfig` fields);
    writes ``runs.json`` (the rows), ``flow_steps.npz`` and the figures into ``out_dir`` and
    returns the summary."""
    from factorflow.baselines.tensor import masked_cp_als, memorizer
    from factorflow.fit import resolve_device
    from factorflow.plotting.tensor_recovery import plot_flow_steps, plot_recovery
    from factorflow.results import write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    opts = dict(options or {})
    if seeds is not None:
        opts.setdefault("seeds", seeds)
    cfg = make_config(scale, opts)
    n_rep = n_seeds(cfg.seeds, scale, quick=5, paper=5)
    n_cmp = n_seeds(cfg.comparison_seeds, scale, quick=1, paper=n_rep)
    dev = resolve_device(device)
    dtype = torch.float64
    t_start = time.perf_counter()

    rows: list[dict[str, Any]] = []
    tensors: list[np.ndarray | None] = []  # fitted tensor of each row (for the rank estimates)
    flow_steps: list[dict[str, Any]] = []
    flow_arrays: dict[str, np.ndarray] = {}
    timings: list[dict[str, Any]] = []

    def add(row: dict[str, Any], tensor: np.ndarray | None) -> None:
        rows.append(row)
        tensors.append(tensor)

    def cell(
        setting: str,
        dims: tuple[int, ...],
        target_rank: int,
        n_obs: int,
        W_star: torch.Tensor,
        obs: Completion,
        inits: Sequence[float],
        n_runs: int,
        do_flow: bool,
        flow_inits: Sequence[float],
        target_seed: int = cfg.target_seed,
    ) -> None:
        t_cell = time.perf_counter()
        R = math.prod(sorted(dims)[:-1])
        objective = _DenseCPObjective(obs.to(dtype, dev), cfg.loss)
        W_dev = W_star.to(dev)
        common = {
            "setting": setting,
            "dims": dims,
            "target_rank": target_rank,
            "n_obs": n_obs,
            "target_seed": target_seed,
        }
        # baselines (deterministic given the observations)
        mem = memorizer(obs)
        add(
            _row(
                method="memorizer",
                outcome={"tensor": mem, "final_loss": 0.0, "status": "exact"},
                W_star=W_star,
                **common,
            ),
            mem,
        )
        als = masked_cp_als(obs, target_rank, random_state=cfg.target_seed)
        als_fit = float(np.mean((als[tuple(obs.indices.numpy().T)] - obs.values.numpy()) ** 2))
        add(
            _row(
                method="masked_cp_als",
                outcome={"tensor": als, "final_loss": als_fit, "status": "done"},
                W_star=W_star,
                R=target_rank,
                loss="mse",
                optimizer="als",
                **common,
            ),
            als,
        )
        # CP-GD: inits x seeds in one batch (or one batch per init, see batch_inits)
        together = cfg.batch_inits is True or (cfg.batch_inits == "auto" and len(dims) <= 3)
        groups = [list(inits)] if together else [[i] for i in inits]
        runs, first, paper = [], [], []
        for group in groups:
            g_runs = [(init, s) for init in group for s in range(n_runs)]
            params0 = _init_batch(dims, R, g_runs, 10_000 * (cfg.target_seed + 1), dtype, dev)
            g_first, g_paper, info = _run_rmsprop(objective, params0, W_dev, cfg)
            runs += g_runs
            first += g_first
            paper += g_paper
            timings.append(
                {**common, "dims": list(dims), "method": "cp_gd", "inits": group, **info}
            )
        for b, (init, s) in enumerate(runs):
            for rule, outs in (
                (PAPER_STOP, paper),
                (f"mse<{cfg.stop_loss:g}", first),
            ):
                add(
                    _row(
                        method="cp_gd",
                        outcome=outs[b],
                        W_star=W_star,
                        R=R,
                        init_scale=init,
                        optimizer="group_rmsprop",
                        stop_rule=rule,
                        loss=cfg.loss,
                        seed=s,
                        large_frac=cfg.large_frac,
                        **common,
                    ),
                    outs[b]["tensor"],
                )
        # gradient flow, one batch per init scale
        if do_flow:
            for init in flow_inits:
                fruns = [(init, s) for s in range(n_runs)]
                p0 = _init_batch(dims, R, fruns, 10_000 * (cfg.target_seed + 1), dtype, dev)
                outcomes, infos = _run_flow(objective, p0, cfg)
                for phase, (outs, inf) in enumerate(zip(outcomes, infos, strict=True)):
                    key = f"o{len(dims)}_r{target_rank}_m{n_obs}_i{init:g}_p{phase}"
                    flow_arrays[key] = inf.pop("accepted_t")
                    flow_steps.append(
                        {
                            **common,
                            "dims": list(dims),
                            "init_scale": init,
                            "phase": phase,
                            "key": key,
                            **inf,
                        }
                    )
                    for b, (_, s) in enumerate(fruns):
                        add(
                            _row(
                                method="cp_flow",
                                outcome=outs[b],
                                W_star=W_star,
                                R=R,
                                init_scale=init,
                                optimizer=f"flow:{inf['method']}",
                                stop_rule=f"mse<{inf['stop_loss']:g}",
                                loss=cfg.loss,
                                seed=s,
                                nfev=inf["nfev"],
                                large_frac=cfg.large_frac,
                                **common,
                            ),
                            outs[b]["tensor"],
                        )
        timings[-1]["wall_cell_s"] = time.perf_counter() - t_cell

    for order in cfg.orders:
        dims = (cfg.dim,) * order
        for target_rank in cfg.target_ranks:
            W_star, entry_order = make_target(
                dims, target_rank, seed=1000 * cfg.target_seed + 10 * order + target_rank
            )
            for n_obs in cfg.n_obs[order]:
                obs = observe(W_star, entry_order, n_obs)
                do_flow = cfg.flow and (cfg.flow_n_obs is None or n_obs in cfg.flow_n_obs)
                cell(
                    "recovery",
                    dims,
                    target_rank,
                    n_obs,
                    W_star,
                    obs,
                    cfg.init_scales,
                    n_rep,
                    do_flow,
                    cfg.flow_inits,
                )

    # the recovery claim over more target instances (the error at 200 observations varies over
    # decades from one target to the next: median 2.9e-4 on instance 0, 2.4e-5 and 2.2e-5 on
    # instances 1 and 2, measured), CP-GD at init 1e-3 only
    if 3 in cfg.orders and 1 in cfg.target_ranks and 1e-3 in cfg.init_scales:
        dims = (cfg.dim,) * 3
        for extra in range(1, cfg.claim_targets):
            t_seed = cfg.target_seed + extra
            W_star, entry_order = make_target(dims, 1, seed=1000 * t_seed + 10 * 3 + 1)
            obs = observe(W_star, entry_order, cfg.claim_n_obs)
            cell(
                "recovery_extra_target",
                dims,
                1,
                cfg.claim_n_obs,
                W_star,
                obs,
                (1e-3,),
                n_rep,
                False,
                (),
                target_seed=t_seed,
            )

    if cfg.comparison:
        dims = (cfg.comparison_dim,) * 3
        W_star, entry_order = make_target(
            dims, cfg.comparison_rank, seed=1000 * cfg.target_seed + 777
        )
        n_obs = max(1, round(cfg.comparison_frac * math.prod(dims)))
        obs = observe(W_star, entry_order, n_obs)
        cell(
            "als_comparison",
            dims,
            cfg.comparison_rank,
            n_obs,
            W_star,
            obs,
            (cfg.comparison_init,),
            n_cmp,
            False,
            (),
        )

    # rank estimates (ALS), where asked for
    t_rank = time.perf_counter()
    cache: dict[bytes, tuple[int, bool]] = {}
    for row, tensor in zip(rows, tensors, strict=True):
        if tensor is None or not _needs_rank(row, cfg):
            continue
        key = np.ascontiguousarray(tensor).tobytes()
        if key not in cache:
            cache[key] = estimate_rank(tensor, cfg)
        row["estimated_rank"], row["estimated_rank_capped"] = cache[key]
    rank_s = time.perf_counter() - t_rank

    write_json(out_dir / "runs.json", rows)
    np.savez_compressed(out_dir / "flow_steps.npz", **flow_arrays)
    figures = [plot_recovery(out_dir / "runs.json", out_dir)]
    if flow_arrays:
        figures.append(plot_flow_steps(out_dir / "flow_steps.npz", out_dir / "runs.json", out_dir))

    config = asdict(cfg)
    config["n_obs"] = {str(k): list(v) for k, v in cfg.n_obs.items()}
    config["max_steps"] = {str(k): v for k, v in cfg.max_steps.items()}
    config.update(
        {
            "seeds_used": n_rep,
            "comparison_seeds_used": n_cmp,
            "device": str(dev),
            "dtype": "float64",
            "optimizer_note": (
                "group RMSProp with the original code's constants (lr 1e-2, beta 0.99, eps 1e-6); "
                "stop rule 'paper' = train mse below stop_loss at n_checks consecutive checks "
                "check_every steps apart (the original StopOnZeroTrainLoss, patience 2, every "
                "100 epochs); rows with stop_rule 'mse<1e-06' are the same runs stopped at their "
                "first step below 1e-6"
            ),
            "flow_note": _flow_note(flow_steps),
            "rank_note": (
                "estimated_rank = smallest R whose CP-ALS fit (TensorLy, 3 restarts) reaches "
                f"mse < 1e-6, searched up to rank_max = {cfg.rank_max}; capped rows hold "
                f"rank_max + 1 = {cfg.rank_max + 1}, meaning 'more than {cfg.rank_max}'; "
                f"computed for rank_for = {cfg.rank_for!r} rows only (others null)"
            ),
        }
    )
    return {
        "config": config,
        "rows": rows,
        "claims": _claims(cfg, rows),
        "figures": figures,
        "flow_steps": flow_steps,
        "timings": {
            "cells": timings,
            "rank_estimates_s": rank_s,
            "total_s": time.perf_counter() - t_start,
        },
    }


def _flow_note(flow_steps: list[dict[str, Any]]) -> str:
    if not flow_steps:
        return "flow not run"
    methods = sorted({str(f["method"]) for f in flow_steps})
    return (
        f"integrator(s) {methods} (Flow(method='auto'): LSODA only for states of <= 256 numbers, "
        "these have thousands, where a finite-difference Jacobian would cost thousands of "
        "evaluations; RK45 otherwise); phases to each stop loss continue from the previous "
        "state; per phase: nfev, accepted steps, end time and the median step size overall and "
        "in the last quarter of the steps (a constant late step size = stability-limited, "
        "i.e. stiff) in flow_steps"
    )


# --------------------------------------------------------------------------------------------
# claims
# --------------------------------------------------------------------------------------------


def _select(rows: list[dict[str, Any]], **conds: Any) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        ok = True
        for k, v in conds.items():
            rv = r.get(k)
            if isinstance(v, float) and isinstance(rv, float):
                ok = ok and math.isclose(rv, v, rel_tol=1e-9)
            else:
                ok = ok and rv == v
        if ok:
            out.append(r)
    return out


def _median(xs: Sequence[float | None]) -> float | None:
    vals = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return float(np.median(vals)) if vals else None


def _quartiles(xs: Sequence[float | None]) -> list[float] | None:
    vals = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return [float(q) for q in np.quantile(vals, [0.25, 0.75])] if vals else None


def _claims(cfg: RecoveryConfig, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    m = cfg.claim_n_obs
    cell = {"setting": "recovery", "order": 3, "target_rank": 1, "n_obs": m}
    out: list[dict[str, Any]] = []

    gd3 = _select(rows, **cell, method="cp_gd", stop_rule=PAPER_STOP, init_scale=1e-3)
    gd3_first = _select(
        rows, **cell, method="cp_gd", stop_rule=f"mse<{cfg.stop_loss:g}", init_scale=1e-3
    )
    flow3 = _select(rows, **cell, method="cp_flow", init_scale=1e-3)
    flow_by_loss = {}
    for thr in cfg.flow_losses:
        sel = [r for r in flow3 if r["stop_rule"] == f"mse<{thr:g}"]
        if sel:
            flow_by_loss[f"{thr:g}"] = {
                "median_rel_fro_error": _median([r["rel_fro_error"] for r in sel]),
                "median_final_loss": _median([r["final_loss"] for r in sel]),
                "statuses": [r["status"] for r in sel],
            }
    extra = _select(
        rows,
        setting="recovery_extra_target",
        order=3,
        target_rank=1,
        n_obs=m,
        method="cp_gd",
        stop_rule=PAPER_STOP,
        init_scale=1e-3,
    )
    every = gd3 + extra
    by_target: dict[str, list[float]] = {}
    for r in every:
        by_target.setdefault(str(r.get("target_seed")), []).append(r["rel_fro_error"])
    med = _median([r["rel_fro_error"] for r in every])
    n_targets = len(by_target)
    out.append(
        claim(
            "rank1-order3-recovered",
            f"Rank-1 8x8x8 target, {m} of 512 entries observed, init 1e-3: CP-GD (group RMSProp, "
            "the paper's stop rule) recovers it, median rel_fro_error <= 1e-4 over "
            f"{n_targets} target instance(s) x {len(gd3)} inits.",
            paper="~5e-6 to 7e-6 (paper figure, one target instance; a re-run of the original "
            "code)",
            measured={
                "median_rel_fro_error": med,
                "quartiles": _quartiles([r["rel_fro_error"] for r in every]),
                "median_per_target_instance": {k: _median(v) for k, v in by_target.items()},
                "n_runs": len(every),
                "instance0_median_final_train_mse": _median([r["final_loss"] for r in gd3]),
                "instance0_median_steps": _median([r["steps"] for r in gd3]),
                "instance0_per_run_rel_fro_error": [r["rel_fro_error"] for r in gd3],
                "instance0_per_run_final_train_mse": [r["final_loss"] for r in gd3],
                "instance0_per_run_n_large_components": [r["n_large_components"] for r in gd3],
                "instance0_stopped_at_first_mse_below_stop_loss": {
                    "median_rel_fro_error": _median([r["rel_fro_error"] for r in gd3_first]),
                    "median_final_train_mse": _median([r["final_loss"] for r in gd3_first]),
                },
                "instance0_flow_by_stop_loss": flow_by_loss,
            },
            holds=None if med is None else med <= 1e-4,
            detail=(
                "the error varies over decades between target instances "
                "(median_per_target_instance); the error floor is set by the loss a run is trained to and by the small "
                "components left from the init: the paper's stop rule runs 200-300 steps past "
                "the first mse < 1e-6, and the train mse reached by then (per_run_final_train_"
                "mse) varies over decades from seed to seed, and so does the error; runs with "
                "n_large_components > 1 carry a second component that has not died out; flow "
                "rows are stopped exactly at each threshold"
            ),
        )
    )

    ranks_gd = [r["estimated_rank"] for r in gd3 if r["estimated_rank"] is not None]
    mem = _select(rows, **cell, method="memorizer")
    mem_rank = mem[0]["estimated_rank"] if mem else None
    mem_capped = mem[0]["estimated_rank_capped"] if mem else None
    holds_rank: bool | None = None
    if ranks_gd and mem_rank is not None:
        holds_rank = bool(np.median(ranks_gd) == 1) and mem_rank >= 10
    out.append(
        claim(
            "rank1-order3-solution-rank",
            f"At {m} observations, init 1e-3, the CP-GD solution has estimated tensor rank 1, the "
            "memorizer's is >= 10.",
            paper="rank 1 (init 1e-3); memorizer 12 to 17",
            measured={
                "cp_gd_estimated_ranks": ranks_gd,
                "memorizer_estimated_rank": mem_rank,
                "memorizer_rank_capped": mem_capped,
                "rank_max": cfg.rank_max,
                "memorizer_rel_fro_error": mem[0]["rel_fro_error"] if mem else None,
            },
            holds=holds_rank,
            detail=(
                None
                if holds_rank is not None
                else "ranks not estimated in this run (rank_for = 'none' or cell not run)"
            ),
        )
    )

    gd2 = _select(rows, **cell, method="cp_gd", stop_rule=PAPER_STOP, init_scale=1e-2)
    med2 = _median([r["rel_fro_error"] for r in gd2])
    ratio = med2 / med if med and med2 is not None and med > 0 else None
    out.append(
        claim(
            "init-scale-effect",
            f"At {m} observations the median error at init 1e-2 exceeds that at init 1e-3 by >= 10x.",
            paper="init 1e-2 ~4e-4 to 8e-3 vs ~5e-6 at init 1e-3 (200+ observations)",
            measured={
                "median_rel_fro_error_init_1e-2": med2,
                "median_rel_fro_error_init_1e-3": med,
                "ratio": ratio,
            },
            holds=None if ratio is None else ratio >= 10,
        )
    )

    cmp_gd = _select(rows, setting="als_comparison", method="cp_gd", stop_rule=PAPER_STOP)
    cmp_als = _select(rows, setting="als_comparison", method="masked_cp_als")
    cmp_mem = _select(rows, setting="als_comparison", method="memorizer")
    med_gd = _median([r["rel_fro_error"] for r in cmp_gd])
    als_err = cmp_als[0]["rel_fro_error"] if cmp_als else None
    out.append(
        claim(
            "beats-masked-cp-als",
            f"{cfg.comparison_dim}^3 rank-{cfg.comparison_rank} target, "
            f"{cfg.comparison_frac:.0%} observed: CP-GD from small init (median over seeds) has "
            "a lower rel_fro_error than masked CP-ALS at the true rank.",
            paper="masked CP-ALS (TensorLy 0.10) ended at 1.78 on one such instance",
            measured={
                "cp_gd_median_rel_fro_error": med_gd,
                "cp_gd_errors": [r["rel_fro_error"] for r in cmp_gd],
                "cp_gd_n_large_components": [r["n_large_components"] for r in cmp_gd],
                "masked_cp_als_rel_fro_error": als_err,
                "memorizer_rel_fro_error": cmp_mem[0]["rel_fro_error"] if cmp_mem else None,
            },
            holds=None if med_gd is None or als_err is None else med_gd < als_err,
        )
    )

    # paper-scale only: order 4, rank 1, init 1e-3 reaches ~1e-6 from 1000 of 4096 entries
    gd4 = [
        r
        for r in _select(
            rows,
            setting="recovery",
            order=4,
            target_rank=1,
            method="cp_gd",
            stop_rule=PAPER_STOP,
            init_scale=1e-3,
        )
        if r["n_obs"] >= 1000
    ]
    by_m: dict[int, list[float]] = {}
    for r in gd4:
        by_m.setdefault(r["n_obs"], []).append(r["rel_fro_error"])
    meds4 = {str(k): _median(v) for k, v in sorted(by_m.items())}
    out.append(
        claim(
            "rank1-order4-recovered",
            "Rank-1 8x8x8x8 target, init 1e-3: median rel_fro_error <= 1e-4 at every observation "
            "count >= 1000 (of 4096).",
            paper="~1e-6 from 1000 observations",
            measured=meds4 or None,
            holds=(all(v is not None and v <= 1e-4 for v in meds4.values()) if meds4 else None),
            detail=None if meds4 else "order 4 not run at this scale",
        )
    )
    return out
