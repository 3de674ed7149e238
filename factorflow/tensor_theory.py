"""What the theory of CP tensor factorization predicts, and the checks against measurement.

- Component norm dynamics (Razin, Maman & Cohen 2021, "Implicit regularization in tensor
  factorization", Theorem 1): under gradient flow on the factors of ``L(factors) = l(W)``,
  ``W = sum_r w_r^1 (x) ... (x) w_r^N``, a component ``C_r`` with balanced factors
  (``||w_r^n|| = c_r^(1/N)`` for every mode ``n``) has norm ``c_r = ||C_r||_F`` moving as

      dc_r/dt = -N c_r^(2 - 2/N) <grad l(W), C_r / c_r>.

  Balancedness is conserved by gradient flow, so from a balanced init the identity holds along
  the whole trajectory (up to the integrator's error).
- Rank-1 solutions (same paper, Sec. 4): from small init, gradient flow on a completion problem
  that has a rank-1 solution reaches one (under technical conditions);
  :func:`is_rank_one_solution` checks a fitted factorization for it.

Why the rate identity needs balancedness, exactly: for every mode ``n``,
``<w_r^n, dL/dw_r^n> = <grad l(W), C_r>`` (multilinearity), so the chain rule gives

    dc_r/dt = -c_r <grad l(W), C_r> sum_n 1 / ||w_r^n||^2,

and measured / predicted ``= mean_n (c_r^(2/N) / ||w_r^n||^2)``: 1 for balanced factors, and off
by only a second-order amount for a small imbalance (``||w_r^n||^2 = c_r^(2/N) (1 + e_n)`` with
``prod_n (1 + e_n) = 1`` gives ``mean_n 1/(1 + e_n) - 1 ~ mean_n e_n^2 / 2``). From the usual
unbalanced Gaussian init the ratio is O(1) off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from factorflow.factorizations.cp import (
    component_norm_velocity,
    component_norms,
    cp_to_tensor,
    predicted_component_norm_velocity,
)
from factorflow.objectives import CPObjective

__all__ = [
    "RankOneCheck",
    "component_norm_rates",
    "component_rate_error",
    "is_rank_one_solution",
    "max_component_rate_error",
]


def component_norm_rates(
    objective: CPObjective, factors: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Measured and predicted ``dc_r/dt`` under gradient flow, each ``(B, R)``.

    Measured: the exact chain rule (:func:`~factorflow.factorizations.cp.component_norm_velocity`)
    applied to the gradient-flow vector field, factor velocities ``-dL/dfactors`` with
    ``L = objective(factors).sum()`` differentiated by autograd (runs are independent, so each
    run gets its own gradient) — no finite differences of samples.

    Predicted: ``-N c_r^(2-2/N) <grad l(W), C_r / c_r>`` (Razin, Maman & Cohen 2021, Theorem 1;
    :func:`~factorflow.factorizations.cp.predicted_component_norm_velocity`), with ``grad l(W)``
    nonzero only at the observed entries (:meth:`CPObjective.grad_at_obs`). Exact for balanced
    components.

    Args:
        objective: the completion objective (any named loss).
        factors: ``N`` tensors ``(B, d_n, R)``.

    Returns:
        ``(measured, predicted)``, both ``(B, R)``, detached, on the factors' device.
    """
    ps = [f.detach().clone().requires_grad_(True) for f in factors]
    with torch.enable_grad():
        losses = objective(ps)
        grads = torch.autograd.grad(losses.sum(), ps)
    fs = [f.detach() for f in factors]
    measured = component_norm_velocity(fs, [-g.detach() for g in grads])
    with torch.no_grad():
        _, g_obs = objective.grad_at_obs(fs)
        predicted = predicted_component_norm_velocity(fs, objective.obs.indices, g_obs)
    return measured, predicted


def max_component_rate_error(
    measured: torch.Tensor, predicted: torch.Tensor, *, rel_floor: float = 1e-6
) -> float:
    """Largest relative error ``|measured - predicted| / |predicted|`` over the non-negligible rates.

    Guard against 0/0: within each run ``b``, only the components with
    ``|predicted[b, r]| > rel_floor * max_r |predicted[b, r]|`` are compared. Components at or
    below that (zero components, whose rates are exactly 0, and those whose rate is so small that
    float rounding in ``<grad l(W), C_r>`` — computed in two different ways — dominates it) are
    skipped; a run whose rates are all zero (a stationary point) contributes nothing.

    Args:
        measured, predicted: ``(B, R)`` (or ``(R,)``) rates from :func:`component_norm_rates`.
        rel_floor: the relative floor above (``0 <= rel_floor < 1``).

    Returns:
        The maximum relative error, or ``nan`` if no component passed the floor.
    """
    if measured.shape != predicted.shape:
        raise ValueError(
            f"measured and predicted must have the same shape, got {tuple(measured.shape)} "
            f"and {tuple(predicted.shape)}"
        )
    if not 0 <= rel_floor < 1:
        raise ValueError(f"rel_floor must be in [0, 1), got {rel_floor}")
    if measured.ndim == 0:
        raise ValueError("rates must have shape (B, R) or (R,)")
    m = measured.reshape(-1, measured.shape[-1])
    p = predicted.reshape(m.shape)
    scale = p.abs().max(dim=-1, keepdim=True).values
    keep = (p.abs() > rel_floor * scale) & (scale > 0)
    if not bool(keep.any()):
        return math.nan
    rel = (m - p).abs()[keep] / p.abs()[keep]
    return float(rel.max())


