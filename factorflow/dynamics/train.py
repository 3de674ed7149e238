"""Training loops: the discrete optimizers (one visible loop) and gradient flow (an adaptive ODE
integrator with error control), sharing stop rules, recording, and batching.

A *problem* reaches this layer only as ``loss_fn(params) -> (B,)``: one loss per independent run.
Runs are independent, so the gradient of ``loss_fn(params).sum()`` with respect to run b's
parameters is run b's own gradient; B runs of one shape train as one tensor program.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.integrate
import scipy.optimize
import torch
from tqdm.auto import tqdm

from factorflow.dynamics import stiff
from factorflow.dynamics.optimizers import GD, Adam, GroupRMSProp
from factorflow.dynamics.record import Probe, Recorder, Schedule, Stop, Trajectory

__all__ = ["FLOW_METHODS", "Flow", "TrainResult", "gradient", "train"]

LossFn = Callable[[Sequence[torch.Tensor]], torch.Tensor]

FLOW_METHODS = {
    "RK45": scipy.integrate.RK45,
    "DOP853": scipy.integrate.DOP853,
    "RK23": scipy.integrate.RK23,
    "LSODA": scipy.integrate.LSODA,
    "BDF": scipy.integrate.BDF,
    "Radau": scipy.integrate.Radau,
    "cvode": stiff.CVODESolver,  # SUNDIALS CVODE BDF + GMRES; needs the ``stiff`` extra
}


@dataclass(frozen=True)
class Flow:
    """Gradient flow d theta/dt = -grad L(theta), simulated by scipy's adaptive integrators with
    error control (local error <= atol + rtol |theta| per component).

    ``method``: one of ``FLOW_METHODS`` or ``"auto"`` (LSODA, which switches to a stiff BDF
    method when the problem turns stiff, for states of at most ``auto_lsoda_max_dim`` numbers;
    RK45 (Dormand-Prince 5(4)) above, where a finite-difference Jacobian would be too costly).
    Above that size, with scikit-sundae installed, ``auto`` switches from RK45 to ``"cvode"``
    once RK45 is stability-limited: Hairer's dopri5 stiffness test (h * lambda > 3.25 on
    ``auto_stiff_steps`` (15) accepted steps, its counter reset by 6 non-stiff steps in a row;
    :func:`factorflow.dynamics.stiff.rk45_stiffness`). ``info["segments"]`` says which method
    ran over which time and evaluation range; without scikit-sundae ``auto`` stays on RK45 and
    ``info["auto_note"]`` says so.

    ``"cvode"`` (:mod:`factorflow.dynamics.stiff`): SUNDIALS CVODE BDF with GMRES
    (``krylov_dim`` vectors); ``jv="dq"`` CVODE's difference quotient (one field evaluation
    per product; the default: as few evaluations as exact products on the 100x100 benchmark,
    and cheaper ones), ``"hvp"`` exact Hessian-vector products (double backward); ``precond``
    uses the balanced-DMF preconditioner (right preconditioning) when the objective is a deep
    matrix factorization on completion, none otherwise (measured in
    ``benchmarks/bench_stiff.py``).
    """

    method: str = "auto"
    rtol: float = 1e-7
    atol: float = 1e-10
    first_step: float | None = None
    max_step: float = math.inf
    auto_lsoda_max_dim: int = 256
    jv: str = "dq"
    precond: bool = True
    krylov_dim: int = 20
    auto_stiff_steps: int = 15

    def __post_init__(self) -> None:
        if self.method != "auto" and self.method not in FLOW_METHODS:
            raise ValueError(
                f"unknown flow method {self.method!r}; choose auto or one of {sorted(FLOW_METHODS)}"
            )
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError("flow rtol and atol must be > 0")
        if self.jv not in ("hvp", "dq"):
            raise ValueError(f"flow jv must be 'hvp' or 'dq', got {self.jv!r}")
        if self.method == "cvode":
            stiff.require_sundials()

    def resolve(self, dim: int) -> str:
        if self.method != "auto":
            return self.method
        return "LSODA" if dim <= self.auto_lsoda_max_dim else "RK45"


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
) -> TrainResult:
    """Train B independent runs from ``params`` (list of (B, ...) tensors) on ``loss_fn``.

    Discrete optimizers run the loop below; :class:`Flow` integrates gradient flow. ``schedule``
    says when to record ``loss`` and every probe (``name -> fn(params) -> (B, ...)``)."""
    _check_params(params, loss_fn)
    schedule = schedule or Schedule(per_decade=10)
    if isinstance(optimizer, Flow):
        return _flow(params, loss_fn, optimizer, stop, schedule, probes, progress, desc)
    return _discrete(params, loss_fn, optimizer, stop, schedule, probes, progress, desc)


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


def _discrete(params, loss_fn, opt, stop, schedule, probes, progress, desc) -> TrainResult:
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
        if progress and step % 1000 == 0:
            bar.update(1000)
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


def _flow(params, loss_fn, flow: Flow, stop, schedule, probes, progress, desc) -> TrainResult:
    t_start = time.perf_counter()
    params = [p.detach().clone() for p in params]
    B = params[0].shape[0]
    dtype, device = params[0].dtype, params[0].device
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    st = _Status(B)
    rec = Recorder(probes)
    method = flow.resolve(sum(sizes))
    cache: dict = {}
    n_evals = 0

    def unflat(y: np.ndarray) -> list[torch.Tensor]:
        flat = torch.as_tensor(y, device=device).to(dtype)
        return [c.reshape(s) for c, s in zip(torch.split(flat, sizes), shapes, strict=True)]

    def flat(ts: Sequence[torch.Tensor]) -> np.ndarray:
        return torch.cat([t.reshape(-1) for t in ts]).to(torch.float64).cpu().numpy()

    def losses_at(y: np.ndarray) -> torch.Tensor:
        if cache.get("y") is not None and np.array_equal(cache["y"], y):
            return cache["L"]
        with torch.no_grad():
            return loss_fn(unflat(y)).cpu()

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        nonlocal n_evals
        n_evals += 1
        L, grads = gradient(loss_fn, unflat(y))
        cache["y"], cache["L"] = y.copy(), L.cpu()
        if not bool(st.active.all()):
            m = st.active.to(device)
            grads = [g * _rows(m, g).to(g.dtype) for g in grads]
        return -flat(grads)

    y0 = flat(params)
    t_bound = stop.max_time if stop.max_time is not None else 1e300
    kwargs = {"rtol": flow.rtol, "atol": flow.atol, "max_step": flow.max_step}
    if flow.first_step is not None:
        kwargs["first_step"] = flow.first_step

    def active_mask() -> torch.Tensor | None:
        return None if bool(st.active.all()) else st.active.to(device)

    def make_solver(name: str, t0: float, y: np.ndarray):
        if name != "cvode":
            return FLOW_METHODS[name](fun, t0, y, t_bound, **kwargs)
        jv = stiff.HessianJv(loss_fn, unflat, flat, active_mask) if flow.jv == "hvp" else None
        pc = None
        if flow.precond and stiff.DMFCompletionPrecond.applies(loss_fn):
            pc = stiff.DMFCompletionPrecond(loss_fn, unflat, flat)
        return stiff.CVODESolver(
            fun, t0, y, t_bound, jv=jv, precond=pc, krylov_dim=flow.krylov_dim, **kwargs
        )

    # auto above auto_lsoda_max_dim: RK45, then CVODE once RK45 is stability-limited
    switch_to = None
    auto_note = None
    if flow.method == "auto" and method == "RK45":
        if stiff.sundials_available():
            switch_to = "cvode"
        else:
            auto_note = "scikit-sundae missing: RK45 throughout (no stiff switch); " + (
                stiff.STIFF_EXTRA_HINT
            )
    n_stiff = n_nonstiff = 0
    segments = [{"method": method, "t_start": 0.0, "evals_start": 0}]
    solver = make_solver(method, 0.0, y0)
    final_y = [None] * B
    L0 = losses_at(y0)
    rec.add(0, 0.0, params, L0)
    if stop.loss_below is not None:
        for b in (L0 <= stop.loss_below).nonzero().flatten().tolist():
            st.end(b, "converged", float(L0[b]), 0, 0.0)
            final_y[b] = y0
    next_rec = schedule.next_point(0.0)
    n_steps = 0
    accepted_t = [0.0]
    bar = tqdm(desc=desc, disable=not progress, mininterval=1.0, unit="step")
    while bool(st.active.any()):
        t_old, y_old = solver.t, solver.y.copy()
        L_old = losses_at(y_old)
        msg = None
        try:
            msg = solver.step()
        except (FloatingPointError, ValueError, RuntimeError) as e:  # non-finite field
            msg = f"integrator error: {e}"
        if solver.status == "failed" or msg is not None or not np.all(np.isfinite(solver.y)):
            # keep the last finite state; decide per run whether it diverged
            for b in st.active.nonzero().flatten().tolist():
                st.end(
                    b,
                    "diverged"
                    if not np.isfinite(float(L_old[b])) or float(L_old[b]) > stop.diverge_above
                    else "failed",
                    float(L_old[b]),
                    n_steps,
                    t_old,
                )
                final_y[b] = y_old
            st.status = [s if s != "failed" else "failed" for s in st.status]
            rec.add(n_steps, t_old, unflat(y_old), L_old)
            cache["failure"] = str(msg or "non-finite state")
            break
        n_steps += 1
        t_new = solver.t
        accepted_t.append(t_new)
        L_new = losses_at(solver.y)
        sol = None
        bad = st.active & ~(torch.isfinite(L_new) & (L_new <= stop.diverge_above))
        for b in bad.nonzero().flatten().tolist():
            st.end(b, "diverged", float(L_old[b]), n_steps - 1, t_old)
            final_y[b] = y_old
        # record the schedule points inside (t_old, t_new]
        while next_rec <= t_new:
            sol = sol or solver.dense_output()
            yr = sol(next_rec)
            rec.add(n_steps, next_rec, unflat(yr), losses_at(yr))
            next_rec = schedule.next_point(next_rec)
        if schedule.accepted:
            rec.add(n_steps, t_new, unflat(solver.y), L_new)
        # runs crossing the loss threshold: locate the crossing on the dense output
        if stop.loss_below is not None:
            thr = stop.loss_below
            for b in (st.active & (L_new <= thr)).nonzero().flatten().tolist():
                sol = sol or solver.dense_output()

                def gap(t: float, b: int = b, sol=sol, thr=thr) -> float:
                    return math.log(max(float(losses_at(sol(t))[b]), 1e-300)) - math.log(thr)

                if float(L_old[b]) > thr and gap(t_old) > 0 > gap(t_new):
                    t_star = scipy.optimize.brentq(
                        gap, t_old, t_new, xtol=1e-13 * max(t_new, 1.0), rtol=1e-12
                    )
                else:
                    t_star = t_new
                y_star = sol(t_star) if t_star != t_new else solver.y.copy()
                L_star = losses_at(y_star)
                st.end(b, "converged", float(L_star[b]), n_steps, t_star)
                final_y[b] = y_star
                rec.add(n_steps, t_star, unflat(y_star), L_star)
        budget = None
        if solver.status == "finished":
            budget = "max_time"
        elif stop.max_steps is not None and n_steps >= stop.max_steps:
            budget = "max_steps"
        elif stop.max_evals is not None and n_evals + getattr(solver, "njv", 0) >= stop.max_evals:
            budget = "max_evals"
        elif stop.max_wall_s is not None and time.perf_counter() - t_start > stop.max_wall_s:
            budget = "max_wall"
        if budget is not None:
            for b in st.active.nonzero().flatten().tolist():
                st.end(b, budget, float(L_new[b]), n_steps, t_new)
                final_y[b] = solver.y.copy()
            rec.add(n_steps, t_new, unflat(solver.y), L_new)
        if switch_to is not None and bool(st.active.any()) and solver.status == "running":
            hl = stiff.rk45_stiffness(solver)
            if hl > stiff.RK45_STIFF_HLAMBDA:
                n_stiff, n_nonstiff = n_stiff + 1, 0
            else:
                n_nonstiff += 1
                if n_nonstiff >= 6:
                    n_stiff = 0
            if n_stiff >= flow.auto_stiff_steps:
                segments[-1].update(t_end=float(t_new), evals_end=n_evals, steps=n_steps)
                segments.append(
                    {
                        "method": switch_to,
                        "t_start": float(t_new),
                        "evals_start": n_evals,
                        "steps_start": n_steps,
                        "h_lambda": float(hl),
                    }
                )
                solver = make_solver(switch_to, t_new, solver.y.copy())
                method, switch_to = f"{method}+{switch_to}", None
        if progress:
            bar.update(1)
            if st.active.any():
                bar.set_postfix(
                    t=f"{t_new:.3g}", loss=f"{float(L_new[st.active].max()):.3e}", refresh=False
                )
    bar.close()
    # assemble each run's final state from the flat state it ended at
    final = [torch.empty_like(p) for p in params]
    for b in range(B):
        ps = unflat(final_y[b])
        for j in range(len(final)):
            final[j][b] = ps[j][b]
    info = {
        "method": method,
        "accepted_steps": n_steps,
        "nfev": n_evals,
        "njev": int(getattr(solver, "njev", 0) or 0),
        "accepted_t": np.asarray(accepted_t),
    }
    if isinstance(solver, stiff.CVODESolver):  # exact Hvps count as evaluations
        info.update(
            jv=flow.jv,
            n_hvp=solver.njv,
            precond=solver.precond is not None,
            nprec_setups=solver.nprec_setups,
            nprec_solves=solver.nprec_solves,
            cvode_steps=solver.nsteps,
        )
        n_evals += solver.njv
        info["nfev"] = n_evals
    if flow.method == "auto":
        segments[-1].update(t_end=float(np.max(st.time)), evals_end=n_evals, steps=n_steps)
        info["segments"] = segments
        if auto_note:
            info["auto_note"] = auto_note
    if "failure" in cache:
        info["failure"] = cache["failure"]
    return TrainResult(
        final,
        st.status,
        st.final_loss,
        st.steps,
        st.time,
        rec.finish(),
        n_evals,
        time.perf_counter() - t_start,
        f"flow:{method}",
        info,
    )
