"""The discrete loop's fast path on tiny problems: plain GD steps in numpy between events.

On a 2x2 problem a GD step is a few microseconds of arithmetic, and torch's per-operation
overhead (several microseconds per call, some 30 calls per step) plus the loop's per-step
bookkeeping made the engine ~10x slower than a plain numpy loop; the papers' 2x2 runs take 3-5
million steps. So between *events* the loop hands the steps to :func:`quiet_steps`, which runs

    L_b, g_b = kernel(theta_b);   theta_b <- theta_b - lr g_b     (every active run b)

in numpy for as long as no event can happen: every active run's loss finite, above the stop
threshold and at most the divergence bound, and no recording point, step or time budget
reached. At the first state where one could, it hands back that state with its loss and
gradient, and the loop in :mod:`factorflow.dynamics.train` handles it exactly as before (it
never needs to know the steps in between were not its own). So results equal the torch path's
up to float rounding of the two libraries' products; tests check both on every stop reason.

Used when the objective has a ``numpy_kernel()`` (``DMFObjective``), the optimizer is
:class:`~factorflow.dynamics.optimizers.GD`, the parameters are on the CPU, and all runs
together have at most :data:`TINY_MAX_NUMEL` numbers (``backend="auto"``); ``"numpy"`` insists
(and says why it cannot), ``"torch"`` never uses it. The flow
(:mod:`factorflow.dynamics.flow`) evaluates its field through the same kernel (float64
parameters). Measured in ``benchmarks/bench_engine_2x2.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from factorflow.dynamics.base import LossFn
from factorflow.dynamics.optimizers import GD

__all__ = [
    "BACKENDS",
    "CHUNK",
    "TINY_MAX_NUMEL",
    "numpy_kernel",
    "quiet_steps",
    "split",
    "steps_until",
]

#: The fast path's bound on all runs' parameters together. Conservative: above it the numpy loop
#: may still be faster, but numpy's BLAS sets its own threads there, outside the
#: one-thread-per-process policy that torch's thread setting enforces.
TINY_MAX_NUMEL = 4096
#: At most this many steps per hand-off, so wall-time budgets and progress stay current.
CHUNK = 20_000
BACKENDS = ("auto", "numpy", "torch")

Kernel = Callable[[Sequence[np.ndarray]], tuple[np.ndarray, list[np.ndarray]]]


def numpy_kernel(
    loss_fn: LossFn,
    params: Sequence[torch.Tensor],
    backend: str,
    optimizer: object | None = None,
) -> Kernel | None:
    """The objective's numpy ``value_and_grad`` when the fast path applies, else None.
    ``optimizer``: the discrete optimizer (only GD has a numpy update), None for the flow (whose
    field evaluations use the kernel in float64).

    ``backend="numpy"`` raises a ValueError naming the reason it does not apply."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return None
    make = getattr(loss_fn, "numpy_kernel", None)
    numel = sum(p.numel() for p in params)
    reason = None
    if make is None:
        reason = f"{type(loss_fn).__name__} has no numpy_kernel()"
    elif optimizer is not None and not isinstance(optimizer, GD):
        reason = f"only GD has a numpy update, not {getattr(optimizer, 'name', optimizer)!r}"
    elif optimizer is None and params[0].dtype != torch.float64:
        reason = f"the flow's numpy path needs float64, the parameters are {params[0].dtype}"
    elif params[0].dtype == torch.bfloat16:
        reason = "numpy has no bfloat16"
    elif params[0].device.type != "cpu":
        reason = f"the parameters are on {params[0].device}, not the CPU"
    elif backend == "auto" and numel > TINY_MAX_NUMEL:
        reason = f"{numel} numbers > TINY_MAX_NUMEL = {TINY_MAX_NUMEL}"
    if reason is None:
        return make()
    if backend == "numpy":
        raise ValueError(f"backend='numpy' does not apply: {reason}")
    return None


def steps_until(
    step: int, next_rec: float, max_steps: int | None, max_time: float | None, dt: float
) -> int:
    """How many states from ``step`` on carry no scheduled event: the first step at or after the
    next recording point ``next_rec``, ``max_steps``, or the first step s with s dt >= max_time
    (1 - 1e-12) (the loop's own tests), minus ``step``; 0 when ``step`` itself has one."""
    ends = [CHUNK + step if math.isinf(next_rec) else math.ceil(next_rec)]
    if max_steps is not None:
        ends.append(max_steps)
    if max_time is not None:
        thr = max_time * (1 - 1e-12)
        s = max(math.ceil(thr / dt), 0)
        while s > 0 and (s - 1) * dt >= thr:
            s -= 1
        while s * dt < thr:
            s += 1
        ends.append(s)
    return max(min(ends) - step, 0)


def quiet_steps(
    kernel: Kernel,
    params: list[np.ndarray],
    lr: float,
    n: int,
    loss_below: float | None,
    diverge_above: float,
    active: np.ndarray,
) -> tuple[
    list[np.ndarray],
    list[np.ndarray] | None,
    np.ndarray | None,
    int,
    tuple[np.ndarray, list[np.ndarray]] | None,
]:
    """Up to ``n`` GD steps from ``params`` (numpy (B, ...) arrays) while every active run's loss
    at the current state is quiet: finite, > ``loss_below`` and <= ``diverge_above`` (a NaN fails
    every comparison). Inactive runs stay where they are.

    Returns ``(params, prev, prev_loss, k, last)``: the state after ``k`` steps, the state one step
    before with its losses (None when k = 0), and ``last = (losses, grads)`` at the returned state
    when it was evaluated (the first state that is not quiet), None when the n steps ran out."""
    lo = -math.inf if loss_below is None else float(loss_below)
    hi = float(diverge_above)
    idx = None if bool(active.all()) else active
    masks = None if idx is None else [active.reshape(-1, *([1] * (p.ndim - 1))) for p in params]
    prev = prev_loss = None
    for k in range(n):
        L, grads = kernel(params)
        La = L if idx is None else L[idx]
        if not bool(((La > lo) & (La <= hi)).all()):
            return params, prev, prev_loss, k, (L, grads)
        new = [p - lr * g for p, g in zip(params, grads, strict=True)]
        if masks is not None:
            new = [np.where(m, q, p) for m, q, p in zip(masks, new, params, strict=True)]
        prev, prev_loss, params = params, L, new
    return params, prev, prev_loss, n, None


def split(y: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """Views of a flat state ``y`` as arrays of ``shapes`` (the flow's numpy unflatten)."""
    out, o = [], 0
    for s in shapes:
        n = math.prod(s)
        out.append(y[o : o + n].reshape(s))
        o += n
    return out
