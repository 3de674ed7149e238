"""Deep matrix factorization under gradient flow: predicted singular-value rates (Arora, Cohen,
Hu, Luo 2019, Thm. 3), the end-to-end flow field (Arora, Cohen, Hazan 2018, Thm. 1), and the
checks against recorded trajectories (Thm. 3 errors, one-at-a-time learning, GD against the
flow, the curvature that bounds GD's step)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from factorflow.factorizations.dmf import end_to_end, end_to_end_velocity

__all__ = [
    "crossing_times",
    "end_to_end_flow_field",
    "hessian_top_eigenvalue",
    "max_relative_error",
    "one_at_a_time",
    "singular_value_probes",
    "singular_value_rates",
    "theorem_errors",
    "trajectory_agreement",
]


def singular_value_rates(
    factors: Sequence[torch.Tensor], grad_W: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Measured and predicted d sigma_r/dt for the top ``k`` singular values, each (B, k).

    Measured: u_r^T (dW/dt) v_r with dW/dt the exact end-to-end velocity of the gradient-flow
    vector field (factor velocities -dL/dW_j), so no finite differences of samples.
    Predicted: -N (sigma_r^2)^(1-1/N) <grad_W, u_r v_r^T> (Arora et al. 2019, Thm. 3), exact for
    balanced factors. ``grad_W`` (B, d_N, d_0) is dl/dW at W = end_to_end(factors).
    """
    from factorflow.factorizations.dmf import dmf_factor_gradients

    N = len(factors)
    W = end_to_end(factors)
    vel = [-g for g in dmf_factor_gradients(factors, grad_W)]
    dW = end_to_end_velocity(factors, vel)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    U, S, V = U[..., :k], S[..., :k], Vh[..., :k, :].transpose(-1, -2)
    measured = torch.einsum("bir,bij,bjr->br", U, dW, V)
    proj = torch.einsum("bir,bij,bjr->br", U, grad_W, V)
    predicted = -N * S.square().pow(1.0 - 1.0 / N) * proj
    return measured, predicted


