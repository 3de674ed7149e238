"""Spectral, norm and factorization metrics for (deep) matrix factorization.

All functions are pure tensor-in / tensor-out (``torch``), work on any floating
dtype and device, and are batched over leading dimensions: a matrix argument has
shape ``(..., d1, d2)`` and a scalar metric has shape ``(...)`` (``(..., k)`` for
spectra).

Conventions: a depth-``N`` deep matrix factorization is a list
``factors = [W_1, ..., W_N]`` with ``W_j`` of shape ``(..., d_j, d_{j-1})``; the
end-to-end matrix is ``W = W_N W_{N-1} ... W_1`` of shape ``(..., d_N, d_0)``.

Sources:

- Arora, Cohen, Hu, Luo (2019), "Implicit regularization in deep matrix
  factorization" (effective rank, reconstruction error, balancedness).
- Razin & Cohen (2020), "Implicit regularization in deep learning may not be
  explainable by norms" (relative Frobenius error, Schatten quasi-norms).
- Roy & Vetterli (2007), "The effective rank: a measure of effective
  dimensionality".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "MATRIX_METRICS",
    "balancedness_gap",
    "determinant",
    "effective_rank",
    "end_to_end",
    "frobenius_norm",
    "matrix_metrics",
    "matrix_summary",
    "nuclear_norm",
    "numerical_rank",
    "rel_fro_error",
    "recon_mse",
    "schatten_metric",
    "schatten_norm",
    "singular_values",
    "spectral_norm",
    "top_singular_vectors",
]


def _check_matrix(W: Tensor, name: str = "W") -> None:
    if not isinstance(W, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(W).__name__}")
    if W.ndim < 2:
        raise ValueError(f"{name} must have shape (..., d1, d2), got {tuple(W.shape)}")


# --------------------------------------------------------------------------- spectra


def singular_values(W: Tensor) -> Tensor:
    """Singular values of ``W``, in descending order.

    Args:
        W: shape ``(..., d1, d2)``.

    Returns:
        ``sigma`` of shape ``(..., min(d1, d2))``, real, non-negative, descending
        (``torch.linalg.svdvals``).
    """
    _check_matrix(W)
    return torch.linalg.svdvals(W)


def effective_rank(W: Tensor, *, from_spectrum: bool = False) -> Tensor:
    """Effective rank of Roy & Vetterli (2007).

    ``erank(W) = exp(H(p))`` with ``p_i = sigma_i / ||sigma||_1`` and
    ``H(p) = -sum_i p_i log p_i`` (convention ``0 log 0 = 0``). It lies in
    ``[1, min(d1, d2)]``, equals ``k`` for ``k`` equal non-zero singular values and
    is invariant to scaling ``W``. Used by Arora et al. (2019) to track the
    low-rank bias of deep matrix factorization.

    Args:
        W: a matrix of shape ``(..., d1, d2)``, or, if ``from_spectrum`` is True, a
            non-negative spectrum of shape ``(..., k)``.
        from_spectrum: interpret ``W`` as singular values instead of a matrix.

    Returns:
        Shape ``(...)``. For the all-zero matrix (spectrum) ``p`` is undefined and
        the result is ``NaN``.
    """
    if from_spectrum:
        if W.ndim < 1:
            raise ValueError(f"spectrum must have shape (..., k), got {tuple(W.shape)}")
        sigma = W
    else:
        sigma = singular_values(W)
    p = sigma / sigma.sum(dim=-1, keepdim=True)  # NaN everywhere for an all-zero spectrum
    entropy = -torch.special.xlogy(p, p).sum(dim=-1)
    return torch.exp(entropy)


# --------------------------------------------------------------------------- norms


def nuclear_norm(W: Tensor) -> Tensor:
    """Nuclear norm ``||W||_* = sum_i sigma_i``. ``W``: ``(..., d1, d2)`` -> ``(...)``."""
    _check_matrix(W)
    return torch.linalg.matrix_norm(W, ord="nuc")


def frobenius_norm(W: Tensor) -> Tensor:
    """Frobenius norm ``||W||_F = sqrt(sum_ij |W_ij|^2)``. ``(..., d1, d2)`` -> ``(...)``."""
    _check_matrix(W)
    return torch.linalg.matrix_norm(W, ord="fro")


def spectral_norm(W: Tensor) -> Tensor:
    """Spectral norm ``||W||_2 = sigma_max``. ``W``: ``(..., d1, d2)`` -> ``(...)``."""
    _check_matrix(W)
    return torch.linalg.matrix_norm(W, ord=2)


def schatten_norm(W: Tensor, p: float) -> Tensor:
    """Schatten-``p`` (quasi-)norm ``(sum_i sigma_i^p)^(1/p)``.

    A norm for ``p >= 1`` (``p = 1`` nuclear, ``p = 2`` Frobenius, ``p = inf``
    spectral) and a quasi-norm for ``0 < p < 1`` (Razin & Cohen 2020 study these
    as candidate implicit regularizers). Computed as
    ``sigma_max * (sum_i (sigma_i / sigma_max)^p)^(1/p)`` to avoid overflow for
    large ``p``; the zero matrix gives 0.

    Args:
        W: shape ``(..., d1, d2)``.
        p: exponent, ``p > 0`` (``math.inf`` allowed).

    Returns:
        Shape ``(...)``.

    Raises:
        ValueError: if ``p <= 0`` (or NaN).
    """
    p = float(p)
    if not p > 0:
        raise ValueError(f"Schatten exponent must be > 0, got p={p}")
    sigma = singular_values(W)
    smax = sigma.amax(dim=-1)
    if math.isinf(p):
        return smax
    safe = torch.where(smax > 0, smax, torch.ones_like(smax))
    ratio = sigma / safe.unsqueeze(-1)
    return smax * ratio.pow(p).sum(dim=-1).pow(1.0 / p)


def determinant(W: Tensor) -> Tensor:
    """Determinant of a square matrix. ``W``: ``(..., d, d)`` -> ``(...)``.

    Raises:
        ValueError: if ``W`` is not square (the message names the shape).
    """
    _check_matrix(W)
    if W.shape[-1] != W.shape[-2]:
        raise ValueError(f"determinant needs a square matrix (..., d, d), got {tuple(W.shape)}")
    return torch.linalg.det(W)


def numerical_rank(W: Tensor, tol: float | None = None, *, relative: bool = True) -> Tensor:
    """Numerical rank: the number of singular values strictly above a threshold.

    Threshold: if ``tol`` is None, ``sigma_max * max(d1, d2) * eps`` with ``eps``
    the machine epsilon of ``W``'s (real) dtype, as ``numpy.linalg.matrix_rank``;
    otherwise ``tol * sigma_max`` if ``relative`` else ``tol``.

    Args:
        W: shape ``(..., d1, d2)``.
        tol: tolerance, see above.
        relative: whether a given ``tol`` is relative to ``sigma_max``.

    Returns:
        ``int64`` tensor of shape ``(...)``.
    """
    sigma = singular_values(W)
    smax = sigma.amax(dim=-1, keepdim=True)
    if tol is None:
        eps = torch.finfo(sigma.dtype).eps
        thresh = smax * (max(W.shape[-2], W.shape[-1]) * eps)
    elif relative:
        thresh = smax * tol
    else:
        thresh = torch.full_like(smax, float(tol))
    return (sigma > thresh).sum(dim=-1)


# --------------------------------------------------------------------------- errors


def recon_mse(W: Tensor, W_star: Tensor) -> Tensor:
    """Reconstruction error ``mean_ij |W_ij - W*_ij|^2`` over all entries.

    The "reconstruction error" of Arora et al. (2019). ``W`` and ``W_star``
    broadcast, shapes ``(..., d1, d2)`` -> ``(...)``. If
    ``||W*||_F^2 = d1 * d2`` then ``recon_mse = rel_fro_error^2``.
    """
    _check_matrix(W)
    _check_matrix(W_star, "W_star")
    return (W - W_star).abs().square().mean(dim=(-2, -1))


def rel_fro_error(W: Tensor, W_star: Tensor) -> Tensor:
    """Relative Frobenius error ``||W - W*||_F / ||W*||_F`` (Razin & Cohen 2020).

    ``W`` and ``W_star`` broadcast, shapes ``(..., d1, d2)`` -> ``(...)``; ``inf``
    or ``NaN`` if ``W* = 0``.
    """
    _check_matrix(W)
    _check_matrix(W_star, "W_star")
    return torch.linalg.matrix_norm(W - W_star, ord="fro") / torch.linalg.matrix_norm(
        W_star, ord="fro"
    )


# --------------------------------------------------------------------------- factorizations


def end_to_end(factors: Sequence[Tensor]) -> Tensor:
    """End-to-end matrix ``W = W_N W_{N-1} ... W_1`` of a deep factorization.

    Args:
        factors: ``[W_1, ..., W_N]``, ``W_j`` of shape ``(..., d_j, d_{j-1})``
            (batch dimensions broadcast).

    Returns:
        Shape ``(..., d_N, d_0)``.
    """
    if len(factors) == 0:
        raise ValueError("factors must be a non-empty sequence [W_1, ..., W_N]")
    for j, f in enumerate(factors, start=1):
        _check_matrix(f, f"W_{j}")
    W = factors[0]
    for j, f in enumerate(factors[1:], start=2):
        if f.shape[-1] != W.shape[-2]:
            raise ValueError(
                f"W_{j} has shape {tuple(f.shape)}, incompatible with the product of the "
                f"previous factors of shape {tuple(W.shape)}"
            )
        W = f @ W
    return W


def balancedness_gap(factors: Sequence[Tensor], relative: bool = False) -> Tensor:
    """Deviation of a deep factorization from balancedness.

    ``max_{j=1..N-1} ||W_{j+1}^T W_{j+1} - W_j W_j^T||_F`` (conjugate transpose for
    complex); 0 exactly for a balanced factorization (Arora et al. 2018/2019:
    gradient flow from balanced initialization stays balanced). With
    ``relative=True`` divided by ``max_{j=1..N} ||W_j W_j^T||_F`` (0 where that is
    0, i.e. all factors vanish).

    Args:
        factors: ``[W_1, ..., W_N]``, ``W_j`` of shape ``(..., d_j, d_{j-1})``.
        relative: normalize as above.

    Returns:
        Real tensor of shape ``(...)`` (broadcast batch shape); zeros for ``N = 1``.
    """
    if len(factors) == 0:
        raise ValueError("factors must be a non-empty sequence [W_1, ..., W_N]")
    for j, f in enumerate(factors, start=1):
        _check_matrix(f, f"W_{j}")
    batch = torch.broadcast_shapes(*(f.shape[:-2] for f in factors))
    f0 = factors[0]
    real = f0.real if f0.is_complex() else f0
    gap = torch.zeros(batch, dtype=real.dtype, device=f0.device)
    for lo, hi in zip(factors[:-1], factors[1:], strict=True):
        diff = hi.mH @ hi - lo @ lo.mH
        gap = torch.maximum(gap, torch.linalg.matrix_norm(diff, ord="fro"))
    if not relative:
        return gap
    denom = torch.zeros_like(gap)
    for f in factors:
        denom = torch.maximum(denom, torch.linalg.matrix_norm(f @ f.mH, ord="fro"))
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, gap / safe, torch.zeros_like(gap))


def top_singular_vectors(W: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Leading ``k`` singular triplets of ``W`` (``W ~ U_k diag(S_k) V_k^H``).

    Singular vectors are defined up to sign (phase), as returned by
    ``torch.linalg.svd``.

    Args:
        W: shape ``(..., d1, d2)``.
        k: number of triplets, ``0 <= k <= min(d1, d2)``.

    Returns:
        ``(U_k, S_k, V_k)`` of shapes ``(..., d1, k)``, ``(..., k)``, ``(..., d2, k)``.
    """
    _check_matrix(W)
    r = min(W.shape[-2], W.shape[-1])
    if not 0 <= k <= r:
        raise ValueError(f"k must be in [0, {r}] for W of shape {tuple(W.shape)}, got {k}")
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    return U[..., :k], S[..., :k], Vh[..., :k, :].mH


