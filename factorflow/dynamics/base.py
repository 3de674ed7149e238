"""What both training loops (:mod:`factorflow.dynamics.train`'s discrete loop and
:mod:`factorflow.dynamics.flow`'s gradient-flow integrator) share: the loss-function type, the
per-run gradient, the per-run status bookkeeping and the result they return.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from factorflow.dynamics.record import Trajectory

__all__ = ["LossFn", "TrainResult", "gradient"]

LossFn = Callable[[Sequence[torch.Tensor]], torch.Tensor]


@dataclass
class TrainResult:
    """What training returns, per run b (lists/tensors of length B):

    ``params`` final parameters (B, ...) (for converged runs the state at the stopping point, for
    diverged runs the last finite state); ``status`` (converged / max_steps / max_time / max_evals
    / max_wall / diverged / failed); ``final_loss`` (B,); ``steps`` and ``time`` at the end;
    ``trajectory`` (all runs' rows; use :meth:`run_trajectory`); ``n_evals`` gradient evaluations;
    ``wall_s``; ``method`` (optimizer or integrator name); ``info`` (integrator statistics).
    """

    params: list[torch.Tensor]
    status: list[str]
    final_loss: np.ndarray
    steps: np.ndarray
    time: np.ndarray
    trajectory: Trajectory
    n_evals: int
    wall_s: float
    method: str
    info: dict = field(default_factory=dict)

    def run_trajectory(self, b: int) -> Trajectory:
        return self.trajectory.select_run(b, float(self.time[b]))


def gradient(
    loss_fn: LossFn, params: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Per-run losses (B,) and the gradients of each run's loss w.r.t. its own parameters: the
    objective's own ``value_and_grad`` when it has one, autograd otherwise."""
    vg = getattr(loss_fn, "value_and_grad", None)
    if vg is not None:
        with torch.no_grad():
            losses, grads = vg([p.detach() for p in params])
        return losses, list(grads)
    ps = [p.detach().requires_grad_(True) for p in params]
    with torch.enable_grad():
        losses = loss_fn(ps)
        grads = torch.autograd.grad(losses.sum(), ps)
    return losses.detach(), list(grads)


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.reshape(-1, *([1] * (like.ndim - 1)))


class _Status:
    """Per-run bookkeeping shared by both loops."""

    def __init__(self, B: int) -> None:
        self.active = torch.ones(B, dtype=torch.bool)
        self.status = ["running"] * B
        self.final_loss = np.full(B, np.nan)
        self.steps = np.zeros(B, dtype=np.int64)
        self.time = np.zeros(B)

    def end(self, b: int, status: str, loss: float, step: int, t: float) -> None:
        self.active[b] = False
        self.status[b] = status
        self.final_loss[b] = loss
        self.steps[b] = step
        self.time[b] = t
