"""The closed-form CP completion gradient (factorflow.factorizations.cp_grad) against autograd
through cp_predict, in float64: both evaluation paths (dense matricization, gathered Khatri-Rao
tables, whose rows many observations share), orders 1-5, batches, both losses."""

from __future__ import annotations

import pytest
import torch

from factorflow.dynamics.base import gradient
from factorflow.factorizations.cp import init_cp
from factorflow.factorizations.cp_grad import cp_completion_value_and_grads
from factorflow.losses import LOSS_GRADS
from factorflow.objectives import CPObjective
from factorflow.problems.completion import Completion, sample_indices


def _problem(dims, m, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = sample_indices(tuple(dims), m, g)
    values = torch.randn(m, generator=g, dtype=torch.float64)
    return Completion(tuple(dims), idx, values)


def _autograd(obj, factors):
    ps = [f.clone().requires_grad_(True) for f in factors]
    losses = obj(ps)
    return losses.detach(), list(torch.autograd.grad(losses.sum(), ps))


@pytest.mark.parametrize(
    "dims, m, R, path",
    [
        ((10, 10, 10, 10), 2000, 50, "dense"),  # 10^4 entries <= 8 m: the matricization
        ((6, 5, 4), 100, 7, "dense"),
        ((9, 8), 30, 3, "dense"),
        ((12, 11, 10), 60, 5, "gather"),  # 1320 entries > 8 m: Khatri-Rao tables
        ((7, 6, 5, 4, 3), 200, 4, "gather"),
        ((40, 3), 10, 2, "gather"),
        ((7,), 5, 3, "gather"),  # order 1: one group, the gradient unmultiplied
    ],
)
@pytest.mark.parametrize("loss", ["mse", "half_sse"])
def test_value_and_grad_equals_autograd(dims, m, R, path, loss):
    obs = _problem(dims, m)
    total = 1
    for d in dims:
        total *= d
    assert (len(dims) > 1 and total <= 8 * m and total <= m * R) == (path == "dense")
    factors = init_cp(dims, R, 0.7, batch=3, generator=torch.Generator().manual_seed(1))
    obj = CPObjective(obs, loss)
    L, grads = obj.value_and_grad(factors)
    L_ref, grads_ref = _autograd(obj, factors)
    torch.testing.assert_close(L, L_ref, rtol=1e-12, atol=0)
    for g, ref, f in zip(grads, grads_ref, factors, strict=True):
        assert g.shape == f.shape
        torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12 * float(ref.abs().max()))


def test_engine_uses_the_closed_form_and_residuals_match():
    """The training loops' ``gradient`` takes the objective's value_and_grad; its residuals are
    cp_completion_residuals'."""
    obs = _problem((5, 4, 3), 40)
    factors = init_cp((5, 4, 3), 6, 0.5, batch=2, generator=torch.Generator().manual_seed(2))
    obj = CPObjective(obs, "mse")
    L, grads = gradient(obj, factors)
    r, grads2 = cp_completion_value_and_grads(factors, obs, LOSS_GRADS["mse"])
    torch.testing.assert_close(r, obj.residuals(factors), rtol=1e-13, atol=1e-15)
    for a, b in zip(grads, grads2, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_wrong_shapes_are_an_error():
    obs = _problem((5, 4, 3), 40)
    obj = CPObjective(obs, "mse")
    with pytest.raises(ValueError, match="order-3"):
        obj.value_and_grad(init_cp((5, 4), 2, 0.5, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="do not match"):
        obj.value_and_grad(init_cp((5, 4, 4), 2, 0.5, generator=torch.Generator().manual_seed(0)))
