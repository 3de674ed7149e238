"""Gradient flow while it is cheap, then gradient descent just under its stability limit; and
training on for a fixed number of steps past the first crossing of a loss.

Why: from small init, a CP (or deep) factorization's gradient flow is non-stiff while the
components are near zero, so an explicit adaptive integrator (RK45) takes accuracy-limited steps.
Once a component has been fitted the Hessian has a large eigenvalue ``lambda_max`` and RK45's
steps become limited by stability (``h lambda_max`` near its stability bound, ~3.3 on the
negative axis) rather than accuracy: it then takes many tiny steps. From there plain GD with
``lr < 2 / lambda_max`` follows the flow's path (to first order in ``lr``) at one gradient per
step. :func:`flow_then_gd` does that switch:

1. flow phase: RK45 in chunks of ``check_every`` accepted steps (records at every accepted
   step); after each chunk ``lambda_max`` (:func:`hessian_top_eigenvalue`) is estimated and the
   run switches to GD once ``h lambda_max >= switch_h_lambda``, ``h`` the last accepted step;
2. GD phase: chunks of ``gd_chunk`` steps at ``lr = safety * 2 / lambda_max``, ``lambda_max``
   re-estimated before each chunk (warm-started power iteration); a chunk whose loss rises or
   diverges is redone from its start at half the step (up to ``max_attempts`` tries).
   With ``late="cvode"`` the stiff phase is instead integrated by SUNDIALS CVODE (BDF, implicit:
   its steps are limited by accuracy, not stability; :mod:`factorflow.dynamics.stiff`) in one
   call to the stop, records at 20 points per decade of flow time;
3. ``patience_steps`` > 0: after the first crossing of ``stop.loss_below``, that many more GD
   steps (lr re-estimated there), as a "stop once the loss stayed below the threshold" rule.

The result is a :class:`~factorflow.dynamics.TrainResult` on the flow-time axis (GD time = sum
of the step sizes). ``trajectory.values["phase"]``: 0 flow, 1 GD, 2 patience. ``info`` records
the switch (``switch_time``, ``switch_step``, ``switch_h``, ``switch_lambda_max``; None when the
flow never became stability-limited), ``h_lambda_checks`` (t, h, lambda_max at every check), the
flow's ``flow_accepted_steps`` / ``flow_nfev``, GD's ``gd_steps``, ``gd_lr_min`` / ``gd_lr_max``,
``gd_redos``, ``hessian_vector_products``, and the first crossing (``crossing_step``,
``crossing_time``, ``params_at_crossing``; None when not reached).

:func:`train_past_crossing` is the same patience for any optimizer of
:func:`~factorflow.dynamics.train` (a second call: an optimizer's running state restarts).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from factorflow.dynamics.optimizers import GD
from factorflow.dynamics.record import Probe, Schedule, Stop, Trajectory
from factorflow.dynamics.train import Flow, LossFn, TrainResult, train
from factorflow.theory import hessian_top_eigenvalue  # the GD stability bound's curvature

__all__ = [
    "FlowThenGD",
    "chain_results",
    "flow_then_gd",
    "hessian_top_eigenvalue",
    "train_past_crossing",
]


@dataclass(frozen=True)
class FlowThenGD:
    """The switch of :func:`flow_then_gd` (see the module doc). ``seed`` seeds the power
    iteration's first vector; ``stop_at_switch`` ends the run (status ``"switched"``) where GD
    would take over: the flow part only."""

    rtol: float = 1e-7
    atol: float = 1e-10
    check_every: int = 25
    switch_h_lambda: float = 1.0
    safety: float = 0.8
    gd_chunk: int = 250
    gd_record_every: int = 50
    power_iters: int = 100
    power_tol: float = 1e-3
    max_attempts: int = 6
    patience_steps: int = 0
    seed: int = 0
    stop_at_switch: bool = False
    late: str = "gd"

    def __post_init__(self) -> None:
        if not 0 < self.safety < 1:
            raise ValueError(f"safety must be in (0, 1), got {self.safety}")
        if min(self.check_every, self.gd_chunk, self.gd_record_every, self.max_attempts) < 1:
            raise ValueError("check_every, gd_chunk, gd_record_every, max_attempts must be >= 1")
        if not (self.switch_h_lambda > 0 and self.rtol > 0 and self.atol > 0):
            raise ValueError("switch_h_lambda, rtol and atol must be > 0")
        if self.patience_steps < 0:
            raise ValueError(f"patience_steps must be >= 0, got {self.patience_steps}")
        if self.late not in ("gd", "cvode"):
            raise ValueError(f"late must be 'gd' or 'cvode', got {self.late!r}")


def chain_results(parts: Sequence[TrainResult], phases: Sequence[int] | None = None) -> Trajectory:
    """One trajectory (run 0) from consecutive results, each starting where the previous one
    ended: its steps and times offset by the previous ends and its first row (the previous
    end state) dropped. ``phases``: a ``phase`` value (T, 1) per part."""
    steps, times, vals = [], [], {}
    s_off, t_off = 0.0, 0.0
    for i, res in enumerate(parts):
        tr = res.run_trajectory(0)
        cut = 0 if i == 0 else 1
        steps.append(np.asarray(tr.step, dtype=np.float64)[cut:] + s_off)
        times.append(np.asarray(tr.time, dtype=np.float64)[cut:] + t_off)
        T = len(tr.step) - cut
        part = {k: np.asarray(v)[cut:, None] for k, v in tr.values.items()}
        if phases is not None:
            part["phase"] = np.full((T, 1), phases[i], dtype=np.int64)
        for k, v in part.items():
            vals.setdefault(k, []).append(v)
        s_off += float(res.steps[0])
        t_off += float(res.time[0])
    return Trajectory(
        np.concatenate(steps),
        np.concatenate(times),
        {k: np.concatenate(v) for k, v in vals.items()},
    )


def _combined(parts, phases, params, status, t0, info, extra_evals=0) -> TrainResult:
    return TrainResult(
        params=params,
        status=[status],
        final_loss=np.array([float(parts[-1].final_loss[0])]),
        steps=np.array([sum(int(p.steps[0]) for p in parts)]),
        time=np.array([sum(float(p.time[0]) for p in parts)]),
        trajectory=chain_results(parts, phases),
        n_evals=sum(int(p.n_evals) for p in parts) + extra_evals,
        wall_s=time.perf_counter() - t0,
        method=info.pop("method"),
        info=info,
    )


def _left(stop: Stop, t0: float) -> float | None:
    """Wall seconds left of ``stop.max_wall_s`` (None: no limit; at least 1e-9, a valid Stop)."""
    if stop.max_wall_s is None:
        return None
    return max(stop.max_wall_s - (time.perf_counter() - t0), 1e-9)


def train_past_crossing(
    params: Sequence[torch.Tensor],
    loss_fn: LossFn,
    optimizer: Any,
    stop: Stop,
    extra_steps: int,
    schedule: Schedule | None = None,
    probes: dict[str, Probe] | None = None,
) -> TrainResult:
    """Train one run (B = 1) to ``stop``; if it converged (crossed ``stop.loss_below``), train
    ``extra_steps`` more steps with a fresh call of ``optimizer`` (its running state restarts)
    within what is left of ``stop.max_wall_s``. The status is ``converged`` when the extra
    steps all ran. ``info``: ``crossing_step``, ``crossing_time``, ``params_at_crossing``
    (None when not reached)."""
    if params[0].shape[0] != 1:
        raise ValueError("train_past_crossing trains one run (B = 1)")
    t0 = time.perf_counter()
    first = train(params, loss_fn, optimizer, stop, schedule, probes)
    info: dict[str, Any] = {"crossing_step": None, "crossing_time": None}
    info.update(params_at_crossing=None, method=first.method)
    parts, status = [first], first.status[0]
    if status == "converged" and extra_steps > 0:
        info.update(
            crossing_step=int(first.steps[0]),
            crossing_time=float(first.time[0]),
            params_at_crossing=first.params,
        )
        more = Stop(max_steps=extra_steps, max_wall_s=_left(stop, t0))
        parts.append(train(first.params, loss_fn, optimizer, more, schedule, probes))
        status = "converged" if parts[-1].status[0] == "max_steps" else parts[-1].status[0]
    return _combined(parts, None, parts[-1].params, status, t0, info)


def flow_then_gd(
    params: Sequence[torch.Tensor],
    loss_fn: LossFn,
    method: FlowThenGD,
    stop: Stop,
    probes: dict[str, Probe] | None = None,
) -> TrainResult:
    """Gradient flow by RK45 until its steps are stability-limited, then GD just under
    ``2 / lambda_max`` (see the module doc). One run (B = 1). ``stop``: ``loss_below``,
    ``max_steps`` (accepted flow steps plus GD steps) and ``max_wall_s``."""
    if params[0].shape[0] != 1:
        raise ValueError("flow_then_gd trains one run (B = 1)")
    if stop.max_time is not None or stop.max_evals is not None:
        raise ValueError("flow_then_gd stops on loss_below, max_steps and max_wall_s only")
    m = method
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(m.seed)
    budget = stop.max_steps if stop.max_steps is not None else 2**62
    params = [p.detach().clone() for p in params]
    parts: list[TrainResult] = []
    phases: list[int] = []
    t_off, step_off, flow_steps, flow_nfev, hvps, redos, wasted = 0.0, 0, 0, 0, 0, 0, 0
    late_evals = 0
    h_last: float | None = None
    v: list[torch.Tensor] | None = None
    switch: dict[str, float] | None = None
    status = "running"
    lrs: list[float] = []
    checks: list[tuple[float, float, float]] = []

    def lam_max() -> float:
        nonlocal v, hvps
        lam, v, n = hessian_top_eigenvalue(
            loss_fn, params, v0=v, iters=m.power_iters, tol=m.power_tol, generator=gen
        )
        hvps += n
        return abs(float(lam[0]))

    def add(res: TrainResult, phase: int) -> str:
        nonlocal t_off, step_off, params
        parts.append(res)
        phases.append(phase)
        t_off += float(res.time[0])
        step_off += int(res.steps[0])
        params = res.params
        return res.status[0]

    while True:
        left = _left(stop, t0)
        if left is not None and left <= 1e-9:
            status = "max_wall"
            break
        if step_off >= budget:
            status = "max_steps"
            break
        chunk_stop = Stop(
            loss_below=stop.loss_below,
            max_steps=min(m.gd_chunk if switch else m.check_every, budget - step_off),
            max_wall_s=left,
        )
        if switch is None:  # flow phase
            flow = Flow(method="RK45", rtol=m.rtol, atol=m.atol, first_step=h_last)
            res = train(params, loss_fn, flow, chunk_stop, Schedule(accepted=True), probes)
            flow_nfev += int(res.info["nfev"])
            flow_steps += int(res.info["accepted_steps"])
            acc = np.asarray(res.info["accepted_t"])
            status = add(res, 0)
            if status != "max_steps":
                break
            if len(acc) >= 2:
                h_last = float(acc[-1] - acc[-2])
            lam = lam_max()
            checks.append((t_off, h_last or math.nan, lam))
            if h_last is not None and h_last * lam >= m.switch_h_lambda:
                switch = {"time": t_off, "h": h_last, "lambda_max": lam, "step": step_off}
                if m.stop_at_switch:
                    status = "switched"
                    break
        elif m.late == "cvode":  # the stiff phase by CVODE BDF, to the stop in one call
            flow = Flow(method="cvode", rtol=m.rtol, atol=m.atol, first_step=h_last)
            late_stop = Stop(
                loss_below=stop.loss_below, max_steps=budget - step_off, max_wall_s=left
            )
            res = train(params, loss_fn, flow, late_stop, Schedule(per_decade=20), probes)
            late_evals += int(res.n_evals)
            status = add(res, 1)
            break
        else:  # GD phase, the step re-estimated every chunk
            lr = m.safety * 2.0 / lam_max()
            start = float(loss_fn([p.detach() for p in params])[0])
            for _attempt in range(m.max_attempts):
                chunk_stop = Stop(
                    loss_below=stop.loss_below,
                    max_steps=min(m.gd_chunk, budget - step_off),
                    max_wall_s=_left(stop, t0),
                )
                res = train(
                    params, loss_fn, GD(lr), chunk_stop, Schedule(every=m.gd_record_every), probes
                )
                if res.status[0] != "diverged" and float(res.final_loss[0]) <= start:
                    break
                lr *= 0.5  # the curvature grew inside the chunk: redo it at half the step
                redos += 1
                wasted += int(res.n_evals)
            else:
                wasted -= int(res.n_evals)  # the last try is kept (and counted) anyway
            lrs.append(lr)
            status = add(res, 1)
            if status != "max_steps":
                break
    info: dict[str, Any] = {"crossing_step": None, "crossing_time": None}
    info["params_at_crossing"] = None
    if status == "converged" and m.patience_steps > 0:
        info.update(crossing_step=step_off, crossing_time=t_off, params_at_crossing=params)
        lr = m.safety * 2.0 / lam_max()
        lrs.append(lr)
        more = Stop(max_steps=m.patience_steps, max_wall_s=_left(stop, t0))
        res = train(params, loss_fn, GD(lr), more, Schedule(every=m.gd_record_every), probes)
        status = "converged" if res.status[0] == "max_steps" else res.status[0]
        add(res, 2)
    late_name = "CVODE" if m.late == "cvode" else "GD"
    info.update(
        method=f"flow then {late_name}" if switch else "flow",
        flow_method="RK45",
        late=m.late,
        late_evals=late_evals,
        flow_accepted_steps=flow_steps,
        flow_nfev=flow_nfev,
        hessian_vector_products=hvps,
        switch_time=None if switch is None else switch["time"],
        switch_step=None if switch is None else int(switch["step"]),
        switch_h=None if switch is None else switch["h"],
        switch_lambda_max=None if switch is None else switch["lambda_max"],
        gd_steps=int(step_off - (switch["step"] if switch else step_off)) if m.late == "gd" else 0,
        gd_lr_min=min(lrs) if lrs else None,
        gd_lr_max=max(lrs) if lrs else None,
        gd_redos=redos,
        h_lambda_checks=checks,
    )
    return _combined(parts, phases, params, status, t0, info, wasted)
