"""Razin & Cohen (NeurIPS 2020), the 2x2 completion problems: lower bounds on |w11| and on the
norm of W while the loss falls (the norms grow toward infinity while the rank is minimized), and
the minimum nuclear-norm completion they are compared with."""

from __future__ import annotations

import numpy as np

__all__ = [
    "min_nuclear_completion",
    "perturbed_norm_constant",
    "perturbed_norm_lower_bound",
    "perturbed_w11_lower_bound",
    "w11_lower_bound",
]


def w11_lower_bound(loss: float | np.ndarray) -> float | np.ndarray:
    """Razin & Cohen 2020 2x2 problem, half_sse loss l < 1/2, det(W) > 0:
    |w11| >= (1 - sqrt(2 l))^2 / sqrt(2 l). Accepts a float or an array of losses.

    Derivation: the residuals r12, r21, r22 satisfy r12^2 + r21^2 + r22^2 = 2 l, so each |r| <=
    sqrt(2l) =: e. det W = w11 w22 - w12 w21 > 0 with |w22| <= e and w12 w21 >= (1 - e)^2 gives
    |w11| e >= |w11 w22| > w12 w21 >= (1 - e)^2.
    """

    arr = np.asarray(loss, dtype=np.float64)
    if not np.all((arr > 0) & (arr < 0.5)):
        raise ValueError(f"the bound needs 0 < loss < 1/2, got {loss}")
    e = np.sqrt(2 * arr)
    out = (1 - e) ** 2 / e
    return float(out) if out.ndim == 0 else out


# --------------------------------------------------------------------------- perturbed 2x2


def perturbed_w11_lower_bound(
    loss: float | np.ndarray, eps: float, z: float = -2.0, z_prime: float = 0.5
) -> float | np.ndarray:
    """Razin & Cohen 2020, the perturbed 2x2 problem [[?, z], [z', eps]] (observed w12 = z,
    w21 = z', w22 = eps), half_sse loss l, det(W) of the sign of z z':
    |w11| >= (|z| - e)(|z'| - e) / (|eps| + e) with e = sqrt(2 l) < min(|z|, |z'|). Tends to
    |z z'| / |eps| (= 1/eps for the paper's z = -2, z' = 0.5) as l -> 0. Float or array.

    Derivation: every residual is at most e in magnitude (their squares sum to 2 l), so w12 w21
    has the sign of z z' and |w12 w21| >= (|z| - e)(|z'| - e), and |w22| <= |eps| + e. With
    sign(det) = sign(z z'), det = w11 w22 - w12 w21 gives |w11 w22| > |w12 w21| (for z z' < 0:
    w11 w22 < w12 w21 < 0; for z z' > 0: w11 w22 > w12 w21 > 0)."""

    m = min(abs(z), abs(z_prime))
    e = np.sqrt(2 * np.asarray(loss, dtype=np.float64))
    if not np.all((e > 0) & (e < m)):
        raise ValueError(f"the bound needs 0 < sqrt(2 loss) < min(|z|, |z'|) = {m}, got {loss}")
    out = (abs(z) - e) * (abs(z_prime) - e) / (abs(eps) + e)
    return float(out) if out.ndim == 0 else out


def perturbed_norm_constant(z: float = -2.0, z_prime: float = 0.5) -> float:
    """The constant c of :func:`perturbed_norm_lower_bound`: c = (M - m/2) / 2 with
    m = min(|z|, |z'|), M = max(|z|, |z'|) (0.875 for z = -2, z' = 0.5)."""
    m, big = sorted((abs(z), abs(z_prime)))
    if not m > 0:
        raise ValueError(f"z and z' must be non-zero, got {z}, {z_prime}")
    return (big - m / 2) / 2


def perturbed_norm_lower_bound(
    loss: float | np.ndarray, eps: float, z: float = -2.0, z_prime: float = 0.5
) -> float | np.ndarray:
    """The authors' statement on [[?, z], [z', eps]] (Razin & Cohen 2020): if sign det W(0) =
    sign(z z') (and gradient flow keeps it), ||W(t)|| = Omega(min(|z|, |z'|) / (|eps| +
    sqrt(2 l(t)))). With an explicit constant: for every norm at least the spectral norm
    (spectral, Frobenius, nuclear) and every state with sign det W = sign(z z') and
    e = sqrt(2 l) <= m / 2 (l <= m^2 / 8, m = min(|z|, |z'|)),

        ||W|| >= c m / (|eps| + e),   c = (M - m/2) / 2   (:func:`perturbed_norm_constant`).

    How c follows: ||W|| >= ||W||_2 >= |w11| >= (|z| - e)(|z'| - e) / (|eps| + e)
    (:func:`perturbed_w11_lower_bound`), and for e <= m/2, (|z| - e)(|z'| - e) =
    (M - e)(m - e) >= (M - m/2) m/2 = c m. The restriction to e <= m/2 cannot be dropped for
    any c > 0: near W = 0 (e.g. at a small init) the loss is ~(z^2 + z'^2 + eps^2)/2 and the
    norm is ~0. Float or array."""

    m = min(abs(z), abs(z_prime))
    e = np.sqrt(2 * np.asarray(loss, dtype=np.float64))
    if not np.all((e > 0) & (e <= m / 2)):
        raise ValueError(f"the bound needs 0 < loss <= min(|z|, |z'|)^2 / 8 = {m**2 / 8}")
    out = perturbed_norm_constant(z, z_prime) * m / (abs(eps) + e)
    return float(out) if out.ndim == 0 else out


def min_nuclear_completion(
    eps: float, z: float = -2.0, z_prime: float = 0.5
) -> tuple[float, float]:
    """The completion [[x, z], [z', eps]] of least nuclear norm, (x, ||W||_*), by a bounded
    scalar search over x in [-10, 10] (numpy SVD).

    Closed form for the paper's z = -2, z' = 0.5 and 0 <= eps < 1: ||W||_*^2 = ||W||_F^2 +
    2 |det W| with det = eps x + 1, i.e. (x + eps)^2 + 6.25 where eps x + 1 >= 0 and
    (x - eps)^2 + 2.25 >= 6.25 elsewhere, so x = -eps and ||W||_* = 2.5 (det > 0, rank 2): far
    from the rank-1 completion x = -1/eps that gradient flow from det(W(0)) < 0 approaches."""
    import scipy.optimize

    def nuc(x: float) -> float:
        return float(np.linalg.svd(np.array([[x, z], [z_prime, eps]]), compute_uv=False).sum())

    res = scipy.optimize.minimize_scalar(
        nuc, bounds=(-10.0, 10.0), method="bounded", options={"xatol": 1e-10}
    )
    return float(res.x), float(res.fun)
