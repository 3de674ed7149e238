"""Tensor rank of natural data: fitting order-784 CP tensors of an explicit rank R to images.

Razin, Maman & Cohen, "Implicit Regularization in Tensor Factorization" (ICML 2021), Sec. 5:
a binarized ``28 x 28`` image ``x in {0, 1}^784`` is an index into an order-784 tensor with
mode size 2, and its one-vs-all label (``2`` for the positive class, ``0`` otherwise) is the
value of that entry. How well a CP tensor of rank ``R``,

    f(x) = sum_{r=1..R} prod_{n=1..N} w_r^n[x_n],          weights ``(R, N, k)``,

fits these entries (train error) and predicts unseen ones (test error), compared with the same
fit on random images and on random labels, measures how low the tensor rank of natural data is.

This module holds the math of that experiment as plain functions:

* errors in the paper's units: :func:`paper_error` (squared error divided by the squared target
  range, i.e. 0/1 units for targets 2 vs 0; optionally clamped per sample at 1, as the original
  code does on the test set) and :func:`label_variance` (the error of the best constant
  predictor in the same units);
* data: :func:`encode_images` (memory-lean binarization) and :func:`build_variant` (the
  original data and its "rand image" / "rand label" controls, equal to
  :func:`factorflow.data.images.make_variant`);
* a batch of independent fits that share one design matrix (variants with the same images,
  ranks, seeds): :class:`FitBatch`, stacked weights ``(C, N, k)`` with ``C = sum of the ranks``
  and :func:`batched_predict`, one matrix product for all of them;
* two optimizers, both batched so that every fit is exactly independent of the others:
  :func:`fit_adam` (the paper's: Adam on the weights, minibatches; or Adam on the log-magnitude
  parametrization) and :func:`fit_lbfgs` (full-batch L-BFGS on the log-magnitude
  parametrization, per-fit history and line search).

Log-magnitude parametrization (binary pixels, positive factors): with ``a_r = sum_n log
w_r^n[0]`` and ``b_r^n = log w_r^n[1] - log w_r^n[0]``, a component is ``exp(a_r + x . b_r)``,
so a rank-1 model is log-linear in the pixels, ``f(x) = exp(a + x . b)``. :func:`weights_to_log`
and :func:`log_to_weights` convert exactly between the two (``log_to_weights`` puts ``exp(a/N)``
on every ``w^n[0]``). This family is the rank-R tensors whose components have positive factors
(every factor of the paper's initialization ``N(1, 1e-3^2)`` is positive): its best error is an
upper bound on the best error over all rank-R tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from factorflow.data.images import (
    ImageData,
    one_vs_all,
    permute_labels,
    random_images,
    to_tensor_indices,
)
from factorflow.factorizations.cp_large_order import log_components

__all__ = [
    "FitBatch",
    "FitResult",
    "VariantData",
    "batched_predict",
    "batched_predict_log",
    "build_variant",
    "encode_images",
    "fit_adam",
    "fit_error_pair",
    "fit_errors",
    "fit_lbfgs",
    "init_paper_weights",
    "label_variance",
    "log_to_weights",
    "paper_error",
    "weights_to_log",
]


# --------------------------------------------------------------------------- errors


def paper_error(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    target_range: float = 2.0,
    clamp: bool = False,
) -> torch.Tensor:
    """Mean squared error in the paper's units: ``mean_i e_i`` over the last dim, where

        e_i = (f(x_i) - y_i)^2 / rho^2,   rho = target_range (2 for targets 2 vs 0),

    i.e. the error of 0/1 targets (Razin, Maman & Cohen 2021 report errors "divided by 4").
    With ``clamp`` each sample's squared error is first clamped at ``rho^2`` (so ``e_i <= 1``),
    as the original code does for the test error: one wild prediction counts as one wrong
    label, not as an unbounded error.

    ``pred``, ``target``: broadcastable ``(..., n)``; returns ``(...)`` in float64.
    """
    rho2 = float(target_range) ** 2
    if rho2 <= 0:
        raise ValueError(f"target_range must be positive, got {target_range}")
    sq = (pred.to(torch.float64) - target.to(torch.float64)) ** 2
    if clamp:
        sq = sq.clamp(max=rho2)  # NaN stays NaN: a NaN prediction is reported, not hidden
    return sq.mean(dim=-1) / rho2


def label_variance(
    target: torch.Tensor, *, positive_value: float = 2.0, negative_value: float = 0.0
) -> float:
    """Variance of the 0/1 labels ``z = (y - negative) / (positive - negative)``: ``p (1 - p)``
    with ``p`` the positive fraction (population variance).

    It is the error of the best constant predictor (``f = mean y``) in :func:`paper_error`'s
    units: ``mean (y - mean y)^2 / rho^2 = var(z)``. The paper's "label variance" line (~0.09 for
    one class of ten).
    """
    rho = float(positive_value) - float(negative_value)
    if rho == 0:
        raise ValueError("positive_value and negative_value must differ")
    z = (target.to(torch.float64) - float(negative_value)) / rho
    if z.numel() == 0:
        raise ValueError("label_variance of an empty target")
    return float(((z - z.mean()) ** 2).mean())


# --------------------------------------------------------------------------- data


def encode_images(
    images: torch.Tensor, levels: int = 2, *, chunk: int = 8192, dtype: torch.dtype = torch.uint8
) -> torch.Tensor:
    """:func:`factorflow.data.images.to_tensor_indices` in chunks of images, stored compactly.

    ``images``: ``(n, h, w)`` in ``[0, 1]``. Returns ``(n, h*w)`` of ``dtype`` (uint8 by
    default: 1 byte per pixel instead of the 8 of a long index; the whole 70,000-image set
    needs 55 MB). Same values as ``to_tensor_indices`` (binarize at 0.5, ties up, for 2 levels).
    """
    if levels > 256 and dtype == torch.uint8:
        raise ValueError(f"{levels} levels do not fit in uint8")
    n = images.shape[0]
    out = torch.empty((n, int(math.prod(images.shape[1:]))), dtype=dtype)
    for s in range(0, n, chunk):
        out[s : s + chunk] = to_tensor_indices(images[s : s + chunk], levels).to(dtype)
    return out


@dataclass(frozen=True)
class VariantData:
    """One data setting: compact indices ``(n, N)`` (uint8) and targets ``(n,)`` (float64)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def build_variant(
    data: ImageData,
    variant: str,
    *,
    levels: int = 2,
    generator: torch.Generator | None = None,
    positive_class: int = 6,
    positive_value: float = 2.0,
    negative_value: float = 0.0,
) -> VariantData:
    """The data of one setting of the paper, as compact indices (see :func:`encode_images`).

    Same draws and values as :func:`factorflow.data.images.make_variant` (train split first,
    then test; "rand_image": i.i.d. uniform levels, labels kept; "rand_label": the images, the
    targets permuted within each split), but images are binarized in chunks and kept as uint8,
    so the 70,000-image set never needs an ``(n, 784)`` int64 copy. A positive class absent from
    a split raises ``ValueError`` naming the split.
    """
    if variant not in ("original", "rand_image", "rand_label"):
        raise ValueError(
            f"unknown variant {variant!r}; expected original, rand_image or rand_label"
        )
    if variant != "original" and generator is None:
        raise ValueError(f"variant {variant!r} needs an explicit torch.Generator")
    parts: list[torch.Tensor] = []
    for split, images, labels in (
        ("train", data.train_images, data.train_labels),
        ("test", data.test_images, data.test_labels),
    ):
        try:
            y = one_vs_all(labels, positive_class, positive_value, negative_value)
        except ValueError as exc:
            raise ValueError(f"{data.dataset} ({data.source}), {split} split: {exc}") from exc
        if variant == "rand_image":
            assert generator is not None
            x = random_images(images.shape[0], data.n_pixels, levels, generator).to(torch.uint8)
        else:
            x = encode_images(images, levels)
        if variant == "rand_label":
            assert generator is not None
            y = permute_labels(y, generator)
        parts += [x, y]
    return VariantData(*parts)


