"""Tests for gradient flow (factorflow.dynamics.Flow): an exact solution, conservation laws of
the flow (balancedness), convergence order of GD to the flow, the sign of the determinant on the
2x2 problem (Razin & Cohen 2020), batching, recording points and the located loss crossing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from factorflow import metrics, theory
from factorflow.dynamics import GD, Flow, Schedule, Stop, train
from factorflow.factorizations.dmf import end_to_end, init_dmf
from factorflow.objectives import DMFObjective
from factorflow.problems.matrix import razin_2x2, synthetic_completion

DT = torch.float64


def _flat(params: list[torch.Tensor], b: int | None = None) -> torch.Tensor:
    return torch.cat([(p if b is None else p[b]).reshape(-1) for p in params])


@pytest.fixture(scope="module")
def small():
    """A small completion problem and three depth-3 runs with different init scales."""
    obj = DMFObjective(synthetic_completion((8, 6), 2, 30, seed=0), "mse")
    fs, _ = init_dmf((8, 6), 3, init="normal", init_scale=[0.2, 0.4, 0.6], seeds=[0, 1, 2])
    return obj, fs


# --------------------------------------------------------------------------- exact solution


@pytest.mark.parametrize("loss", ["half_sse", "mse"])
def test_depth_one_flow_matches_the_exact_solution(loss):
    """Depth 1: dW/dt = -P_Omega(W - Y) c (c = 1 for half_sse, 2/m for mse), so observed
    entries relax as Y + (W0 - Y) exp(-c t) and unobserved ones stay put."""
    prob = synthetic_completion((5, 4), 2, 9, seed=1)
    obj = DMFObjective(prob, loss)
    fs, _ = init_dmf((5, 4), 1, init="normal", init_scale=1.0, seeds=[0])
    c = 1.0 if loss == "half_sse" else 2.0 / prob.n_obs
    points = (0.3, 1.0, 2.5)
    res = train(
        fs,
        obj,
        Flow(rtol=1e-10, atol=1e-12),
        Stop(max_time=3.0),
        Schedule(points=points),
        {"W": lambda ps: ps[0]},
    )
    tr = res.trajectory
    W0 = fs[0][0]
    mask = prob.obs.mask()
    Y = torch.zeros(5, 4, dtype=DT)
    Y[mask] = prob.ground_truth[mask]
    for t in (0.0, *points, 3.0):
        (row,) = np.flatnonzero(tr.time == t)
        exact = torch.where(mask, Y + (W0 - Y) * math.exp(-c * t), W0)
        np.testing.assert_allclose(tr.values["W"][row, 0], exact.numpy(), rtol=1e-8, atol=1e-9)


# --------------------------------------------------------------------------- conservation laws


def test_balancedness_conserved_from_balanced_init():
    """Arora et al. 2018: W_{j+1}^T W_{j+1} - W_j W_j^T is constant under gradient flow, so a
    balanced start stays balanced; checked at every accepted integrator step (default tolerances)."""
    obj = DMFObjective(synthetic_completion((20, 20), 2, 120, seed=0), "mse")
    fs, _ = init_dmf((20, 20), 3, init="gaussian", init_scale=0.1, seeds=[0], balance=True)
    res = train(
        fs,
        obj,
        Flow(),
        Stop(loss_below=1e-4, max_steps=5000),
        Schedule(accepted=True),
        {"gap": lambda ps: metrics.balancedness_gap(ps, relative=True)},
    )
    tr = res.run_trajectory(0)
    assert res.status == ["converged"]
    assert tr.values["loss"][0] > 1e3 * tr.values["loss"][-1]  # the factors really moved
    assert len(tr.time) > 20
    gap = tr.values["gap"]
    assert gap[0] < 1e-12
    assert gap.max() < 1e-6


def _balance_differences(ps: list[torch.Tensor]) -> torch.Tensor:
    """(B, N-1, d, d): W_{j+1}^T W_{j+1} - W_j W_j^T for square hidden layers."""
    return torch.stack([ps[j + 1].mT @ ps[j + 1] - ps[j] @ ps[j].mT for j in range(len(ps) - 1)], 1)


def test_balance_differences_constant_from_unbalanced_init():
    obj = DMFObjective(synthetic_completion((20, 20), 2, 120, seed=0), "mse")
    fs, _ = init_dmf((20, 20), 3, init="normal", init_scale=0.3, seeds=[0])
    res = train(
        fs,
        obj,
        Flow(),
        Stop(loss_below=1e-4, max_steps=5000),
        Schedule(accepted=True),
        {"D": _balance_differences},
    )
    tr = res.run_trajectory(0)
    assert res.status == ["converged"] and len(tr.time) > 10
    D = tr.values["D"]
    D0 = np.linalg.norm(D[0])
    assert metrics.balancedness_gap(fs, relative=True)[0] > 0.5  # far from balanced
    drift = np.linalg.norm((D - D[:1]).reshape(len(D), -1), axis=1)
    assert drift.max() < 1e-6 * D0


# --------------------------------------------------------------------------- GD -> flow


def test_gd_converges_to_the_flow_with_order_one():
    """Forward Euler (GD) has global error O(lr): at lr, lr/2, lr/4 the distance to the flow at
    time T halves; the flow itself is integrated with DOP853 at rtol 1e-12 (error ~1e-11)."""
    obj = DMFObjective(synthetic_completion((5, 4), 2, 12, seed=0), "half_sse")
    fs, _ = init_dmf((5, 4), 3, init="normal", init_scale=0.5, width=3, seeds=[0])
    T = 1.0
    flow = train(fs, obj, Flow(method="DOP853", rtol=1e-12, atol=1e-14), Stop(max_time=T))
    assert flow.status == ["max_time"] and flow.time[0] == T
    assert flow.final_loss[0] < 0.05 * float(obj(fs)[0])  # far from the start
    theta = _flat(flow.params)
    lrs = [0.02, 0.01, 0.005]
    errs = []
    for lr in lrs:
        gd = train(fs, obj, GD(lr), Stop(max_steps=round(T / lr)))
        assert gd.time[0] == pytest.approx(T)
        errs.append(float((_flat(gd.params) - theta).norm()))
    slope = np.polyfit(np.log(lrs), np.log(errs), 1)[0]
    assert 0.8 < slope < 1.2, (errs, slope)
    assert min(errs) > 1e3 * 1e-11  # GD's error dominates the flow's own


# --------------------------------------------------------------------------- det sign (2x2)


def _det_run(depth: int, balance: bool):
    obj = DMFObjective(razin_2x2(), "half_sse")
    fs, _ = init_dmf(
        (2, 2), depth, init="normal", init_scale=8e-3, seeds=[0, 1, 2], balance=balance, det_sign=1
    )
    probes = {
        "det": lambda ps: metrics.determinant(end_to_end(ps)),
        "fro2": lambda ps: metrics.frobenius_norm(end_to_end(ps)) ** 2,
        "w11": lambda ps: end_to_end(ps)[:, 0, 0],
    }
    res = train(
        fs, obj, Flow(), Stop(loss_below=1e-4, max_steps=100_000), Schedule(accepted=True), probes
    )
    assert res.status == ["converged"] * 3
    return res


def test_det_sign_kept_depth3_balanced():
    """Razin & Cohen 2020: for depth >= 2 gradient flow from balanced init keeps sign(det W); on
    [[?, 1], [1, 0]] (every solution has det -1) from det > 0 the loss can only fall with |w11|
    growing. Depth 3 all the way to loss 1e-4: det > 0 at every accepted step, and |w11| >= the
    bound."""
    res = _det_run(3, balance=True)
    for b in range(3):
        tr = res.run_trajectory(b)
        assert tr.values["det"].min() > 0
        final_w11 = abs(float(tr.values["w11"][-1]))
        assert final_w11 >= theory.w11_lower_bound(float(res.final_loss[b])) > 68


def test_det_sign_kept_depth2_balanced_until_float64_floor():
    """Depth 2, balanced: det W decays exponentially (for seeds 0-2: ~1e-9 at loss 0.5, a few
    1e-12 at loss 0.1) while ||W||_F grows, and falls below what float64 (and the integrator's
    atol on the factors) can resolve; past that floor its sign is numerically meaningless and it
    does flip, near loss 0.02, ending at det ~ -0.86 (approaching a solution, det -1). Depth 3
    has no such floor (det grows to ~1e-7). So: det > 0 at every accepted step until |det|
    first drops below 1e-12 ||W||_F^2, and that floor is reached before the first negative det."""
    res = _det_run(2, balance=True)
    for b in range(3):
        tr = res.run_trajectory(b)
        det, fro2 = tr.values["det"], tr.values["fro2"]
        floor = np.abs(det) <= 1e-12 * fro2
        first_floor = int(np.argmax(floor)) if floor.any() else len(det)
        assert first_floor > 10
        assert det[:first_floor].min() > 0
        if (det < 0).any():
            assert first_floor <= int(np.argmax(det < 0))


def test_det_sign_can_flip_from_unbalanced_init():
    """Without balancedness the sign is not protected: from normal(8e-3) factors with det > 0,
    depth 2, det(W) becomes clearly negative (far above the float64 floor) before loss 1e-4."""
    res = _det_run(2, balance=False)
    for b in range(3):
        tr = res.run_trajectory(b)
        det, fro2 = tr.values["det"], tr.values["fro2"]
        assert det[0] > 0
        assert det.min() < -1e-3 * fro2[np.argmin(det)]
        assert det[-1] < 0


# --------------------------------------------------------------------------- batching, stopping


def test_flow_batched_equals_alone(small):
    """Batched integration takes different step sizes than each run alone, so the results agree
    within the integrator's tolerance (rtol 1e-7): compare at 1e-5 relative."""
    obj, fs = small
    stop = Stop(loss_below=1e-3)
    together = train(fs, obj, Flow(), stop)
    assert together.status == ["converged"] * 3
    for b in range(3):
        alone = train([f[b : b + 1] for f in fs], obj, Flow(), stop)
        assert alone.status == ["converged"]
        assert together.time[b] == pytest.approx(alone.time[0], rel=1e-5)
        th, ta = _flat(together.params, b), _flat(alone.params)
        assert float((th - ta).norm() / ta.norm()) < 1e-5


