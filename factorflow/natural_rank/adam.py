"""Adam for a batch of CP fits: the paper's (on the CP weights, minibatches) or on the
log-magnitude parameters (:func:`fit_adam`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from factorflow.natural_rank.model import (
    FitBatch,
    FitResult,
    _design,
    batched_predict,
    batched_predict_log,
    log_to_weights,
    weights_to_log,
)

__all__ = ["fit_adam"]


def fit_adam(
    X: torch.Tensor,
    Y: torch.Tensor,
    batch: FitBatch,
    weights0: torch.Tensor,
    *,
    lr: float = 5e-4,
    batch_size: int | None = 5000,
    epochs: int = 1,
    generator: torch.Generator | None = None,
    parametrization: str = "weights",
    target_range: float = 2.0,
    dtype: torch.dtype = torch.float64,
    record_every: int = 1,
    chunk: int = 16384,
    max_value: float | None = None,
    callback: Callable[[int, np.ndarray], bool | None] | None = None,
) -> FitResult:
    """Adam (PyTorch defaults: betas (0.9, 0.999), eps 1e-8) for every fit of ``batch`` at once.

    ``parametrization="weights"`` is the paper's setting: Adam on the CP weights ``(C, N, k)``
    themselves, loss = mean squared error on the raw targets (2 vs 0) of the minibatch, lr
    ``5e-4``, minibatches of 5000 (Razin, Maman & Cohen 2021). ``"log"``: Adam on the
    log-magnitude parameters ``(C, N + 1)`` (binary pixels; positive factors).
    ``batch_size=None`` is full batch. Minibatches: a fresh permutation of the samples each
    epoch from ``generator`` (shared by all fits of the batch).

    The batch's loss is the sum of the fits' losses, and Adam acts elementwise, so each fit's
    updates are exactly those it would get alone. ``epochs`` passes over the data; the
    reported ``train_error`` is evaluated on the full set at the end (paper units).

    ``max_value`` (``"weights"`` only; None: off): after every Adam step every weight entry is
    clamped from above, ``w <- min(w, max_value)`` (in place, outside autograd; Adam's moments
    are kept). The authors' code does this with ``--max_weights_value 1.02`` together with the
    init ``N(1, 1e-3^2)`` (:func:`~factorflow.natural_rank.model.init_paper_weights`' default
    ``mean=1, std=1e-3``) (Razin, Maman & Cohen, ICML 2021: the authors' code). With ``max_value=None``
    the updates are exactly those without the option.

    ``callback(epochs_done, epoch_error)`` is called after every recorded epoch with the
    epoch's mean minibatch error per fit ``(F,)`` (the value appended to ``trace_error``); a
    return value of True stops the fit after that epoch (``status`` ``"stopped"``, ``evals``
    = the epochs done), e.g. for a wall-clock budget or for saving partial traces.
    """
    import time

    if parametrization not in ("weights", "log"):
        raise ValueError(f"parametrization must be 'weights' or 'log', got {parametrization!r}")
    if max_value is not None and parametrization != "weights":
        raise ValueError("max_value (the authors' clamp) applies to the 'weights' parametrization")
    if max_value is not None and not np.isfinite(max_value):
        raise ValueError(f"max_value must be finite (None: no clamp), got {max_value}")
    t0 = time.perf_counter()
    device = weights0.device
    cf = batch.comp_fit.to(device)
    F = batch.n_fits
    n = X.shape[0]
    if Y.ndim != 2 or Y.shape[0] != n:
        raise ValueError(f"Y must have shape ({n}, T), got {tuple(Y.shape)}")
    Yf = Y[:, list(batch.targets)].to(device=device, dtype=dtype)
    bs = n if batch_size is None else min(int(batch_size), n)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    rho2 = float(target_range) ** 2
    if parametrization == "weights":
        Xd = X.to(device=device, dtype=dtype)
        param = weights0.to(dtype).clone().requires_grad_(True)

        def predict(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return batched_predict(p, x, cf, F)

    else:
        Xd = _design(X, dtype, device)
        param = weights_to_log(weights0.to(torch.float64)).to(dtype).requires_grad_(True)

        def predict(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return batched_predict_log(p, x, cf, F)

    opt = torch.optim.Adam([param], lr=lr)
    trace_step, trace = [], []
    step = 0
    done_epochs, stopped = 0, False
    for ep in range(int(epochs)):
        perm = torch.randperm(n, generator=gen).to(device) if bs < n else None
        ep_err = torch.zeros(F, dtype=torch.float64, device=device)
        for s in range(0, n, bs):
            idx = perm[s : s + bs] if perm is not None else slice(s, s + bs)
            pred = predict(param, Xd[idx])
            sq = (pred - Yf[idx]) ** 2
            loss = sq.mean(dim=0).sum()  # sum over fits of each fit's mean squared error
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if max_value is not None:
                with torch.no_grad():
                    param.clamp_(max=max_value)
            step += 1
            ep_err += sq.detach().to(torch.float64).sum(dim=0)
        done_epochs = ep + 1
        if ep % record_every == 0 or ep == epochs - 1:
            trace_step.append(step)
            trace.append((ep_err / (n * rho2)).cpu().numpy())
            if callback is not None and callback(done_epochs, trace[-1].copy()):
                stopped = ep < epochs - 1
                break
    with torch.no_grad():
        p = param.detach()
        weights = (
            p.to(torch.float64) if parametrization == "weights" else log_to_weights(p.double())
        )
        train = torch.zeros(F, dtype=torch.float64, device=device)
        for s in range(0, n, chunk):
            train += ((predict(p, Xd[s : s + chunk]) - Yf[s : s + chunk]).double() ** 2).sum(0)
        train = train / (n * rho2)
    desc = (
        f"Adam lr {lr:g} on the {'CP weights' if parametrization == 'weights' else 'log-magnitudes'}"
        f", {'full batch' if batch_size is None else f'batch {bs}'}, {done_epochs} epochs, "
        f"{str(dtype).replace('torch.', '')}"
        + ("" if max_value is None else f", entries clamped at <= {max_value:g} after each step")
    )
    return FitResult(
        weights=weights,
        train_error=train.cpu().numpy(),
        steps=np.full(F, step, dtype=np.int64),
        evals=int(done_epochs),
        status=["stopped" if stopped else "max_steps"] * F,
        trace_step=np.asarray(trace_step),
        trace_error=np.stack(trace) if trace else np.zeros((0, F)),
        wall_s=time.perf_counter() - t0,
        optimizer=desc,
    )
