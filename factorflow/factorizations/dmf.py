"""Deep matrix factorization (a depth-N linear neural network), batched over independent runs.

Conventions (used across factorflow):

- ``factors = [W_1, ..., W_N]``, ``W_j`` of shape ``(B, d_j, d_{j-1})``: B independent runs along
  the leading dimension; ``d_0`` = number of columns, ``d_N`` = number of rows of the end-to-end
  matrix.
- End-to-end matrix ``W = W_N W_{N-1} ... W_1`` of shape ``(B, d_N, d_0)``
  (Arora, Cohen, Hu, Luo 2019, eq. 2).

Initializations and what ``init_scale`` means for each (the achieved ||W(0)||_F is returned by
:func:`init_dmf` so the results can record it):

- ``gaussian`` (Arora et al. 2019): layer j i.i.d. N(0, s_j^2), s_j = init_scale^(1/N) / sqrt(d_{j-1});
  then E ||W(0)||_F^2 = init_scale^2 d_N (||W(0)||_F ~ 10 init_scale for 100x100).
- ``normal`` (Razin & Cohen 2020): every layer i.i.d. N(0, init_scale^2) (a per-layer std alpha).
- ``identity``: every layer init_scale^(1/N) times the (rectangular) identity; W(0) = init_scale I.
- ``orthogonal``: every layer init_scale^(1/N) times a random (semi-)orthogonal matrix.
- ``balanced``: W(0) i.i.d. N(0, 1) rescaled to ||W(0)||_F = init_scale, split by SVD into
  balanced factors (below).

``balance=True`` re-splits any scheme's W(0) into balanced factors with the same end-to-end matrix:
W(0) = U S V^T, W_1 = S^(1/N) V^T, W_j = S^(1/N) (middle), W_N = U S^(1/N), each then rotated by
random orthogonal matrices O_j (W_j <- O_j W_j O_{j-1}^T) so that
W_{j+1}^T W_{j+1} = W_j W_j^T holds exactly (Arora, Cohen, Hazan 2018, def. 1) and W is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import reduce

import torch

__all__ = [
    "DMF_INITS",
    "balance_factors",
    "dmf_factor_gradients",
    "end_to_end",
    "end_to_end_velocity",
    "init_dmf",
    "layer_widths",
    "partial_products",
]

DMF_INITS = ("gaussian", "normal", "identity", "orthogonal", "balanced")


def end_to_end(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """W = W_N ... W_1: ``[(B, d_1, d_0), ..., (B, d_N, d_{N-1})] -> (B, d_N, d_0)``."""
    return reduce(lambda acc, Wj: Wj @ acc, factors[1:], factors[0])


def check_dmf_factors(
    factors: Sequence[torch.Tensor],
    shape: tuple[int, int] | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Check a batch of depth-N factorizations before training: a non-empty list of floating
    tensors ``[(B, d_1, d_0), ..., (B, d_N, d_{N-1})]`` of one dtype and device, inner sizes
    chaining (factor j's columns = factor j-1's rows), end-to-end shape ``(d_N, d_0) == shape``
    and dtype ``dtype`` when given. A ValueError / TypeError names the factor, the expected and
    the given."""
    if isinstance(factors, torch.Tensor) or not isinstance(factors, Sequence) or not factors:
        raise ValueError("factors must be a non-empty list of (B, d_j, d_{j-1}) tensors")
    for j, f in enumerate(factors):
        if not isinstance(f, torch.Tensor):
            raise TypeError(f"factor {j} must be a torch.Tensor, got {type(f).__name__}")
        if f.ndim != 3:
            raise ValueError(f"factor {j} must have shape (B, rows, cols), got {tuple(f.shape)}")
        if not f.is_floating_point():
            raise TypeError(f"factor {j} must be a floating tensor, got {f.dtype}")
    first = factors[0]
    for j, f in enumerate(factors[1:], 1):
        if f.dtype != first.dtype or f.device != first.device:
            raise TypeError(
                f"factor {j} is {f.dtype} on {f.device}, factor 0 {first.dtype} on {first.device}"
            )
        if f.shape[0] != first.shape[0]:
            raise ValueError(f"factor {j} has batch size {f.shape[0]}, factor 0 {first.shape[0]}")
        if f.shape[2] != factors[j - 1].shape[1]:
            raise ValueError(
                f"factor {j} has {f.shape[2]} columns but factor {j - 1} has "
                f"{factors[j - 1].shape[1]} rows: inner sizes must chain"
            )
    got = (factors[-1].shape[1], first.shape[2])
    if shape is not None and got != tuple(shape):
        raise ValueError(f"the factors' end-to-end shape is {got}, the problem's {tuple(shape)}")
    if dtype is not None and first.dtype != dtype:
        raise TypeError(
            f"factors are {first.dtype} but the problem is {dtype}: cast one "
            "(init_dmf(..., dtype=...) or problem.to(dtype))"
        )