def test_flow_located_crossing(small):
    obj, fs = small
    res = train(fs, obj, Flow(), Stop(loss_below=1e-3), Schedule(per_decade=5))
    assert len(set(res.time.tolist())) == 3  # each run crosses at its own time
    np.testing.assert_allclose(res.final_loss, 1e-3, rtol=1e-8)
    np.testing.assert_allclose(obj(res.params).numpy(), 1e-3, rtol=1e-8)
    for b in range(3):
        tr = res.run_trajectory(b)
        assert tr.time[-1] == res.time[b]
        assert tr.values["loss"][-1] == pytest.approx(1e-3, rel=1e-8)
        assert (tr.values["loss"][:-1] > 1e-3).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_flow_in_lower_precision(small, dtype):
    """The flow's state is float64 for the integrator, its field and losses in the parameters'
    precision: float32 crosses the threshold as float64 does; bfloat16, which numpy lacks, runs
    (its losses recorded as float32; with rtol 1e-7 its noisy field barely moves it)."""
    obj, fs = small
    low = DMFObjective(obj.problem.to(dtype), "mse")
    res = train([f.to(dtype) for f in fs], low, Flow(), Stop(loss_below=1e-2, max_steps=400))
    assert res.params[0].dtype == dtype
    assert np.isfinite(res.trajectory.values["loss"]).all()
    if dtype == torch.float32:
        assert res.status == ["converged"] * 3
        np.testing.assert_allclose(res.final_loss, 1e-2, rtol=1e-5)
    else:
        assert res.trajectory.values["loss"].dtype == np.float32
        assert res.status == ["max_steps"] * 3


