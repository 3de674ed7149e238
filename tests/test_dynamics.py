"""Tests for the discrete training loop (factorflow.dynamics): each optimizer's update rule by
hand or against torch.optim, batching (B runs together == each alone), per-run stopping and
freezing, budgets, recording schedules, and divergence handling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from factorflow.dynamics import (
    GD,
    OPTIMIZERS,
    Adam,
    GroupRMSProp,
    Schedule,
    Stop,
    make_optimizer,
    train,
)
from factorflow.factorizations.dmf import end_to_end, init_dmf
from factorflow.objectives import DMFObjective
from factorflow.problems.matrix import synthetic_completion

DT = torch.float64


@pytest.fixture(scope="module")
def objective() -> DMFObjective:
    return DMFObjective(synthetic_completion((8, 6), 2, 30, seed=0), "mse")


def _init(scales, seeds=None, depth=2):
    seeds = list(range(len(scales))) if seeds is None else seeds
    fs, _ = init_dmf((8, 6), depth, init="normal", init_scale=scales, seeds=seeds)
    return fs


def _run(fs, b):
    return [f[b : b + 1] for f in fs]


def _assert_params_equal(a, b, rtol=1e-12, atol=1e-14):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------- update rules


def test_gd_matches_hand_update(objective):
    fs = _init([0.3, 0.5])
    res = train(fs, objective, GD(0.05), Stop(max_steps=3))
    ps = [f.clone() for f in fs]
    for _ in range(3):
        _, grads = objective.value_and_grad(ps)
        ps = [p - 0.05 * g for p, g in zip(ps, grads, strict=True)]
    _assert_params_equal(res.params, ps, rtol=0, atol=0)
    assert res.status == ["max_steps"] * 2 and res.steps.tolist() == [3, 3]
    assert res.method == "gd" and res.n_evals == 4


def test_group_rmsprop_update_rule_by_hand():
    """Three steps on l_b = 1/2 ||theta_b - c||^2 (gradient theta_b - c), two runs, worked out
    with plain floats: v = beta v + (1 - beta) sum g^2 over ALL entries of a run, bias
    correction 1 - beta^t, step lr g / (sqrt(v_hat) + eps)."""
    lr, beta, eps = 0.1, 0.9, 1e-3
    start = [[[1.0, -2.0], [0.5]], [[3.0, 0.0], [-4.0]]]  # run b: two parameter tensors
    target = [[0.5, 0.5], [1.0]]
    params = [
        torch.tensor([r[0] for r in start], dtype=DT),
        torch.tensor([r[1] for r in start], dtype=DT),
    ]
    c = [torch.tensor(t, dtype=DT) for t in target]

    def loss(ps):
        return 0.5 * sum(((p - t) ** 2).sum(dim=1) for p, t in zip(ps, c, strict=True))

    res = train(params, loss, GroupRMSProp(lr, beta=beta, eps=eps), Stop(max_steps=3))
    for b in range(2):
        theta = [list(start[b][0]), list(start[b][1])]
        v = 0.0
        for t in range(1, 4):
            g = [
                [x - y for x, y in zip(th, tg, strict=True)]
                for th, tg in zip(theta, target, strict=True)
            ]
            v = beta * v + (1 - beta) * sum(x * x for gi in g for x in gi)
            denom = math.sqrt(v / (1 - beta**t)) + eps
            theta = [
                [x - lr * gx / denom for x, gx in zip(th, gi, strict=True)]
                for th, gi in zip(theta, g, strict=True)
            ]
        for j in range(2):
            np.testing.assert_allclose(res.params[j][b].numpy(), theta[j], rtol=1e-14, atol=0)


def test_adam_matches_torch_optim_adam(objective):
    fs = _init([0.3, 0.6])
    res = train(fs, objective, Adam(0.01), Stop(max_steps=20))
    ps = [f.clone().requires_grad_(True) for f in fs]
    opt = torch.optim.Adam(ps, lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(20):
        opt.zero_grad()
        objective(ps).sum().backward()
        opt.step()
    _assert_params_equal(res.params, [p.detach() for p in ps], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_batched_runs_equal_runs_alone(objective, name):
    """Per-run state: B runs trained together end where each ends alone (for group_rmsprop the
    scalar second moment must be per run: the runs' gradient norms differ by orders)."""
    lr = {"gd": 0.2, "group_rmsprop": 1e-2, "adam": 1e-2}[name]
    opt = make_optimizer(name, lr=lr)
    fs = _init([0.05, 0.4, 1.0])
    stop = Stop(max_steps=60, loss_below=0.05)
    together = train(fs, objective, opt, stop)
    for b in range(3):
        alone = train(_run(fs, b), objective, opt, stop)
        assert together.status[b] == alone.status[0]
        assert together.steps[b] == alone.steps[0]
        assert math.isclose(together.final_loss[b], alone.final_loss[0], rel_tol=1e-12)
        _assert_params_equal([p[b : b + 1] for p in together.params], alone.params)


# --------------------------------------------------------------------------- stopping


def test_loss_threshold_per_run_and_frozen_runs(objective):
    fs = _init([0.1, 0.5, 1.0, 1e-3], seeds=[0, 1, 2, 3])
    stop = Stop(loss_below=1e-3, max_steps=80)
    probes = {"W": lambda ps: end_to_end(ps)}
    res = train(fs, objective, GD(1.0), stop, Schedule(every=1), probes)
    assert res.status[:3] == ["converged"] * 3 and res.status[3] == "max_steps"
    assert len(set(res.steps[:3].tolist())) == 3  # they stop at different steps
    assert (res.final_loss[:3] <= 1e-3).all() and res.final_loss[3] > 1e-3
    torch.testing.assert_close(
        objective(res.params), torch.as_tensor(res.final_loss), rtol=1e-13, atol=0
    )
    tr = res.trajectory
    for b in range(4):
        alone = train(_run(fs, b), objective, GD(1.0), stop)
        assert res.steps[b] == alone.steps[0] and res.status[b] == alone.status[0]
        _assert_params_equal([p[b : b + 1] for p in res.params], alone.params)
        # the run's loss was above the threshold one step before it stopped
        own = res.run_trajectory(b)
        assert own.step[-1] == res.steps[b]
        if res.status[b] == "converged":
            assert own.values["loss"][-2] > 1e-3
        # after its end a run is frozen: recorded rows of the batch do not move
        after = tr.step >= res.steps[b]
        W_after = tr.values["W"][after, b]
        assert np.array_equal(W_after, np.broadcast_to(W_after[0], W_after.shape))
        np.testing.assert_array_equal(tr.values["loss"][after, b], res.final_loss[b])


def test_max_steps(objective):
    res = train(_init([0.3]), objective, GD(0.01), Stop(max_steps=17))
    assert res.status == ["max_steps"] and res.steps.tolist() == [17]
    assert res.n_evals == 18 and res.time[0] == pytest.approx(0.17)


@pytest.mark.parametrize(("lr", "max_time", "steps"), [(0.01, 0.5, 50), (0.1, 0.3, 3)])
def test_gd_max_time_is_steps_times_lr(objective, lr, max_time, steps):
    res = train(_init([0.3]), objective, GD(lr), Stop(max_time=max_time), Schedule(every=1))
    assert res.status == ["max_time"] and res.steps.tolist() == [steps]
    assert res.time[0] == pytest.approx(max_time, rel=1e-12)
    np.testing.assert_allclose(res.trajectory.time, res.trajectory.step * lr, rtol=1e-15)


def test_max_time_counts_steps_for_adaptive_optimizers(objective):
    res = train(_init([0.3]), objective, Adam(1e-3), Stop(max_time=12))
    assert res.status == ["max_time"] and res.steps.tolist() == [12]


def test_stop_validation():
    with pytest.raises(ValueError, match="at least one of"):
        Stop()
    for key in ("loss_below", "max_steps", "max_time", "max_evals", "max_wall_s"):
        with pytest.raises(ValueError, match=f"stop.{key} must be > 0"):
            Stop(**{key: 0})


# --------------------------------------------------------------------------- recording


def test_schedule_every(objective):
    res = train(_init([0.3, 0.5]), objective, GD(0.01), Stop(max_steps=23), Schedule(every=5))
    assert res.trajectory.step.tolist() == [0, 5, 10, 15, 20, 23]
    assert res.trajectory.values["loss"].shape == (6, 2)


def test_schedule_per_decade_integer_steps_unique(objective):
    res = train(_init([0.3]), objective, GD(1e-3), Stop(max_steps=1000), Schedule(per_decade=10))
    steps = res.trajectory.step
    assert np.all(np.diff(steps) > 0)
    assert np.array_equal(steps, np.round(steps))
    expected = sorted({0, *(round(10 ** (k / 10)) for k in range(31))})
    assert steps.tolist() == expected


def test_schedule_points_and_probe_shapes(objective):
    probes = {
        "W": lambda ps: end_to_end(ps),
        "norm": lambda ps: end_to_end(ps).flatten(1).norm(dim=1),
    }
    res = train(
        _init([0.3, 0.5]),
        objective,
        GD(0.01),
        Stop(max_steps=30),
        Schedule(points=(7, 3, 12)),
        probes,
    )
    assert res.trajectory.step.tolist() == [0, 3, 7, 12, 30]
    assert res.trajectory.values["W"].shape == (5, 2, 8, 6)
    assert res.trajectory.values["norm"].shape == (5, 2)
    np.testing.assert_allclose(
        res.trajectory.values["W"][-1], end_to_end(res.params).numpy(), rtol=0, atol=0
    )


def test_schedule_next_point():
    s = Schedule(every=2.5, per_decade=2, start=1.0, points=(4.0, 0.5))
    assert s.points == (0.5, 4.0)
    assert s.next_point(0.0) == 0.5
    assert s.next_point(0.5) == 1.0
    assert s.next_point(1.0) == 2.5
    assert s.next_point(2.5) == pytest.approx(10**0.5)
    assert s.next_point(3.2) == 4.0
    assert Schedule(every=3).next_point(6.0) == 9.0
    assert Schedule(points=(1.0,)).next_point(1.0) == math.inf
    for kw in ({"every": 0}, {"per_decade": 0}, {"start": 0.0}):
        with pytest.raises(ValueError):
            Schedule(**kw)


# --------------------------------------------------------------------------- bad input


def test_diverging_learning_rate(objective):
    """lr 10: both runs blow up; no exception, status 'diverged', the params are the last finite
    state (their loss is final_loss), and the trajectory up to there is kept."""
    fs = _init([0.3, 0.3], seeds=[0, 1])
    res = train(fs, objective, GD(10.0), Stop(max_steps=1000), Schedule(every=1))
    assert res.status == ["diverged", "diverged"]
    assert all(bool(torch.isfinite(p).all()) for p in res.params)
    assert np.isfinite(res.final_loss).all() and (res.final_loss <= 1e12).all()
    torch.testing.assert_close(
        objective(res.params), torch.as_tensor(res.final_loss), rtol=1e-13, atol=0
    )
    for b in range(2):
        own = res.run_trajectory(b)
        assert own.step.tolist() == list(range(res.steps[b] + 1)) and res.steps[b] >= 1
        assert np.isfinite(own.values["loss"]).all()
        assert own.values["loss"][-1] == res.final_loss[b]
        assert own.values["loss"][-1] > 10 * own.values["loss"][0]


def test_one_run_diverging_leaves_the_others_alone(objective):
    fs = _init([0.1, 2.0])
    stop = Stop(loss_below=1e-6, max_steps=400)
    res = train(fs, objective, GD(1.0), stop)
    assert res.status == ["converged", "diverged"]
    alone = train(_run(fs, 0), objective, GD(1.0), stop)
    assert res.steps[0] == alone.steps[0]
    _assert_params_equal([p[:1] for p in res.params], alone.params)


def test_divergence_does_not_mislabel_the_other_runs_rows(objective):
    """Run 1 diverges (loss > 1e12 at step 3); run 0's recorded rows must be its states at the
    recorded steps, as in its run alone."""
    fs = _init([0.1, 2.0])
    res = train(fs, objective, GD(1.0), Stop(max_steps=40), Schedule(every=10))
    assert res.status == ["max_steps", "diverged"]
    alone = train(_run(fs, 0), objective, GD(1.0), Stop(max_steps=40), Schedule(every=1))
    solo_loss = dict(
        zip(alone.trajectory.step.tolist(), alone.trajectory.values["loss"][:, 0], strict=True)
    )
    for step, loss in zip(
        res.trajectory.step.tolist(), res.trajectory.values["loss"][:, 0], strict=True
    ):
        assert loss == pytest.approx(solo_loss[step], rel=1e-12), step


def test_unknown_optimizer_and_bad_lr():
    with pytest.raises(ValueError, match=r"unknown optimizer 'sgd'; choose one of \["):
        make_optimizer("sgd", lr=0.1)
    for lr in (0.0, -1.0):
        with pytest.raises(ValueError, match="learning rate must be > 0"):
            make_optimizer("gd", lr=lr)
    assert make_optimizer("group_rmsprop", lr=0.1, beta=0.9) == GroupRMSProp(0.1, beta=0.9)
