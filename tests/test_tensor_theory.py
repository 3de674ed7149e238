"""Checks of the CP theory helpers (factorflow.tensor_theory) against gradient-flow runs, and of
the incremental-learning measurements (leave times, separation) on hand-made records."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from factorflow.dynamics import Flow, Schedule, Stop, gradient, train
from factorflow.factorizations.cp import balance_components, component_norms, init_cp
from factorflow.objectives import CPObjective
from factorflow.problems.tensor import low_rank_tensor, tensor_completion
from factorflow.tensor_theory import (
    component_norm_rates,
    component_rate_error,
    leave_times,
    max_component_rate_error,
    min_relative_gap,
    separated,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """These problems are tiny: one intra-op thread is fastest (and far faster under load)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


DIMS = (4, 4, 4)


def _problem(n_obs: int = 30, rank: int = 1, seed: int = 0) -> tuple[torch.Tensor, CPObjective]:
    g = torch.Generator().manual_seed(seed)
    target, _ = low_rank_tensor(DIMS, rank, generator=g)
    return target, CPObjective(tensor_completion(target, n_obs, g), "mse")


def _rates(obj: CPObjective, factors):
    """The objective's gradients handed to the theory (which imports no objective)."""
    _, grads = gradient(obj, factors)
    _, g_obs = obj.grad_at_obs(factors)
    return component_norm_rates(factors, grads, obj.obs.indices, g_obs)


def _rate_error(obj: CPObjective, factors) -> float:
    _, grads = gradient(obj, factors)
    _, g_obs = obj.grad_at_obs(factors)
    return max(component_rate_error(factors, grads, obj.obs.indices, g_obs))


def _flow_states(objective: CPObjective, factors: list[torch.Tensor], stop: Stop):
    """Every accepted integrator state of a flow run (the factors stored by probes)."""
    probes = {f"f{n}": (lambda p, n=n: p[n].clone()) for n in range(len(factors))}
    res = train(factors, objective, Flow(), stop, Schedule(accepted=True), probes)
    tr = res.trajectory
    states = [
        [torch.as_tensor(tr.values[f"f{n}"][k]) for n in range(len(factors))]
        for k in range(len(tr.step))
    ]
    return res, states


def test_rates_match_autograd_at_one_balanced_state():
    _, obj = _problem()
    f = init_cp(DIMS, 5, 0.3, batch=3, generator=torch.Generator().manual_seed(1), balanced=True)
    measured, predicted = _rates(obj, f)
    assert measured.shape == predicted.shape == (3, 5)
    assert max_component_rate_error(measured, predicted) < 1e-10
    # the measured rate equals a finite difference of c_r along a tiny gradient step
    ps = [x.clone().requires_grad_(True) for x in f]
    grads = torch.autograd.grad(obj(ps).sum(), ps)
    h = 1e-7
    plus = component_norms([x - h * g for x, g in zip(f, grads, strict=True)])
    minus = component_norms([x + h * g for x, g in zip(f, grads, strict=True)])
    fd = (plus - minus) / (2 * h)
    torch.testing.assert_close(fd, measured, rtol=1e-6, atol=1e-12)


def test_rate_identity_holds_along_flow_from_balanced_init():
    """Balancedness is conserved by gradient flow, so the Theorem-1 identity stays exact."""
    _, obj = _problem()
    f = init_cp(DIMS, 4, 1e-2, batch=2, generator=torch.Generator().manual_seed(1), balanced=True)
    res, states = _flow_states(obj, f, Stop(loss_below=1e-8, max_steps=5000))
    assert res.status == ["converged", "converged"]
    assert len(states) > 50
    errors = [_rate_error(obj, s) for s in states]
    assert all(math.isfinite(e) for e in errors)
    assert max(errors) < 1e-8, max(errors)


def test_rate_identity_fails_from_unbalanced_init():
    _, obj = _problem()
    f = init_cp(DIMS, 4, 1e-2, batch=2, generator=torch.Generator().manual_seed(1))
    measured, predicted = _rates(obj, f)
    assert max_component_rate_error(measured, predicted) > 0.1
    # balancing the same tensor restores it
    m2, p2 = _rates(obj, balance_components(f))
    assert max_component_rate_error(m2, p2) < 1e-10


def test_rate_error_guards_zero_over_zero():
    measured = torch.tensor([[1.0, 1e-30, 0.0], [0.0, 0.0, 0.0]])
    predicted = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert max_component_rate_error(measured, predicted) == 0.0  # only the first entry counts
    assert math.isnan(max_component_rate_error(torch.zeros(2, 3), torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="same shape"):
        max_component_rate_error(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="rel_floor"):
        max_component_rate_error(measured, predicted, rel_floor=1.0)


def test_rates_need_one_gradient_per_factor():
    _, obj = _problem()
    f = init_cp(DIMS, 3, 0.3, generator=torch.Generator().manual_seed(1))
    _, g_obs = obj.grad_at_obs(f)
    with pytest.raises(ValueError, match="one gradient per factor"):
        component_norm_rates(f, [torch.zeros_like(f[0])], obj.obs.indices, g_obs)


def test_leave_times_and_separation():
    # two components: 0 rises at t = 2, 1 at t = 4; the top 2 recorded at every time
    t = np.arange(6, dtype=float)
    c0 = np.array([0.0, 0.1, 0.6, 1.0, 1.0, 1.0])
    c1 = np.array([0.0, 0.0, 0.1, 0.2, 0.5, 0.5])
    top_c = np.stack([c0, c1], 1)
    top_idx = np.tile([0, 1], (6, 1))
    final = np.array([1.0, 0.5, 0.0])
    assert leave_times(t, top_c, top_idx, final, 2, 0.5) == [2.0, 4.0]
    # a component never recorded among the top ones has no leave time
    assert leave_times(t, top_c, top_idx, np.array([0.0, 0.5, 1.0]), 2, 0.5) == [None, 4.0]
    assert min_relative_gap([2.0, 4.0]) == pytest.approx(0.5)
    assert separated([2.0, 4.0], 0.05)
    assert not separated([4.0, 4.1], 0.05)
    assert not separated([2.0, None], 0.05)
    assert not separated([3.0], 0.05)
    assert min_relative_gap([0.0, 0.0]) == 0.0
    with pytest.raises(ValueError, match="frac"):
        leave_times(t, top_c, top_idx, final, 2, 0.0)
