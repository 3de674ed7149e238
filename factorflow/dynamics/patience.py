"""A patience stop rule: stop once the loss was below a threshold at ``n_checks`` consecutive
checks ``check_every`` steps apart (for a discrete optimizer).

This is the rule of Razin & Cohen's tensor completion code (a stop on zero train loss with
patience ``n_checks - 1``, the loss checked every 100 steps): a run goes on for up to
``n_checks * check_every`` steps past its first crossing, and with (almost) normalized steps
such as group RMSProp's these extra steps drive the loss far below the threshold.

:func:`train_patience` runs it on a batch in two passes over the same deterministic batch:

1. every run stops at its first step with loss <= ``loss_below`` (:attr:`PatienceResult.first`);
2. the whole batch is replayed from the start (no run frozen, so every run sees the same batch
   as in the original code) up to the last bound any run needs, recording the loss and the
   probes at the checks; each run's state is read at its ``n_checks``-th consecutive check
   below the threshold.

Runs that never cross keep their pass-1 state and status; runs that cross but do not reach
``n_checks`` consecutive checks below within the replay get status ``patience_not_reached``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from factorflow.dynamics.record import Probe, Schedule, Stop
from factorflow.dynamics.train import LossFn, TrainResult, train

__all__ = ["Patience", "PatienceResult", "train_patience"]


@dataclass(frozen=True)
class Patience:
    """Stop at the ``n_checks``-th consecutive check (every ``check_every`` steps) with loss <=
    ``loss_below``; the replay runs ``extra_checks`` checks beyond the last bound needed."""

    loss_below: float
    check_every: int = 100
    n_checks: int = 3
    extra_checks: int = 1

    def __post_init__(self) -> None:
        if not self.loss_below > 0:
            raise ValueError(f"patience loss_below must be > 0, got {self.loss_below}")
        if self.check_every < 1 or self.n_checks < 1 or self.extra_checks < 0:
            raise ValueError("patience needs check_every >= 1, n_checks >= 1, extra_checks >= 0")

    def first_check(self, first_below: int) -> int:
        """The first check at or after step ``first_below`` (checks are at k * check_every,
        k >= 1)."""
        return max(1, math.ceil(first_below / self.check_every)) * self.check_every

    def bound(self, first_below: int) -> int:
        """The last step the rule must see for a run first below the threshold at step
        ``first_below``: its first check plus ``n_checks - 1`` more."""
        return self.first_check(first_below) + (self.n_checks - 1) * self.check_every

    def stop_index(self, steps: Sequence[int], losses: Sequence[float]) -> int | None:
        """Index into ``steps`` (recorded steps) of the ``n_checks``-th consecutive check with
        loss <= ``loss_below``, or None. Only steps that are checks (positive multiples of
        ``check_every``) count."""
        checks = [i for i, s in enumerate(steps) if s > 0 and int(s) % self.check_every == 0]
        below = [bool(losses[i] <= self.loss_below) for i in checks]
        for j in range(len(checks) - self.n_checks + 1):
            if all(below[j : j + self.n_checks]):
                return checks[j + self.n_checks - 1]
        return None


@dataclass
class PatienceResult:
    """Per run b: ``first`` (pass 1, stopped at the first crossing: a :class:`TrainResult`);
    at the patience stop: ``steps`` (B,), ``loss`` (B,), ``status`` (``converged``,
    ``patience_not_reached`` or pass 1's status for runs that never crossed), ``values``
    (probe name -> (B, ...) array) and ``first_values`` (the probes at pass 1's end);
    ``horizon`` (steps replayed, 0 if no run crossed) and ``wall_s`` per pass."""

    first: TrainResult
    steps: np.ndarray
    loss: np.ndarray
    status: list[str]
    values: dict[str, np.ndarray]
    first_values: dict[str, np.ndarray]
    horizon: int
    wall_s: tuple[float, float]


def train_patience(
    params: Sequence[torch.Tensor],
    loss_fn: LossFn,
    optimizer: object,
    rule: Patience,
    max_steps: int,
    probes: dict[str, Probe] | None = None,
) -> PatienceResult:
    """Train B runs from ``params`` with a discrete ``optimizer`` under the patience ``rule``
    (see the module doc), at most ``max_steps`` steps in pass 1; ``probes`` (name -> fn(params)
    -> (B, ...)) are read at each run's stopping state."""
    probes = dict(probes or {})
    first = train(
        params,
        loss_fn,
        optimizer,
        Stop(loss_below=rule.loss_below, max_steps=max_steps),
        Schedule(every=rule.check_every),
    )
    with torch.no_grad():
        first_values = {k: np.asarray(fn(first.params).cpu().numpy()) for k, fn in probes.items()}
    values = {k: v.copy() for k, v in first_values.items()}
    steps = np.asarray(first.steps).astype(np.int64).copy()
    loss = np.asarray(first.final_loss, dtype=np.float64).copy()
    status = list(first.status)
    crossed = [b for b, s in enumerate(first.status) if s == "converged"]
    horizon, wall2 = 0, 0.0
    if crossed:
        horizon = max(rule.bound(int(first.steps[b])) for b in crossed)
        horizon += rule.extra_checks * rule.check_every
        earliest = min(rule.first_check(int(first.steps[b])) for b in crossed)
        replay = train(
            params,
            loss_fn,
            optimizer,
            Stop(max_steps=horizon),
            Schedule(points=tuple(range(earliest, horizon + 1, rule.check_every))),
            probes=probes,
        )
        wall2 = replay.wall_s
        tr = replay.trajectory
        for b in crossed:
            i = rule.stop_index(tr.step, tr.values["loss"][:, b])
            hit = i is not None
            i = i if hit else len(tr.step) - 1
            steps[b], loss[b] = int(tr.step[i]), float(tr.values["loss"][i, b])
            status[b] = "converged" if hit else "patience_not_reached"
            for k in probes:
                values[k][b] = tr.values[k][i, b]
    return PatienceResult(
        first, steps, loss, status, values, first_values, horizon, (first.wall_s, wall2)
    )