def test_flow_records_exactly_at_points(small):
    obj, fs = small
    points = (0.5, 2.0, 7.25)
    res = train(
        fs,
        obj,
        Flow(),
        Stop(max_time=10.0),
        Schedule(points=points),
        {"W": lambda ps: end_to_end(ps)},
    )
    assert res.status == ["max_time"] * 3 and res.time.tolist() == [10.0] * 3
    assert res.trajectory.time.tolist() == [0.0, *points, 10.0]
    # the state recorded at t = 2 is the flow's state at t = 2 (a separate run stopped there)
    (row,) = np.flatnonzero(res.trajectory.time == 2.0)
    ref = train(fs, obj, Flow(), Stop(max_time=2.0))
    W_ref = end_to_end(ref.params).numpy()
    err = np.abs(res.trajectory.values["W"][row] - W_ref).max() / np.abs(W_ref).max()
    assert err < 1e-5


def test_flow_schedule_accepted_and_per_decade(small):
    obj, fs = small
    res = train(fs, obj, Flow(), Stop(max_time=50.0), Schedule(accepted=True, per_decade=2))
    t = res.trajectory.time
    assert np.all(np.diff(t) > 0)
    assert set(res.info["accepted_t"].tolist()) <= set(t.tolist())
    for p in (1.0, 10**0.5, 10.0, 10**1.5):
        assert np.isclose(t, p, rtol=1e-15).any()


