"""Tests for deep matrix factorization (factorflow.factorizations.dmf): the product, the chain
rule through it and the end-to-end velocity against autograd / jvp, and the initializations."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from factorflow import metrics
from factorflow.factorizations.dmf import (
    DMF_INITS,
    balance_factors,
    dmf_factor_gradients,
    end_to_end,
    end_to_end_velocity,
    init_dmf,
    layer_widths,
    partial_products,
)

DT = torch.float64
FAST = settings(max_examples=25, deadline=None)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_factors(dims: list[int], B: int, seed: int = 0) -> list[torch.Tensor]:
    g = _gen(seed)
    return [
        torch.randn(B, dims[j + 1], dims[j], generator=g, dtype=DT) for j in range(len(dims) - 1)
    ]


dims_strategy = st.integers(1, 4).flatmap(
    lambda depth: st.lists(st.integers(1, 5), min_size=depth + 1, max_size=depth + 1)
)


# --------------------------------------------------------------------------- product and calculus


@FAST
@given(dims=dims_strategy, B=st.sampled_from([1, 3]), seed=st.integers(0, 2**16))
def test_end_to_end_is_the_product(dims, B, seed):
    fs = _random_factors(dims, B, seed)
    W = end_to_end(fs)
    assert W.shape == (B, dims[-1], dims[0])
    for b in range(B):
        ref = torch.eye(dims[0], dtype=DT)
        for f in fs:
            ref = f[b] @ ref
        torch.testing.assert_close(W[b], ref, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(W, metrics.end_to_end(fs), rtol=1e-13, atol=1e-13)


@FAST
@given(dims=dims_strategy, B=st.sampled_from([1, 3]), seed=st.integers(0, 2**16))
def test_factor_gradients_match_autograd(dims, B, seed):
    """dL/dW_j = (W_N..W_{j+1})^T G (W_{j-1}..W_1)^T for L = sum_b <W_b, G_b>."""
    fs = [f.requires_grad_(True) for f in _random_factors(dims, B, seed)]
    G = torch.randn(B, dims[-1], dims[0], generator=_gen(seed + 1), dtype=DT)
    auto = torch.autograd.grad((end_to_end(fs) * G).sum(), fs)
    ours = dmf_factor_gradients([f.detach() for f in fs], G)
    assert len(ours) == len(fs)
    for a, o in zip(auto, ours, strict=True):
        assert o.shape == a.shape
        torch.testing.assert_close(o, a, rtol=1e-12, atol=1e-12)
    # the prefixes the objectives pass in: the last is W, bit for bit; the gradients unchanged
    partial = partial_products([f.detach() for f in fs])
    assert len(partial) == len(fs)
    assert torch.equal(partial[-1], end_to_end([f.detach() for f in fs]))
    for j, p in enumerate(partial):
        torch.testing.assert_close(p, end_to_end([f.detach() for f in fs[: j + 1]]))
    again = dmf_factor_gradients([f.detach() for f in fs], G, partial)
    for o, a in zip(ours, again, strict=True):
        assert torch.equal(o, a)


@FAST
@given(dims=dims_strategy, B=st.sampled_from([1, 3]), seed=st.integers(0, 2**16))
def test_end_to_end_velocity_matches_jvp(dims, B, seed):
    """dW/dt = sum_j (W_N..W_{j+1}) dW_j/dt (W_{j-1}..W_1) is the jvp of the product."""
    fs = _random_factors(dims, B, seed)
    vs = _random_factors(dims, B, seed + 7)
    _, jvp = torch.autograd.functional.jvp(lambda *f: end_to_end(f), tuple(fs), tuple(vs))
    torch.testing.assert_close(end_to_end_velocity(fs, vs), jvp, rtol=1e-12, atol=1e-12)


def test_velocity_of_the_gradient_flow_is_minus_the_preconditioned_gradient():
    """Velocity -dL/dW_j for L = <W, G>: end-to-end dW/dt = -sum_j A_j A_j^T G B_j^T B_j."""
    dims = [3, 4, 5, 2]
    fs = _random_factors(dims, 2, seed=3)
    G = torch.randn(2, 2, 3, generator=_gen(9), dtype=DT)
    v = end_to_end_velocity(fs, [-g for g in dmf_factor_gradients(fs, G)])
    W1, W2, W3 = fs
    ref = -(
        (W3 @ W2) @ (W3 @ W2).mT @ G + W3 @ W3.mT @ G @ W1.mT @ W1 + G @ (W2 @ W1).mT @ (W2 @ W1)
    )
    torch.testing.assert_close(v, ref, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- initializations


def test_layer_widths():
    assert layer_widths((5, 3), 1, None) == [3, 5]
    assert layer_widths((5, 3), 3, None) == [3, 5, 5, 5]
    assert layer_widths((5, 3), 3, 2) == [3, 2, 2, 5]
    assert layer_widths((5, 3), 3, [4, 6]) == [3, 4, 6, 5]
    with pytest.raises(ValueError, match="hidden widths"):
        layer_widths((5, 3), 3, [4])
    with pytest.raises(ValueError, match=">= 1"):
        layer_widths((5, 3), 2, 0)


@pytest.mark.parametrize("init", DMF_INITS)
@pytest.mark.parametrize("balance", [False, True])
def test_init_shapes_norms_and_per_run_seeds(init, balance):
    shape, depth, seeds = (4, 3), 3, [5, 6, 7]
    fs, norms = init_dmf(
        shape, depth, init=init, init_scale=0.5, seeds=seeds, width=[4, 5], balance=balance
    )
    assert [tuple(f.shape) for f in fs] == [(3, 4, 3), (3, 5, 4), (3, 4, 5)]
    assert all(f.dtype == DT for f in fs)
    torch.testing.assert_close(norms, torch.linalg.matrix_norm(end_to_end(fs)))
    # a run is the same alone or in a batch (each seed its own generator)
    alone, _ = init_dmf(
        shape, depth, init=init, init_scale=0.5, seeds=[6], width=[4, 5], balance=balance
    )
    for f, a in zip(fs, alone, strict=True):
        assert torch.equal(f[1], a[0])
    if balance or init == "balanced":
        assert float(metrics.balancedness_gap(fs, relative=True).max()) < 1e-12


def test_balance_keeps_the_end_to_end_matrix():
    kw = {"init": "normal", "init_scale": 0.3, "seeds": [0, 1], "width": 6}
    raw, n_raw = init_dmf((5, 4), 3, **kw)
    bal, n_bal = init_dmf((5, 4), 3, balance=True, **kw)
    torch.testing.assert_close(end_to_end(bal), end_to_end(raw), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(n_bal, n_raw)
    assert float(metrics.balancedness_gap(raw, relative=True).min()) > 0.1
    re = balance_factors(raw, seeds=[3, 4])
    torch.testing.assert_close(end_to_end(re), end_to_end(raw), rtol=1e-12, atol=1e-14)
    assert float(metrics.balancedness_gap(re, relative=True).max()) < 1e-12


def test_identity_and_orthogonal_inits():
    fs, norms = init_dmf((3, 3), 3, init="identity", init_scale=0.2, seeds=[0])
    torch.testing.assert_close(end_to_end(fs)[0], 0.2 * torch.eye(3, dtype=DT))
    assert math.isclose(float(norms[0]), 0.2 * math.sqrt(3), rel_tol=1e-12)
    fs, _ = init_dmf((3, 5), 2, init="orthogonal", init_scale=0.25, seeds=[1], width=4)
    c = 0.25**0.5
    for f in fs:  # each layer c * (semi-)orthogonal
        M = f[0] / c
        small = M @ M.T if M.shape[0] <= M.shape[1] else M.T @ M
        torch.testing.assert_close(small, torch.eye(min(M.shape), dtype=DT))


def test_balanced_init_has_the_requested_norm():
    _, norms = init_dmf((6, 4), 2, init="balanced", init_scale=0.7, seeds=[0, 1, 2])
    torch.testing.assert_close(norms, torch.full((3,), 0.7, dtype=DT))


def test_normal_init_per_layer_std():
    fs, _ = init_dmf((40, 40), 2, init="normal", init_scale=0.05, seeds=[0])
    for f in fs:  # 1600 draws: std within 10%
        assert abs(float(f.std()) / 0.05 - 1) < 0.1


def test_gaussian_init_expected_norm():
    """Arora et al. 2019: E ||W(0)||_F^2 = init_scale^2 d_N (10 init_scale at 100x100)."""
    _, norms = init_dmf((30, 30), 2, init="gaussian", init_scale=1e-3, seeds=list(range(20)))
    ratio = float(norms.square().mean()) / (1e-3**2 * 30)
    assert 0.8 < ratio < 1.25


@pytest.mark.parametrize("sign", [1, -1])
def test_det_sign(sign):
    fs, _ = init_dmf(
        (2, 2), 2, init="normal", init_scale=8e-3, seeds=[0, 1, 2, 3], det_sign=sign, balance=True
    )
    assert (torch.sign(torch.linalg.det(end_to_end(fs))) == sign).all()


def test_per_run_init_scales_and_float32():
    fs, norms = init_dmf((4, 4), 2, init="identity", init_scale=[0.1, 0.4], seeds=[0, 1])
    torch.testing.assert_close(norms, torch.tensor([0.1, 0.4], dtype=DT) * 2)
    f32, _ = init_dmf((4, 4), 2, init="normal", init_scale=0.1, seeds=[0], dtype=torch.float32)
    assert all(f.dtype == torch.float32 for f in f32)


# --------------------------------------------------------------------------- bad input


def test_depth_below_one():
    with pytest.raises(ValueError, match="depth must be >= 1"):
        init_dmf((3, 3), 0, init="normal", init_scale=0.1, seeds=[0])


@pytest.mark.parametrize("scale", [0.0, -1e-3, [0.1, 0.0], float("nan"), float("inf")])
def test_init_scale_not_positive(scale):
    seeds = [0, 1] if isinstance(scale, list) else [0]
    with pytest.raises(ValueError, match="init_scale must be a finite number > 0"):
        init_dmf((3, 3), 2, init="normal", init_scale=scale, seeds=seeds)


def test_init_other_errors():
    with pytest.raises(ValueError, match="unknown init 'xavier'"):
        init_dmf((3, 3), 2, init="xavier", init_scale=0.1, seeds=[0])
    with pytest.raises(ValueError, match="init scales for 2 seeds"):
        init_dmf((3, 3), 2, init="normal", init_scale=[0.1, 0.2, 0.3], seeds=[0, 1])
    with pytest.raises(ValueError, match="at least one seed"):
        init_dmf((3, 3), 2, init="normal", init_scale=0.1, seeds=[])
    with pytest.raises(ValueError, match="det_sign must be"):
        init_dmf((3, 3), 2, init="normal", init_scale=0.1, seeds=[0], det_sign=2)
    with pytest.raises(ValueError, match="hidden widths >= 3"):
        init_dmf((3, 3), 2, init="normal", init_scale=0.1, seeds=[0], width=2, balance=True)


def test_det_sign_needs_a_square_matrix():
    with pytest.raises(ValueError, match=r"square end-to-end matrix, got shape \(3, 4\)"):
        init_dmf((3, 4), 2, init="normal", init_scale=0.1, seeds=[0], det_sign=1)
    with pytest.raises(ValueError, match=r"square matrix .* got \(2, 3, 4\)"):
        metrics.determinant(torch.zeros(2, 3, 4, dtype=DT))
