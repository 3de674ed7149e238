"""factorflow.dynamics.patience: the authors' patience stop rule, against a brute-force reading of
one long recorded run (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from factorflow.dynamics import GD, Patience, Schedule, Stop, train, train_patience


def quadratic(params):
    """Per-run loss mean(p^2): GD with lr makes p_k = p_0 (1 - 2 lr / d)^k, loss falls
    geometrically, so every check after the first crossing is below too."""
    (p,) = params
    return (p**2).mean(dim=1)


def test_bound_and_first_check():
    rule = Patience(1e-6, check_every=100, n_checks=3)
    assert rule.bound(220) == 500  # checks at 300, 400, 500
    assert rule.bound(300) == 500
    assert rule.bound(0) == 300
    assert rule.first_check(301) == 400


def test_stop_index_needs_consecutive_checks():
    rule = Patience(1.0, check_every=10, n_checks=2)
    steps = [0, 5, 10, 20, 30, 40, 45]
    # below at 10, above at 20, below at 30 and 40 -> the stop is the check at 40 (index 5);
    # step 5 and 45 are not checks and never count
    losses = [9, 0.1, 0.5, 2.0, 0.5, 0.5, 0.1]
    assert rule.stop_index(steps, losses) == 5
    assert rule.stop_index(steps, [9, 0.1, 0.5, 2.0, 0.5, 2.0, 0.1]) is None


def test_train_patience_matches_a_brute_force_reading():
    p0 = [torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]], dtype=torch.float64)]
    rule = Patience(1e-4, check_every=7, n_checks=3, extra_checks=1)
    res = train_patience(p0, quadratic, GD(0.05), rule, max_steps=10_000,
                         probes={"p": lambda ps: ps[0]})  # fmt: skip
    long = train(p0, quadratic, GD(0.05), Stop(max_steps=400), Schedule(every=1),
                 probes={"p": lambda ps: ps[0]})  # fmt: skip
    losses = long.trajectory.values["loss"]
    for b in range(3):
        first = int(np.argmax(losses[:, b] <= 1e-4))
        assert int(res.first.steps[b]) == first and res.first.status[b] == "converged"
        want = rule.bound(first)  # monotone loss: every check from the first one on is below
        assert res.steps[b] == want and res.status[b] == "converged"
        np.testing.assert_allclose(res.values["p"][b], long.trajectory.values["p"][want, b],
                                   rtol=1e-12)  # fmt: skip
        np.testing.assert_allclose(res.loss[b], losses[want, b], rtol=1e-12)
        np.testing.assert_allclose(res.first_values["p"][b], long.trajectory.values["p"][first, b])
        assert res.loss[b] < res.first.final_loss[b]  # the patience steps lower the loss
    assert res.horizon == max(rule.bound(int(s)) for s in res.first.steps) + 7


def test_run_that_never_crosses_keeps_its_pass1_state():
    p0 = [torch.tensor([[1.0], [1.2e-3]], dtype=torch.float64)]
    res = train_patience(p0, quadratic, GD(0.01), Patience(1e-6, check_every=5), max_steps=20,
                         probes={"p": lambda ps: ps[0]})  # fmt: skip
    assert res.first.status == ["max_steps", "converged"]
    assert res.status[0] == "max_steps" and res.steps[0] == 20
    np.testing.assert_allclose(res.values["p"][0], res.first_values["p"][0])
    assert res.status[1] == "converged" and res.steps[1] == Patience(1e-6, 5).bound(
        int(res.first.steps[1])
    )


def test_patience_rejects_bad_rules():
    with pytest.raises(ValueError, match="loss_below"):
        Patience(0.0)
    with pytest.raises(ValueError, match="check_every"):
        Patience(1e-6, check_every=0)