# --------------------------------------------------------------------------- batched model


@dataclass(frozen=True)
class FitBatch:
    """Independent fits that share one design matrix: fit ``j`` has rank ``ranks[j]`` and
    fits target column ``targets[j]`` of a target matrix ``(n, T)``.

    Their components are stacked along one axis of ``C = sum(ranks)``: fit ``j`` owns the
    components ``comp_fit == j`` (``comp_fit``: long ``(C,)``, non-decreasing).
    """

    ranks: tuple[int, ...]
    targets: tuple[int, ...]
    comp_fit: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.ranks) == 0 or len(self.ranks) != len(self.targets):
            raise ValueError("ranks and targets must be non-empty and of equal length")
        if any(int(r) < 1 for r in self.ranks):
            raise ValueError(f"ranks must be >= 1, got {self.ranks}")
        cf = torch.repeat_interleave(
            torch.arange(len(self.ranks)), torch.tensor([int(r) for r in self.ranks])
        )
        object.__setattr__(self, "comp_fit", cf)

    @property
    def n_fits(self) -> int:
        return len(self.ranks)

    @property
    def n_components(self) -> int:
        return int(sum(self.ranks))

    def components(self, j: int) -> slice:
        """The slice of fit ``j``'s components in the stacked axis."""
        start = int(sum(self.ranks[:j]))
        return slice(start, start + int(self.ranks[j]))


