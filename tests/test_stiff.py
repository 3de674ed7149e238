"""The stiff integrator (SUNDIALS CVODE BDF + GMRES through scikit-sundae) and Flow(method="auto")'s
switch to it: a linear flow with a known solution and widely spread eigenvalues; the end state
equals RK45's on small deep matrix factorizations; balancedness and the sign of det kept on the
2x2 problem; loss-threshold crossings located exactly; the optional dependency's messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from factorflow import metrics
from factorflow.config import OptimizerConfig
from factorflow.dynamics import Flow, Schedule, Stop, stiff, train
from factorflow.factorizations.dmf import end_to_end, init_dmf
from factorflow.objectives import DMFObjective
from factorflow.problems.matrix import razin_2x2, synthetic_completion

needs_sundials = pytest.mark.skipif(
    not stiff.sundials_available(), reason="scikit-sundae (extra 'stiff') not installed"
)


class _Quadratic:
    """L(x) = 1/2 x^T A x per run, x (B, n); the flow is dx/dt = -A x."""

    def __init__(self, A: torch.Tensor) -> None:
        self.A = A

    def __call__(self, ps):
        (x,) = ps
        return 0.5 * torch.einsum("bi,ij,bj->b", x, self.A, x)


def _spread_quadratic(n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.logspace(-6, 2, n, dtype=torch.float64)  # eigenvalues 1e-6 .. 1e2
    A = Q @ torch.diag(lam) @ Q.T
    x0 = torch.randn(1, n, generator=g, dtype=torch.float64)
    return A, Q, lam, x0


@needs_sundials
@pytest.mark.parametrize("jv", ["hvp", "dq"])
def test_linear_flow_exact_solution_spread_eigenvalues(jv):
    """dx/dt = -A x, eig(A) log-spaced in [1e-6, 1e2]: x(t) = Q exp(-Lambda t) Q^T x0 at
    recorded times up to T = 1e4 (stiffness ratio 1e8); RK45 would need ~T lambda_max / 3.3 =
    3e5 steps, CVODE about a thousand steps."""
    A, Q, lam, x0 = _spread_quadratic()
    times = (1e-2, 1.0, 1e2, 1e4)
    res = train(
        [x0],
        _Quadratic(A),
        Flow(method="cvode", rtol=1e-9, atol=1e-13, jv=jv),
        Stop(max_time=1e4),
        Schedule(points=times),
        {"x": lambda ps: ps[0]},
    )
    assert res.status == ["max_time"] and res.time[0] == pytest.approx(1e4)
    tr = res.run_trajectory(0)
    for t in times:
        (row,) = np.flatnonzero(np.isclose(tr.time, t, rtol=1e-12))
        exact = (Q @ (torch.exp(-lam * t) * (Q.T @ x0[0]))).numpy()
        np.testing.assert_allclose(tr.values["x"][row], exact, rtol=0, atol=2e-6)
    assert res.n_evals < 10_000  # unpreconditioned GMRES: up to n = 12 products per solve
    if jv == "hvp":
        assert res.info["n_hvp"] > 0 and res.info["jv"] == "hvp"


@needs_sundials
def test_auto_switches_to_cvode_when_rk45_is_stability_limited():
    """auto starts with RK45 (forced here by auto_lsoda_max_dim=0) and switches once h lambda
    stays above 3.25 (the stiff modes have decayed; lambda_max = 100): the segments say where,
    and the end state is the exact one."""
    A, Q, lam, x0 = _spread_quadratic()
    T = 1e3
    res = train(
        [x0],
        _Quadratic(A),
        Flow(method="auto", auto_lsoda_max_dim=0, rtol=1e-9, atol=1e-13),
        Stop(max_time=T),
    )
    segs = res.info["segments"]
    assert [s["method"] for s in segs] == ["RK45", "cvode"]
    assert res.method == "flow:RK45+cvode"
    # the two-stage estimate sees lambda_max once the fast modes' error dominates y7 - y6 (t ~ 10
    # here, RK45 stability-limited from t ~ 0.2 on): late, but long before RK45's ~1e5 evaluations
    assert 0 < segs[1]["t_start"] < 100 and segs[1]["evals_start"] < 5000
    assert segs[0]["t_end"] == segs[1]["t_start"] and segs[1]["t_end"] == pytest.approx(T)
    exact = Q @ (torch.exp(-lam * T) * (Q.T @ x0[0]))
    np.testing.assert_allclose(res.params[0][0].numpy(), exact.numpy(), rtol=0, atol=2e-6)
    assert res.n_evals < 10_000  # RK45 alone: ~1e5


def _dmf_problem(seeds=(0,)):
    obj = DMFObjective(synthetic_completion((6, 6), 2, 20, seed=0), "mse")
    fs, _ = init_dmf((6, 6), 3, init="gaussian", init_scale=1e-2, seeds=list(seeds))
    return obj, fs


@needs_sundials
@pytest.mark.parametrize(
    "kw",
    [{"jv": "dq"}, {"jv": "hvp"}, {"jv": "dq", "precond": False}, {"jv": "hvp", "precond": False}],
)
def test_end_state_equals_rk45_on_small_dmf(kw):
    """6x6 rank 2, 20 observations, depth 3, through the rank-by-rank phase to loss 1e-6: the
    end-to-end matrix and the crossing time agree with RK45's (both at rtol 1e-9)."""
    obj, fs = _dmf_problem()
    stop = Stop(loss_below=1e-6, max_steps=200_000)
    ref = train(fs, obj, Flow(method="RK45", rtol=1e-9, atol=1e-12), stop)
    res = train(fs, obj, Flow(method="cvode", rtol=1e-9, atol=1e-12, **kw), stop)
    assert ref.status == res.status == ["converged"]
    assert res.time[0] == pytest.approx(ref.time[0], rel=1e-5)
    W, Wr = end_to_end(res.params), end_to_end(ref.params)
    assert float((W - Wr).norm() / Wr.norm()) < 1e-5
    if kw.get("precond", True):
        assert res.info["precond"] is True and res.info["nprec_solves"] > 0


