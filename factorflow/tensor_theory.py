"""What the theory of CP tensor factorization predicts, and the checks against measurement.

- Component norm dynamics (Razin, Maman & Cohen 2021, "Implicit regularization in tensor
  factorization", Theorem 1): under gradient flow on the factors of ``L(factors) = l(W)``,
  ``W = sum_r w_r^1 (x) ... (x) w_r^N``, a component ``C_r`` with balanced factors
  (``||w_r^n|| = c_r^(1/N)`` for every mode ``n``) has norm ``c_r = ||C_r||_F`` moving as

      dc_r/dt = -N c_r^(2 - 2/N) <grad l(W), C_r / c_r>.

  Balancedness is conserved by gradient flow, so from a balanced init the identity holds along
  the whole trajectory (up to the integrator's error).
- Incremental learning (same paper, Sec. 4-5): from small init the components leave zero one at
  a time; :func:`leave_times` measures when each does along a recorded trajectory and
  :func:`separated` whether they are apart. (The rank-1 solution check, which needs CP-ALS, is
  :func:`factorflow.baselines.rank_one.is_rank_one_solution`.)

This module is math only: the objective enters as the gradients it produces (the factor
gradients and ``dl/dW`` at the observed entries), so it imports no objective or baseline.

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

import numpy as np
import torch

from factorflow.factorizations.cp import _check_factors, _check_indices, component_norms

__all__ = [
    "component_norm_velocity",
    "predicted_component_norm_velocity",
    "component_norm_rates",
    "component_rate_error",
    "leave_times",
    "max_component_rate_error",
    "min_relative_gap",
    "separated",
]


# component norm dynamics (Razin, Maman & Cohen 2021, Theorem 1)


def component_norm_velocity(
    factors: Sequence[torch.Tensor], velocities: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Measured time derivative of the component norms ``(B, R)`` given factor velocities.

    Exact chain rule for ``c_r = prod_n ||w_r^n||``:

        dc_r/dt = c_r * sum_n <w_r^n, dw_r^n/dt> / ||w_r^n||^2.

    Under gradient flow the velocity is minus the gradient: ``velocities[n] = -dL/dfactors[n]``.
    Terms with ``||w_r^n|| = 0`` (then ``c_r = 0``) contribute 0.
    """
    _check_factors(factors)
    if len(velocities) != len(factors) or any(
        v.shape != f.shape for v, f in zip(velocities, factors, strict=True)
    ):
        raise ValueError("velocities must match the factors' number and shapes")
    c = component_norms(factors)
    total = torch.zeros_like(c)
    for f, v in zip(factors, velocities, strict=True):
        dot = (f * v).sum(dim=1)
        sq = (f * f).sum(dim=1)
        total = total + torch.where(sq > 0, dot / torch.where(sq > 0, sq, 1.0), 0.0)
    return c * total


def _gathered_entries(factors: Sequence[torch.Tensor], indices: torch.Tensor) -> torch.Tensor:
    """``(B, m, R)``: ``C_r[idx_i] = prod_n w_r^n[idx_i,n]`` for every component."""
    prod = factors[0].index_select(1, indices[:, 0])
    for n in range(1, len(factors)):
        prod = prod * factors[n].index_select(1, indices[:, n])
    return prod


def predicted_component_norm_velocity(
    factors: Sequence[torch.Tensor], indices: torch.Tensor, grad_at_obs: torch.Tensor
) -> torch.Tensor:
    """Component norm velocity ``(B, R)`` predicted by Razin, Maman & Cohen 2021, Theorem 1.

    Under gradient flow on the factors of a loss ``l(W)``, for a balanced component ``r``
    (``||w_r^n|| = c_r^(1/N)`` for all ``n``):

        dc_r/dt = -N * c_r^(2 - 2/N) * <grad l(W), C_r / c_r>.

    For a completion loss ``grad l(W)`` is zero off the observed entries, so
    ``<grad l(W), C_r> = sum_i grad_at_obs[:, i] * prod_n w_r^n[indices[i, n]]``.

    Args:
        factors: ``N`` tensors ``(B, d_n, R)``.
        indices: ``(m, N)`` observed positions.
        grad_at_obs: ``(B, m)``, ``dl/dW`` at the observed entries (for the mean squared
            residual ``l = mean_i (W[idx_i] - y_i)^2`` it is ``2 (W[idx_i] - y_i) / m``).

    Components with ``c_r = 0`` get 0. For unbalanced components the formula is not the true
    derivative (compare with :func:`component_norm_velocity`).
    """
    B, dims, R = _check_factors(factors)
    indices = _check_indices(indices, len(dims))
    if grad_at_obs.shape != (B, indices.shape[0]):
        raise ValueError(
            f"grad_at_obs must have shape (B, m) = {(B, indices.shape[0])}, "
            f"got {tuple(grad_at_obs.shape)}"
        )
    indices = indices.to(factors[0].device)
    N = len(dims)
    inner = torch.einsum("bi,bir->br", grad_at_obs, _gathered_entries(factors, indices))
    c = component_norms(factors)
    pos = c > 0
    c_safe = torch.where(pos, c, torch.ones_like(c))
    pred = -N * c_safe.pow(2.0 - 2.0 / N) * inner / c_safe
    return torch.where(pos, pred, torch.zeros_like(pred))


