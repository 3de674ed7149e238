"""Checks of the CP theory helpers (factorflow.tensor_theory) against gradient-flow runs."""

from __future__ import annotations

import math

import pytest
import torch

from factorflow.dynamics import Flow, Schedule, Stop, train
from factorflow.factorizations.cp import balance_components, component_norms, init_cp
from factorflow.objectives import CPObjective
from factorflow.problems.tensor import low_rank_tensor, tensor_completion
from factorflow.tensor_theory import (
    component_norm_rates,
    component_rate_error,
    is_rank_one_solution,
    max_component_rate_error,
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
    measured, predicted = component_norm_rates(obj, f)
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
    errors = [component_rate_error(obj, s) for s in states]
    assert all(math.isfinite(e) for e in errors)
    assert max(errors) < 1e-8, max(errors)


def test_rate_identity_fails_from_unbalanced_init():
    _, obj = _problem()
    f = init_cp(DIMS, 4, 1e-2, batch=2, generator=torch.Generator().manual_seed(1))
    measured, predicted = component_norm_rates(obj, f)
    assert max_component_rate_error(measured, predicted) > 0.1
    # balancing the same tensor restores it
    m2, p2 = component_norm_rates(obj, balance_components(f))
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


def test_small_init_reaches_rank_one_solution():
    """Razin, Maman & Cohen 2021: a completion problem with a rank-1 solution, small init."""
    target, obj = _problem(n_obs=30, seed=0)
    R = 16  # product of all dims but the largest
    f = init_cp(DIMS, R, 1e-3, batch=2, generator=torch.Generator().manual_seed(2))
    res = train(f, obj, Flow(), Stop(loss_below=1e-10, max_steps=20000), Schedule())
    assert res.status == ["converged", "converged"]
    check = is_rank_one_solution(obj, res.params, loss_tol=1e-9)
    assert check.holds == [True, True], check
    assert max(check.norm_ratio) < 1e-2
    assert check.estimated_rank == [1, 1]
    # ... and that solution is the rank-1 target (30 of 64 entries determine it)
    from factorflow.factorizations.cp import cp_to_tensor

    err = torch.linalg.vector_norm((cp_to_tensor(res.params) - target).flatten(1), dim=1)
    assert float(err.max()) < 1e-2


def test_rank_one_check_rejects_rank_three_fit():
    g = torch.Generator().manual_seed(3)
    _, factors = low_rank_tensor(DIMS, 3, generator=g)
    obs_target, obj = _problem()
    f = [x[None] for x in factors]
    check = is_rank_one_solution(obj, f, loss_tol=math.inf)
    assert check.holds == [False]
    assert check.estimated_rank[0] > 1
