"""Losses over observation residuals, by name. There is no default: every caller names one.

Both take residuals ``r`` of shape ``(B, m)`` (B independent runs, m observations) and return one
loss per run, shape ``(B,)``. Written with operators only, so they take numpy arrays as well (the
engine's tiny-problem loop, :mod:`factorflow.dynamics.tiny`):

- ``mse``: mean over observations of r^2 (Arora et al. 2019, the ``mse`` of their code);
- ``half_sse``: (1/2) sum over observations of r^2 (Razin & Cohen 2020).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["LOSSES", "LOSS_GRADS", "get_loss", "half_sse", "mse"]


def mse(residuals: torch.Tensor) -> torch.Tensor:
    """Mean squared residual, ``(B, m) -> (B,)``: l = (1/m) sum_i r_i^2 (Arora et al. 2019)."""
    return (residuals * residuals).mean(-1)


def half_sse(residuals: torch.Tensor) -> torch.Tensor:
    """Half the sum of squared residuals, ``(B, m) -> (B,)``: l = (1/2) sum_i r_i^2 (Razin & Cohen
    2020)."""
    return 0.5 * (residuals * residuals).sum(-1)


LOSSES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"mse": mse, "half_sse": half_sse}

#: dl/dr for each loss, ``(B, m) -> (B, m)``: mse -> 2 r / m, half_sse -> r.
LOSS_GRADS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "mse": lambda r: r * (2.0 / r.shape[-1]),
    "half_sse": lambda r: r,
}


def get_loss(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The loss registered under ``name``; ``ValueError`` listing the names otherwise."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}") from None
