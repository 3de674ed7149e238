"""CP (CANDECOMP/PARAFAC) tensor factorization: batched, pure tensor-in / tensor-out functions.

Parameters are a list of ``N`` tensors, one per mode; factor ``n`` has shape ``(B, d_n, R)``:
``B`` independent runs batched along the leading dimension, ``R`` components. Component ``r`` of
run ``b`` is the rank-1 tensor

    C_r = w_r^1 (x) w_r^2 (x) ... (x) w_r^N,        w_r^n = factors[n][b, :, r],

and the factorization is ``W = sum_r C_r``, i.e. ``W[i_1, ..., i_N] = sum_r prod_n w_r^n[i_n]``
(Razin & Cohen 2020, "Implicit regularization in deep learning may not be explainable by norms",
Sec. 5; Razin, Maman & Cohen 2021, "Implicit regularization in tensor factorization", Eq. (2)).

Every function is differentiable by autograd, free of logging, IO and global random state
(randomness only through an explicit ``torch.Generator``), and works for any floating dtype and
any device: outputs live on the factors' device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # imported for annotations only: keeps factorizations independent of problems
    from factorflow.problems.completion import Completion

__all__ = [
    "cp_predict",
    "cp_to_tensor",
    "component_norms",
    "init_cp",
    "balance_components",
    "count_large_components",
    "cp_completion_residuals",
    "cp_sensing_predict",
    "cp_dense_sensing_predict",
]

#: ``cp_predict(method="auto")`` builds the full tensor through one batched matrix product when it
#: has at most ``_DENSE_OBS_RATIO * m`` entries per run (and no more than the ``(m, R)`` gather
#: intermediate would hold). Measured crossover on CPU, float64: 10^4 tensor, m = 2000 -> dense is
#: about 5x faster; 20^4 tensor, m = 2000 -> grouped gathers are faster.
_DENSE_OBS_RATIO = 8


def _auto_dense(dims: Sequence[int], m: int, R: int) -> bool:
    """``method="auto"``'s choice (see ``_DENSE_OBS_RATIO``), shared with ``cp_grad``."""
    total = math.prod(dims)
    return len(dims) > 1 and total <= _DENSE_OBS_RATIO * m and total <= m * R


# --------------------------------------------------------------------------------------------
# validation helpers (cheap, shape-only: nothing here synchronizes with an accelerator)
# --------------------------------------------------------------------------------------------


def _check_factors(factors: Sequence[torch.Tensor]) -> tuple[int, tuple[int, ...], int]:
    """Return ``(B, dims, R)`` after checking the factor list is a consistent CP parameter."""
    if len(factors) == 0:
        raise ValueError("factors must be a non-empty list of (B, d_n, R) tensors")
    shapes = [tuple(f.shape) for f in factors]
    if any(len(s) != 3 for s in shapes):
        raise ValueError(f"every factor must have shape (B, d_n, R); got shapes {shapes}")
    B, R = shapes[0][0], shapes[0][2]
    if any(s[0] != B or s[2] != R for s in shapes):
        raise ValueError(
            f"all factors must share the batch size B and the number of components R; "
            f"got shapes {shapes}"
        )
    return B, tuple(s[1] for s in shapes), R


def _check_indices(indices: torch.Tensor, order: int) -> torch.Tensor:
    if indices.ndim == 1 and order == 1:
        indices = indices[:, None]
    if indices.ndim != 2 or indices.shape[1] != order:
        raise ValueError(
            f"indices must have shape (m, {order}) for an order-{order} factorization; "
            f"got {tuple(indices.shape)}"
        )
    if indices.is_floating_point() or indices.dtype == torch.bool:
        raise ValueError(f"indices must be an integer tensor, got dtype {indices.dtype}")
    return indices.long()


def _size_error(what: str, entries: int, dtype: torch.dtype, max_entries: int) -> ValueError:
    nbytes = entries * torch.empty((), dtype=dtype).element_size()
    return ValueError(
        f"{what} has {entries:,} entries ({nbytes:,} bytes = {nbytes / 2**30:.2f} GiB at "
        f"{dtype}), more than max_entries = {max_entries:,}; use cp_predict on observed "
        f"indices instead, or raise max_entries if the memory is really available"
    )


# --------------------------------------------------------------------------------------------
# Khatri-Rao tables: the building block of the fast paths
# --------------------------------------------------------------------------------------------


