"""The batched CP model: independent fits sharing one design matrix (:class:`FitBatch`), their
stacked weights, predictions (:func:`batched_predict`, and :func:`batched_predict_log` in the
log-magnitude parametrization), the conversions between the two parametrizations, the paper's
initialization, and the outcome of a batch of fits (:class:`FitResult`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from factorflow.factorizations.cp_large_order import log_components

__all__ = [
    "FitBatch",
    "FitResult",
    "batched_predict",
    "batched_predict_log",
    "init_paper_weights",
    "log_to_weights",
    "weights_to_log",
]


@dataclass(frozen=True)
class FitBatch:
    """Independent fits that share one design matrix: fit ``j`` has rank ``ranks[j]`` and
    fits target column ``targets[j]`` of a target matrix ``(n, T)``.

    Their components are stacked along one axis of ``C = sum(ranks)``: fit ``j`` owns the
    components ``comp_fit == j`` (``comp_fit``: long ``(C,)``, non-decreasing).
    """

    ranks: tuple[int, ...]
    targets: tuple[int, ...]
    comp_fit: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.ranks) == 0 or len(self.ranks) != len(self.targets):
            raise ValueError("ranks and targets must be non-empty and of equal length")
        if any(int(r) < 1 for r in self.ranks):
            raise ValueError(f"ranks must be >= 1, got {self.ranks}")
        cf = torch.repeat_interleave(
            torch.arange(len(self.ranks)), torch.tensor([int(r) for r in self.ranks])
        )
        object.__setattr__(self, "comp_fit", cf)

    @property
    def n_fits(self) -> int:
        return len(self.ranks)

    @property
    def n_components(self) -> int:
        return int(sum(self.ranks))

    def components(self, j: int) -> slice:
        """The slice of fit ``j``'s components in the stacked axis."""
        start = int(sum(self.ranks[:j]))
        return slice(start, start + int(self.ranks[j]))


def _segment_sum(values: torch.Tensor, comp_fit: torch.Tensor, n_fits: int) -> torch.Tensor:
    """``out[:, j] = sum_{c: comp_fit[c] = j} values[:, c]``: ``(m, C) -> (m, F)``."""
    if values.shape[1] == n_fits:  # every fit of rank 1
        return values
    out = values.new_zeros((values.shape[0], n_fits))
    return out.index_add(1, comp_fit.to(values.device), values)


def batched_predict(
    weights: torch.Tensor, X: torch.Tensor, comp_fit: torch.Tensor, n_fits: int
) -> torch.Tensor:
    """Predictions of every fit of a batch at every sample: ``(n, F)``.

    ``weights``: stacked CP weights ``(C, N, k)`` (any signs); ``X``: ``(n, N)`` indices (or
    0/1 floats for ``k = 2``). ``f_j(x) = sum_{c in fit j} prod_n weights[c, n, x_n]``, evaluated
    in log space (:func:`factorflow.factorizations.cp_large_order.log_components`: one matrix
    product for all ``C`` components) and summed per fit as a signed log-sum-exp, so no
    intermediate over- or underflows. Equal to ``cp_predict_large_order(weights[fit j], X)``.
    """
    logmag, sign = log_components(weights, X)  # (n, C) each
    cf = comp_fit.to(weights.device)
    n = logmag.shape[0]
    M = torch.full((n, n_fits), -math.inf, dtype=logmag.dtype, device=logmag.device)
    M = M.scatter_reduce(1, cf.expand(n, -1), logmag.detach(), reduce="amax", include_self=True)
    Msafe = torch.where(torch.isfinite(M), M, torch.zeros_like(M))
    s = _segment_sum(sign * torch.exp(logmag - Msafe[:, cf]), cf, n_fits)
    nz = s != 0
    abs_safe = torch.where(nz, s.abs(), torch.ones_like(s))
    big = torch.sign(s) * torch.exp(Msafe + torch.log(abs_safe))
    return torch.where(nz, big, s * torch.exp(Msafe))


