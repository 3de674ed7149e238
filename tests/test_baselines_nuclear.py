"""Nuclear-norm minimization baseline (Arora et al. 2019): completion and sensing, via SCS."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from factorflow.baselines.nuclear_norm import (
    NuclearNormResult,
    SolverError,
    nuclear_norm_min,
    nuclear_norm_min_admm,
    nuclear_norm_min_sensing,
    nuclear_norm_min_sensing_admm,
)
from factorflow.problems.completion import Completion, sample_indices


def _completion(full: np.ndarray, idx: np.ndarray) -> Completion:
    return Completion.from_array(torch.tensor(full, dtype=torch.float64), torch.tensor(idx))


def _low_rank(d1: int, d2: int, rank: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((d1, rank)) @ rng.standard_normal((rank, d2))


def test_full_observation_returns_the_matrix() -> None:
    M = _low_rank(5, 4, 2, seed=0)
    idx = np.array([(i, j) for i in range(5) for j in range(4)])
    res = nuclear_norm_min(_completion(M, idx), tol=1e-3)
    assert isinstance(res, NuclearNormResult)
    assert res.status == "optimal" and res.solver == "SCS"
    assert res.X.dtype == np.float64 and res.X.shape == (5, 4)
    # within tol, up to the solver's accuracy (eps = 1e-5 by default)
    assert np.abs(res.X - M).max() <= 1e-3 + 2e-5
    assert res.max_violation <= 2e-5
    assert res.max_residual == pytest.approx(np.abs(res.X - M).max())
    assert res.objective == pytest.approx(np.linalg.norm(res.X, "nuc"))
    assert res.solve_time_s > 0


def test_two_by_two_analytic_minimizer() -> None:
    # [[?, 1], [1, 0]]: ||X||_* = sqrt(x^2 + 4), minimized at x = 0 with value 2.
    obs = Completion((2, 2), torch.tensor([[0, 1], [1, 0], [1, 1]]), torch.tensor([1.0, 1.0, 0.0]))
    exact = nuclear_norm_min(obs, tol=0.0, eps=1e-9)
    assert exact.objective == pytest.approx(2.0, abs=1e-5)
    assert abs(exact.X[0, 0]) < 1e-2
    assert exact.max_residual < 1e-6
    loose = nuclear_norm_min(obs, tol=1e-3)
    # loosening each constraint by 1e-3 can lower the optimum by at most ~2e-3
    assert 2.0 - 3e-3 <= loose.objective <= 2.0 + 1e-5
    assert abs(loose.X[0, 0]) < 5e-2
    assert loose.max_violation <= 2e-5


def test_random_completion_matches_independent_sdp() -> None:
    d1, d2, tol = 8, 7, 1e-3
    M = _low_rank(d1, d2, 2, seed=1)
    g = torch.Generator().manual_seed(3)
    idx = sample_indices((d1, d2), 35, g).numpy()
    res = nuclear_norm_min(_completion(M, idx), tol=tol, eps=1e-8)

    # Independent formulation: min (tr P + tr Q) / 2 s.t. [[P, X], [X^T, Q]] PSD.
    rows, cols = idx[:, 0], idx[:, 1]
    X = cp.Variable((d1, d2))
    P = cp.Variable((d1, d1), symmetric=True)
    Q = cp.Variable((d2, d2), symmetric=True)
    block = cp.bmat([[P, X], [X.T, Q]])
    prob = cp.Problem(
        cp.Minimize((cp.trace(P) + cp.trace(Q)) / 2),
        [block >> 0, cp.abs(X[rows, cols] - M[rows, cols]) <= tol],
    )
    prob.solve(solver=cp.SCS, eps_abs=1e-8, eps_rel=1e-8, max_iters=100_000)
    assert prob.status == "optimal"
    assert res.objective == pytest.approx(prob.value, rel=1e-4)
    assert res.objective == pytest.approx(np.linalg.norm(X.value, "nuc"), rel=1e-4)
    assert res.max_violation <= 1e-6


def test_sensing_vec_convention_against_brute_force() -> None:
    # m = d1 * d2 generic measurements pin X down: NNM must return the unique solution of
    # sum_jk A[i, j, k] X[j, k] = y_i, which a transposed (column-major) vec would not.
    rng = np.random.default_rng(4)
    d1, d2 = 2, 3
    A = rng.standard_normal((d1 * d2, d1, d2))
    X_true = rng.standard_normal((d1, d2))
    y = np.einsum("ijk,jk->i", A, X_true)
    res = nuclear_norm_min_sensing(A, y, tol=0.0, eps=1e-9)
    brute = np.linalg.solve(A.reshape(d1 * d2, d1 * d2), y).reshape(d1, d2)
    np.testing.assert_allclose(brute, X_true, atol=1e-10)
    np.testing.assert_allclose(res.X, X_true, atol=1e-5)
    assert res.max_residual < 1e-5


def test_sensing_with_indicator_matrices_equals_completion() -> None:
    M = _low_rank(4, 5, 1, seed=5)
    idx = sample_indices((4, 5), 12, torch.Generator().manual_seed(0)).numpy()
    A = np.zeros((len(idx), 4, 5))
    A[np.arange(len(idx)), idx[:, 0], idx[:, 1]] = 1.0
    y = M[idx[:, 0], idx[:, 1]]
    comp = nuclear_norm_min(_completion(M, idx), eps=1e-8)
    sens = nuclear_norm_min_sensing(torch.tensor(A), torch.tensor(y), eps=1e-8)
    via_kw = nuclear_norm_min(None, sensing=(A, y), eps=1e-8)
    assert sens.objective == pytest.approx(comp.objective, rel=1e-5)
    assert via_kw.objective == pytest.approx(comp.objective, rel=1e-5)


def test_inaccurate_status_raises_unless_allowed() -> None:
    rng = np.random.default_rng(0)
    A, y = rng.standard_normal((4, 3, 3)), rng.standard_normal(4)
    with pytest.raises(SolverError, match="optimal_inaccurate"):
        nuclear_norm_min_sensing(A, y, max_iters=3)
    with pytest.warns(RuntimeWarning, match="allow_inaccurate"):
        res = nuclear_norm_min_sensing(A, y, max_iters=3, allow_inaccurate=True)
    assert res.status == "optimal_inaccurate"
    assert isinstance(SolverError("x"), RuntimeError)


def test_infeasible_raises_even_when_inaccuracy_is_allowed() -> None:
    A = np.ones((2, 2, 2))
    with pytest.raises(SolverError, match="infeasible"):
        nuclear_norm_min_sensing(A, np.array([0.0, 1.0]), tol=0.0, allow_inaccurate=True)


def test_bad_inputs() -> None:
    obs3 = Completion((2, 2, 2), torch.tensor([[0, 0, 0]]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="order 2"):
        nuclear_norm_min(obs3)
    obs2 = Completion((2, 2), torch.tensor([[0, 0]]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="tol"):
        nuclear_norm_min(obs2, tol=-1.0)
    with pytest.raises(ValueError, match="exactly one"):
        nuclear_norm_min(obs2, sensing=(np.ones((1, 2, 2)), np.ones(1)))
    with pytest.raises(ValueError, match="exactly one"):
        nuclear_norm_min(None)
    with pytest.raises(ValueError, match=r"\(m, d1, d2\)"):
        nuclear_norm_min_sensing(np.ones((3, 4)), np.ones(3))
    with pytest.raises(ValueError, match=r"y must have shape \(3,\)"):
        nuclear_norm_min_sensing(np.ones((3, 2, 2)), np.ones(4))
    with pytest.raises(ValueError, match=r"y must have shape"):
        nuclear_norm_min_sensing(np.ones((3, 2, 2)), np.ones((3, 1)))
    A = np.ones((3, 2, 2))
    A[1, 0, 1] = np.nan
    with pytest.raises(ValueError, match="A contains NaN"):
        nuclear_norm_min_sensing(A, np.ones(3))
    with pytest.raises(ValueError, match="y contains NaN"):
        nuclear_norm_min_sensing(np.ones((3, 2, 2)), np.array([1.0, np.inf, 0.0]))


@pytest.mark.slow
def test_paper_scale_completion_is_accurate() -> None:
    # Arora et al. (2019) setting: 100 x 100, rank 5, ||W*||_F = 100, 2000 observed entries.
    g = torch.Generator().manual_seed(0)
    U = torch.randn(100, 5, generator=g, dtype=torch.float64)
    V = torch.randn(100, 5, generator=g, dtype=torch.float64)
    W = U @ V.T
    W = W * (100 / W.norm())
    obs = Completion.from_array(W, sample_indices((100, 100), 2000, g))
    res = nuclear_norm_min(obs)
    assert res.status == "optimal"
    assert res.max_violation < 1e-6
    assert res.objective <= torch.linalg.matrix_norm(W, "nuc").item() + 1e-6
    assert np.mean((res.X - W.numpy()) ** 2) < 0.2


# ------------------------------------------------------------------------------ ADMM solvers


@pytest.mark.parametrize(("n_obs", "tol"), [(70, 1e-3), (90, 0.0)])
def test_admm_completion_matches_scs(n_obs: int, tol: float) -> None:
    # (70, 0.0) is an instance where the minimizer has rank 6 of 10 and ADMM converges
    # sublinearly (not to 1e-8 in 20,000 iterations): it raises there, as it should.
    d1, d2 = 12, 10
    M = _low_rank(d1, d2, 2, seed=4)
    g = torch.Generator().manual_seed(5)
    obs = _completion(M, sample_indices((d1, d2), n_obs, g).numpy())
    ref = nuclear_norm_min(obs, tol=tol, eps=1e-8)
    res = nuclear_norm_min_admm(obs, tol=tol, eps=1e-8)
    assert res.status == "optimal" and res.solver == "ADMM"
    assert res.objective == pytest.approx(ref.objective, rel=1e-6)
    assert np.linalg.norm(res.X - ref.X) <= 1e-4 * np.linalg.norm(ref.X)
    assert res.max_violation <= 1e-6
    assert res.objective == pytest.approx(np.linalg.norm(res.X, "nuc"))


@pytest.mark.parametrize(("d", "m", "tol"), [(20, 110, 1e-3), (20, 110, 0.0), (10, 150, 1e-3)])
def test_admm_sensing_matches_scs(d: int, m: int, tol: float) -> None:
    # m = 150 > d1 d2 = 100 takes the other branch of the X-step (a Cholesky of I + A^T A)
    rng = np.random.default_rng(6)
    W = _low_rank(d, d, 2, seed=7)
    W *= d / np.linalg.norm(W)
    A = rng.standard_normal((m, d, d)) / d
    y = np.einsum("mij,ij->m", A, W)
    ref = nuclear_norm_min_sensing(A, y, tol=tol, eps=1e-8)
    res = nuclear_norm_min_sensing_admm(torch.tensor(A), torch.tensor(y), tol=tol, eps=1e-8)
    assert res.status == "optimal" and res.solver == "ADMM"
    assert res.objective == pytest.approx(ref.objective, rel=1e-6)
    assert np.linalg.norm(res.X - ref.X) <= 1e-4 * np.linalg.norm(ref.X)
    assert res.max_violation <= 1e-6


def test_admm_full_observation_and_bad_input() -> None:
    M = _low_rank(6, 5, 2, seed=8)
    idx = np.array([(i, j) for i in range(6) for j in range(5)])
    res = nuclear_norm_min_admm(_completion(M, idx), tol=0.0, eps=1e-10)
    assert np.abs(res.X - M).max() < 1e-6
    with pytest.raises(SolverError, match="did not converge"):
        nuclear_norm_min_admm(_completion(M, idx[:20]), max_iters=2)
    few = nuclear_norm_min_admm(_completion(M, idx[:20]), max_iters=2, allow_inaccurate=True)
    assert few.status == "inaccurate" and few.solver_iters == 2
    with pytest.raises(ValueError, match="y must have shape"):
        nuclear_norm_min_sensing_admm(np.ones((3, 2, 2)), np.ones(4))
    with pytest.raises(ValueError, match="tol"):
        nuclear_norm_min_sensing_admm(np.ones((3, 2, 2)), np.ones(3), tol=-1.0)
    with pytest.raises(TypeError, match="Completion"):
        nuclear_norm_min_admm(M)  # type: ignore[arg-type]