def _prefix_suffix(factors: Sequence[torch.Tensor]) -> tuple[list, list]:
    """below[j] = W_{j-1}...W_1 (None for j = 0); above[j] = W_N...W_{j+1} (None for j = N-1)."""
    n = len(factors)
    below: list[torch.Tensor | None] = [None] * n
    above: list[torch.Tensor | None] = [None] * n
    for j in range(1, n):
        below[j] = factors[j - 1] if below[j - 1] is None else factors[j - 1] @ below[j - 1]
    for j in range(n - 2, -1, -1):
        above[j] = factors[j + 1] if above[j + 1] is None else above[j + 1] @ factors[j + 1]
    return below, above


def partial_products(factors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``[W_1, W_2 W_1, ..., W_N ... W_1]`` (N entries, the j-th of shape (B, d_j, d_0)); the last
    is the end-to-end matrix, computed in the same order as :func:`end_to_end` (so equal to it
    bit for bit). N - 1 products; :func:`dmf_factor_gradients` reuses them."""
    out = [factors[0]]
    for f in factors[1:]:
        out.append(f @ out[-1])
    return out


def dmf_factor_gradients(
    factors: Sequence[torch.Tensor],
    grad_W: torch.Tensor,
    partial: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Chain rule through the product: dL/dW_j = (W_N...W_{j+1})^T grad_W (W_{j-1}...W_1)^T.

    ``grad_W`` (B, d_N, d_0) is dl/dW at the end-to-end matrix; returns tensors shaped like the
    factors (Arora, Cohen, Hazan 2018, eq. 5). Backpropagation order: C_N = grad_W,
    C_j = W_{j+1}^T C_{j+1}, dL/dW_j = C_j (W_{j-1}...W_1)^T, so 2(N - 1) products given the
    prefixes ``partial`` (:func:`partial_products`, computed here when None: N - 2 more).
    Operators only, so numpy arrays work as well (the engine's tiny-problem loop,
    :mod:`factorflow.dynamics.tiny`)."""
    n = len(factors)
    if partial is None:
        partial = partial_products(factors[:-1]) if n > 1 else []
    out: list = [None] * n
    C = grad_W
    for j in range(n - 1, -1, -1):
        out[j] = C if j == 0 else C @ partial[j - 1].swapaxes(-1, -2)
        if j:
            C = factors[j].swapaxes(-1, -2) @ C
    return out


def end_to_end_velocity(
    factors: Sequence[torch.Tensor], velocities: Sequence[torch.Tensor]
) -> torch.Tensor:
    """dW/dt = sum_j (W_N...W_{j+1}) dW_j/dt (W_{j-1}...W_1), exact for any factor velocities
    (shapes as the factors); result (B, d_N, d_0)."""
    below, above = _prefix_suffix(factors)
    total = None
    for j, v in enumerate(velocities):
        term = v
        if below[j] is not None:
            term = term @ below[j]
        if above[j] is not None:
            term = above[j] @ term
        total = term if total is None else total + term
    assert total is not None
    return total


def layer_widths(
    shape: tuple[int, int], depth: int, width: int | Sequence[int] | None
) -> list[int]:
    """[d_0, ..., d_N] for an end-to-end matrix of ``shape = (rows, cols)``: d_0 = cols,
    d_N = rows, hidden widths ``width`` (an int for all, a list of N-1, or None for max(shape))."""
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    rows, cols = int(shape[0]), int(shape[1])
    if width is None:
        hidden = [max(rows, cols)] * (depth - 1)
    elif isinstance(width, int):
        hidden = [width] * (depth - 1)
    else:
        hidden = [int(w) for w in width]
        if len(hidden) != depth - 1:
            raise ValueError(f"depth {depth} needs {depth - 1} hidden widths, got {len(hidden)}")
    if any(w < 1 for w in hidden):
        raise ValueError(f"hidden widths must be >= 1, got {hidden}")
    return [cols, *hidden, rows]


def _rand_orthogonal(n: int, m: int, g: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """A random (n, m) matrix with orthonormal rows (n <= m) or columns (n >= m) (Haar via QR)."""
    a = torch.randn(max(n, m), min(n, m), generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r))
    q = q if n >= m else q.T
    return q.to(dtype)


def _balanced_split(
    W: torch.Tensor, dims: list[int], g: torch.Generator, dtype: torch.dtype
) -> list[torch.Tensor]:
    """Balanced factors of one matrix W (d_N, d_0) with widths ``dims``; see the module doc."""
    n = len(dims) - 1
    k = min(dims[0], dims[-1])
    if min(dims[1:-1], default=k) < k:
        raise ValueError(
            f"a balanced split of a {dims[-1]}x{dims[0]} matrix needs hidden widths >= {k}, "
            f"got {dims[1:-1]}"
        )
    U, S, Vh = torch.linalg.svd(W.to(torch.float64), full_matrices=False)
    root = S.pow(1.0 / n)
    if n == 1:
        return [W.to(dtype)]
    raw = []
    for j in range(n):
        M = torch.zeros(dims[j + 1], dims[j], dtype=torch.float64)
        if j == 0:
            M[:k, :] = root[:, None] * Vh
        elif j == n - 1:
            M[:, :k] = U * root[None, :]
        else:
            M[:k, :k] = torch.diag(root)
        raw.append(M)
    # rotate hidden spaces: W_j <- O_j W_j O_{j-1}^T keeps the product and the balancedness
    rots = [torch.eye(dims[0], dtype=torch.float64)]
    rots += [_rand_orthogonal(d, d, g, torch.float64) for d in dims[1:-1]]
    rots += [torch.eye(dims[-1], dtype=torch.float64)]
    return [(rots[j + 1] @ raw[j] @ rots[j].T).to(dtype) for j in range(n)]


def balance_factors(
    factors: Sequence[torch.Tensor], seeds: Sequence[int] | None = None
) -> list[torch.Tensor]:
    """Balanced factors with the same end-to-end matrices: a batched wrapper over the SVD split of
    the module doc. ``factors`` as in :func:`end_to_end`; ``seeds`` (one per run) draw the random
    hidden rotations (default 0, 1, ...)."""
    W = end_to_end(factors)
    dims = [int(factors[0].shape[-1])] + [int(f.shape[-2]) for f in factors]
    seeds = list(range(W.shape[0])) if seeds is None else list(seeds)
    runs = [
        _balanced_split(
            W[b].detach().cpu(), dims, torch.Generator().manual_seed(int(s)), torch.float64
        )
        for b, s in enumerate(seeds)
    ]
    return [
        torch.stack([r[j] for r in runs]).to(dtype=factors[0].dtype, device=factors[0].device)
        for j in range(len(factors))
    ]


def _draw_layers(
    init: str, dims: list[int], scale: float, g: torch.Generator
) -> list[torch.Tensor]:
    n = len(dims) - 1
    out = []
    for j in range(n):
        rows, cols = dims[j + 1], dims[j]
        if init == "gaussian":
            std = scale ** (1.0 / n) / cols**0.5
            out.append(torch.randn(rows, cols, generator=g, dtype=torch.float64) * std)
        elif init == "normal":
            out.append(torch.randn(rows, cols, generator=g, dtype=torch.float64) * scale)
        elif init == "identity":
            out.append(torch.eye(rows, cols, dtype=torch.float64) * scale ** (1.0 / n))
        elif init == "orthogonal":
            out.append(_rand_orthogonal(rows, cols, g, torch.float64) * scale ** (1.0 / n))
        else:  # pragma: no cover - validated by the caller
            raise AssertionError(init)
    return out


def init_dmf(
    shape: tuple[int, int],
    depth: int,
    *,
    init: str,
    init_scale: float | Sequence[float],
    seeds: Sequence[int],
    width: int | Sequence[int] | None = None,
    balance: bool = False,
    det_sign: int = 0,
    max_resample: int = 10_000,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Initial factors for ``len(seeds)`` independent runs, each drawn from its own
    ``torch.Generator().manual_seed(seed)`` (so a run is the same alone or in a batch).

    Args:
        shape: (rows, cols) of the end-to-end matrix.
        depth: N >= 1.
        init: one of ``DMF_INITS`` (see the module doc for what ``init_scale`` means in each).
        init_scale: > 0; one value for all runs or one per run.
        seeds: one seed per run; B = len(seeds).
        width: hidden widths (int, list of N-1, or None for max(shape)).
        balance: re-split W(0) into balanced factors (same W(0)).
        det_sign: 0 (any), +1 or -1: redraw (same generator) until sign(det W(0)) matches
            (square end-to-end matrices only; Razin & Cohen 2020 start from det > 0).

    Returns:
        factors ``[(B, d_1, d_0), ..., (B, d_N, d_{N-1})]`` and the achieved ||W(0)||_F, shape (B,).
    """
    if init not in DMF_INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {list(DMF_INITS)}")
    dims = layer_widths(shape, depth, width)
    B = len(seeds)
    if B < 1:
        raise ValueError("need at least one seed")
    scales = [float(init_scale)] * B if isinstance(init_scale, int | float) else list(init_scale)
    if len(scales) != B:
        raise ValueError(f"{len(scales)} init scales for {B} seeds")
    if any(not (s > 0 and math.isfinite(s)) for s in scales):
        raise ValueError(f"init_scale must be a finite number > 0, got {scales}")
    if det_sign not in (-1, 0, 1):
        raise ValueError(f"det_sign must be -1, 0 or +1, got {det_sign}")
    if det_sign and shape[0] != shape[1]:
        raise ValueError(f"det_sign needs a square end-to-end matrix, got shape {tuple(shape)}")
    runs: list[list[torch.Tensor]] = []
    for seed, scale in zip(seeds, scales, strict=True):
        g = torch.Generator().manual_seed(int(seed))
        for _ in range(max_resample):
            if init == "balanced":
                G = torch.randn(dims[-1], dims[0], generator=g, dtype=torch.float64)
                layers = _balanced_split(
                    G * (scale / torch.linalg.matrix_norm(G)), dims, g, torch.float64
                )
            else:
                layers = _draw_layers(init, dims, scale, g)
                if balance:
                    layers = _balanced_split(end_to_end(layers), dims, g, torch.float64)
            if not det_sign or torch.sign(torch.linalg.det(end_to_end(layers))) == det_sign:
                break
        else:
            raise RuntimeError(f"no init with det sign {det_sign} in {max_resample} draws")
        runs.append(layers)
    factors = [
        torch.stack([r[j] for r in runs]).to(dtype=dtype, device=device) for j in range(depth)
    ]
    norms = torch.linalg.matrix_norm(end_to_end(factors))
    return factors, norms
