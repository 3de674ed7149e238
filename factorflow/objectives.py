"""Objectives: a factorization, a problem and a named loss composed into ``loss_fn(params) -> (B,)``,
the only thing the training loops see.

Each objective is callable (autograd works through it) and also has ``value_and_grad(params)``
with the gradient written out by the chain rule; the loops use it because for small problems
(the 2x2 problem takes millions of steps) autograd's bookkeeping costs more than the math.
Tests check the two against each other in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from factorflow.factorizations.cp import cp_completion_residuals
from factorflow.factorizations.dmf import dmf_factor_gradients, end_to_end
from factorflow.losses import LOSS_GRADS, get_loss
from factorflow.problems.completion import Completion
from factorflow.problems.matrix import MatrixCompletion, MatrixSensing

__all__ = ["CPObjective", "DMFObjective"]


@dataclass(frozen=True)
class DMFObjective:
    """l(W_N ... W_1) for a matrix ``problem`` (completion or sensing) and a loss named ``loss``.

    ``__call__(factors) -> (B,)``; ``value_and_grad(factors) -> ((B,), [dl/dW_j])`` with
    dl/dW = A^*(dl/dr) (the observation map's adjoint) and dl/dW_j from
    :func:`factorflow.factorizations.dmf.dmf_factor_gradients`.
    """

    problem: MatrixCompletion | MatrixSensing
    loss: str

    def __post_init__(self) -> None:
        get_loss(self.loss)

    def end_to_end(self, factors: Sequence[torch.Tensor]) -> torch.Tensor:
        return end_to_end(factors)

    def __call__(self, factors: Sequence[torch.Tensor]) -> torch.Tensor:
        return get_loss(self.loss)(self.problem.residuals(end_to_end(factors)))

    def grad_W(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Losses (B,) and dl/dW (B, d1, d2) at end-to-end matrices W."""
        r = self.problem.residuals(W)
        return get_loss(self.loss)(r), self.problem.residual_adjoint(LOSS_GRADS[self.loss](r))

    def value_and_grad(
        self, factors: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        losses, G = self.grad_W(end_to_end(factors))
        return losses, dmf_factor_gradients(factors, G)


@dataclass(frozen=True)
class CPObjective:
    """l(W) for a CP factorization (factors ``[(B, d_n, R)]``) on tensor completion ``obs``, with
    the loss named ``loss``: predictions only at the observed indices (never the full tensor).

    Gradients come from autograd (the per-step math dominates its bookkeeping at these sizes)."""

    obs: Completion
    loss: str

    def __post_init__(self) -> None:
        get_loss(self.loss)

    def residuals(self, factors: Sequence[torch.Tensor]) -> torch.Tensor:
        """``(B, m)``: CP prediction at the observed entries minus the observed values."""
        return cp_completion_residuals(factors, self.obs)  # checks order and mode sizes

    def __call__(self, factors: Sequence[torch.Tensor]) -> torch.Tensor:
        return get_loss(self.loss)(self.residuals(factors))

    def grad_at_obs(self, factors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Losses (B,) and dl/dW at the observed entries (B, m) (the gradient of l w.r.t. the
        full tensor is zero elsewhere)."""
        r = self.residuals(factors)
        return get_loss(self.loss)(r), LOSS_GRADS[self.loss](r)