def batched_predict_log(
    theta: torch.Tensor, Xa: torch.Tensor, comp_fit: torch.Tensor, n_fits: int
) -> torch.Tensor:
    """Predictions ``(n, F)`` in the log-magnitude parametrization.

    ``theta``: ``(C, N + 1)``, row ``c`` = ``[a_c, b_c]``; ``Xa``: ``(n, N + 1)`` = ``[1, x]``
    (binary pixels as 0/1 floats). ``f_j(x) = sum_{c in fit j} exp(a_c + x . b_c)``: every
    component is positive, so ``exp`` of each is exact whenever the sum is representable.
    """
    return _segment_sum(torch.exp(Xa @ theta.T), comp_fit.to(theta.device), n_fits)


def weights_to_log(weights: torch.Tensor) -> torch.Tensor:
    """Positive weights ``(C, N, 2)`` -> ``theta`` ``(C, N + 1)`` with ``a = sum_n log w[n, 0]``,
    ``b_n = log w[n, 1] - log w[n, 0]``. Raises on a non-positive weight."""
    if weights.ndim != 3 or weights.shape[2] != 2:
        raise ValueError(f"weights must have shape (C, N, 2), got {tuple(weights.shape)}")
    if bool((weights <= 0).any()):
        raise ValueError("the log-magnitude parametrization needs positive weights")
    lw = torch.log(weights)
    return torch.cat([lw[:, :, 0].sum(dim=1, keepdim=True), lw[:, :, 1] - lw[:, :, 0]], dim=1)


def log_to_weights(theta: torch.Tensor) -> torch.Tensor:
    """``theta`` ``(C, N + 1)`` -> positive weights ``(C, N, 2)`` of the same tensor:
    ``w[n, 0] = exp(a / N)``, ``w[n, 1] = exp(a / N + b_n)``."""
    N = theta.shape[1] - 1
    base = (theta[:, :1] / N).expand(-1, N)
    return torch.exp(torch.stack([base, base + theta[:, 1:]], dim=2))


def init_paper_weights(
    batch: FitBatch,
    n_modes: int,
    levels: int,
    seeds: list[int] | tuple[int, ...],
    *,
    mean: float = 1.0,
    std: float = 1e-3,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Stacked weights ``(C, N, k)``: fit ``j``'s ``(R_j, N, k)`` block drawn i.i.d.
    ``N(mean, std^2)`` from ``torch.Generator().manual_seed(seeds[j])`` (on the CPU, in float64,
    then cast, one component after the other), so a fit's initialization depends only on its
    seed, not on the batch, and a rank-R init is the first R components of a larger one.
    The paper's initialization is ``mean = 1, std = 1e-3``."""
    if len(seeds) != batch.n_fits:
        raise ValueError(f"need one seed per fit ({batch.n_fits}), got {len(seeds)}")
    blocks = []
    for r, s in zip(batch.ranks, seeds, strict=True):
        g = torch.Generator().manual_seed(int(s))
        # one component at a time, so a rank-R init is the first R components of any larger one
        blocks += [
            torch.randn((1, n_modes, levels), generator=g, dtype=torch.float64) for _ in range(r)
        ]
    w = torch.cat(blocks) * std + mean
    return w.to(dtype=dtype, device=device)


@dataclass
class FitResult:
    """The outcome of a batch of fits.

    Attributes:
        weights: final stacked CP weights ``(C, N, k)`` (for the log parametrization: the
            positive weights of :func:`log_to_weights`, float64).
        train_error: ``(F,)`` final train error in paper units (unclamped), on the full set.
        steps: ``(F,)`` optimizer steps taken (L-BFGS iterations, or Adam updates).
        evals: L-BFGS: batched value-and-gradient evaluations over the full data (each over
            the components of the fits still running); Adam: epochs.
        status: per fit: ``converged``, ``max_steps``, ``line_search_failed`` or ``stopped``
            (Adam stopped by its callback).
        trace_step: ``(T,)`` steps at which the train objective was recorded.
        trace_error: ``(T, F)`` train error (paper units) at those steps (for Adam: the mean of
            the epoch's minibatch errors, before each update).
        wall_s: wall-clock seconds of the whole batch.
        optimizer: a one-line description.
    """

    weights: torch.Tensor
    train_error: np.ndarray
    steps: np.ndarray
    evals: int
    status: list[str]
    trace_step: np.ndarray
    trace_error: np.ndarray
    wall_s: float
    optimizer: str


def _design(X: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[1, x]`` as floats: ``(n, N + 1)``."""
    ones = torch.ones((X.shape[0], 1), dtype=dtype, device=device)
    return torch.cat([ones, X.to(device=device, dtype=dtype)], dim=1)