def test_flow_max_steps_and_info(small):
    obj, fs = small
    res = train(fs, obj, Flow(method="RK45"), Stop(max_steps=7))
    assert res.status == ["max_steps"] * 3 and res.steps.tolist() == [7] * 3
    assert res.info["accepted_steps"] == 7 and res.method == "flow:RK45"
    assert res.n_evals == res.info["nfev"] > 7


def test_flow_method_validation():
    assert Flow().resolve(256) == "LSODA" and Flow().resolve(257) == "RK45"
    assert Flow(method="DOP853").resolve(10) == "DOP853"
    with pytest.raises(ValueError, match="unknown flow method 'euler'"):
        Flow(method="euler")
    with pytest.raises(ValueError, match="rtol and atol must be > 0"):
        Flow(rtol=0.0)


# --------------------------------------------------------------------------- failures


class _Barrier:
    """L(x) = (x - 2)^2 per run, x (B, 1), made infinite on 1.5 < x < 1.9 while its gradient
    stays (x - 2)^2's: the field is finite everywhere, the loss is not."""

    def __call__(self, ps):
        (x,) = ps
        x = x[:, 0]
        wall = torch.where((x > 1.5) & (x < 1.9), math.inf, 0.0).to(x.dtype)
        return (x - 2) ** 2 + wall


def test_flow_run_whose_loss_turns_infinite_ends_diverged_at_its_last_finite_state():
    """Run 0 (from 0) flows into the band where its loss is infinite: it ends "diverged" at the
    last accepted state before, with that state's finite loss, and is frozen there. Run 1 (from
    3) never meets the band and converges by itself."""
    x0 = torch.tensor([[0.0], [3.0]], dtype=torch.float64)
    res = train([x0], _Barrier(), Flow(method="RK45"), Stop(loss_below=1e-6))
    assert res.status == ["diverged", "converged"]
    x = res.params[0][:, 0]
    assert 0.0 < float(x[0]) <= 1.5  # the last finite state, before the band
    assert res.final_loss[0] == pytest.approx((float(x[0]) - 2) ** 2, rel=1e-12)
    assert res.time[0] < res.time[1]
    assert float(x[1]) == pytest.approx(2.0, abs=1.1e-3)  # (x - 2)^2 = 1e-6
    tr = res.run_trajectory(0)
    assert np.isfinite(tr.values["loss"]).all() and tr.time[-1] == res.time[0]


class _BlowUp:
    """L(x) = -x^4 / 4: the flow dx/dt = x^3 reaches infinity at t* = 1 / (2 x0^2)."""

    def __call__(self, ps):
        return -(ps[0][:, 0] ** 4) / 4


def test_flow_integrator_failure_keeps_the_last_finite_state_and_says_why():
    """RK45 cannot pass the blow-up at t* = 0.5 (x0 = 1): its step shrinks to the spacing of
    floats and it stops with a message. Every run then ends "failed" (the loss is finite and
    below ``diverge_above``) at the last accepted state, which is finite, and ``info`` keeps the
    integrator's message. Run 1 sits at the fixed point 0 and keeps it."""
    x0 = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    res = train([x0], _BlowUp(), Flow(method="RK45"), Stop(max_time=1.0, diverge_above=1e300))
    assert res.status == ["failed", "failed"]
    assert "step size" in res.info["failure"]
    assert res.time.tolist() == [res.time[0]] * 2
    assert res.time[0] == pytest.approx(0.5, rel=1e-6)  # the numerical blow-up, near t*
    x = res.params[0][:, 0]
    assert math.isfinite(float(x[0])) and float(x[0]) > 100  # far along the blow-up
    assert float(x[1]) == 0.0
    tr = res.run_trajectory(0)
    assert tr.time[-1] == res.time[0] and tr.values["loss"][-1] == pytest.approx(-(x[0] ** 4) / 4)