def _segment_sum(values: torch.Tensor, comp_fit: torch.Tensor, n_fits: int) -> torch.Tensor:
    """``out[:, j] = sum_{c: comp_fit[c] = j} values[:, c]``: ``(m, C) -> (m, F)``."""
    if values.shape[1] == n_fits:  # every fit of rank 1
        return values
    out = values.new_zeros((values.shape[0], n_fits))
    return out.index_add(1, comp_fit.to(values.device), values)


def batched_predict(
    weights: torch.Tensor, X: torch.Tensor, comp_fit: torch.Tensor, n_fits: int
) -> torch.Tensor:
    """Predictions of every fit of a batch at every sample: ``(n, F)``.

    ``weights``: stacked CP weights ``(C, N, k)`` (any signs); ``X``: ``(n, N)`` indices (or
    0/1 floats for ``k = 2``). ``f_j(x) = sum_{c in fit j} prod_n weights[c, n, x_n]``, evaluated
    in log space (:func:`factorflow.factorizations.cp_large_order.log_components`: one matrix
    product for all ``C`` components) and summed per fit as a signed log-sum-exp, so no
    intermediate over- or underflows. Equal to ``cp_predict_large_order(weights[fit j], X)``.
    """
    logmag, sign = log_components(weights, X)  # (n, C) each
    cf = comp_fit.to(weights.device)
    n = logmag.shape[0]
    M = torch.full((n, n_fits), -math.inf, dtype=logmag.dtype, device=logmag.device)
    M = M.scatter_reduce(1, cf.expand(n, -1), logmag.detach(), reduce="amax", include_self=True)
    Msafe = torch.where(torch.isfinite(M), M, torch.zeros_like(M))
    s = _segment_sum(sign * torch.exp(logmag - Msafe[:, cf]), cf, n_fits)
    nz = s != 0
    abs_safe = torch.where(nz, s.abs(), torch.ones_like(s))
    big = torch.sign(s) * torch.exp(Msafe + torch.log(abs_safe))
    return torch.where(nz, big, s * torch.exp(Msafe))


def batched_predict_log(
    theta: torch.Tensor, Xa: torch.Tensor, comp_fit: torch.Tensor, n_fits: int
) -> torch.Tensor:
    """Predictions ``(n, F)`` in the log-magnitude parametrization.

    ``theta``: ``(C, N + 1)``, row ``c`` = ``[a_c, b_c]``; ``Xa``: ``(n, N + 1)`` = ``[1, x]``
    (binary pixels as 0/1 floats). ``f_j(x) = sum_{c in fit j} exp(a_c + x . b_c)``: every
    component is positive, so ``exp`` of each is exact whenever the sum is representable.
    """
    return _segment_sum(torch.exp(Xa @ theta.T), comp_fit.to(theta.device), n_fits)


def weights_to_log(weights: torch.Tensor) -> torch.Tensor:
    """Positive weights ``(C, N, 2)`` -> ``theta`` ``(C, N + 1)`` with ``a = sum_n log w[n, 0]``,
    ``b_n = log w[n, 1] - log w[n, 0]``. Raises on a non-positive weight."""
    if weights.ndim != 3 or weights.shape[2] != 2:
        raise ValueError(f"weights must have shape (C, N, 2), got {tuple(weights.shape)}")
    if bool((weights <= 0).any()):
        raise ValueError("the log-magnitude parametrization needs positive weights")
    lw = torch.log(weights)
    return torch.cat([lw[:, :, 0].sum(dim=1, keepdim=True), lw[:, :, 1] - lw[:, :, 0]], dim=1)


def log_to_weights(theta: torch.Tensor) -> torch.Tensor:
    """``theta`` ``(C, N + 1)`` -> positive weights ``(C, N, 2)`` of the same tensor:
    ``w[n, 0] = exp(a / N)``, ``w[n, 1] = exp(a / N + b_n)``."""
    N = theta.shape[1] - 1
    base = (theta[:, :1] / N).expand(-1, N)
    return torch.exp(torch.stack([base, base + theta[:, 1:]], dim=2))


