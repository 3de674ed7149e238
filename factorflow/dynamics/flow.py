"""Gradient flow: an adaptive ODE integrator with error control (scipy's methods, or SUNDIALS
CVODE via :mod:`factorflow.dynamics.stiff`), with loss-threshold events located on the dense
output, per-run divergence, and ``auto``'s switch from RK45 to CVODE once RK45 is
stability-limited. Reached through :func:`factorflow.dynamics.train` with a :class:`Flow`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.integrate
import scipy.optimize
import torch
from tqdm.auto import tqdm

from factorflow.dynamics import stiff, tiny
from factorflow.dynamics.base import TrainResult, _rows, _Status, gradient
from factorflow.dynamics.record import Recorder, as_numpy

__all__ = ["FLOW_METHODS", "Flow"]

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
    ``benchmarks/bench_stiff.py``), its products in ``precond_dtype`` ("float32" by default:
    the same end state as "float64" to ~1e-8, 1.24x faster: ``benchmarks/bench_precond.py``).
    """

    method: str = "auto"
    rtol: float = 1e-7
    atol: float = 1e-10
    first_step: float | None = None
    max_step: float = math.inf
    auto_lsoda_max_dim: int = 256
    jv: str = "dq"
    precond: bool = True
    precond_dtype: str = "float32"
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
        if self.precond_dtype not in ("float32", "float64"):
            raise ValueError(
                f"flow precond_dtype must be 'float32' or 'float64', got {self.precond_dtype!r}"
            )
        if self.method == "cvode":
            stiff.require_sundials()

    def resolve(self, dim: int) -> str:
        if self.method != "auto":
            return self.method
        return "LSODA" if dim <= self.auto_lsoda_max_dim else "RK45"


def _flow(
    params, loss_fn, flow: Flow, stop, schedule, probes, progress, desc, kernel
) -> TrainResult:
    t_start = time.perf_counter()
    params = [p.detach().clone() for p in params]
    B = params[0].shape[0]
    dtype, device = params[0].dtype, params[0].device
    shapes = [tuple(p.shape) for p in params]
    sizes = [p.numel() for p in params]
    st = _Status(B)
    active = st.active.numpy()  # a view: st.end's updates show (numpy: no per-step torch calls)
    rec = Recorder(probes)
    method = flow.resolve(sum(sizes))
    cache: dict = {}
    n_evals = 0

    def unflat(y: np.ndarray) -> list[torch.Tensor]:
        flat = torch.as_tensor(y, device=device).to(dtype)
        return [c.reshape(s) for c, s in zip(torch.split(flat, sizes), shapes, strict=True)]

    def flat(ts: Sequence[torch.Tensor]) -> np.ndarray:
        return torch.cat([t.reshape(-1) for t in ts]).to(torch.float64).cpu().numpy()

    def losses_at(y: np.ndarray) -> np.ndarray:
        for key in ("y", "y_seen"):  # the last field evaluation, the last state looked up
            if cache.get(key) is not None and np.array_equal(cache[key], y):
                return cache["L" if key == "y" else "L_seen"]
        if kernel is not None:
            L = kernel.value(tiny.split(y, shapes))
        else:
            with torch.no_grad():
                L = as_numpy(loss_fn(unflat(y)))
        cache["y_seen"], cache["L_seen"] = y.copy(), L
        return L

    def fun(t: float, y: np.ndarray) -> np.ndarray:
        nonlocal n_evals
        n_evals += 1
        if kernel is not None:  # tiny problems: numpy, no torch round trip
            L, grads = kernel(tiny.split(y, shapes))
            cache["y"], cache["L"] = y.copy(), L
            if not active.all():
                m = active
                grads = [g * m.reshape(-1, *([1] * (g.ndim - 1))) for g in grads]
            return -np.concatenate([g.reshape(-1) for g in grads])
        L, grads = gradient(loss_fn, unflat(y))
        cache["y"], cache["L"] = y.copy(), as_numpy(L)
        if not active.all():
            m = st.active.to(device)
            grads = [g * _rows(m, g).to(g.dtype) for g in grads]
        return -flat(grads)

    y0 = flat(params)
    t_bound = stop.max_time if stop.max_time is not None else 1e300
    kwargs = {"rtol": flow.rtol, "atol": flow.atol, "max_step": flow.max_step}
    if flow.first_step is not None:
        kwargs["first_step"] = flow.first_step

    def active_mask() -> torch.Tensor | None:
        return None if active.all() else st.active.to(device)

    def make_solver(name: str, t0: float, y: np.ndarray):
        if name != "cvode":
            return FLOW_METHODS[name](fun, t0, y, t_bound, **kwargs)
        jv = stiff.HessianJv(loss_fn, unflat, flat, active_mask) if flow.jv == "hvp" else None
        pc = None
        if flow.precond and stiff.DMFCompletionPrecond.applies(loss_fn):
            pc_dtype = getattr(torch, flow.precond_dtype)
            pc = stiff.DMFCompletionPrecond(loss_fn, unflat, flat, dtype=pc_dtype)
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
        for b in np.flatnonzero(L0 <= stop.loss_below).tolist():
            st.end(b, "converged", float(L0[b]), 0, 0.0)
            final_y[b] = y0
    next_rec = schedule.next_point(0.0)
    n_steps = 0
    accepted_t = [0.0]
    bar = tqdm(desc=desc, disable=not progress, mininterval=1.0, unit="step")
    while active.any():
        t_old, y_old = solver.t, solver.y.copy()
        L_old = losses_at(y_old)
        msg = None
        try:
            msg = solver.step()
        except (FloatingPointError, ValueError, RuntimeError) as e:  # non-finite field
            msg = f"integrator error: {e}"
        if solver.status == "failed" or msg is not None or not np.all(np.isfinite(solver.y)):
            # keep the last finite state; decide per run whether it diverged
            for b in np.flatnonzero(active).tolist():
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
            rec.add(n_steps, t_old, unflat(y_old), L_old)
            cache["failure"] = str(msg or "non-finite state")
            break
        n_steps += 1
        t_new = solver.t
        accepted_t.append(t_new)
        L_new = losses_at(solver.y)
        sol = None
        bad = active & ~(np.isfinite(L_new) & (L_new <= stop.diverge_above))
        for b in np.flatnonzero(bad).tolist() if bad.any() else ():
            st.end(b, "diverged", float(L_old[b]), n_steps - 1, t_old)
            final_y[b] = y_old
        if bad.any():  # the diverged runs' last finite state (as the discrete loop keeps)
            rec.add(n_steps - 1, t_old, unflat(y_old), L_old)
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
            crossed = active & (L_new <= thr)
            for b in np.flatnonzero(crossed).tolist() if crossed.any() else ():
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
            for b in np.flatnonzero(active).tolist():
                st.end(b, budget, float(L_new[b]), n_steps, t_new)
                final_y[b] = solver.y.copy()
            rec.add(n_steps, t_new, unflat(solver.y), L_new)
        if switch_to is not None and active.any() and solver.status == "running":
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
            if active.any():
                bar.set_postfix(
                    t=f"{t_new:.3g}", loss=f"{float(L_new[active].max()):.3e}", refresh=False
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
