"""factorflow.objectives.RatingsDMF against DMFObjective on the dense matrix (float64): the same
loss, gradients, singular values and predictions, with the long side as rows, frozen unrated
rows and the end-to-end matrix never formed."""

from __future__ import annotations

import pytest
import torch

from factorflow.factorizations.dmf import end_to_end
from factorflow.metrics import singular_values
from factorflow.objectives import DMFObjective, RatingsDMF
from factorflow.problems.completion import Completion
from factorflow.problems.matrix import MatrixCompletion


def _obs(seed: int, n_users: int = 5, n_items: int = 11, m: int = 20) -> Completion:
    g = torch.Generator().manual_seed(seed)
    cells = torch.randperm(n_users * (n_items - 3), generator=g)[:m]  # the last 3 items unrated
    idx = torch.stack([cells // (n_items - 3), cells % (n_items - 3)], dim=1)
    return Completion((n_users, n_items), idx, torch.randn(m, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("chunk", [7, 1500])
def test_ratings_model_matches_dense_objective(depth, chunk):
    obs = _obs(depth)
    n_users, n_items = obs.shape
    model = RatingsDMF(obs, depth, width=n_users, init_scale=0.3, loss="mse", chunk=chunk)
    assert model.transposed and model.shape == (n_items, n_users)
    g = torch.Generator().manual_seed(10 + depth)
    ps = [p + 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype) for p in model.params0]
    # the same factorization of R (n_users x n_items): reverse and transpose, put rows back
    top = model._top0.clone()[None]
    top[:, model._pos >= 0] = ps[-1][:, model._pos[model._pos >= 0]]
    dense = [f.transpose(1, 2) for f in reversed([*ps[:-1], top])]
    L_ref, g_ref = DMFObjective(MatrixCompletion(obs), "mse").value_and_grad(dense)
    L, grads = model.value_and_grad(ps)
    torch.testing.assert_close(L, L_ref)
    torch.testing.assert_close(model(ps), L_ref)
    g_full_top = g_ref[0].transpose(1, 2)  # gradient w.r.t. the long factor, as model rows
    active = model._pos >= 0
    torch.testing.assert_close(grads[-1], g_full_top[:, active][:, model._pos[active].argsort()])
    assert g_full_top[:, ~active].abs().max() == 0  # unrated rows get no gradient
    for j in range(depth - 1):
        torch.testing.assert_close(grads[j], g_ref[depth - 1 - j].transpose(1, 2))
    W = end_to_end(dense)
    torch.testing.assert_close(model.singular_values(ps, 4), singular_values(W)[:, :4])
    torch.testing.assert_close(model.singular_values(ps, None), singular_values(W))
    u, i = torch.meshgrid(torch.arange(n_users), torch.arange(n_items), indexing="ij")
    torch.testing.assert_close(model.predict(ps, u.reshape(-1), i.reshape(-1)), W.reshape(1, -1))


def test_ratings_model_autograd_and_tall_orientation():
    """A tall matrix keeps its orientation; value_and_grad equals autograd through __call__."""
    wide = _obs(4)
    tall = Completion((wide.shape[1], wide.shape[0]), wide.indices.flip(1), wide.values)
    model = RatingsDMF(tall, 2, width=3, init_scale=0.5, loss="mse")
    assert not model.transposed and model.width == 3
    ps = [p.clone().requires_grad_(True) for p in model.params0]
    auto = torch.autograd.grad(model(ps).sum(), ps)
    _, grads = model.value_and_grad([p.detach() for p in ps])
    for a, b in zip(auto, grads, strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError):
        RatingsDMF(tall, 2, width=3, init_scale=0.5, loss="no-such-loss")
