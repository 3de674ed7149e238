"""What the theory predicts, and the checks between prediction and measurement.

- Singular values under gradient flow from balanced init (Arora, Cohen, Hu, Luo 2019, Thm. 3):
  d sigma_r/dt = -N (sigma_r^2)^(1 - 1/N) <grad l(W), u_r v_r^T>.
- End-to-end dynamics (Arora, Cohen, Hazan 2018, Thm. 1), balanced init:
  dW/dt = -sum_{j=1..N} (W W^T)^((j-1)/N) grad l(W) (W^T W)^((N-j)/N).
- Determinant (Razin & Cohen 2020): for N >= 2 gradient flow keeps the sign of det(W); on the
  2x2 problem [[?, 1], [1, 0]] with l = half_sse and det > 0, |w11| >= (1 - sqrt(2l))^2 / sqrt(2l).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from factorflow.factorizations.dmf import end_to_end, end_to_end_velocity

__all__ = [
    "end_to_end_flow_field",
    "max_relative_error",
    "singular_value_rates",
    "w11_lower_bound",
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


def w11_lower_bound(loss):  # float or np.ndarray -> same
    """Razin & Cohen 2020 2x2 problem, half_sse loss l < 1/2, det(W) > 0:
    |w11| >= (1 - sqrt(2 l))^2 / sqrt(2 l). Accepts a float or an array of losses.

    Derivation: the residuals r12, r21, r22 satisfy r12^2 + r21^2 + r22^2 = 2 l, so each |r| <=
    sqrt(2l) =: e. det W = w11 w22 - w12 w21 > 0 with |w22| <= e and w12 w21 >= (1 - e)^2 gives
    |w11| e >= |w11 w22| > w12 w21 >= (1 - e)^2.
    """
    import numpy as np

    arr = np.asarray(loss, dtype=np.float64)
    if not np.all((arr > 0) & (arr < 0.5)):
        raise ValueError(f"the bound needs 0 < loss < 1/2, got {loss}")
    e = np.sqrt(2 * arr)
    out = (1 - e) ** 2 / e
    return float(out) if out.ndim == 0 else out
