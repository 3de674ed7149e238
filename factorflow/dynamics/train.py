"""Training loops: the discrete optimizers (one visible loop) and gradient flow (an adaptive ODE
integrator with error control), sharing stop rules, recording, and batching.

A *problem* reaches this layer only as ``loss_fn(params) -> (B,)``: one loss per independent run.
Runs are independent, so the gradient of ``loss_fn(params).sum()`` with respect to run b's
parameters is run b's own gradient; B runs of one shape train as one tensor program.

:func:`train` and the discrete loop live here; the gradient-flow integrator is
:mod:`factorflow.dynamics.flow`, the shared result and status types
:mod:`factorflow.dynamics.base` (``Flow``, ``FLOW_METHODS``, ``TrainResult``, ``gradient`` and
``LossFn`` are importable from this module as before).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from factorflow.dynamics import tiny
from factorflow.dynamics.base import LossFn, TrainResult, _rows, _Status, gradient
from factorflow.dynamics.flow import FLOW_METHODS, Flow, _flow
from factorflow.dynamics.optimizers import GD, Adam, GroupRMSProp
from factorflow.dynamics.record import Probe, Recorder, Schedule, Stop

__all__ = ["FLOW_METHODS", "Flow", "TrainResult", "gradient", "train"]


def train(
    params: Sequence[torch.Tensor],
    loss_fn: LossFn,
    optimizer: GD | GroupRMSProp | Adam | Flow,
    stop: Stop,
    schedule: Schedule | None = None,
    probes: dict[str, Probe] | None = None,
    *,
    progress: bool = False,
    desc: str = "train",
    backend: str = "auto",
) -> TrainResult:
    """Train B independent runs from ``params`` (list of (B, ...) tensors) on ``loss_fn``.

    Discrete optimizers run the loop below; :class:`Flow` integrates gradient flow. ``schedule``
    says when to record ``loss`` and every probe (``name -> fn(params) -> (B, ...)``).

    ``backend``: ``"auto"`` runs tiny problems in numpy (:mod:`factorflow.dynamics.tiny`): plain
    GD between events, and the flow's field evaluations; same iterates, several times less
    overhead per step. ``"numpy"`` insists on that, ``"torch"`` never uses it."""
    _check_params(params, loss_fn)
    schedule = schedule or Schedule(per_decade=10)
    if isinstance(optimizer, Flow):
        kernel = tiny.numpy_kernel(loss_fn, params, backend)
        return _flow(params, loss_fn, optimizer, stop, schedule, probes, progress, desc, kernel)
    kernel = tiny.numpy_kernel(loss_fn, params, backend, optimizer)
    return _discrete(params, loss_fn, optimizer, stop, schedule, probes, progress, desc, kernel)


def _check_params(params: Sequence[torch.Tensor], loss_fn: LossFn) -> None:
    """Bad training input as a ValueError / TypeError naming it, before any step: a non-empty
    list of floating (B, ...) tensors with one batch size, dtype and device, finite values, and
    whatever the objective checks itself (``loss_fn.check_params``, e.g. shapes that fit the
    problem)."""
    if isinstance(params, torch.Tensor) or not isinstance(params, Sequence) or not params:
        raise ValueError("params must be a non-empty list of (B, ...) tensors")
    for j, p in enumerate(params):
        if not isinstance(p, torch.Tensor) or not p.is_floating_point() or p.ndim < 1:
            raise TypeError(f"params[{j}] must be a floating (B, ...) tensor, got {p!r:.60}")
        if p.shape[0] != params[0].shape[0] or p.dtype != params[0].dtype:
            raise ValueError(
                f"params[{j}] is {p.dtype} with batch size {p.shape[0]}; params[0] is "
                f"{params[0].dtype} with batch size {params[0].shape[0]}"
            )
        if not bool(torch.isfinite(p).all()):
            raise ValueError(f"params[{j}] holds NaN or inf")
    check = getattr(loss_fn, "check_params", None)
    if check is not None:
        check(params)


def _discrete(params, loss_fn, opt, stop, schedule, probes, progress, desc, kernel) -> TrainResult:
    t_start = time.perf_counter()
    params = [p.detach().clone() for p in params]
    B = params[0].shape[0]
    dt = opt.lr if isinstance(opt, GD) else 1.0  # time per step (gradient-flow time for GD)
    st = _Status(B)
    rec = Recorder(probes)
    state = opt.init_state(params)
    next_rec = 0.0
    prev_params, prev_loss = params, None
    bar = tqdm(total=stop.max_steps, desc=desc, disable=not progress, mininterval=1.0)
    step = 0
    n_evals = 0
    while True:
        last = None
        if kernel is not None:  # quiet GD steps in numpy up to the next possible event
            n = min(tiny.steps_until(step, next_rec, stop.max_steps, stop.max_time, dt), tiny.CHUNK)
            if n > 0:
                P, prev, prev_L, k, last = tiny.quiet_steps(
                    kernel,
                    [p.numpy() for p in params],
                    opt.lr,
                    n,
                    stop.loss_below,
                    stop.diverge_above,
                    st.active.numpy(),
                )
                if k > 0:
                    params = [torch.from_numpy(p) for p in P]
                    prev_params = [torch.from_numpy(p) for p in prev]
                    prev_loss = torch.from_numpy(prev_L)
                    step += k
                n_evals += k
        if last is not None:
            losses, grads = torch.from_numpy(last[0]), [torch.from_numpy(g) for g in last[1]]
        else:
            losses, grads = gradient(loss_fn, params)
        n_evals += 1
        L = losses.cpu()
        record_now = step >= next_rec
        ok = torch.isfinite(L) & (L <= stop.diverge_above)
        if not bool(ok[st.active].all()):
            bad = (st.active & ~ok).nonzero().flatten().tolist()
            mask = torch.zeros(B, dtype=torch.bool)
            mask[bad] = True
            m = mask.to(params[0].device)
            params = [
                torch.where(_rows(m, p), q, p) for p, q in zip(params, prev_params, strict=True)
            ]
            for b in bad:
                last = float(prev_loss[b]) if prev_loss is not None else float("nan")
                st.end(b, "diverged", last, max(step - 1, 0), max(step - 1, 0) * dt)
            if prev_loss is not None:  # every run's state at the previous step, correctly labelled
                rec.add(step - 1, (step - 1) * dt, prev_params, prev_loss)
            L = torch.where(mask, prev_loss if prev_loss is not None else L, L)
        if stop.loss_below is not None:
            done = st.active & (L <= stop.loss_below)
            for b in done.nonzero().flatten().tolist():
                st.end(b, "converged", float(L[b]), step, step * dt)
                record_now = True
        budget = None
        if stop.max_steps is not None and step >= stop.max_steps:
            budget = "max_steps"
        elif stop.max_time is not None and step * dt >= stop.max_time * (1 - 1e-12):
            budget = "max_time"
        elif stop.max_wall_s is not None and time.perf_counter() - t_start > stop.max_wall_s:
            budget = "max_wall"
        if budget is not None:
            for b in st.active.nonzero().flatten().tolist():
                st.end(b, budget, float(L[b]), step, step * dt)
            record_now = True
        if record_now:
            rec.add(step, step * dt, params, L)
            next_rec = schedule.next_point(step, integer=True)
        if not bool(st.active.any()):
            break
        new, state = opt.update(params, grads, state, step + 1)
        new = [p.detach() for p in new]
        if not bool(st.active.all()):
            m = st.active.to(params[0].device)
            new = [torch.where(_rows(m, p), q, p) for p, q in zip(params, new, strict=True)]
        prev_params, prev_loss = params, L
        params = new
        step += 1
        if progress and step - bar.n >= 1000:
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{float(L[st.active].max()):.3e}", refresh=False)
    bar.close()
    name = getattr(opt, "name", type(opt).__name__)
    return TrainResult(
        params,
        st.status,
        st.final_loss,
        st.steps,
        st.time,
        rec.finish(),
        n_evals,
        time.perf_counter() - t_start,
        name,
    )