def init_paper_weights(
    batch: FitBatch,
    n_modes: int,
    levels: int,
    seeds: list[int] | tuple[int, ...],
    *,
    mean: float = 1.0,
    std: float = 1e-3,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Stacked weights ``(C, N, k)``: fit ``j``'s ``(R_j, N, k)`` block drawn i.i.d.
    ``N(mean, std^2)`` from ``torch.Generator().manual_seed(seeds[j])`` (on the CPU, in float64,
    then cast, one component after the other), so a fit's initialization depends only on its
    seed, not on the batch, and a rank-R init is the first R components of a larger one.
    The paper's initialization is ``mean = 1, std = 1e-3``."""
    if len(seeds) != batch.n_fits:
        raise ValueError(f"need one seed per fit ({batch.n_fits}), got {len(seeds)}")
    blocks = []
    for r, s in zip(batch.ranks, seeds, strict=True):
        g = torch.Generator().manual_seed(int(s))
        # one component at a time, so a rank-R init is the first R components of any larger one
        blocks += [
            torch.randn((1, n_modes, levels), generator=g, dtype=torch.float64) for _ in range(r)
        ]
    w = torch.cat(blocks) * std + mean
    return w.to(dtype=dtype, device=device)


# --------------------------------------------------------------------------- fitting


@dataclass
class FitResult:
    """The outcome of a batch of fits.

    Attributes:
        weights: final stacked CP weights ``(C, N, k)`` (for the log parametrization: the
            positive weights of :func:`log_to_weights`, float64).
        train_error: ``(F,)`` final train error in paper units (unclamped), on the full set.
        steps: ``(F,)`` optimizer steps taken (L-BFGS iterations, or Adam updates).
        evals: L-BFGS: batched value-and-gradient evaluations over the full data (each over
            the components of the fits still running); Adam: epochs.
        status: per fit: ``converged``, ``max_steps`` or ``line_search_failed``.
        trace_step: ``(T,)`` steps at which the train objective was recorded.
        trace_error: ``(T, F)`` train error (paper units) at those steps (for Adam: the mean of
            the epoch's minibatch errors, before each update).
        wall_s: wall-clock seconds of the whole batch.
        optimizer: a one-line description.
    """

    weights: torch.Tensor
    train_error: np.ndarray
    steps: np.ndarray
    evals: int
    status: list[str]
    trace_step: np.ndarray
    trace_error: np.ndarray
    wall_s: float
    optimizer: str


def _design(X: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[1, x]`` as floats: ``(n, N + 1)``."""
    ones = torch.ones((X.shape[0], 1), dtype=dtype, device=device)
    return torch.cat([ones, X.to(device=device, dtype=dtype)], dim=1)


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
    """
    import time

    if parametrization not in ("weights", "log"):
        raise ValueError(f"parametrization must be 'weights' or 'log', got {parametrization!r}")
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
            step += 1
            ep_err += sq.detach().to(torch.float64).sum(dim=0)
        if ep % record_every == 0 or ep == epochs - 1:
            trace_step.append(step)
            trace.append((ep_err / (n * rho2)).cpu().numpy())
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
        f", {'full batch' if batch_size is None else f'batch {bs}'}, {epochs} epochs, "
        f"{str(dtype).replace('torch.', '')}"
    )
    return FitResult(
        weights=weights,
        train_error=train.cpu().numpy(),
        steps=np.full(F, step, dtype=np.int64),
        evals=int(epochs),
        status=["max_steps"] * F,
        trace_step=np.asarray(trace_step),
        trace_error=np.stack(trace) if trace else np.zeros((0, F)),
        wall_s=time.perf_counter() - t0,
        optimizer=desc,
    )


def fit_errors(
    weights: torch.Tensor,
    X: torch.Tensor,
    Y: torch.Tensor,
    batch: FitBatch,
    *,
    target_range: float = 2.0,
    clamp: bool = False,
    chunk: int = 16384,
) -> np.ndarray:
    """Error (paper units, see :func:`paper_error`) of every fit of ``batch`` on ``(X, Y)``:
    ``(F,)``. ``weights``: stacked ``(C, N, k)``; ``Y``: ``(n, T)``."""
    plain, clamped = fit_error_pair(weights, X, Y, batch, target_range=target_range, chunk=chunk)
    return clamped if clamp else plain


def fit_error_pair(
    weights: torch.Tensor,
    X: torch.Tensor,
    Y: torch.Tensor,
    batch: FitBatch,
    *,
    target_range: float = 2.0,
    chunk: int = 16384,
) -> tuple[np.ndarray, np.ndarray]:
    """``(unclamped, clamped)`` errors of every fit, both ``(F,)``, from one pass over the data
    (float64 predictions by :func:`batched_predict`; clamped: each sample's squared error at
    most ``target_range^2``, i.e. at most 1 in paper units)."""
    cf = batch.comp_fit.to(weights.device)
    Yf = Y[:, list(batch.targets)].to(weights.device)
    rho2 = float(target_range) ** 2
    total = torch.zeros(batch.n_fits, dtype=torch.float64, device=weights.device)
    total_c = torch.zeros_like(total)
    with torch.no_grad():
        for s in range(0, X.shape[0], chunk):
            pred = batched_predict(weights, X[s : s + chunk].to(weights.device), cf, batch.n_fits)
            sq = (pred.double() - Yf[s : s + chunk].double()) ** 2
            total += sq.sum(dim=0)
            total_c += sq.clamp(max=rho2).sum(dim=0)
    scale = X.shape[0] * rho2
    return (total / scale).cpu().numpy(), (total_c / scale).cpu().numpy()
