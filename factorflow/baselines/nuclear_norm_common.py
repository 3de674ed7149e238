"""What both nuclear-norm solvers share: the result type, the error, and the input checks.

:class:`NuclearNormResult` is returned by the CVXPY + SCS solvers
(:mod:`factorflow.baselines.nuclear_norm`) and by factorflow's ADMM
(:mod:`factorflow.baselines.nuclear_norm_admm`); both raise :class:`SolverError`. Everything is
re-exported by :mod:`factorflow.baselines.nuclear_norm`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["NuclearNormResult", "SolverError"]


class SolverError(RuntimeError):
    """The convex solver did not return an accurate optimal solution (status in the message)."""


@dataclass(frozen=True)
class NuclearNormResult:
    """Outcome of a nuclear-norm minimization.

    Attributes:
        X: the solution, ``float64`` array ``(d1, d2)``.
        status: CVXPY's status string (``"optimal"`` unless ``allow_inaccurate=True`` was used).
        objective: ``||X||_*`` (sum of singular values) measured on the returned ``X``.
        max_violation: ``max(0, max_i |<A_i, X> - y_i| - tol)`` measured on ``X`` (for
            completion ``<A_i, X> = X_jk``), i.e. how far the returned point is from feasible.
        max_residual: ``max_i |<A_i, X> - y_i|`` measured on ``X``.
        tol: the constraint half-width used.
        solve_time_s: wall-clock seconds of ``Problem.solve`` (CVXPY compilation + SCS).
        solver_iters: SCS iterations (``None`` if the solver did not report them).
        solver: ``"SCS"`` (CVXPY) or ``"ADMM"`` (:mod:`factorflow.baselines.nuclear_norm_admm`).
    """

    X: np.ndarray
    status: str
    objective: float
    max_violation: float
    max_residual: float
    tol: float
    solve_time_s: float
    solver_iters: int | None = None
    solver: str = "SCS"


def _as_float64(a: Any, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} must be a numeric array or tensor, got {type(a).__name__}"
        ) from exc
    return arr


def _check_tol(tol: float) -> float:
    tol = float(tol)
    if not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol}")
    return tol


def _check_sensing(A: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """``A`` (m, d1, d2) and ``y`` (m,) as finite float64 arrays, or a ValueError naming the
    problem."""
    A_arr = _as_float64(A, "A")
    y_arr = _as_float64(y, "y")
    if A_arr.ndim != 3 or 0 in A_arr.shape:
        raise ValueError(
            f"A must have shape (m, d1, d2) with positive sizes; got {tuple(A_arr.shape)}"
        )
    m = A_arr.shape[0]
    if y_arr.shape != (m,):
        raise ValueError(
            f"y must have shape ({m},) to match A {tuple(A_arr.shape)}; got {y_arr.shape}"
        )
    if not np.isfinite(y_arr).all():
        raise ValueError("y contains NaN or inf")
    if not np.isfinite(A_arr).all():
        raise ValueError("A contains NaN or inf")
    return A_arr, y_arr


def _result(
    X: np.ndarray,
    residual: np.ndarray,
    tol: float,
    status: str,
    elapsed: float,
    iters: int | None,
    solver: str,
) -> NuclearNormResult:
    """The result for the point ``X`` whose constraint residuals ``<A_i, X> - y_i`` are
    ``residual``: objective and violation measured on ``X``, not taken from the solver."""
    max_res = float(np.abs(residual).max())
    return NuclearNormResult(
        X=X,
        status=status,
        objective=float(np.linalg.norm(X, ord="nuc")),
        max_violation=max(0.0, max_res - tol),
        max_residual=max_res,
        tol=tol,
        solve_time_s=elapsed,
        solver_iters=iters,
        solver=solver,
    )
