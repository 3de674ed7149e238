"""Full-batch L-BFGS for a batch of CP fits in the log-magnitude parametrization, every fit with
its own curvature history, step length and stopping decision (:func:`fit_lbfgs`)."""

from __future__ import annotations

import math

import numpy as np
import torch

from factorflow.natural_rank.model import (
    FitBatch,
    FitResult,
    _design,
    _segment_sum,
    log_to_weights,
    weights_to_log,
)

__all__ = ["fit_lbfgs"]


def _log_value_and_grad(
    theta: torch.Tensor,
    Xa: torch.Tensor,
    Y: torch.Tensor,
    comp_fit: torch.Tensor,
    n_fits: int,
    scale: float,
    chunk: int,
    grad: bool = True,
    poisson: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-fit objective ``L_j = scale * sum_i (f_j(x_i) - Y[i, j])^2`` ``(F,)`` (float64) and
    its gradient with respect to ``theta`` ``(C, N + 1)``, over the data in chunks of samples.

    Gradient (closed form, checked against autograd in the tests): with ``E_ic = exp(a_c +
    x_i . b_c)``, ``dL/dtheta_c = scale * sum_i 2 (f_j(x_i) - y_ij) E_ic [1, x_i]``.
    ``poisson``: ``L_j = scale * sum_i f_j(x_i) - y_ij log f_j(x_i)`` and
    ``dL/dtheta_c = scale * sum_i (1 - y_ij / f_j(x_i)) E_ic [1, x_i]``.
    """
    loss = torch.zeros(n_fits, dtype=torch.float64, device=theta.device)
    g = torch.zeros_like(theta) if grad else None
    for s in range(0, Xa.shape[0], chunk):
        xc = Xa[s : s + chunk]
        E = torch.exp(xc @ theta.T)  # (m, C)
        f = _segment_sum(E, comp_fit, n_fits)  # (m, F)
        y = Y[s : s + chunk]
        if poisson:
            # f - y log f (+ const): convex in theta for rank 1; y log f := 0 where y = 0
            ylogf = torch.where(y != 0, y * torch.log(f), torch.zeros_like(f))
            loss += (f - ylogf).to(torch.float64).sum(dim=0)
            dldf = 1.0 - torch.where(y != 0, y / f, torch.zeros_like(f))
        else:
            r = f - y
            loss += (r.to(torch.float64) ** 2).sum(dim=0)
            dldf = 2.0 * r
        if g is not None:
            G = scale * dldf[:, comp_fit] * E
            g += G.T @ xc
    return loss * scale, g


def _segdot(u: torch.Tensor, v: torch.Tensor, comp_fit: torch.Tensor, n_fits: int) -> torch.Tensor:
    """Per-fit inner products of two stacked parameter tensors ``(C, D)``: ``(F,)`` float64."""
    per = (u * v).sum(dim=1).to(torch.float64)
    return torch.zeros(n_fits, dtype=torch.float64, device=u.device).index_add(0, comp_fit, per)


def fit_lbfgs(
    X: torch.Tensor,
    Y: torch.Tensor,
    batch: FitBatch,
    weights0: torch.Tensor,
    *,
    max_steps: int = 300,
    history: int = 20,
    ftol: float | None = None,
    gtol: float = 1e-10,
    target_range: float = 2.0,
    dtype: torch.dtype = torch.float64,
    chunk: int = 16384,
    record_every: int = 1,
    max_line_search: int = 40,
    loss: str = "squared",
) -> FitResult:
    """Full-batch L-BFGS for every fit of ``batch`` at once, in the log-magnitude
    parametrization (see the module docstring), from the weights ``weights0`` ``(C, N, 2)``
    (positive, e.g. :func:`init_paper_weights`).

    Objective per fit (``loss="squared"``): the train error in paper units,
    ``mean_i (f(x_i) - y_i)^2 / rho^2``. (``loss="poisson"``: ``mean_i f(x_i) - y_i log f(x_i)``,
    convex in the parameters for rank 1; offered as a warm start.) ``X``: ``(n, N)`` binary
    pixels (any dtype); ``Y``: ``(n, T)`` targets, fit ``j`` uses column ``batch.targets[j]``.

    Each fit keeps its own ring of curvature pairs (``history`` of them), its own step length and
    its own stopping decision; the fits only share the matrix products (one
    ``(n, N+1) @ (N+1, C)`` product and its transpose per evaluation, over the components of the
    fits still running), so a fit's path is the one it would follow alone (up to rounding).
    Direction: the two-loop recursion (Nocedal & Wright, Alg. 7.4) with ``H0 = gamma I``,
    ``gamma = s.y / y.y`` of the fit's newest pair (first step: ``-g / max(1, |g|_1)``, as
    ``torch.optim.LBFGS``). Step: backtracking from 1 until the Armijo condition
    ``L(t) <= L + 1e-4 t g.d`` holds (a non-finite trial value counts as a failure; the next
    trial minimizes the quadratic through ``L(0), L'(0), L(t)``, kept within ``[0.1 t, 0.5 t]``);
    a pair with ``s.y <= 1e-10 |s| |y|`` is not stored. A fit stops when its relative decrease
    in one step is below ``ftol`` (default ``10 eps`` of ``dtype``), when ``max|g| < gtol``, or
    when the line search fails.

    ``steps``: iterations taken per fit; ``evals``: batched evaluations (value and gradient).
    """
    import time

    if loss not in ("squared", "poisson"):
        raise ValueError(f"loss must be 'squared' or 'poisson', got {loss!r}")
    poisson = loss == "poisson"
    t0 = time.perf_counter()
    device = weights0.device
    cf = batch.comp_fit.to(device)
    F, C = batch.n_fits, batch.n_components
    n = X.shape[0]
    if Y.ndim != 2 or Y.shape[0] != n:
        raise ValueError(f"Y must have shape ({n}, T), got {tuple(Y.shape)}")
    Xa = _design(X, dtype, device)
    Yf = Y[:, list(batch.targets)].to(device=device, dtype=dtype)
    scale = 1.0 / n if poisson else 1.0 / (n * float(target_range) ** 2)
    ftol = 10 * torch.finfo(dtype).eps if ftol is None else ftol
    m = max(1, int(history))

    def evaluate(th: torch.Tensor, fits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Value ``(F,)`` (inf for fits not in ``fits``) and gradient of the listed fits."""
        comps = torch.nonzero(torch.isin(cf, fits)).flatten()
        remap = torch.full((F,), -1, dtype=torch.long, device=device)
        remap[fits] = torch.arange(fits.numel(), device=device)
        val, grad = _log_value_and_grad(
            th[comps],
            Xa,
            Yf[:, fits],
            remap[cf[comps]],
            fits.numel(),
            scale,
            chunk,
            poisson=poisson,
        )
        assert grad is not None
        full_val = torch.full((F,), math.inf, dtype=torch.float64, device=device)
        full_val[fits] = val
        full_grad = torch.zeros_like(th)
        full_grad[comps] = grad
        return full_val, full_grad

    def seg(x: torch.Tensor) -> torch.Tensor:  # per-fit scalar (F,) -> per-component column
        return x.to(dtype)[cf][:, None]

    theta = weights_to_log(weights0.to(torch.float64)).to(dtype)
    fval, g = evaluate(theta, torch.arange(F, device=device))
    evals = 1
    # per-fit rings of curvature pairs: slot k of fit j lives in S_buf[k, components of j]
    S_buf = torch.zeros((m, C, theta.shape[1]), dtype=dtype, device=device)
    Y_buf = torch.zeros_like(S_buf)
    rho_buf = torch.zeros((m, F), dtype=torch.float64, device=device)
    count = torch.zeros(F, dtype=torch.long, device=device)  # stored pairs per fit
    head = torch.zeros(F, dtype=torch.long, device=device)  # next slot to write per fit
    cidx = torch.arange(C, device=device)
    fidx = torch.arange(F, device=device)
    active = torch.ones(F, dtype=torch.bool, device=device)
    status = ["max_steps"] * F
    steps = np.zeros(F, dtype=np.int64)
    trace_step, trace = [0], [fval.cpu().numpy().copy()]

    for it in range(1, max_steps + 1):
        if not bool(active.any()):
            break
        # --- direction by the two-loop recursion, every fit over its own pairs, newest first
        q = g.clone()
        alphas = []
        n_pairs = int(count.max())
        for k in range(n_pairs):
            slot = (head - 1 - k) % m  # (F,)
            valid = (k < count).to(torch.float64)
            s_k, y_k = S_buf[slot[cf], cidx], Y_buf[slot[cf], cidx]
            al = rho_buf[slot, fidx] * valid * _segdot(s_k, q, cf, F)
            alphas.append(al)
            q -= seg(al) * y_k
        newest = (head - 1) % m
        s_n, y_n = S_buf[newest[cf], cidx], Y_buf[newest[cf], cidx]
        sy, yy = _segdot(s_n, y_n, cf, F), _segdot(y_n, y_n, cf, F)
        first = 1.0 / _segdot(g.abs(), torch.ones_like(g), cf, F).clamp(min=1.0)
        gamma = torch.where((count > 0) & (sy > 0) & (yy > 0), sy / yy.clamp(min=1e-300), first)
        q *= seg(gamma)
        for k in reversed(range(n_pairs)):
            slot = (head - 1 - k) % m
            valid = (k < count).to(torch.float64)
            s_k, y_k = S_buf[slot[cf], cidx], Y_buf[slot[cf], cidx]
            be = rho_buf[slot, fidx] * valid * _segdot(y_k, q, cf, F)
            q += seg(alphas[k] - be) * s_k
        d = -q
        gd = _segdot(g, d, cf, F)
        bad = ~(gd < 0)  # not a descent direction (numerical trouble): steepest descent
        if bool(bad.any()):
            d = torch.where(seg(bad) > 0, -g * seg(first), d)
            gd = _segdot(g, d, cf, F)
        # --- backtracking line search, per fit; the trial points of the pending fits in one
        # evaluation over just their components
        t = torch.ones(F, dtype=torch.float64, device=device)
        done = ~active
        new_theta, new_f, new_g = theta.clone(), fval.clone(), g.clone()
        for _ in range(max_line_search):
            trial = theta + seg(t) * d
            tl, tg = evaluate(trial, torch.nonzero(~done).flatten())
            evals += 1
            ok = (~done) & torch.isfinite(tl) & (tl <= fval + 1e-4 * t * gd)
            if bool(ok.any()):
                mask = seg(ok) > 0
                new_theta = torch.where(mask, trial, new_theta)
                new_g = torch.where(mask, tg, new_g)
                new_f = torch.where(ok, tl, new_f)
            done = done | ok
            if bool(done.all()):
                break
            # next trial: the minimizer of the quadratic through L(0), L'(0) and L(t), kept
            # within [0.1 t, 0.5 t] (plain halving when L(t) is not finite)
            curv = tl - fval - gd * t
            t_quad = -gd * t * t / (2.0 * curv.clamp(min=1e-300))
            t_next = torch.where(
                torch.isfinite(tl) & (curv > 0),
                torch.minimum(torch.maximum(t_quad, 0.1 * t), 0.5 * t),
                0.5 * t,
            )
            t = torch.where(done, t, t_next)
        failed = active & ~done
        for j in torch.nonzero(failed).flatten().tolist():
            status[j] = "line_search_failed"
        moved = active & ~failed
        # --- store the new curvature pair of each fit that moved (when s.y > 0)
        s_new, y_new = new_theta - theta, new_g - g
        sy = _segdot(s_new, y_new, cf, F)
        norms = torch.sqrt(_segdot(s_new, s_new, cf, F) * _segdot(y_new, y_new, cf, F))
        keep = moved & (sy > 1e-10 * norms)
        if bool(keep.any()):
            kc = keep[cf]
            slot_c = head[cf]
            S_buf[slot_c[kc], cidx[kc]] = s_new[kc]
            Y_buf[slot_c[kc], cidx[kc]] = y_new[kc]
            rho_buf[head[keep], fidx[keep]] = 1.0 / sy[keep]
            head = torch.where(keep, (head + 1) % m, head)
            count = torch.where(keep, (count + 1).clamp(max=m), count)
        # --- stopping rules
        rel = (fval - new_f) / fval.abs().clamp(min=1e-300)
        gmax = torch.zeros(F, dtype=torch.float64, device=device).scatter_reduce(
            0, cf, new_g.abs().amax(dim=1).to(torch.float64), "amax", include_self=True
        )
        conv = moved & ((rel < ftol) | (gmax < gtol))
        for j in torch.nonzero(conv).flatten().tolist():
            status[j] = "converged"
        steps += moved.cpu().numpy().astype(np.int64)
        theta, fval, g = new_theta, new_f, new_g
        active = active & ~failed & ~conv
        if it % record_every == 0 or not bool(active.any()):
            trace_step.append(it)
            trace.append(fval.cpu().numpy().copy())
    weights = log_to_weights(theta.to(torch.float64))
    return FitResult(
        weights=weights,
        train_error=fval.cpu().numpy().copy(),
        steps=steps,
        evals=evals,
        status=status,
        trace_step=np.asarray(trace_step),
        trace_error=np.stack(trace),
        wall_s=time.perf_counter() - t0,
        optimizer=f"full-batch L-BFGS ({loss} loss, log-magnitude parametrization, history "
        f"{m}, Armijo backtracking), {str(dtype).replace('torch.', '')}",
    )
