"""Classical tensor baselines: the memorizer, CP-ALS fits, ALS tensor-rank estimates, masked ALS.

These are the reference points of

* Razin & Cohen, "Implicit Regularization in Deep Learning May Not Be Explainable by Norms"
  (NeurIPS 2020), appendix: the tensor rank of a solution is estimated as *the smallest R whose
  CP-ALS fit reaches reconstruction MSE < 1e-6*, and compared with the rank of the
  "memorizer" (observed entries, zeros elsewhere);
* Razin, Maman & Cohen, "Implicit Regularization in Tensor Factorization" (ICML 2021): the same
  rank estimate, and CP-ALS run on the observed entries only as a completion baseline.

Everything here uses TensorLy's ``parafac`` (numpy backend, float64); nothing re-implements ALS.
Tensors are numpy arrays of any order ``>= 2``; the reconstruction MSE of a CP fit is

.. math::

    \\mathrm{mse}(T, \\hat T) = \\frac{1}{N} \\sum_{i_1, \\dots, i_n} (T_{i_1 \\dots i_n} -
    \\hat T_{i_1 \\dots i_n})^2, \\qquad N = d_1 \\cdots d_n,

with :math:`\\hat T = \\sum_{r=1}^R w_r\\, a^{(1)}_r \\otimes \\cdots \\otimes a^{(n)}_r`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal

import numpy as np
import tensorly as tl
import torch
from tensorly.decomposition import parafac

from factorflow.problems.completion import Completion

__all__ = [
    "memorizer",
    "cp_als",
    "cp_als_error",
    "estimate_tensor_rank",
    "capped_tensor_rank",
    "masked_cp_als",
    "RANK_ITER_MAX",
]

#: ALS iterations per restart in :func:`estimate_tensor_rank`. Near the threshold ALS decreases
#: the error slowly (swamps): on an 8x8x8 memorizer with 200 observed entries, ranks that reach
#: mse < 1e-6 within 5000 iterations often need more than 1000.
RANK_ITER_MAX = 5000

Init = Literal["svd", "random"]


def _as_array(tensor: Any, name: str = "tensor") -> np.ndarray:
    if isinstance(tensor, torch.Tensor):
        tensor = tensor.detach().cpu().numpy()
    arr = np.asarray(tensor, dtype=np.float64)
    if arr.ndim < 2 or 0 in arr.shape:
        raise ValueError(f"{name} must have order >= 2 and positive sizes; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _check_rank(rank: int) -> int:
    if isinstance(rank, bool) or int(rank) != rank or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    return int(rank)


def _restart_seeds(random_state: int | None, n: int) -> list[int]:
    """Independent integer seeds for ``n`` restarts, reproducible from ``random_state``."""
    return [int(s) for s in np.random.SeedSequence(random_state).generate_state(n)]


def _parafac(tensor: np.ndarray, rank: int, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        # svd init with rank > a mode's size: TensorLy pads the factor with random columns
        # and warns about it; that is the intended behaviour here.
        warnings.filterwarnings("ignore", message=".*n_eigenvecs.*", category=UserWarning)
        return parafac(tensor, rank, **kwargs)


def memorizer(obs: Completion) -> np.ndarray:
    """The "memorizer": observed entries kept, every unobserved entry set to zero.

    Args:
        obs: observed entries of an array of shape ``obs.shape`` (any order).

    Returns:
        ``float64`` array of shape ``obs.shape`` equal to ``obs.values`` at ``obs.indices`` and
        ``0`` elsewhere (Razin & Cohen 2020, appendix; Razin, Maman & Cohen 2021).
    """
    if not isinstance(obs, Completion):
        raise TypeError(f"obs must be a Completion, got {type(obs).__name__}")
    out = np.zeros(obs.shape, dtype=np.float64)
    idx = tuple(obs.indices.cpu().numpy().T)
    out[idx] = obs.values.detach().cpu().numpy().astype(np.float64)
    return out


def cp_als(
    tensor: Any,
    rank: int,
    *,
    n_iter_max: int = RANK_ITER_MAX,
    tol: float = 1e-12,
    init: Init = "svd",
    random_state: int | None = None,
    linesearch: bool = False,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rank-``R`` CP decomposition by alternating least squares (``tensorly`` ``parafac``).

    Fits ``T ~ sum_r w_r a1_r (x) a2_r (x) ... (x) an_r`` by ALS.

    Args:
        tensor: ``(d1, ..., dn)`` array or tensor, ``n >= 2``.
        rank: number of components ``R``.
        n_iter_max: ALS sweeps.
        tol: stop when the relative reconstruction error ``||T - T_hat||_F / ||T||_F`` changes
            by less than ``tol`` in one sweep (TensorLy's ``abs_rec_error`` criterion).
        init: ``"svd"`` (leading singular vectors of each unfolding, deterministic) or
            ``"random"`` (uniform factors from ``random_state``).
        random_state: seed (for ``"random"``, and for padding when ``R > d_k`` with ``"svd"``).
        linesearch: TensorLy's extrapolation acceleration.

    Returns:
        ``(weights, factors)``: ``weights`` of shape ``(R,)`` and ``factors[k]`` of shape
        ``(d_k, R)``, all ``float64`` numpy arrays.
    """
    arr = _as_array(tensor)
    rank = _check_rank(rank)
    if init not in ("svd", "random"):
        raise ValueError(f"init must be 'svd' or 'random', got {init!r}")
    cpt = _parafac(
        arr,
        rank,
        n_iter_max=int(n_iter_max),
        tol=float(tol),
        init=init,
        random_state=random_state,
        linesearch=linesearch,
    )
    weights, factors = cpt
    return np.asarray(weights, dtype=np.float64), [np.asarray(f, dtype=np.float64) for f in factors]