# --------------------------------------------------------------------------- registry


def schatten_metric(p: float) -> Callable[[Tensor], Tensor]:
    """A one-argument metric ``W -> schatten_norm(W, p)`` (validates ``p`` now)."""
    if not float(p) > 0:
        raise ValueError(f"Schatten exponent must be > 0, got p={p}")

    def metric(W: Tensor) -> Tensor:
        return schatten_norm(W, p)

    metric.__name__ = f"schatten_{p}"
    metric.__doc__ = f"Schatten-{p} (quasi-)norm of W, shape (..., d1, d2) -> (...)."
    return metric


#: Scalar metrics of the end-to-end matrix, by name: ``(..., d1, d2) -> (...)``.
MATRIX_METRICS: dict[str, Callable[[Tensor], Tensor]] = {
    "nuclear_norm": nuclear_norm,
    "fro_norm": frobenius_norm,
    "spectral_norm": spectral_norm,
    "effective_rank": effective_rank,
    "schatten_0.5": schatten_metric(0.5),
}


def matrix_summary(W: Tensor, W_star: Tensor | None = None) -> dict[str, float]:
    """Python-float summary of a single (unbatched) matrix ``W`` of shape ``(d1, d2)``.

    Keys: those of :data:`MATRIX_METRICS`, plus ``"recon_mse"`` and
    ``"rel_fro_error"`` when ``W_star`` is given, plus ``"det"`` when square.
    """
    if not isinstance(W, Tensor) or W.ndim != 2:
        shape = tuple(W.shape) if isinstance(W, Tensor) else type(W).__name__
        raise ValueError(f"matrix_summary needs a single matrix (d1, d2), got {shape}")
    W = W.detach()
    out = {name: float(fn(W)) for name, fn in MATRIX_METRICS.items()}
    if W_star is not None:
        W_star = W_star.detach()
        out["recon_mse"] = float(recon_mse(W, W_star))
        out["rel_fro_error"] = float(rel_fro_error(W, W_star))
    if W.shape[0] == W.shape[1]:
        out["det"] = float(determinant(W))
    return out