def singular_value_probes(objective: Any, top_k: int, rate_k: int) -> dict[str, Callable]:
    """Probes for :func:`factorflow.dynamics.train` along a deep matrix factorization:
    ``singular_values`` (B, top_k) of the end-to-end matrix and ``rates`` (B, 3, rate_k): the
    measured and predicted d sigma_r/dt of :func:`singular_value_rates` and their scale
    N sigma_r^(2-2/N) ||grad l(W)||_F (the inputs of :func:`theorem_errors`). ``objective``
    needs ``grad_W(W) -> (losses, dl/dW)`` (:class:`factorflow.objectives.DMFObjective`)."""

    def singular_values(ps: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.linalg.svdvals(end_to_end(ps))[..., :top_k]

    def rates(ps: Sequence[torch.Tensor]) -> torch.Tensor:
        N, W = len(ps), end_to_end(ps)
        _, G = objective.grad_W(W)
        measured, predicted = singular_value_rates(ps, G, rate_k)
        sig = torch.linalg.svdvals(W)[..., :rate_k]
        scale = N * sig.square().pow(1.0 - 1.0 / N) * torch.linalg.matrix_norm(G)[..., None]
        return torch.stack([measured, predicted, scale], dim=-2)

    return {"singular_values": singular_values, "rates": rates}


def end_to_end_flow_field(W: torch.Tensor, grad_W: torch.Tensor, depth: int) -> torch.Tensor:
    """-sum_{j=1..N} (W W^T)^((j-1)/N) grad_W (W^T W)^((N-j)/N), shape of W (Arora, Cohen,
    Hazan 2018, eq. 7): the end-to-end velocity under gradient flow from balanced init.

    The fractional powers come from the thin SVD W = U S V^T: (W W^T)^a = U S^(2a) U^T and
    (W^T W)^b = V S^(2b) V^T (exact zeros stay zero, also for rectangular or low-rank W);
    a power 0 is the identity."""
    N = depth
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    V = Vh.transpose(-1, -2)
    out = torch.zeros_like(W)
    for j in range(1, N + 1):
        a, b = (j - 1) / N, (N - j) / N
        term = grad_W
        if a > 0:
            term = (U * S.pow(2 * a).unsqueeze(-2)) @ (U.transpose(-1, -2) @ term)
        if b > 0:
            term = (term @ V) @ (S.pow(2 * b).unsqueeze(-1) * Vh)
        out = out - term
    return out


def max_relative_error(
    measured: torch.Tensor, predicted: torch.Tensor, floor: float = 0.0
) -> float:
    """max |measured - predicted| / max(|predicted|, floor) over all entries."""
    denom = predicted.abs().clamp_min(floor) if floor > 0 else predicted.abs()
    rel = (measured - predicted).abs() / denom
    rel = rel[torch.isfinite(rel)]
    return float(rel.max()) if rel.numel() else math.nan


# --------------------------------------------------------------------------- Thm. 3 check


def theorem_errors(
    sv: np.ndarray,
    measured: np.ndarray,
    predicted: np.ndarray,
    scale: np.ndarray,
    k: int,
    gap: float,
    zero: float = 1e-6,
) -> dict[str, Any]:
    """How far measured singular-value rates are from Thm. 3 (Arora et al. 2019) over recorded
    states (T) and the top ``k`` singular values.

    Args:
        sv: (T, >= k+1) singular values; a state counts as *separated* when every gap
            sigma_r - sigma_{r+1} (r <= k) and sigma_k are >= ``gap`` x sigma_1 (u_r, v_r and
            d sigma_r/dt are only defined for a singular value apart from its neighbours).
        measured, predicted: (T, k) u_r^T (dW/dt) v_r and -N sigma_r^(2-2/N) <G, u_r v_r^T>
            (:func:`singular_value_rates`).
        scale: (T, k) N sigma_r^(2-2/N) ||G||_F, the size of the terms the prediction sums
            (|predicted| <= scale); a rate with |predicted| < ``zero`` x scale is numerically
            zero (a singular value at a turning point, where a relative error only measures
            rounding) and is left out of the relative error.

    Returns ``max_rel_error`` (|m - p| / |p| over separated states and non-zero rates),
    ``max_normwise_error`` (|m - p| / scale over separated states), the same two over all
    states (``*_all_rows``), the counts ``n_rows``, ``n_separated``,
    ``n_rates_numerically_zero`` and the (T,) mask ``separated``. NaN where nothing is left.
    """
    sv, measured, predicted, scale = (
        np.asarray(x, dtype=np.float64) for x in (sv, measured, predicted, scale)
    )
    if sv.ndim != 2 or sv.shape[1] < k + 1 or measured.shape != (len(sv), k):
        raise ValueError(
            f"need sv (T, >= {k + 1}) and rates (T, {k}), got {sv.shape} and {measured.shape}"
        )
    if predicted.shape != measured.shape or scale.shape != measured.shape:
        raise ValueError("measured, predicted and scale must have the same shape")
    s = sv[:, : k + 1]
    gaps = (s[:, :k] - s[:, 1 : k + 1]).min(axis=1)
    separated = (gaps >= gap * s[:, 0]) & (s[:, k - 1] >= gap * s[:, 0])
    diff = np.abs(measured - predicted)
    nonzero = np.abs(predicted) >= zero * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(nonzero, diff / np.abs(predicted), np.nan)
        normwise = diff / scale

    def worst(x: np.ndarray, rows: np.ndarray) -> float:
        v = x[rows]
        v = v[np.isfinite(v)]
        return float(v.max()) if v.size else math.nan

    every = np.ones(len(sv), dtype=bool)
    return {
        "n_rows": len(sv),
        "n_separated": int(separated.sum()),
        "n_rates_numerically_zero": int((~nonzero[separated]).sum()),
        "max_rel_error": worst(rel, separated),
        "max_normwise_error": worst(normwise, separated),
        "max_rel_error_all_rows": worst(rel, every),
        "max_normwise_error_all_rows": worst(normwise, every),
        "separated": separated,
    }


# --------------------------------------------------------------------------- one at a time


def crossing_times(time: np.ndarray, sv: np.ndarray, k: int, frac: float = 0.5) -> np.ndarray:
    """(k,): for r < k the first time sigma_r(t) reaches ``frac`` times its last recorded value
    (linear interpolation between recorded states); ``time`` (T,), ``sv`` (T, >= k). NaN where
    it never does."""
    time, sv = np.asarray(time, dtype=np.float64), np.asarray(sv, dtype=np.float64)
    out = np.full(k, np.nan)
    for r in range(k):
        target = frac * sv[-1, r]
        above = np.nonzero(sv[:, r] >= target)[0]
        if above.size == 0:
            continue
        i = int(above[0])
        if i == 0:
            out[r] = time[0]
            continue
        t0, t1, s0, s1 = time[i - 1], time[i], sv[i - 1, r], sv[i, r]
        out[r] = t0 + (target - s0) / (s1 - s0) * (t1 - t0) if s1 != s0 else t1
    return out


def one_at_a_time(time: np.ndarray, sv: np.ndarray, k: int) -> dict[str, Any]:
    """Whether the top ``k`` singular values rise one after another (Arora et al. 2019, Sec. 4).

    t10_r, t50_r, t90_r: the first times sigma_r reaches 10 %, 50 %, 90 % of its last value
    (:func:`crossing_times`). A pair (r, r+1) is *sequential* when t50_{r+1} >= t90_r: the next
    value is at half height only after this one has nearly finished rising. Returns the times,
    ``ordered`` (t50 increasing), ``n_sequential_pairs`` of ``n_pairs`` = k - 1 and
    ``spread`` = t50_{k-1} / t50_0 (1 when all rise together)."""
    t10, t50, t90 = (crossing_times(time, sv, k, f) for f in (0.1, 0.5, 0.9))
    sequential = [bool(t50[r + 1] >= t90[r]) for r in range(k - 1)]
    return {
        "t10": t10.tolist(),
        "t50": t50.tolist(),
        "t90": t90.tolist(),
        "ordered": bool(np.all(np.diff(t50) > 0)),
        "n_sequential_pairs": int(sum(sequential)),
        "n_pairs": k - 1,
        "spread": float(t50[-1] / t50[0]) if t50[0] > 0 else math.nan,
    }


def trajectory_agreement(
    time_a: np.ndarray, sv_a: np.ndarray, time_b: np.ndarray, sv_b: np.ndarray, k: int
) -> dict[str, float]:
    """How closely two singular-value trajectories agree (e.g. gradient flow ``a`` and GD ``b``
    at time = step x lr): over the times both recorded (equal to 1e-9), the largest
    max_{r<k} |sigma_r^a - sigma_r^b| / max(sigma_1^a, sigma_1^b) (``max_diff_over_sigma1``) and
    the time it occurs (``at_time``); and the largest shift of the half-height crossing times
    (:func:`crossing_times`) over the common time span (``max_t50_shift``). NaN when the two
    share no time."""
    ta, sa = np.asarray(time_a, dtype=np.float64), np.asarray(sv_a, dtype=np.float64)
    tb, sb = np.asarray(time_b, dtype=np.float64), np.asarray(sv_b, dtype=np.float64)
    worst, at = math.nan, math.nan
    for i, t in enumerate(tb):
        j = np.nonzero(np.isclose(ta, t, rtol=1e-9, atol=1e-9))[0]
        if j.size == 0:
            continue
        diff = np.abs(sa[j[0], :k] - sb[i, :k]).max()
        rel = float(diff / max(sa[j[0], 0], sb[i, 0], 1e-300))
        if not rel <= worst:  # also the first one (worst is NaN)
            worst, at = rel, float(t)
    end = min(ta[-1], tb[-1])
    shift = np.abs(
        crossing_times(tb[tb <= end], sb[tb <= end], k)
        - crossing_times(ta[ta <= end], sa[ta <= end], k)
    )
    return {
        "max_diff_over_sigma1": worst,
        "at_time": at,
        "max_t50_shift": float(np.nanmax(shift)) if np.isfinite(shift).any() else math.nan,
    }


# --------------------------------------------------------------------------- curvature


def hessian_top_eigenvalue(
    objective: Callable[[Sequence[torch.Tensor]], torch.Tensor],
    factors: Sequence[torch.Tensor],
    *,
    v0: Sequence[torch.Tensor] | None = None,
    iters: int = 100,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor], int]:
    """Largest-magnitude eigenvalue of each run's Hessian d^2 L_b / d theta_b^2, shape (B,).

    ``objective(factors) -> (B,)`` with every factor batched over runs (B, ...): the Hessian of
    sum_b L_b is block diagonal over runs, so one power iteration ``v <- H v / ||H v||`` (norms
    per run, ``H v`` by double-backward autograd) serves all of them. The Rayleigh quotient
    <v, H v> is returned once it changes by at most ``tol`` (relative) in every run, or after
    ``iters`` products; ``v0`` warm-starts it (e.g. the previous call's vector). GD with step
    ``lr`` is stable on the local quadratic model iff lr < 2 / lambda_max.

    Returns ``(lambda (B,), v (unit per run, shaped like factors), Hessian-vector products)``.
    """
    fs = [f.detach() for f in factors]
    B = fs[0].shape[0]
    if v0 is None:
        v = [torch.randn(f.shape, generator=generator, dtype=f.dtype).to(f.device) for f in fs]
    else:
        v = [x.detach().clone() for x in v0]

    def per_run_dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum((x * y).reshape(B, -1).sum(1) for x, y in zip(a, b, strict=True))

    def unit(u: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        norm = per_run_dot(u, u).sqrt().clamp_min(1e-300)
        return [x / norm.reshape(B, *([1] * (x.ndim - 1))) for x in u]

    ps = [f.clone().requires_grad_(True) for f in fs]
    with torch.enable_grad():
        grads = torch.autograd.grad(objective(ps).sum(), ps, create_graph=True)
    lam_prev = None
    lam = torch.zeros(B, dtype=fs[0].dtype, device=fs[0].device)
    n = 0
    for n in range(1, iters + 1):  # noqa: B007
        v = unit(v)
        with torch.enable_grad():
            hv = torch.autograd.grad(grads, ps, grad_outputs=v, retain_graph=True)
        lam = per_run_dot(v, hv).detach()
        v = [h.detach() for h in hv]
        if lam_prev is not None and bool(
            ((lam - lam_prev).abs() <= tol * lam.abs().clamp_min(1e-300)).all()
        ):
            break
        lam_prev = lam
    return lam, unit(v), n