@needs_sundials
def test_loss_threshold_crossings_located_exactly_batched():
    """Two runs crossing loss 1e-5 at different times: each stops at its own crossing, the loss
    at the reported state equals the level, and the earlier run's state is held while the other
    goes on (its rows of the field and of the Hessian products are masked)."""
    obj, fs = _dmf_problem(seeds=(0, 1))
    thr = 1e-5
    res = train(fs, obj, Flow(method="cvode", rtol=1e-9, atol=1e-12), Stop(loss_below=thr))
    assert res.status == ["converged", "converged"]
    assert res.time[0] != pytest.approx(res.time[1], rel=1e-3)
    L = obj(res.params).numpy()
    np.testing.assert_allclose(L, thr, rtol=1e-8)
    np.testing.assert_allclose(res.final_loss, thr, rtol=1e-8)
    for b in range(2):
        solo = train(
            [f[b : b + 1] for f in fs],
            obj,
            Flow(method="cvode", rtol=1e-9, atol=1e-12),
            Stop(loss_below=thr),
        )
        assert solo.time[0] == pytest.approx(res.time[b], rel=1e-5)


@needs_sundials
def test_balancedness_and_det_sign_kept_on_2x2():
    """Razin & Cohen 2020's [[?, 1], [1, 0]], depth 3, balanced init with det > 0, to loss 1e-4:
    W_{j+1}^T W_{j+1} - W_j W_j^T stays (zero) and det W > 0 at every accepted step."""
    obj = DMFObjective(razin_2x2(), "half_sse")
    fs, _ = init_dmf(
        (2, 2), 3, init="normal", init_scale=8e-3, seeds=[0, 1], balance=True, det_sign=1
    )

    def diffs(ps):
        return torch.stack([ps[j + 1].mT @ ps[j + 1] - ps[j] @ ps[j].mT for j in range(2)], 1)

    res = train(
        fs,
        obj,
        Flow(method="cvode"),
        Stop(loss_below=1e-4, max_steps=100_000),
        Schedule(accepted=True),
        {"det": lambda ps: metrics.determinant(end_to_end(ps)), "D": diffs},
    )
    assert res.status == ["converged"] * 2
    for b in range(2):
        tr = res.run_trajectory(b)
        assert tr.values["det"].min() > 0
        scale = max(float(f[b].abs().max()) for f in res.params) ** 2  # ~ |w11|^(2/3)
        assert np.abs(tr.values["D"]).max() < 1e-6 * scale
        assert abs(float(end_to_end(res.params)[b, 0, 0])) > 68  # |w11| grew (>= the bound)


