"""Tests for the named losses and the DMF objective: values by hand, and the hand-written
gradients (LOSS_GRADS, DMFObjective.grad_W / value_and_grad) against autograd and finite
differences (torch.autograd.gradcheck), float64."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from factorflow.dynamics import gradient
from factorflow.factorizations.dmf import end_to_end, init_dmf
from factorflow.losses import LOSS_GRADS, LOSSES, get_loss, half_sse, mse
from factorflow.objectives import DMFObjective
from factorflow.problems.matrix import gaussian_sensing, synthetic_completion

DT = torch.float64
FAST = settings(max_examples=20, deadline=None)


def _problem(kind: str, shape: tuple[int, int], n_obs: int, seed: int = 0):
    if kind == "completion":
        return synthetic_completion(shape, 1, n_obs, seed)
    return gaussian_sensing(shape, 1, n_obs, seed, std=1.0)


def _factors(shape, depth, width, seeds):
    fs, _ = init_dmf(shape, depth, init="normal", init_scale=0.7, seeds=seeds, width=width)
    return fs


def _autograd(obj: DMFObjective, fs: list[torch.Tensor]):
    ps = [f.detach().clone().requires_grad_(True) for f in fs]
    losses = obj(ps)
    return losses.detach(), torch.autograd.grad(losses.sum(), ps)


class _HandGrad(torch.autograd.Function):
    """Losses (B,) whose backward is the objective's hand-written value_and_grad, so gradcheck
    compares that gradient with finite differences."""

    @staticmethod
    def forward(ctx, obj, *fs):
        losses, grads = obj.value_and_grad(list(fs))
        ctx.save_for_backward(*grads)
        return losses

    @staticmethod
    def backward(ctx, gout):
        return (None, *[g * gout.reshape(-1, 1, 1) for g in ctx.saved_tensors])


# --------------------------------------------------------------------------- losses


def test_loss_values_by_hand():
    r = torch.tensor([[1.0, -2.0, 3.0], [0.0, 0.5, 0.0]], dtype=DT)
    torch.testing.assert_close(mse(r), torch.tensor([14 / 3, 0.25 / 3], dtype=DT))
    torch.testing.assert_close(half_sse(r), torch.tensor([7.0, 0.125], dtype=DT))
    assert get_loss("mse") is mse and get_loss("half_sse") is half_sse
    assert set(LOSSES) == set(LOSS_GRADS) == {"mse", "half_sse"}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("m", [1, 7])
def test_loss_grads_match_autograd(name, m):
    r = torch.randn(3, m, generator=torch.Generator().manual_seed(m), dtype=DT)
    r.requires_grad_(True)
    (auto,) = torch.autograd.grad(LOSSES[name](r).sum(), r)
    torch.testing.assert_close(LOSS_GRADS[name](r.detach()), auto, rtol=1e-14, atol=1e-15)


def test_unknown_loss_is_an_error():
    with pytest.raises(ValueError, match=r"unknown loss 'l2'; choose one of \['half_sse', 'mse'\]"):
        get_loss("l2")
    with pytest.raises(ValueError, match="unknown loss"):
        DMFObjective(synthetic_completion((3, 3), 1, 4, 0), "l2")


# --------------------------------------------------------------------------- objective gradients


@pytest.mark.parametrize("kind", ["completion", "sensing"])
@pytest.mark.parametrize("loss", ["mse", "half_sse"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("seeds", [[0], [0, 1, 2]])
def test_value_and_grad_matches_autograd(kind, loss, depth, seeds):
    shape = (5, 3)  # non-square, hidden widths differing from both sides
    obj = DMFObjective(_problem(kind, shape, 9), loss)
    fs = _factors(shape, depth, [4, 6, 2][: depth - 1], seeds)
    losses, grads = obj.value_and_grad(fs)
    auto_l, auto_g = _autograd(obj, fs)
    assert losses.shape == (len(seeds),)
    torch.testing.assert_close(losses, auto_l, rtol=1e-14, atol=0)
    for g, a, f in zip(grads, auto_g, fs, strict=True):
        assert g.shape == f.shape
        torch.testing.assert_close(g, a, rtol=1e-12, atol=1e-13)


@FAST
@given(
    kind=st.sampled_from(["completion", "sensing"]),
    loss=st.sampled_from(["mse", "half_sse"]),
    d1=st.integers(1, 6),
    d2=st.integers(1, 6),
    hidden=st.lists(st.integers(1, 6), min_size=0, max_size=3),
    B=st.sampled_from([1, 3]),
    seed=st.integers(0, 1000),
)
def test_value_and_grad_random_shapes(kind, loss, d1, d2, hidden, B, seed):
    n_obs = 1 + seed % (d1 * d2)
    obj = DMFObjective(_problem(kind, (d1, d2), n_obs, seed), loss)
    fs = _factors((d1, d2), len(hidden) + 1, hidden or None, list(range(seed, seed + B)))
    losses, grads = obj.value_and_grad(fs)
    auto_l, auto_g = _autograd(obj, fs)
    torch.testing.assert_close(losses, auto_l, rtol=1e-14, atol=0)
    for g, a in zip(grads, auto_g, strict=True):
        torch.testing.assert_close(g, a, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", ["completion", "sensing"])
@pytest.mark.parametrize("loss", ["mse", "half_sse"])
@pytest.mark.parametrize("depth", [1, 3])
def test_gradcheck_finite_differences(kind, loss, depth):
    """torch.autograd.gradcheck on the callable (autograd vs finite differences) and on the
    hand-written value_and_grad (hand gradient vs finite differences), B = 2 runs."""
    shape = (3, 2)
    obj = DMFObjective(_problem(kind, shape, 4), loss)
    fs = tuple(f.requires_grad_(True) for f in _factors(shape, depth, 3, [0, 1]))
    assert torch.autograd.gradcheck(lambda *f: obj(list(f)), fs)
    assert torch.autograd.gradcheck(lambda *f: _HandGrad.apply(obj, *f), fs)


@pytest.mark.parametrize("kind", ["completion", "sensing"])
@pytest.mark.parametrize("loss", ["mse", "half_sse"])
def test_grad_W_matches_autograd(kind, loss):
    obj = DMFObjective(_problem(kind, (4, 6), 10), loss)
    W = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(1), dtype=DT)
    losses, G = obj.grad_W(W)
    Wr = W.clone().requires_grad_(True)
    auto_l = get_loss(loss)(obj.problem.residuals(Wr))
    (auto_G,) = torch.autograd.grad(auto_l.sum(), Wr)
    torch.testing.assert_close(losses, auto_l.detach(), rtol=1e-14, atol=0)
    torch.testing.assert_close(G, auto_G, rtol=1e-13, atol=1e-14)


def test_objective_value_is_the_named_loss_of_the_residuals():
    prob = synthetic_completion((4, 4), 2, 8, 0)
    fs = _factors((4, 4), 2, None, [0, 1])
    r = prob.residuals(end_to_end(fs))
    torch.testing.assert_close(DMFObjective(prob, "mse")(fs), (r**2).mean(dim=1))
    torch.testing.assert_close(DMFObjective(prob, "half_sse")(fs), 0.5 * (r**2).sum(dim=1))


def test_training_gradient_uses_autograd_for_plain_callables():
    """dynamics.gradient: value_and_grad when present, autograd otherwise (same numbers)."""
    obj = DMFObjective(synthetic_completion((4, 3), 1, 6, 0), "mse")
    fs = _factors((4, 3), 3, 2, [0, 1])
    l1, g1 = gradient(obj, fs)
    l2, g2 = gradient(lambda ps: obj(ps), fs)
    torch.testing.assert_close(l1, l2, rtol=1e-14, atol=0)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
