"""Errors in the paper's units (0/1 units for targets 2 vs 0) and the label variance, for single
predictions (:func:`paper_error`) and for every fit of a batch (:func:`fit_error_pair`)."""

from __future__ import annotations

import numpy as np
import torch

from factorflow.natural_rank.model import FitBatch, batched_predict

__all__ = ["fit_error_pair", "fit_errors", "label_variance", "paper_error"]


def paper_error(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    target_range: float = 2.0,
    clamp: bool = False,
) -> torch.Tensor:
    """Mean squared error in the paper's units: ``mean_i e_i`` over the last dim, where

        e_i = (f(x_i) - y_i)^2 / rho^2,   rho = target_range (2 for targets 2 vs 0),

    i.e. the error of 0/1 targets (Razin, Maman & Cohen 2021 report errors "divided by 4").
    With ``clamp`` each sample's squared error is first clamped at ``rho^2`` (so ``e_i <= 1``),
    as the original code does for the test error: one wild prediction counts as one wrong
    label, not as an unbounded error.

    ``pred``, ``target``: broadcastable ``(..., n)``; returns ``(...)`` in float64.
    """
    rho2 = float(target_range) ** 2
    if rho2 <= 0:
        raise ValueError(f"target_range must be positive, got {target_range}")
    sq = (pred.to(torch.float64) - target.to(torch.float64)) ** 2
    if clamp:
        sq = sq.clamp(max=rho2)  # NaN stays NaN: a NaN prediction is reported, not hidden
    return sq.mean(dim=-1) / rho2


def label_variance(
    target: torch.Tensor, *, positive_value: float = 2.0, negative_value: float = 0.0
) -> float:
    """Variance of the 0/1 labels ``z = (y - negative) / (positive - negative)``: ``p (1 - p)``
    with ``p`` the positive fraction (population variance).

    It is the error of the best constant predictor (``f = mean y``) in :func:`paper_error`'s
    units: ``mean (y - mean y)^2 / rho^2 = var(z)``. The paper's "label variance" line (~0.09 for
    one class of ten).
    """
    rho = float(positive_value) - float(negative_value)
    if rho == 0:
        raise ValueError("positive_value and negative_value must differ")
    z = (target.to(torch.float64) - float(negative_value)) / rho
    if z.numel() == 0:
        raise ValueError("label_variance of an empty target")
    return float(((z - z.mean()) ** 2).mean())


def fit_errors(
    weights: torch.Tensor,
    X: torch.Tensor,
    Y: torch.Tensor,
    batch: FitBatch,
    *,
    target_range: float = 2.0,
    clamp: bool = False,
    chunk: int = 16384,
) -> np.ndarray:
    """Error (paper units, see :func:`paper_error`) of every fit of ``batch`` on ``(X, Y)``:
    ``(F,)``. ``weights``: stacked ``(C, N, k)``; ``Y``: ``(n, T)``."""
    plain, clamped = fit_error_pair(weights, X, Y, batch, target_range=target_range, chunk=chunk)
    return clamped if clamp else plain


def fit_error_pair(
    weights: torch.Tensor,
    X: torch.Tensor,
    Y: torch.Tensor,
    batch: FitBatch,
    *,
    target_range: float = 2.0,
    chunk: int = 16384,
) -> tuple[np.ndarray, np.ndarray]:
    """``(unclamped, clamped)`` errors of every fit, both ``(F,)``, from one pass over the data
    (float64 predictions by :func:`batched_predict`; clamped: each sample's squared error at
    most ``target_range^2``, i.e. at most 1 in paper units)."""
    cf = batch.comp_fit.to(weights.device)
    Yf = Y[:, list(batch.targets)].to(weights.device)
    rho2 = float(target_range) ** 2
    total = torch.zeros(batch.n_fits, dtype=torch.float64, device=weights.device)
    total_c = torch.zeros_like(total)
    with torch.no_grad():
        for s in range(0, X.shape[0], chunk):
            pred = batched_predict(weights, X[s : s + chunk].to(weights.device), cf, batch.n_fits)
            sq = (pred.double() - Yf[s : s + chunk].double()) ** 2
            total += sq.sum(dim=0)
            total_c += sq.clamp(max=rho2).sum(dim=0)
    scale = X.shape[0] * rho2
    return (total / scale).cpu().numpy(), (total_c / scale).cpu().numpy()