def test_without_sundials_cvode_names_the_extra_and_auto_falls_back(monkeypatch):
    monkeypatch.setattr(stiff, "sundials_available", lambda: False)
    with pytest.raises(ImportError, match=r"factorflow\[stiff\]"):
        Flow(method="cvode")
    A, Q, lam, x0 = _spread_quadratic(n=4)
    res = train([x0], _Quadratic(A), Flow(method="auto", auto_lsoda_max_dim=0), Stop(max_time=1.0))
    assert res.method == "flow:RK45"
    assert "scikit-sundae" in res.info["auto_note"]
    assert [s["method"] for s in res.info["segments"]] == ["RK45"]


def test_config_accepts_new_flow_methods():
    assert OptimizerConfig(name="flow", method="cvode").method == "cvode"
    assert OptimizerConfig(name="flow", method="auto").method == "auto"


def test_rk45_stiffness_estimate_on_linear_flow():
    """h lambda from a Dormand-Prince step's last two stages equals h lambda_max on a scalar
    linear flow dx/dt = -lambda x."""
    import scipy.integrate

    lam = 50.0
    s = scipy.integrate.RK45(lambda t, y: -lam * y, 0.0, np.array([1.0]), 1.0, first_step=0.01)
    s.step()
    assert stiff.rk45_stiffness(s) == pytest.approx(lam * s.h_previous, rel=1e-10)
    assert math.isfinite(stiff.rk45_stiffness(s))


@needs_sundials
def test_max_evals_counts_hessian_products():
    obj, fs = _dmf_problem()
    res = train(fs, obj, Flow(method="cvode", jv="hvp"), Stop(max_evals=300))
    assert res.status == ["max_evals"]
    assert 300 <= res.n_evals < 400 and res.info["n_hvp"] > 0
    assert res.n_evals == res.info["nfev"]


