"""CP factorization of very high order, evaluated stably in log space.

Razin, Maman & Cohen 2021 ("Implicit regularization in tensor factorization", Sec. 5, tensor rank
of natural data) view a classification data set as a completion problem on a tensor of order
``N`` = number of input features: an image with pixels quantized to ``k`` levels (``k = 2`` for
binarized MNIST, ``N = 784``) is the multi-index ``x in {0..k-1}^N`` and its label is the entry.
A CP factorization with ``R`` components predicts

    f(x) = sum_{r=1..R} prod_{n=1..N} w_r^n[x_n].

A product of 784 factors overflows or underflows in floating point (``0.3^784 = 1e-410``,
``3^784 = 1e374``), so here each component is kept as ``(log-magnitude, sign)``:

    log|prod_n w_r^n[x_n]| = sum_n log|w_r^n[x_n]|,   sign = (-1)^(number of negative factors),

and the sum over components is a signed log-sum-exp.

Parameters: a single, unbatched tensor ``weights`` of shape ``(R, N, k)``, with
``weights[r, n, v] = w_r^n[v]`` (train it directly, e.g. with Adam). Data: ``X`` of shape
``(n, N)`` with entries in ``{0, ..., k-1}`` (integer, bool, or already-float 0/1 for ``k = 2``:
passing ``X`` pre-cast to the weights' dtype saves a conversion per call).

Pure, differentiable tensor-in / tensor-out functions; any dtype and device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "log_components",
    "log_abs_predict_large_order",
    "cp_predict_large_order",
    "dense_onehot_predict",
    "init_large_order_weights",
]

#: the general-k path builds one-hot indicator blocks of at most this many entries at a time
_CHUNK_ENTRIES = 2**24


def _check(weights: torch.Tensor, X: torch.Tensor) -> tuple[int, int, int]:
    if weights.ndim != 3:
        raise ValueError(f"weights must have shape (R, N, k), got {tuple(weights.shape)}")
    R, N, k = weights.shape
    if X.ndim != 2 or X.shape[1] != N:
        raise ValueError(f"X must have shape (n, N) = (n, {N}), got {tuple(X.shape)}")
    if k < 1:
        raise ValueError("weights must have k >= 1 values per mode")
    return R, N, k


def _safe_log_abs(weights: torch.Tensor) -> torch.Tensor:
    """``log|w|`` with 0 where ``w == 0`` (exact zeros are tracked separately).

    The log is taken of ``|w|`` with zeros replaced by 1, so autograd never sees ``log 0``
    (``where`` would otherwise turn its infinite derivative into NaN).
    """
    zero = weights == 0
    return torch.log(torch.where(zero, torch.ones_like(weights), weights.abs()))


def log_components(weights: torch.Tensor, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-magnitude and sign of every component at every sample: two ``(n, R)`` tensors.

    ``logmag[i, r] = sum_n log|w_r^n[X[i, n]]|`` and ``sign[i, r] = prod_n sign(w_r^n[X[i, n]])``
    (computed from the parity of the number of negative factors; exact). A component with an
    exact zero factor gets ``logmag = -inf`` and ``sign = 0``; its gradient is then 0 (the
    log-space form cannot carry the derivative through an exact zero; with continuous
    initializations this has probability zero).

    Fast path, ``k = 2`` (binary pixels): the per-sample sum is affine in ``x``,

        logmag = sum_n log|w_r^n[0]| + X @ (log|w_r^n[1]| - log|w_r^n[0]|)^T,

    one ``(n, N) @ (N, R)`` matrix product for the whole data set; the negative-factor and
    zero-factor counts are one more, untracked ``(n, N) @ (N, <= 2R)`` product over the
    components that have a non-positive weight at all (none: skipped). General ``k``: the
    same with the one-hot indicators of the values ``1..k-1``, ``(n, N(k-1)) @ (N(k-1), R)``,
    built in chunks of samples so at most ``2**24`` indicator entries exist at once.

    Counts are sums of 0/+-1 in floating point: exact for ``N < 2**24`` (float32) or
    ``2**53`` (float64).
    """
    R, N, k = _check(weights, X)
    logmag = _affine_in_onehot(_safe_log_abs(weights), X)
    # the counts need no gradient: a separate, untracked product
    with torch.no_grad():
        flags = torch.cat([weights < 0, weights == 0])  # (2R, N, k)
        # only components with some non-positive weight need counting (one host sync); near-1
        # initializations usually have none, which saves this product entirely
        rows = flags.flatten(1).any(dim=1).nonzero().squeeze(1)
        counts = torch.zeros((X.shape[0], 2 * R), dtype=weights.dtype, device=weights.device)
        if rows.numel() > 0:
            counts[:, rows] = _affine_in_onehot(flags[rows].to(weights.dtype), X)
        has_zero = counts[:, R:] > 0.5
        parity = torch.remainder(counts[:, :R].round(), 2)
        sign = torch.where(has_zero, torch.zeros_like(parity), 1.0 - 2.0 * parity)
    logmag = torch.where(has_zero, torch.full_like(logmag, -math.inf), logmag)
    return logmag, sign


