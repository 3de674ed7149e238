"""Nuclear-norm minimization: the convex baseline for matrix completion and matrix sensing.

Arora, Cohen, Hu & Luo, "Implicit Regularization in Deep Matrix Factorization" (NeurIPS 2019)
compare gradient descent on deep matrix factorizations against the minimum nuclear norm
solution consistent with the observations,

.. math::

    \\min_X \\|X\\|_* \\quad \\text{s.t.} \\quad |\\langle A_i, X\\rangle - y_i| \\le \\text{tol},
    \\qquad i = 1, \\dots, m,

with ``tol = 1e-3`` (equality constraints when ``tol == 0``). Completion is the special case
where each ``A_i`` is an indicator ``e_j e_k^T`` of an observed entry, i.e. the constraints are
``|X_jk - M_jk| <= tol`` on the observed set.

Two solvers:

- :func:`nuclear_norm_min` / :func:`nuclear_norm_min_sensing`: CVXPY, always with SCS (CVXPY's
  default, Clarabel, needs tens of GB of memory on a 100 x 100 instance; SCS a few hundred MB and
  about 1100-1900 iterations, ~10 s, for a 100 x 100 completion from 2000 entries, but 342 s
  (one idle core) for 2000 Gaussian measurements of 100 x 100, whose dense constraint block
  enters its KKT factorization);
- :func:`nuclear_norm_min_admm` / :func:`nuclear_norm_min_sensing_admm`: factorflow's ADMM
  (numpy; no CVXPY), tested against SCS: 1.1 s and 45 s on those two problems
  (``benchmarks/bench_nuclear_norm.py``). The experiments
  use it by default. It lives in :mod:`factorflow.baselines.nuclear_norm_admm`, the shared
  :class:`NuclearNormResult`, :class:`SolverError` and input checks in
  :mod:`factorflow.baselines.nuclear_norm_common`; all are re-exported here.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from factorflow.baselines.nuclear_norm_admm import (
    nuclear_norm_min_admm,
    nuclear_norm_min_sensing_admm,
)
from factorflow.baselines.nuclear_norm_common import (
    NuclearNormResult,
    SolverError,
    _check_sensing,
    _check_tol,
    _result,
)
from factorflow.problems.completion import Completion

if TYPE_CHECKING:
    import cvxpy as cp

__all__ = [
    "NuclearNormResult",
    "SolverError",
    "nuclear_norm_min",
    "nuclear_norm_min_sensing",
    "nuclear_norm_min_admm",
    "nuclear_norm_min_sensing_admm",
    "DEFAULT_EPS",
    "DEFAULT_MAX_ITERS",
]

#: SCS ``eps_abs`` and ``eps_rel``. On 100 x 100 rank-5 completions from 2000 entries
#: (``||W*||_F = 100``, ``tol = 1e-3``) this gives status "optimal" with the largest constraint
#: violation below 1e-7 in ~1100-1900 SCS iterations (about 10 s on an idle 2-core CPU).
#: ``1e-5`` saves ~10% of the iterations but leaves violations up to ~5e-5 (5% of ``tol``).
DEFAULT_EPS = 1e-6
#: SCS iteration cap (the instances above need fewer than 2000 iterations).
DEFAULT_MAX_ITERS = 50_000


def _iters(problem: cp.Problem) -> int | None:
    stats = problem.solver_stats
    iters = getattr(stats, "num_iters", None) if stats is not None else None
    return None if iters is None else int(iters)


def _solve(
    X: cp.Variable,
    constraints: list[cp.Constraint],
    residual_fn: Any,
    *,
    tol: float,
    eps: float,
    max_iters: int,
    allow_inaccurate: bool,
    verbose: bool,
    solver_kwargs: dict[str, Any] | None,
) -> NuclearNormResult:
    import cvxpy as cp  # on first use: the ADMM solvers and the rest run without cvxpy

    if eps <= 0 or max_iters < 1:
        raise ValueError(
            f"eps must be > 0 and max_iters >= 1, got eps={eps}, max_iters={max_iters}"
        )
    problem = cp.Problem(cp.Minimize(cp.normNuc(X)), constraints)
    opts: dict[str, Any] = {"eps_abs": eps, "eps_rel": eps, "max_iters": int(max_iters)}
    opts.update(solver_kwargs or {})
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # CVXPY warns "Solution may be inaccurate"; the status is handled below instead.
            warnings.filterwarnings("ignore", message=".*may be inaccurate.*", category=UserWarning)
            # no cp.Parameter anywhere: skipping DPP saves compile time on large sensing data
            problem.solve(solver=cp.SCS, verbose=verbose, ignore_dpp=True, **opts)
    except cp.error.SolverError as exc:
        raise SolverError(f"SCS failed on the nuclear-norm problem: {exc}") from exc
    elapsed = time.perf_counter() - start
    status = str(problem.status)
    if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE, cp.UNBOUNDED, cp.UNBOUNDED_INACCURATE):
        raise SolverError(
            f"SCS returned status {status!r}: the constraints |<A_i, X> - y_i| <= {tol:g} "
            "are inconsistent (or the solver failed to certify otherwise)"
        )
    if status != cp.OPTIMAL and not allow_inaccurate:
        raise SolverError(
            f"SCS returned status {status!r} (not 'optimal') after {elapsed:.1f}s and "
            f"{_iters(problem)} iterations; raise max_iters or loosen eps, or pass "
            "allow_inaccurate=True to keep the point"
        )
    if X.value is None:
        raise SolverError(f"SCS returned status {status!r} and no primal point")
    if status != cp.OPTIMAL:
        warnings.warn(
            f"returning a nuclear-norm solution with status {status!r} (allow_inaccurate=True)",
            RuntimeWarning,
            stacklevel=3,
        )
    sol = np.array(X.value, dtype=np.float64)
    return _result(sol, residual_fn(sol), tol, status, elapsed, _iters(problem), "SCS")


def nuclear_norm_min(
    obs: Completion | None,
    *,
    tol: float = 1e-3,
    sensing: tuple[Any, Any] | None = None,
    max_iters: int = DEFAULT_MAX_ITERS,
    eps: float = DEFAULT_EPS,
    allow_inaccurate: bool = False,
    verbose: bool = False,
    solver_kwargs: dict[str, Any] | None = None,
) -> NuclearNormResult:
    """Minimum nuclear-norm completion (or sensing) solution, solved with SCS.

    Completion (``obs`` given, order 2, shape ``(d1, d2)``)::

        min ||X||_*  s.t.  |X[j, k] - M[j, k]| <= tol  for every observed (j, k)

    (``X[j, k] == M[j, k]`` when ``tol == 0``). This is the baseline of Arora et al. (2019),
    "Implicit Regularization in Deep Matrix Factorization", with ``tol = 1e-3``.

    Sensing: pass ``obs=None`` and ``sensing=(A, y)`` with ``A`` of shape ``(m, d1, d2)`` and
    ``y`` of shape ``(m,)``; this forwards to :func:`nuclear_norm_min_sensing`.

    Args:
        obs: the observed entries (``Completion`` of order 2), or ``None`` with ``sensing``.
        tol: constraint half-width (>= 0).
        sensing: ``(A, y)`` for matrix sensing instead of completion.
        max_iters: SCS iteration cap.
        eps: SCS ``eps_abs`` and ``eps_rel``.
        allow_inaccurate: if True, a non-"optimal" status that still has a primal point
            (e.g. ``"optimal_inaccurate"``) is returned with its status recorded instead of
            raising.
        verbose: print the SCS log.
        solver_kwargs: extra SCS settings (override ``eps``/``max_iters`` if repeated).

    Returns:
        :class:`NuclearNormResult` with ``X`` of shape ``(d1, d2)``.

    Raises:
        SolverError: status not "optimal" (unless ``allow_inaccurate``), or no primal point.
        ValueError / TypeError: invalid inputs.
    """
    import cvxpy as cp  # on first use: the ADMM solvers and the rest run without cvxpy

    if (obs is None) == (sensing is None):
        raise ValueError("give exactly one of obs (completion) or sensing=(A, y)")
    common = dict(
        tol=tol,
        max_iters=max_iters,
        eps=eps,
        allow_inaccurate=allow_inaccurate,
        verbose=verbose,
        solver_kwargs=solver_kwargs,
    )
    if sensing is not None:
        if not isinstance(sensing, tuple | list) or len(sensing) != 2:
            raise TypeError("sensing must be a pair (A, y)")
        return nuclear_norm_min_sensing(sensing[0], sensing[1], **common)
    if not isinstance(obs, Completion):
        raise TypeError(f"obs must be a Completion, got {type(obs).__name__}")
    if obs.order != 2:
        raise ValueError(
            f"nuclear-norm completion needs a matrix (order 2); got order {obs.order} "
            f"with shape {obs.shape}"
        )
    tol = _check_tol(tol)
    rows = obs.indices[:, 0].cpu().numpy()
    cols = obs.indices[:, 1].cpu().numpy()
    vals = obs.values.detach().cpu().numpy().astype(np.float64)
    X = cp.Variable(obs.shape)
    resid = X[rows, cols] - vals
    constraints = [resid == 0] if tol == 0 else [cp.abs(resid) <= tol]
    return _solve(
        X,
        constraints,
        lambda sol: sol[rows, cols] - vals,
        **common,
    )


def nuclear_norm_min_sensing(
    A: Any,
    y: Any,
    *,
    tol: float = 1e-3,
    max_iters: int = DEFAULT_MAX_ITERS,
    eps: float = DEFAULT_EPS,
    allow_inaccurate: bool = False,
    verbose: bool = False,
    solver_kwargs: dict[str, Any] | None = None,
) -> NuclearNormResult:
    """Minimum nuclear-norm matrix consistent with linear measurements, solved with SCS.

    ::

        min ||X||_*  s.t.  |<A_i, X> - y_i| <= tol,  <A_i, X> = sum_jk A[i, j, k] X[j, k]

    (equalities when ``tol == 0``), the sensing baseline of Arora et al. (2019).

    The ``m`` measurement matrices are handled as one ``(m, d1 * d2)`` matrix (a row-major
    reshape, a view when ``A`` is a C-contiguous float64 array) multiplying
    ``vec(X, order="C")``: no per-measurement Python loop, and the block enters the conic
    program once (``A vec(X) - tol * z = y`` with ``|z_i| <= 1``). The problem is nonetheless
    dense, and cost grows as ``m * d1 * d2``: ``A`` alone is 400 MB in float64 for 5000
    measurements of 100 x 100, and CVXPY's compilation of that instance alone took ~200 s and
    ~10 GB peak memory in our measurement (before SCS factorizes a 50M-nonzero KKT system).
    1000 measurements of 50 x 50 solve in about a minute.

    Args:
        A: measurement matrices, ``(m, d1, d2)``, numpy array or torch tensor.
        y: measurements, ``(m,)``.
        tol, max_iters, eps, allow_inaccurate, verbose, solver_kwargs: as in
            :func:`nuclear_norm_min`.

    Returns:
        :class:`NuclearNormResult` with ``X`` of shape ``(d1, d2)``.
    """
    import cvxpy as cp  # on first use: the ADMM solvers and the rest run without cvxpy

    tol = _check_tol(tol)
    A_arr, y_arr = _check_sensing(A, y)
    m, d1, d2 = A_arr.shape
    A_flat = A_arr.reshape(m, d1 * d2)
    X = cp.Variable((d1, d2))
    # <A_i, X> = A_flat[i] @ vec(X, order="C"): row-major vec matches the row-major reshape.
    measured = A_flat @ cp.vec(X, order="C")
    if tol == 0:
        constraints = [measured == y_arr]
    else:
        # A_flat enters ONCE, through a slack scaled to the unit box: cp.abs(measured - y) <= tol
        # would put the dense (m, d1 * d2) block into the solver twice (one copy per side),
        # and the unscaled slack |z| <= tol leaves SCS badly scaled (2x the iterations, 15x the
        # constraint violation on a 300 x 20 x 20 test).
        z = cp.Variable(m)
        constraints = [measured - tol * z == y_arr, cp.abs(z) <= 1]
    return _solve(
        X,
        constraints,
        lambda sol: A_flat @ sol.reshape(-1) - y_arr,
        tol=tol,
        max_iters=max_iters,
        eps=eps,
        allow_inaccurate=allow_inaccurate,
        verbose=verbose,
        solver_kwargs=solver_kwargs,
    )
