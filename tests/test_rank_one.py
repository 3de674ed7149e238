"""The rank-1 solution check (factorflow.baselines.rank_one) on gradient-flow fits."""

from __future__ import annotations

import math

import pytest
import torch

from factorflow.baselines.rank_one import is_rank_one_solution
from factorflow.dynamics import Flow, Schedule, Stop, train
from factorflow.factorizations.cp import init_cp
from factorflow.objectives import CPObjective
from factorflow.problems.tensor import low_rank_tensor, tensor_completion


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


DIMS = (4, 4, 4)


def _problem(n_obs: int = 30, rank: int = 1, seed: int = 0) -> tuple[torch.Tensor, CPObjective]:
    g = torch.Generator().manual_seed(seed)
    target, _ = low_rank_tensor(DIMS, rank, generator=g)
    return target, CPObjective(tensor_completion(target, n_obs, g), "mse")


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