def component_rate_error(
    objective: CPObjective, factors: Sequence[torch.Tensor], *, rel_floor: float = 1e-6
) -> float:
    """:func:`max_component_rate_error` of :func:`component_norm_rates` at one state."""
    measured, predicted = component_norm_rates(objective, factors)
    return max_component_rate_error(measured, predicted, rel_floor=rel_floor)


@dataclass(frozen=True)
class RankOneCheck:
    """Outcome of :func:`is_rank_one_solution`, one entry per run (lists of length ``B``).

    Attributes:
        train_loss: the objective at the factors.
        norm_ratio: second-largest component norm / largest (0 when ``R = 1``).
        rank1_mse: mean over all entries of (W - best rank-1 CP-ALS fit of W)^2.
        estimated_rank: ``estimate_tensor_rank(W, tol=mse_tol, max_rank=max_rank)`` (the
            sentinel ``max_rank + 1`` means "more than ``max_rank``").
        holds: the run fits the observations (``train_loss <= loss_tol``) and its fitted tensor
            is rank 1 (estimated rank 1 and ``norm_ratio <= ratio_tol``).
    """

    train_loss: list[float]
    norm_ratio: list[float]
    rank1_mse: list[float]
    estimated_rank: list[int]
    holds: list[bool]


def is_rank_one_solution(
    objective: CPObjective,
    factors: Sequence[torch.Tensor],
    *,
    loss_tol: float = 1e-6,
    ratio_tol: float = 1e-2,
    mse_tol: float = 1e-6,
    max_rank: int = 3,
) -> RankOneCheck:
    """Check that fitted CP factors are a rank-1 solution of the completion problem.

    The proposition (Razin, Maman & Cohen 2021, Sec. 4): if the completion problem has a rank-1
    solution, gradient flow from small init reaches one. A fitted factorization counts as such
    when (per run):

    1. it fits the observations: ``objective(factors) <= loss_tol``;
    2. one component dominates: ``c_(2) / c_(1) <= ratio_tol`` (sorted component norms);
    3. the fitted tensor ``W`` has estimated CP rank 1: the smallest ``R`` whose CP-ALS fit
       reaches ``mean((W - W_R)^2) < mse_tol`` (the papers' rank estimate,
       :func:`factorflow.baselines.tensor.estimate_tensor_rank`, capped at ``max_rank``).

    ``W`` is materialized (:func:`~factorflow.factorizations.cp.cp_to_tensor` raises a clear
    size error on tensors too large for that).
    """
    from factorflow.baselines.tensor import cp_als_error, estimate_tensor_rank

    fs = [f.detach() for f in factors]
    with torch.no_grad():
        losses = objective(fs).cpu().numpy()
    c = component_norms(fs).cpu()
    top2 = torch.topk(c, k=min(2, c.shape[1]), dim=1).values
    if c.shape[1] >= 2:
        ratio = torch.where(top2[:, 0] > 0, top2[:, 1] / top2[:, 0], torch.nan)
    else:
        ratio = torch.zeros(c.shape[0], dtype=c.dtype)
    W = cp_to_tensor(fs).cpu().numpy()
    ranks, mses, holds = [], [], []
    for b in range(W.shape[0]):
        est = estimate_tensor_rank(W[b], tol=mse_tol, max_rank=max_rank)
        mse1 = cp_als_error(W[b], 1, n_restarts=3)
        ranks.append(int(est))
        mses.append(float(mse1))
        holds.append(
            bool(losses[b] <= loss_tol)
            and est == 1
            and bool(np.isfinite(float(ratio[b])))
            and float(ratio[b]) <= ratio_tol
        )
    return RankOneCheck(
        train_loss=[float(x) for x in losses],
        norm_ratio=[float(x) for x in ratio],
        rank1_mse=mses,
        estimated_rank=ranks,
        holds=holds,
    )