def matrix_metrics(W: Tensor, depth: int) -> dict[str, Tensor]:
    """Metrics of a batch of end-to-end matrices ``W`` (..., d1, d2) (e.g. a recorded
    trajectory (T, d1, d2)) of a depth-``depth`` factorization, each of shape ``(...)``.

    ``w11`` (signed) and ``abs_w11`` (the entry Razin & Cohen 2020 follow); ``nuclear_norm``,
    ``fro_norm``, ``schatten_0.5`` and ``schatten_2/N`` ((sum_i sigma_i^p)^(1/p), quasi-norms
    for p < 1); ``effective_rank``; ``floor_measure = (sigma_2 / sigma_1)^(2/N)`` (for balanced
    factors the squared ratio of each factor's two largest singular values; 0 at W = 0); for
    square W also ``det`` and ``rel_det = det / ||W||_F^2`` (scale-free; in [-1/2, 1/2] for
    2x2). Float64 in, float64 out.
    """
    _check_matrix(W)
    if int(depth) < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    sv = singular_values(W)
    fro = frobenius_norm(W)
    p = 2.0 / int(depth)
    out = {
        "w11": W[..., 0, 0],
        "abs_w11": W[..., 0, 0].abs(),
        "nuclear_norm": nuclear_norm(W),
        "fro_norm": fro,
        "schatten_0.5": schatten_norm(W, 0.5),
        "schatten_2/N": schatten_norm(W, p),
        "effective_rank": effective_rank(W),
    }
    if sv.shape[-1] >= 2:
        ratio = torch.where(sv[..., 0] > 0, sv[..., 1] / sv[..., 0], torch.zeros_like(fro))
        out["floor_measure"] = ratio.pow(p)
    if W.shape[-1] == W.shape[-2]:
        det = determinant(W)
        out["det"] = det
        out["rel_det"] = det / fro.square()
    return out
