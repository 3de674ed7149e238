"""The measurement of an IRMAE latent.

Measurement (the paper's Fig. of singular values): the singular values of the covariance of the
test set's latent codes ``z_bar``, divided by the largest (:func:`latent_spectrum`), their
effective rank (Roy & Vetterli) and their count above 1e-2.
"""

from __future__ import annotations

import torch
from torch import Tensor

from factorflow import metrics

__all__ = ["count_above", "latent_effective_rank", "latent_spectrum"]


def latent_spectrum(codes: Tensor) -> Tensor:
    """Singular values of the covariance of the latent codes, divided by the largest.

    ``codes`` ``(N, n)`` with N >= 2 -> ``(n,)`` float64, descending, first entry 1 (all zeros
    if the codes are constant). Cov = (Z - mean)^T (Z - mean) / (N - 1); as in the paper's
    singular-value figure (Jing et al. 2020, Fig. 2/3: "singular values of the covariance matrix
    of the latent variables", normalized by the largest).
    """
    if not isinstance(codes, Tensor) or codes.ndim != 2 or codes.shape[0] < 2:
        shape = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
        raise ValueError(f"codes must have shape (N >= 2, n), got {shape}")
    cov = torch.cov(codes.detach().to(torch.float64).T)
    s = metrics.singular_values(cov.reshape(codes.shape[1], codes.shape[1]))
    return s / s[0] if s[0] > 0 else torch.zeros_like(s)


def latent_effective_rank(spectrum: Tensor) -> float:
    """Effective rank (Roy & Vetterli 2007) ``exp(H(s / ||s||_1))`` of a spectrum ``(n,)``
    (of :func:`latent_spectrum`; scale invariant)."""
    return float(metrics.effective_rank(spectrum, from_spectrum=True))


def count_above(spectrum: Tensor, tol: float = 1e-2) -> int:
    """Number of entries of a spectrum ``(n,)`` above ``tol`` times its largest entry."""
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    return int((spectrum > tol * spectrum.max()).sum())