def _khatri_rao(group: Sequence[torch.Tensor]) -> torch.Tensor:
    """Row-wise Khatri-Rao product of ``(B, d_j, R)`` factors -> ``(B, prod_j d_j, R)``.

    Row ``(i_1, ..., i_J)`` (row-major) holds ``prod_j group[j][:, i_j, :]``.
    """
    table = group[0]
    for f in group[1:]:
        B, P, R = table.shape
        table = (table[:, :, None, :] * f[:, None, :, :]).reshape(B, P * f.shape[1], R)
    return table


def _linear_index(indices: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """Row-major linear position ``(m,)`` of multi-indices ``(m, len(dims))``."""
    lin = indices[:, 0]
    for j in range(1, len(dims)):
        lin = lin * dims[j] + indices[:, j]
    return lin


def _group_modes(dims: Sequence[int], max_rows: int) -> list[tuple[int, int]]:
    """Greedy contiguous grouping ``[(start, stop), ...]`` with at most ``max_rows`` table rows.

    A mode larger than ``max_rows`` forms its own group (its table is the factor itself).
    """
    groups: list[tuple[int, int]] = []
    start, rows = 0, dims[0]
    for n in range(1, len(dims)):
        if rows * dims[n] <= max_rows:
            rows *= dims[n]
        else:
            groups.append((start, n))
            start, rows = n, dims[n]
    groups.append((start, len(dims)))
    return groups


def _balanced_split(dims: Sequence[int]) -> int:
    """Split point ``s`` (1 <= s < N) minimizing ``max(prod dims[:s], prod dims[s:])``."""
    best, best_s = None, 1
    for s in range(1, len(dims)):
        cost = max(math.prod(dims[:s]), math.prod(dims[s:]))
        if best is None or cost < best:
            best, best_s = cost, s
    return best_s


def _dense_matrix(factors: Sequence[torch.Tensor], split: int) -> torch.Tensor:
    """Full tensor as the matricization ``(B, prod dims[:split], prod dims[split:])``.

    ``W_(split) = KR(factors[:split]) @ KR(factors[split:])^T`` — one batched matrix product.
    """
    left = _khatri_rao(factors[:split])
    right = _khatri_rao(factors[split:])
    return torch.bmm(left, right.transpose(1, 2))


def cp_predict(
    factors: Sequence[torch.Tensor], indices: torch.Tensor, *, method: str = "auto"
) -> torch.Tensor:
    """CP tensor at observed positions only: ``(B, m)``.

    ``out[b, i] = sum_r prod_n factors[n][b, indices[i, n], r]`` (Razin, Maman & Cohen 2021,
    Eq. (2), evaluated at the observed entries of the completion loss).

    Args:
        factors: ``N`` tensors ``(B, d_n, R)``.
        indices: integer tensor ``(m, N)`` of observed positions (moved to the factors' device
            if elsewhere: keep them there to save a copy per call). Ranges are not checked here (that would synchronize with an accelerator);
            :class:`~factorflow.problems.completion.Completion` validates them once.
        method: how to evaluate (all give the same values up to float rounding):

            * ``"gather"`` — group consecutive modes into Khatri-Rao tables of at most ``m`` rows
              (``(B, rows, R)``, no larger than one gathered ``(B, m, R)`` block), gather the
              observed rows of each table and multiply. Peak memory ``O(B m R)``; the full tensor
              is never formed. With one mode per group this is the plain gather
              ``prod_n factors[n][:, indices[:, n], :]``.
            * ``"dense"`` — ``W_(s) = KR(modes < s) @ KR(modes >= s)^T`` (one ``bmm``), then read
              the ``m`` entries. Materializes the ``B * prod(dims)`` entries.
            * ``"auto"`` (default) — ``"dense"`` only when the full tensor is small: at most
              ``8 m`` entries per run and at most ``m R`` (so it never needs more memory than
              the gather path), else ``"gather"``. For the Razin-Maman-Cohen 2021 setting
              (10^4 tensor, R = 1000, m = 2000) this picks ``"dense"``: a 10^4-entry tensor,
              5-7x faster than gathering on CPU.

    Returns:
        ``(B, m)`` tensor in the factors' dtype and device.
    """
    B, dims, R = _check_factors(factors)
    indices = _check_indices(indices, len(dims)).to(factors[0].device)
    m = indices.shape[0]
    total = math.prod(dims)
    if method == "auto":
        use_dense = _auto_dense(dims, m, R)
    elif method in ("dense", "gather"):
        use_dense = method == "dense" and len(dims) > 1
    else:
        raise ValueError(f"method must be 'auto', 'gather' or 'dense', got {method!r}")

    if use_dense:
        s = _balanced_split(dims)
        mat = _dense_matrix(factors, s).reshape(B, total)
        return mat.index_select(1, _linear_index(indices, dims))

    prod: torch.Tensor | None = None
    for start, stop in _group_modes(dims, max(m, 1)):
        table = _khatri_rao(factors[start:stop])
        rows = table.index_select(1, _linear_index(indices[:, start:stop], dims[start:stop]))
        prod = rows if prod is None else prod * rows
    assert prod is not None
    return prod.sum(-1)


def cp_to_tensor(factors: Sequence[torch.Tensor], max_entries: int = 2**27) -> torch.Tensor:
    """Full CP tensor ``(B, d_1, ..., d_N)``: ``W = sum_r w_r^1 (x) ... (x) w_r^N``.

    Computed as the einsum ``'bir,bjr->bij'`` of two Khatri-Rao halves (a batched matrix
    product), so the only large intermediate is the output itself.

    Raises:
        ValueError: if ``B * prod(dims) > max_entries`` (default ``2**27``, 1 GiB at float64);
            the message names the size in entries and bytes. Nothing is allocated first.
    """
    B, dims, R = _check_factors(factors)
    entries = B * math.prod(dims)
    if entries > max_entries:
        raise _size_error(
            f"the full tensor of shape {(B, *dims)}", entries, factors[0].dtype, max_entries
        )
    if len(dims) == 1:
        return factors[0].sum(-1)
    s = _balanced_split(dims)
    return _dense_matrix(factors, s).reshape(B, *dims)


# --------------------------------------------------------------------------------------------
# component norms and balancing
# --------------------------------------------------------------------------------------------


def _factor_norms(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(N, B, R)``: ``||w_r^n||`` for every mode ``n``."""
    return torch.stack([torch.linalg.vector_norm(f, dim=1) for f in factors])


def component_norms(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Component norms ``(B, R)``: ``c_r = ||C_r||_F = prod_n ||w_r^n||``.

    (The Frobenius norm of a rank-1 tensor is the product of its factors' norms; Razin, Maman &
    Cohen 2021, Sec. 4.)
    """
    _check_factors(factors)
    return _factor_norms(factors).prod(0)


def balance_components(factors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Rescale each component's factors to equal norms ``||w_r^n|| = c_r^(1/N)``; pure.

    ``w_r^n <- w_r^n * c_r^(1/N) / ||w_r^n||``: the product of the scales is 1, so every component
    ``C_r`` (hence the tensor) is unchanged. This is the "balancedness" assumed by the component
    norm dynamics theorem (Razin, Maman & Cohen 2021, Theorem 1; it is conserved by gradient flow
    when it holds at initialization). Components with a zero factor (``c_r = 0``) are returned
    unchanged.
    """
    _check_factors(factors)
    N = len(factors)
    norms = _factor_norms(factors)  # (N, B, R)
    c = norms.prod(0)
    target = c.pow(1.0 / N)
    ok = c > 0
    safe = torch.where(ok, norms, torch.ones_like(norms))
    scales = torch.where(ok, target / safe, torch.ones_like(safe))  # (N, B, R)
    return [f * scales[n][:, None, :] for n, f in enumerate(factors)]


def init_cp(
    dims: Sequence[int],
    R: int,
    std: float,
    *,
    batch: int = 1,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    balanced: bool = False,
) -> list[torch.Tensor]:
    """Random CP factors: i.i.d. ``N(0, std^2)`` entries, factor ``n`` of shape ``(batch, d_n, R)``.

    Draws happen on ``generator``'s device (mode by mode, in order), then move to ``device``
    (default: the generator's device), so a CPU generator gives the same numbers on every device.
    ``balanced=True`` applies :func:`balance_components` (same tensor, equal factor norms
    ``c_r^(1/N)`` within each component), the setting of Razin, Maman & Cohen 2021, Theorem 1.
    The returned tensors are leaves without ``requires_grad``.
    """
    if len(dims) == 0 or any(int(d) < 1 for d in dims):
        raise ValueError(f"dims must be a non-empty sequence of positive sizes, got {dims}")
    if R < 1 or batch < 1:
        raise ValueError(f"R and batch must be positive, got R={R}, batch={batch}")
    if not std >= 0:
        raise ValueError(f"std must be non-negative, got {std}")
    target_device = torch.device(device) if device is not None else generator.device
    factors = [
        (
            torch.randn(
                (batch, int(d), R), generator=generator, dtype=dtype, device=generator.device
            )
            * std
        ).to(target_device)
        for d in dims
    ]
    if balanced:
        factors = balance_components(factors)
    return factors


def count_large_components(factors: Sequence[torch.Tensor], frac: float = 0.1) -> torch.Tensor:
    """Number of components ``(B,)`` (long) whose norm exceeds ``frac * max_r c_r``.

    A proxy for the tensor rank of the learned factorization (Razin, Maman & Cohen 2021, Sec. 4:
    components move at speeds proportional to ``c_r^(2-2/N)``, so few become large). A run whose
    components are all zero counts 0.
    """
    c = component_norms(factors)
    top = c.max(dim=1, keepdim=True).values
    return (c > frac * top).sum(dim=1)


def cp_completion_residuals(factors: Sequence[torch.Tensor], obs: Completion) -> torch.Tensor:
    """Residuals ``(B, m)`` at the observed entries: ``cp_predict(factors, obs.indices) - y``.

    ``obs`` is a :class:`~factorflow.problems.completion.Completion`; move it to the factors'
    device once with ``obs.to(device=...)`` (indices on another device are slow or an error).
    """
    _check_obs(factors, obs)
    return cp_predict(factors, obs.indices) - obs.values


def _check_obs(factors: Sequence[torch.Tensor], obs: Completion) -> None:
    """ValueError unless ``factors`` are CP factors of ``obs``'s tensor shape."""
    if len(obs.shape) != len(factors):
        raise ValueError(
            f"the observations are of an order-{len(obs.shape)} tensor, the factorization "
            f"has {len(factors)} modes"
        )
    _, dims, _ = _check_factors(factors)
    if tuple(dims) != tuple(obs.shape):
        raise ValueError(f"factor dims {dims} do not match the observed shape {obs.shape}")


def cp_sensing_predict(
    factors: Sequence[torch.Tensor], measurements: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Tensor sensing with rank-1 measurements, without forming any full tensor: ``(B, m)``.

    Measurement ``i`` is ``A_i = a_i^1 (x) ... (x) a_i^N`` with ``a_i^n = measurements[n][i]``
    (``measurements[n]`` of shape ``(m, d_n)``), and

        <A_i, W> = sum_r prod_n <a_i^n, w_r^n>.

    Cost ``O(B m R sum_n d_n)``; memory ``O(B m R)``.
    """
    B, dims, R = _check_factors(factors)
    if len(measurements) != len(dims):
        raise ValueError(f"need {len(dims)} measurement factors, got {len(measurements)}")
    m = measurements[0].shape[0]
    for n, (a, d) in enumerate(zip(measurements, dims, strict=True)):
        if a.shape != (m, d):
            raise ValueError(
                f"measurement factor {n} must have shape (m, d_n) = {(m, d)}, got {tuple(a.shape)}"
            )
    prod: torch.Tensor | None = None
    for a, f in zip(measurements, factors, strict=True):
        proj = torch.matmul(a, f)  # (m, d) @ (B, d, R) -> (B, m, R)
        prod = proj if prod is None else prod * proj
    assert prod is not None
    return prod.sum(-1)


def cp_dense_sensing_predict(
    factors: Sequence[torch.Tensor],
    measurements: torch.Tensor,
    max_entries: int = 2**27,
) -> torch.Tensor:
    """Tensor sensing with dense measurement tensors ``(m, d_1, ..., d_N)``: ``(B, m)``.

    ``out[b, i] = <A_i, W_b>``, through the full tensor (:func:`cp_to_tensor`, which raises
    ``ValueError`` past ``max_entries``). Meant for small tensors only.
    """
    B, dims, R = _check_factors(factors)
    if tuple(measurements.shape[1:]) != tuple(dims):
        raise ValueError(
            f"measurements must have shape (m, *dims) = (m, {', '.join(map(str, dims))}), "
            f"got {tuple(measurements.shape)}"
        )
    full = cp_to_tensor(factors, max_entries=max_entries).reshape(B, -1)
    return full @ measurements.reshape(measurements.shape[0], -1).T