def component_norm_rates(
    factors: Sequence[torch.Tensor],
    factor_grads: Sequence[torch.Tensor],
    obs_indices: torch.Tensor,
    grad_at_obs: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Measured and predicted ``dc_r/dt`` under gradient flow, each ``(B, R)``.

    Measured: the exact chain rule (:func:`component_norm_velocity`)
    applied to the gradient-flow vector field, factor velocities ``-factor_grads`` (each run's
    gradient of its loss, e.g. :func:`factorflow.dynamics.gradient`) — no finite differences.

    Predicted: ``-N c_r^(2-2/N) <grad l(W), C_r / c_r>`` (Razin, Maman & Cohen 2021, Theorem 1;
    :func:`predicted_component_norm_velocity`), with ``grad l(W)``
    nonzero only at the observed entries ``obs_indices`` (m, N), where it is ``grad_at_obs``
    (B, m) (e.g. ``CPObjective.grad_at_obs``). Exact for balanced components.

    Args:
        factors: ``N`` tensors ``(B, d_n, R)``; factor_grads: their gradients, same shapes.
        obs_indices, grad_at_obs: the observed positions and ``dl/dW`` there.

    Returns:
        ``(measured, predicted)``, both ``(B, R)``, detached, on the factors' device.
    """
    fs = [f.detach() for f in factors]
    if len(factor_grads) != len(fs):
        raise ValueError(f"need one gradient per factor, got {len(factor_grads)} for {len(fs)}")
    with torch.no_grad():
        measured = component_norm_velocity(fs, [-g.detach() for g in factor_grads])
        predicted = predicted_component_norm_velocity(fs, obs_indices, grad_at_obs.detach())
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
    factors: Sequence[torch.Tensor],
    factor_grads: Sequence[torch.Tensor],
    obs_indices: torch.Tensor,
    grad_at_obs: torch.Tensor,
    *,
    rel_floor: float = 1e-6,
) -> list[float]:
    """:func:`max_component_rate_error` of :func:`component_norm_rates`, per run (length B)."""
    measured, predicted = component_norm_rates(factors, factor_grads, obs_indices, grad_at_obs)
    return [
        max_component_rate_error(measured[b], predicted[b], rel_floor=rel_floor)
        for b in range(measured.shape[0])
    ]


def leave_times(
    time: np.ndarray,
    top_c: np.ndarray,
    top_idx: np.ndarray,
    final_norms: np.ndarray,
    k: int,
    frac: float,
) -> list[float | None]:
    """When each of the ``k`` largest final components leaves zero, largest first: the first
    recorded time at which its norm is at least ``frac`` times its final norm (None if never).

    ``time`` (T,), ``top_c`` / ``top_idx`` (T, K): the recorded top-K component norms and their
    indices; ``final_norms`` (R,). A component's norm is known where it is among the recorded
    top ones; at ``frac`` of its final norm (well above the near-zero components) it is, so the
    first such record is its crossing time up to the recording interval.
    """
    if not 0 < frac <= 1:
        raise ValueError(f"frac must be in (0, 1], got {frac}")
    time, top_c, top_idx = np.asarray(time), np.asarray(top_c), np.asarray(top_idx)
    final_norms = np.asarray(final_norms)
    out: list[float | None] = []
    for r in np.argsort(-final_norms, kind="stable")[:k]:
        hit = (top_idx == r) & (top_c >= frac * final_norms[r])
        rows = np.flatnonzero(hit.any(axis=1))
        out.append(float(time[rows[0]]) if len(rows) else None)
    return out


def min_relative_gap(times: Sequence[float | None]) -> float | None:
    """Smallest ``(t_(i+1) - t_(i)) / t_(i+1)`` over the sorted times (None if fewer than two
    or any is missing)."""
    if len(times) < 2 or any(t is None for t in times):
        return None
    ts = sorted(float(t) for t in times)  # type: ignore[arg-type]
    return min((b - a) / b if b > 0 else 0.0 for a, b in zip(ts, ts[1:], strict=False))


def separated(times: Sequence[float | None], min_gap: float) -> bool:
    """True if all times exist and consecutive ones (sorted) differ by at least ``min_gap``
    times the later one: the components leave zero one at a time."""
    gap = min_relative_gap(times)
    return gap is not None and gap >= min_gap