class _StopRule:
    """ALS callback: stop at ``mse < threshold`` or when the threshold is out of reach.

    "Out of reach": every 50 sweeps (from sweep 100 on), the average decrease per sweep over
    the last half of the run, extrapolated linearly over all remaining sweeps, would still
    leave the MSE above the threshold. ALS error curves flatten over time, so the linear
    extrapolation is optimistic and the rule only cuts runs that are stalled.
    """

    def __init__(self, norm_t: float, n_entries: int, threshold: float, n_iter_max: int) -> None:
        self.scale = norm_t**2 / n_entries
        self.threshold = threshold
        self.n_iter_max = n_iter_max
        self.history: list[float] = []

    def __call__(self, _cp: Any, rel_error: float) -> bool:
        mse = float(rel_error) ** 2 * self.scale
        self.history.append(mse)
        if mse < self.threshold:
            return True
        k = len(self.history) - 1
        if k >= 100 and k % 50 == 0:
            half = self.history[k // 2]
            rate = max(half - mse, 0.0) / (k - k // 2)
            if mse - rate * (self.n_iter_max - k) > self.threshold:
                return True
        return False


def _best_fit(
    arr: np.ndarray,
    rank: int,
    *,
    n_restarts: int,
    random_state: int | None,
    n_iter_max: int,
    tol: float,
    init: Init,
    linesearch: bool,
    stop_below: float | None = None,
) -> float:
    """Best reconstruction MSE over ``n_restarts`` ALS runs: ``init`` first, then random."""
    if n_restarts < 1:
        raise ValueError(f"n_restarts must be >= 1, got {n_restarts}")
    n_entries = arr.size
    norm_t = float(np.linalg.norm(arr))
    seeds = _restart_seeds(random_state, n_restarts)
    best = math.inf
    for k, seed in enumerate(seeds):
        kwargs: dict[str, Any] = dict(
            n_iter_max=int(n_iter_max),
            tol=float(tol),
            init=init if k == 0 else "random",
            random_state=seed,
            linesearch=linesearch,
        )
        if stop_below is not None:
            kwargs["callback"] = _StopRule(norm_t, n_entries, stop_below, int(n_iter_max))
        cpt = _parafac(arr, rank, **kwargs)
        mse = float(np.mean((tl.cp_to_tensor(cpt) - arr) ** 2))
        best = min(best, mse)
        if stop_below is not None and best < stop_below:
            break
    return best


def cp_als_error(
    tensor: Any,
    rank: int,
    *,
    n_iter_max: int = RANK_ITER_MAX,
    tol: float = 1e-12,
    init: Init = "svd",
    random_state: int | None = 0,
    n_restarts: int = 1,
    linesearch: bool = False,
) -> float:
    """Reconstruction MSE of the best rank-``R`` CP-ALS fit over ``n_restarts`` runs.

    ``mean((T - T_hat) ** 2)`` over all ``d1 * ... * dn`` entries, where ``T_hat`` is the
    rank-``R`` reconstruction. The first run uses ``init``, later runs random initializations
    seeded from ``random_state``.

    Args:
        tensor: ``(d1, ..., dn)`` array or tensor.
        rank, n_iter_max, tol, init, linesearch: as in :func:`cp_als`.
        random_state: seed of the restarts.
        n_restarts: ALS runs; the smallest MSE is returned.

    Returns:
        The MSE (a float >= 0).
    """
    arr = _as_array(tensor)
    return _best_fit(
        arr,
        _check_rank(rank),
        n_restarts=n_restarts,
        random_state=random_state,
        n_iter_max=n_iter_max,
        tol=tol,
        init=init,
        linesearch=linesearch,
    )


def estimate_tensor_rank(
    tensor: Any,
    *,
    tol: float = 1e-6,
    relative: bool = False,
    max_rank: int | None = None,
    n_restarts: int = 3,
    random_state: int | None = 0,
    n_iter_max: int = RANK_ITER_MAX,
    linesearch: bool = False,
) -> int:
    """Numerical tensor rank: the smallest ``R`` whose CP-ALS fit reaches ``mse < tol``.

    The definition of Razin & Cohen (2020, appendix) and Razin, Maman & Cohen (2021): try
    ``R = 1, 2, ...``; for each, run ALS ``n_restarts`` times (SVD initialization first, then
    random ones) and accept ``R`` as soon as one run's reconstruction reaches the threshold.

    Threshold:
        * ``relative=False`` (default, the papers' convention): absolute,
          ``mean((T - T_hat)**2) < tol``. The papers' tensors have ``||W*||_F = 1``, so with
          ``N`` entries ``tol = 1e-6`` means ``||T - T_hat||_F^2 < 1e-6 * N``; the estimate
          depends on the scale of ``T``.
        * ``relative=True``: scale-free, ``||T - T_hat||_F^2 / ||T||_F^2 < tol`` (i.e. the MSE
          divided by ``mean(T**2)``).

    ``R = 0`` is returned when the zero tensor already meets the threshold. Each ALS run is cut
    early once it meets the threshold, or when it is stalled (see ``_StopRule``: even the
    optimistic linear extrapolation of its recent progress would not reach the threshold
    within ``n_iter_max`` sweeps). Runs at the threshold can need thousands of sweeps, so the
    estimate is an upper bound on the true rank that can grow if ``n_iter_max`` is lowered.

    Args:
        tensor: ``(d1, ..., dn)`` array or tensor, ``n >= 2``.
        tol: threshold (absolute MSE, or relative squared error with ``relative=True``).
        relative: see above.
        max_rank: largest ``R`` tried. Default: the product of all sizes but the largest, an
            upper bound on the rank of any tensor of that shape.
        n_restarts: ALS runs per ``R``.
        random_state: seed of the random restarts (``R`` uses seeds derived from
            ``(random_state, R)``), so the estimate is reproducible.
        n_iter_max: ALS sweeps per run.
        linesearch: TensorLy's extrapolation acceleration.

    Returns:
        The estimated rank, or the sentinel ``max_rank + 1`` ("no ``R <= max_rank`` reached the
        threshold") if none did. With the default ``max_rank`` that means ALS failed (a
        ``RuntimeWarning`` is emitted); with an explicit cap it is a lower bound statement:
        the ALS rank exceeds ``max_rank``.
    """
    arr = _as_array(tensor)
    tol = float(tol)
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    default_cap = max_rank is None
    if max_rank is None:
        max_rank = math.prod(sorted(arr.shape)[:-1])
    max_rank = _check_rank(max_rank)
    threshold = tol * float(np.mean(arr**2)) if relative else tol
    if float(np.mean(arr**2)) < threshold:
        return 0
    for rank in range(1, max_rank + 1):
        seed = None if random_state is None else int(random_state) * 1_000_003 + rank
        best = _best_fit(
            arr,
            rank,
            n_restarts=n_restarts,
            random_state=seed,
            n_iter_max=n_iter_max,
            tol=1e-300,  # > 0 so that TensorLy computes the errors the stop rule reads
            init="svd",
            linesearch=linesearch,
            stop_below=threshold,
        )
        if best < threshold:
            return rank
    if default_cap:
        warnings.warn(
            f"no CP-ALS fit of rank <= {max_rank} reached mse < {threshold:g} "
            f"(n_restarts={n_restarts}, n_iter_max={n_iter_max}); returning {max_rank + 1}",
            RuntimeWarning,
            stacklevel=2,
        )
    return max_rank + 1


def capped_tensor_rank(tensor: Any, max_rank: int, tol: float = 1e-6) -> tuple[int, bool]:
    """The papers' rank estimate (:func:`estimate_tensor_rank`, absolute ``mse < tol``) searched
    up to ``max_rank``: ``(rank, capped)``, where ``capped`` means "more than ``max_rank``" and the
    rank is then ``max_rank + 1``. TensorLy's numerical RuntimeWarnings are silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = estimate_tensor_rank(_as_array(tensor), tol=tol, max_rank=_check_rank(max_rank))
    return int(r), bool(r > max_rank)


def masked_cp_als(
    obs: Completion,
    rank: int,
    *,
    n_iter_max: int = 1000,
    tol: float = 1e-10,
    init: Init = "svd",
    random_state: int | None = 0,
    linesearch: bool = False,
) -> np.ndarray:
    """Tensor completion by CP-ALS on the observed entries only (TensorLy ``parafac(mask=...)``).

    Fits a rank-``R`` CP model to ``obs`` with TensorLy's masked ALS (unobserved entries are
    re-imputed from the current model every sweep; with ``init="svd"`` the initialization
    itself imputes by repeated masked SVDs) and returns the full reconstruction. This is the
    CP-ALS completion baseline of Razin, Maman & Cohen (2021). At low observation rates it can
    overfit: on a 16x16x16 rank-3 target with 10% observed, TensorLy 0.10 ended at relative
    error 1.78.

    Args:
        obs: observed entries of an order ``>= 2`` tensor of shape ``(d1, ..., dn)``.
        rank: CP rank ``R`` of the model.
        n_iter_max, tol, init, random_state, linesearch: as in :func:`cp_als`.

    Returns:
        The reconstruction, ``float64`` array of shape ``obs.shape``.
    """
    if not isinstance(obs, Completion):
        raise TypeError(f"obs must be a Completion, got {type(obs).__name__}")
    if obs.order < 2:
        raise ValueError(f"masked CP-ALS needs a tensor of order >= 2, got shape {obs.shape}")
    rank = _check_rank(rank)
    if init not in ("svd", "random"):
        raise ValueError(f"init must be 'svd' or 'random', got {init!r}")
    data = memorizer(obs)
    mask = obs.mask().cpu().numpy().astype(np.float64)
    cpt = _parafac(
        data,
        rank,
        n_iter_max=int(n_iter_max),
        tol=float(tol),
        init=init,
        random_state=random_state,
        linesearch=linesearch,
        mask=mask,
    )
    return np.asarray(tl.cp_to_tensor(cpt), dtype=np.float64)