def _affine_in_onehot(table: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``out[i, c] = sum_n table[c, n, X[i, n]]`` for a table ``(C, N, k)``: ``(n, C)``.

    Written as ``sum_n table[c, n, 0] + onehot_{1..k-1}(X) @ (table[c, n, v] - table[c, n, 0])``:
    for ``k = 2`` the one-hot block is ``X`` itself (one matrix product); for ``k > 2`` it is
    built in chunks of samples (at most ``_CHUNK_ENTRIES`` indicator entries at once).
    """
    C, N, k = table.shape
    offset = table[:, :, 0].sum(dim=1)[None, :]  # (1, C)
    if k == 1:
        return offset.expand(X.shape[0], C)
    diff = (table[:, :, 1:] - table[:, :, :1]).permute(1, 2, 0).reshape(N * (k - 1), C)
    if k == 2:
        Xf = X.to(dtype=table.dtype, device=table.device)  # no-op when already there
        return torch.addmm(offset, Xf, diff)
    Xl = X.to(dtype=torch.long, device=table.device)
    step = max(1, _CHUNK_ENTRIES // (N * (k - 1)))
    parts = [
        torch.addmm(
            offset,
            F.one_hot(Xl[s : s + step], k)[:, :, 1:].reshape(-1, N * (k - 1)).to(table.dtype),
            diff,
        )
        for s in range(0, Xl.shape[0], step)
    ]
    return torch.cat(parts) if parts else offset.expand(0, C)


def _signed_logsumexp(
    logmag: torch.Tensor, sign: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(M, s, Msafe)`` with ``sum_r sign_r exp(logmag_r) = exp(Msafe) * s`` per row.

    ``M = max_r logmag_r`` is detached: the expression is exactly independent of ``M``, so the
    gradient through it is the true one. Rows whose components are all exactly zero
    (``M = -inf``) use ``Msafe = 0`` and get ``s = 0``.
    """
    M = logmag.detach().max(dim=1, keepdim=True).values
    Msafe = torch.where(torch.isfinite(M), M, torch.zeros_like(M))
    s = (sign * torch.exp(logmag - Msafe)).sum(dim=1)
    return M.squeeze(1), s, Msafe.squeeze(1)


def log_abs_predict_large_order(
    weights: torch.Tensor, X: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log|f(x)|, sign f(x))``, two ``(n,)`` tensors, finite whatever the magnitude of ``f``.

    ``log|f| = M + log|sum_r sign_r exp(logmag_r - M)|`` with ``M = max_r logmag_r``. Exact
    cancellation (``f = 0``) gives ``-inf`` and sign 0.
    """
    logmag, sign = log_components(weights, X)
    _, s, Msafe = _signed_logsumexp(logmag, sign)
    return Msafe + torch.log(s.abs()), torch.sign(s.detach())


def cp_predict_large_order(weights: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``f(x) = sum_r prod_n w_r^n[x_n]`` for every sample: ``(n,)``.

    Evaluated as ``exp(M) * sum_r sign_r exp(logmag_r - M)``, ``M = max_r logmag_r`` per sample
    (see :func:`log_components`), i.e. ``sign(s) exp(M + log|s|)`` for the bracketed sum ``s``
    (``|s| <= R``, and ``|s| >= 1`` unless components cancel), so no intermediate over- or
    underflows: the result is correctly rounded whenever the true value is representable.

    When the true value is not representable in the dtype (float64: ``|f| > ~1.8e308`` or
    ``|f| < ~4.9e-324``) the result is ``+-inf`` (gradients inf/NaN) or ``0`` (gradients 0,
    or subnormal and imprecise near the bottom of the range), exactly as IEEE rounding of the true
    value would give; use :func:`log_abs_predict_large_order` to get ``log|f|`` in that regime.
    Samples where every component has an exact zero factor give 0.
    """
    logmag, sign = log_components(weights, X)
    _, s, Msafe = _signed_logsumexp(logmag, sign)
    nz = s != 0
    abs_safe = torch.where(nz, s.abs(), torch.ones_like(s))
    big = torch.sign(s) * torch.exp(Msafe + torch.log(abs_safe))
    # at s == 0 use the (linear, hence correctly differentiable) form exp(M) * s
    return torch.where(nz, big, s * torch.exp(Msafe))


def dense_onehot_predict(weights: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Reference formulation, for benchmarks: ``(n,)``, the direct product (no log space).

    Builds the one-hot tensor ``(n, N, k)`` of ``X``, contracts it with the weights over ``k``
    to get every factor value ``(n, R, N)``, multiplies over the ``N`` modes and sums over the
    ``R`` components — the formulation of the original experiments. Memory ``O(n R N)``; the
    product over ``N`` factors under/overflows for large ``N`` unless the weights are near 1.
    """
    _, _, k = _check(weights, X)
    onehot = F.one_hot(X.long(), k).to(weights.dtype)  # (n, N, k)
    values = torch.einsum("snk,rnk->srn", onehot, weights)  # (n, R, N)
    return values.prod(dim=-1).sum(dim=-1)


def init_large_order_weights(
    R: int,
    N: int,
    k: int,
    *,
    mean: float = 1.0,
    std: float = 1e-3,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Weights ``(R, N, k)`` with i.i.d. ``N(mean, std^2)`` entries.

    Near-1 initialization (``mean = 1``, small ``std``) keeps every component ``O(1)`` at order
    784; ``mean = 1, std = 1e-3`` is the initialization of the published MNIST runs
    (Razin, Maman & Cohen 2021). Drawn on the generator's device, then moved to ``device``.
    """
    if min(R, N, k) < 1:
        raise ValueError(f"R, N, k must be positive, got {(R, N, k)}")
    target = torch.device(device) if device is not None else generator.device
    w = torch.randn((R, N, k), generator=generator, dtype=dtype, device=generator.device)
    return (w * std + mean).to(target)