@needs_sundials
@pytest.mark.slow
def test_auto_equals_rk45_on_arora_100x100_to_1e6():
    """Arora et al.'s instance (100x100 rank 5, 2,000 observations, depth 3, gaussian 1e-3) to
    train mse 1e-6 (~1 min): auto switches to CVODE, ends where RK45 does, in fewer evaluations."""
    problem = synthetic_completion((100, 100), 5, 2000, 0)
    obj = DMFObjective(problem, "mse")
    fs, _ = init_dmf((100, 100), 3, init="gaussian", init_scale=1e-3, seeds=[0])
    stop = Stop(loss_below=1e-6)
    ref = train(fs, obj, Flow(method="RK45"), stop)
    res = train(fs, obj, Flow(method="auto"), stop)
    assert [s["method"] for s in res.info["segments"]] == ["RK45", "cvode"]
    assert res.time[0] == pytest.approx(ref.time[0], rel=1e-5)
    s, sr = (
        metrics.singular_values(end_to_end(res.params))[0, :5],
        metrics.singular_values(end_to_end(ref.params))[0, :5],
    )
    assert float(((s - sr).abs() / sr).max()) < 1e-5
    assert res.n_evals < ref.n_evals


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shape", [(4, 4), (4, 6)])  # square: stacked products; else per factor
def test_dmf_precond_is_the_exact_inverse_on_balanced_factors_fully_observed(dtype, tol, shape):
    """With every entry observed (P_Omega = I) and balanced factors, the preconditioner's solve
    is exactly (I + gamma c J^T J)^{-1} r, J the Jacobian of theta -> W = W_3 W_2 W_1 and
    c = 2 / (d1 d2) (mse); in float32 (the default) to float32 accuracy."""
    d1, d2 = shape
    problem = synthetic_completion(shape, 2, d1 * d2, 0)
    obj = DMFObjective(problem, "mse")
    factors, _ = init_dmf(shape, 3, init="gaussian", init_scale=1.0, seeds=[3], balance=True)
    shapes = [tuple(f.shape) for f in factors]
    sizes = [f.numel() for f in factors]

    def unflat(y):
        t = y if isinstance(y, torch.Tensor) else torch.as_tensor(y, dtype=torch.float64)
        return [c.reshape(s) for c, s in zip(torch.split(t, sizes), shapes, strict=True)]

    def flat(ts):
        return torch.cat([t.reshape(-1) for t in ts]).to(torch.float64).numpy()

    y = flat(factors)
    pc = stiff.DMFCompletionPrecond(obj, unflat, flat, dtype=dtype)
    pc.setup(y)
    J = torch.autograd.functional.jacobian(
        lambda v: end_to_end(unflat(v)).reshape(-1), torch.from_numpy(y)
    )  # (d1*d2, n)
    gamma, c = 37.0, 2.0 / (d1 * d2)
    P = torch.eye(y.size, dtype=torch.float64) + gamma * c * J.T @ J
    r = np.random.default_rng(0).standard_normal(y.size)
    expected = torch.linalg.solve(P, torch.from_numpy(r)).numpy()
    got = pc.solve(r, gamma)
    assert got.dtype == np.float64
    assert np.linalg.norm(got - expected) <= tol * np.linalg.norm(expected)
    per_factor = stiff.DMFCompletionPrecond(obj, unflat, flat, dtype=dtype, stack=False)
    per_factor.setup(y)
    assert isinstance(pc._A, torch.Tensor) == (shape[0] == shape[1])  # stacked when square
    assert not isinstance(per_factor._A, torch.Tensor)
    assert np.linalg.norm(per_factor.solve(r, gamma) - got) <= tol * np.linalg.norm(expected)


class _BlowUp:
    """L(x) = -x^4 / 4: the flow dx/dt = x^3 reaches infinity at t* = 1 / (2 x0^2)."""

    def __call__(self, ps):
        return -(ps[0][:, 0] ** 4) / 4


@needs_sundials
def test_cvode_failure_at_a_blow_up_keeps_the_last_finite_state_and_says_why():
    """CVODE's step shrinks to the spacing of floats before t* = 0.5 and it stops advancing:
    the runs end "failed" at the last state it reached (finite), with CVODE's reason in info."""
    x0 = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    res = train([x0], _BlowUp(), Flow(method="cvode"), Stop(max_time=1.0, diverge_above=1e300))
    assert res.status == ["failed", "failed"]
    assert res.info["failure"].startswith("CVODE")
    assert res.time[0] == pytest.approx(0.5, rel=1e-4) and res.time[0] == res.time[1]
    x = res.params[0][:, 0]
    assert math.isfinite(float(x[0])) and float(x[0]) > 100 and float(x[1]) == 0.0


@needs_sundials
def test_cvode_solver_dense_output_and_finished_state():
    """The scipy-like interface: dense output inside the last step only (at its end, the state
    itself), and no step after the end."""
    lam = 2.0
    s = stiff.CVODESolver(lambda t, y: -lam * y, 0.0, np.ones(3), 1.0, rtol=1e-10, atol=1e-12)
    assert s.step() is None and s.status == "running"
    sol = s.dense_output()
    mid = 0.5 * (s.t_old + s.t)
    np.testing.assert_allclose(sol(mid), np.exp(-lam * mid), rtol=1e-6)
    np.testing.assert_array_equal(sol(s.t), s.y)
    with pytest.raises(ValueError, match="outside the last step"):
        sol(s.t + 1.0)
    while s.status == "running":
        s.step()
    assert s.status == "finished" and s.t == pytest.approx(1.0)
    np.testing.assert_allclose(s.y, np.exp(-lam), rtol=1e-8)
    with pytest.raises(RuntimeError, match="finished or failed"):
        s.step()
