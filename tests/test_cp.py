"""Tests of factorflow.factorizations.cp (CP factorization, batched)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from factorflow.factorizations.cp import (
    balance_components,
    component_norms,
    count_large_components,
    cp_completion_residuals,
    cp_dense_sensing_predict,
    cp_predict,
    cp_sensing_predict,
    cp_to_tensor,
    init_cp,
)
from factorflow.problems.completion import Completion, sample_indices
from factorflow.tensor_theory import component_norm_velocity, predicted_component_norm_velocity

DT = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def slow_full(factors: list[torch.Tensor]) -> torch.Tensor:
    """Reference: explicit sum over components of explicit outer products, run by run."""
    B, _, R = factors[0].shape
    dims = [f.shape[1] for f in factors]
    out = torch.zeros((B, *dims), dtype=factors[0].dtype)
    for b in range(B):
        for r in range(R):
            comp = factors[0][b, :, r]
            for f in factors[1:]:
                comp = torch.tensordot(comp, f[b, :, r], dims=0)  # outer product
            out[b] += comp
    return out


def slow_predict(factors: list[torch.Tensor], indices: torch.Tensor) -> torch.Tensor:
    """Reference: entry by entry, sum over r of the product over modes (Python loops)."""
    B, _, R = factors[0].shape
    out = torch.zeros((B, indices.shape[0]), dtype=factors[0].dtype)
    for b in range(B):
        for i, idx in enumerate(indices.tolist()):
            total = 0.0
            for r in range(R):
                p = 1.0
                for n, j in enumerate(idx):
                    p *= float(factors[n][b, j, r])
                total += p
            out[b, i] = total
    return out


SHAPES = [(5,), (4, 3), (3, 4, 2), (3, 2, 3, 2)]


@pytest.mark.parametrize("dims", SHAPES)
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("method", ["auto", "gather", "dense"])
def test_cp_predict_matches_slow_reference(dims, B, method):
    g = gen(len(dims) * 10 + B)
    factors = init_cp(dims, 3, 1.0, batch=B, generator=g)
    m = min(7, math.prod(dims))
    idx = sample_indices(dims, m, g)
    got = cp_predict(factors, idx, method=method)
    assert got.shape == (B, m)
    torch.testing.assert_close(got, slow_predict(factors, idx), rtol=1e-12, atol=1e-12)
    full = slow_full(factors)
    torch.testing.assert_close(cp_to_tensor(factors), full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, full[(slice(None), *idx.T)], rtol=1e-12, atol=1e-12)


def test_cp_predict_all_entries_and_grouped_gather():
    # m small relative to the tensor: the gather path groups modes into tables of <= m rows
    g = gen(1)
    dims = (4, 5, 3, 2)
    factors = init_cp(dims, 6, 1.0, batch=2, generator=g)
    full = slow_full(factors)
    for m in (1, 5, 20, math.prod(dims)):
        idx = sample_indices(dims, m, g)
        for method in ("gather", "dense", "auto"):
            torch.testing.assert_close(
                cp_predict(factors, idx, method=method), full[(slice(None), *idx.T)]
            )


def test_cp_predict_repeated_indices_and_bad_input():
    g = gen(2)
    factors = init_cp((3, 3), 2, 1.0, generator=g)
    idx = torch.tensor([[0, 1], [0, 1], [2, 2]])
    ref = slow_predict(factors, idx)
    torch.testing.assert_close(cp_predict(factors, idx, method="gather"), ref)
    torch.testing.assert_close(cp_predict(factors, idx, method="dense"), ref)
    with pytest.raises(ValueError, match="shape"):
        cp_predict(factors, torch.zeros((3, 3), dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        cp_predict(factors, idx.double())
    with pytest.raises(ValueError, match="method"):
        cp_predict(factors, idx, method="fast")
    with pytest.raises(ValueError, match="share"):
        cp_predict([factors[0], factors[1][:, :, :1]], idx)


@pytest.mark.parametrize("method", ["gather", "dense"])
@pytest.mark.parametrize("dims", [(3,), (3, 2), (2, 3, 2)])
def test_cp_predict_gradcheck(method, dims):
    g = gen(3)
    factors = [f.requires_grad_() for f in init_cp(dims, 2, 1.0, batch=2, generator=g)]
    idx = sample_indices(dims, min(5, math.prod(dims)), g)
    assert torch.autograd.gradcheck(lambda *fs: cp_predict(list(fs), idx, method=method), factors)


def test_cp_predict_methods_have_equal_gradients():
    g = gen(4)
    dims = (4, 3, 5, 2)
    factors = init_cp(dims, 7, 0.5, batch=2, generator=g)
    idx = sample_indices(dims, 30, g)
    w = torch.randn(2, 30, generator=g, dtype=DT)
    grads = {}
    for method in ("gather", "dense"):
        fs = [f.clone().requires_grad_() for f in factors]
        (cp_predict(fs, idx, method=method) * w).sum().backward()
        grads[method] = [f.grad for f in fs]
    for a, b in zip(grads["gather"], grads["dense"], strict=True):
        torch.testing.assert_close(a, b)


def test_cp_to_tensor_size_error():
    g = gen(5)
    factors = init_cp((10, 10, 10), 2, 1.0, batch=3, generator=g)
    with pytest.raises(ValueError) as err:
        cp_to_tensor(factors, max_entries=2999)
    msg = str(err.value)
    assert "3,000 entries" in msg and "24,000 bytes" in msg and "max_entries" in msg
    assert cp_to_tensor(factors, max_entries=3000).shape == (3, 10, 10, 10)
    # the default limit refuses a huge tensor without allocating it
    huge = [torch.zeros(1, 1000, 1, dtype=DT) for _ in range(4)]
    with pytest.raises(ValueError, match="1,000,000,000,000 entries"):
        cp_to_tensor(huge)


def test_component_norms_and_balancing_keep_tensor():
    g = gen(6)
    factors = init_cp((4, 3, 5), 6, 1.0, batch=2, generator=g)
    c = component_norms(factors)
    ref = torch.ones(2, 6, dtype=DT)
    for f in factors:
        ref = ref * f.norm(dim=1)
    torch.testing.assert_close(c, ref)
    # c_r is the Frobenius norm of the rank-1 component
    comp0 = slow_full([f[:, :, :1] for f in factors])
    torch.testing.assert_close(c[:, 0], comp0.flatten(1).norm(dim=1))

    bal = balance_components(factors)
    torch.testing.assert_close(cp_to_tensor(bal), cp_to_tensor(factors))
    torch.testing.assert_close(component_norms(bal), c)
    for f in bal:
        torch.testing.assert_close(f.norm(dim=1), c.pow(1 / 3))
    # pure: the input is untouched
    torch.testing.assert_close(component_norms(factors), c)
    assert not torch.allclose(factors[0].norm(dim=1), c.pow(1 / 3))


def test_balance_leaves_zero_components_alone():
    factors = [torch.ones(1, 2, 2, dtype=DT) for _ in range(3)]
    factors[1] = factors[1].clone()
    factors[1][0, :, 1] = 0.0
    bal = balance_components(factors)
    assert all(torch.isfinite(f).all() for f in bal)
    torch.testing.assert_close(bal[1][0, :, 1], torch.zeros(2, dtype=DT))
    torch.testing.assert_close(cp_to_tensor(bal), cp_to_tensor(factors))


def test_init_seeded_reproducible_and_balanced():
    a = init_cp((4, 5, 6), 7, 0.01, batch=3, generator=gen(11))
    b = init_cp((4, 5, 6), 7, 0.01, batch=3, generator=gen(11))
    c = init_cp((4, 5, 6), 7, 0.01, batch=3, generator=gen(12))
    assert [f.shape for f in a] == [(3, 4, 7), (3, 5, 7), (3, 6, 7)]
    assert all(f.dtype == DT and not f.requires_grad for f in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    big = init_cp((200, 200), 50, 0.05, generator=gen(0))
    assert abs(float(big[0].std()) - 0.05) < 0.002
    bal = init_cp((4, 5, 6), 7, 0.01, batch=3, generator=gen(11), balanced=True)
    torch.testing.assert_close(cp_to_tensor(bal), cp_to_tensor(a))
    for f in bal:
        torch.testing.assert_close(f.norm(dim=1), component_norms(a).pow(1 / 3))
    f32 = init_cp((2, 2), 1, 1.0, generator=gen(0), dtype=torch.float32)
    assert f32[0].dtype == torch.float32


def test_count_large_components():
    factors = [torch.zeros(2, 3, 4, dtype=DT) for _ in range(2)]
    scales = torch.tensor([[1.0, 0.5, 0.05, 0.0], [2.0, 2.0, 2.0, 0.3]], dtype=DT)
    for f in factors:
        f[:, 0, :] = scales.sqrt()
    # c = scales; frac 0.1: run 0 -> {1, 0.5} (0.05 is not above 0.1), run 1 -> all four
    assert count_large_components(factors).tolist() == [2, 4]
    assert count_large_components(factors, frac=0.2).tolist() == [2, 3]
    zero = [torch.zeros(1, 3, 4, dtype=DT) for _ in range(2)]
    assert count_large_components(zero).tolist() == [0]


def _completion_setup(balanced: bool, seed: int = 7):
    g = gen(seed)
    dims = (4, 3, 5)
    N = len(dims)
    target = torch.randn(dims, generator=g, dtype=DT)
    obs = Completion.from_array(target, sample_indices(dims, 25, g))
    factors = init_cp(dims, 6, 0.7, batch=2, generator=g, balanced=balanced)
    fs = [f.clone().requires_grad_() for f in factors]
    resid = cp_completion_residuals(fs, obs)
    loss = (resid**2).mean(dim=1).sum()  # runs independent: per-run mean squared residual
    grads = torch.autograd.grad(loss, fs)
    velocities = [-gr for gr in grads]
    grad_at_obs = (2 * resid / obs.n_obs).detach()
    measured = component_norm_velocity(factors, velocities)
    predicted = predicted_component_norm_velocity(factors, obs.indices, grad_at_obs)
    return N, factors, measured, predicted


def test_component_norm_dynamics_theorem_balanced():
    _, _, measured, predicted = _completion_setup(balanced=True)
    assert measured.shape == predicted.shape == (2, 6)
    rel = (measured - predicted).abs().max() / measured.abs().max()
    assert rel < 1e-10


def test_component_norm_dynamics_theorem_needs_balance():
    # unbalanced: sum_n 1/||w^n||^2 > N c^(-2/N) (AM-GM), so the formula is off
    N, factors, measured, predicted = _completion_setup(balanced=False)
    rel = (measured - predicted).abs().max() / measured.abs().max()
    assert rel > 1e-3
    # and the discrepancy is exactly the AM-GM ratio
    norms = torch.stack([f.norm(dim=1) for f in factors])
    c = norms.prod(0)
    ratio = (norms.pow(-2).sum(0)) / (N * c.pow(-2 / N))
    torch.testing.assert_close(measured, predicted * ratio)


def test_component_norm_velocity_is_the_time_derivative():
    g = gen(8)
    factors = init_cp((3, 4), 5, 1.0, batch=2, generator=g)
    vel = init_cp((3, 4), 5, 1.0, batch=2, generator=g)
    h = 1e-6
    plus = component_norms([f + h * v for f, v in zip(factors, vel, strict=True)])
    minus = component_norms([f - h * v for f, v in zip(factors, vel, strict=True)])
    fd = (plus - minus) / (2 * h)
    torch.testing.assert_close(component_norm_velocity(factors, vel), fd, rtol=1e-7, atol=1e-9)


def test_completion_residuals_and_checks():
    g = gen(9)
    dims = (3, 4)
    target = torch.randn(dims, generator=g, dtype=DT)
    obs = Completion.from_array(target, sample_indices(dims, 6, g))
    factors = init_cp(dims, 2, 1.0, batch=2, generator=g)
    res = cp_completion_residuals(factors, obs)
    torch.testing.assert_close(res, cp_predict(factors, obs.indices) - obs.values)
    with pytest.raises(ValueError, match="dims"):
        cp_completion_residuals(init_cp((4, 3), 2, 1.0, generator=g), obs)


def test_sensing_predict_matches_dense_reference():
    g = gen(10)
    dims = (3, 4, 2)
    factors = init_cp(dims, 5, 1.0, batch=3, generator=g)
    m = 9
    meas = [torch.randn(m, d, generator=g, dtype=DT) for d in dims]
    dense = torch.stack(
        [torch.einsum("i,j,k->ijk", meas[0][i], meas[1][i], meas[2][i]) for i in range(m)]
    )
    full = slow_full(factors)
    ref = torch.einsum("bijk,mijk->bm", full, dense)
    torch.testing.assert_close(cp_sensing_predict(factors, meas), ref)
    torch.testing.assert_close(cp_dense_sensing_predict(factors, dense), ref)
    general = torch.randn(m, *dims, generator=g, dtype=DT)
    torch.testing.assert_close(
        cp_dense_sensing_predict(factors, general), torch.einsum("bijk,mijk->bm", full, general)
    )
    with pytest.raises(ValueError, match="entries"):
        cp_dense_sensing_predict(factors, general, max_entries=10)
    with pytest.raises(ValueError, match="measurement factor"):
        cp_sensing_predict(factors, [meas[0], meas[1], meas[2][:, :1]])
    fs = [f.clone().requires_grad_() for f in init_cp(dims, 2, 1.0, batch=1, generator=g)]
    assert torch.autograd.gradcheck(lambda *x: cp_sensing_predict(list(x), meas), fs)


@pytest.mark.parametrize("n_modes", [2, 3, 4])
def test_rescaling_within_component_leaves_predictions(n_modes):
    g = gen(20 + n_modes)
    dims = tuple([3] * n_modes)
    factors = init_cp(dims, 4, 1.0, batch=2, generator=g)
    idx = sample_indices(dims, 8, g)
    base = cp_predict(factors, idx)
    scale = torch.tensor([3.0, -0.5, 7.0, 0.1], dtype=DT)
    for a, b in itertools.permutations(range(n_modes), 2):
        fs = [f.clone() for f in factors]
        fs[a] = fs[a] * scale
        fs[b] = fs[b] / scale
        torch.testing.assert_close(cp_predict(fs, idx), base)
        torch.testing.assert_close(cp_to_tensor(fs), cp_to_tensor(factors))


def test_float32_and_device_follow_the_factors():
    g = gen(30)
    factors = init_cp((4, 4, 4), 3, 1.0, generator=g, dtype=torch.float32)
    idx = sample_indices((4, 4, 4), 10, g)
    out = cp_predict(factors, idx)
    assert out.dtype == torch.float32 and out.device == factors[0].device
    ref = cp_predict([f.double() for f in factors], idx)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
