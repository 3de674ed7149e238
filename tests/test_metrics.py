"""Tests for factorflow.metrics (float64, CPU, fast)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from factorflow import metrics as M

DT = torch.float64
FAST = settings(max_examples=25, deadline=None)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=DT)


# --------------------------------------------------------------------------- spectra


def test_singular_values_descending_and_shape():
    W = _randn(3, 5, 4)
    s = M.singular_values(W)
    assert s.shape == (3, 4)
    assert torch.all(s[..., :-1] >= s[..., 1:])
    np.testing.assert_allclose(s[1].numpy(), np.linalg.svd(W[1].numpy(), compute_uv=False))


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_effective_rank_equal_singular_values(k):
    W = torch.zeros(6, 7, dtype=DT)
    W[range(k), range(k)] = 2.5
    assert M.effective_rank(W).item() == pytest.approx(k, rel=1e-12)
    sigma = torch.tensor([1.0] * k, dtype=DT)
    assert M.effective_rank(sigma, from_spectrum=True).item() == pytest.approx(k, rel=1e-12)


def test_effective_rank_one_hot_spectrum():
    sigma = torch.tensor([1.0, 0.0, 0.0], dtype=DT)
    assert M.effective_rank(sigma, from_spectrum=True).item() == pytest.approx(1.0)
    assert M.effective_rank(torch.diag(sigma)).item() == pytest.approx(1.0)


def test_effective_rank_known_distribution_and_scale_invariance():
    p = np.array([0.5, 0.25, 0.125, 0.125])
    H = -sum(pi * math.log(pi) for pi in p)
    W = torch.diag(torch.tensor(p * 7.0, dtype=DT))
    assert M.effective_rank(W).item() == pytest.approx(math.exp(H), rel=1e-12)
    R = _randn(5, 3)
    e = M.effective_rank(R)
    for c in (1e-3, 3.0, -2.0, 1e4):
        torch.testing.assert_close(M.effective_rank(c * R), e)
    assert 1.0 <= e.item() <= 3.0


def test_effective_rank_zero_is_nan():
    assert torch.isnan(M.effective_rank(torch.zeros(3, 4, dtype=DT)))


# --------------------------------------------------------------------------- norms


def test_schatten_special_cases():
    W = _randn(2, 5, 4, seed=1)
    torch.testing.assert_close(M.schatten_norm(W, 1), M.nuclear_norm(W))
    torch.testing.assert_close(M.schatten_norm(W, 2), M.frobenius_norm(W))
    torch.testing.assert_close(M.schatten_norm(W, math.inf), M.spectral_norm(W))
    torch.testing.assert_close(M.frobenius_norm(W), torch.linalg.norm(W.flatten(-2), dim=-1))
    torch.testing.assert_close(M.spectral_norm(W), M.singular_values(W)[..., 0])
    torch.testing.assert_close(M.nuclear_norm(W), M.singular_values(W).sum(-1))
    # large p approaches the spectral norm (and does not overflow)
    big = M.schatten_norm(W * 1e3, 2000.0)
    torch.testing.assert_close(big, M.spectral_norm(W * 1e3), rtol=1e-3, atol=0)
    assert torch.all(M.schatten_norm(W, 50.0) >= M.spectral_norm(W))


def test_schatten_quasi_norm_by_hand():
    W = torch.diag(torch.tensor([4.0, 1.0, 0.0], dtype=DT))
    expected = (4.0**0.5 + 1.0**0.5) ** 2  # 9
    assert M.schatten_norm(W, 0.5).item() == pytest.approx(expected)
    assert M.MATRIX_METRICS["schatten_0.5"](W).item() == pytest.approx(expected)
    assert M.schatten_norm(torch.zeros(3, 3, dtype=DT), 0.5).item() == 0.0


@pytest.mark.parametrize("p", [0, -1, -0.5, float("nan")])
def test_schatten_bad_p(p):
    with pytest.raises(ValueError):
        M.schatten_norm(_randn(3, 3), p)
    with pytest.raises(ValueError):
        M.schatten_metric(p)


def test_determinant():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        M.determinant(_randn(2, 3))
    W = _randn(4, 3, 3, seed=2)
    d = M.determinant(W)
    assert d.shape == (4,)
    for i in range(4):
        assert d[i].item() == pytest.approx(np.linalg.det(W[i].numpy()))


def test_numerical_rank():
    U, V = _randn(7, 3, seed=3), _randn(5, 3, seed=4)
    W = U @ V.T
    assert M.numerical_rank(W).item() == 3
    assert M.numerical_rank(W).item() == np.linalg.matrix_rank(W.numpy())
    assert M.numerical_rank(torch.zeros(3, 3, dtype=DT)).item() == 0
    D = torch.diag(torch.tensor([1.0, 1e-3, 1e-9], dtype=DT))
    assert M.numerical_rank(D).item() == 3
    assert M.numerical_rank(D, 1e-6).item() == 2
    assert M.numerical_rank(D * 10, 1e-6, relative=False).item() == 2
    assert M.numerical_rank(D * 10, 1e-3, relative=False).item() == 2
    assert M.numerical_rank(D * 10, 1e-2).item() == 1
    batch = torch.stack([W, W @ torch.diag(torch.tensor([1.0, 1, 0, 0, 0], dtype=DT))])
    assert M.numerical_rank(batch).tolist() == [3, 2]


# --------------------------------------------------------------------------- errors


def test_recon_mse_vs_loop_and_rel_fro():
    W, Ws = _randn(4, 6, seed=5), _randn(4, 6, seed=6)
    a, b = W.numpy(), Ws.numpy()
    total = 0.0
    for i in range(4):
        for j in range(6):
            total += (a[i, j] - b[i, j]) ** 2
    assert M.recon_mse(W, Ws).item() == pytest.approx(total / 24)
    # normalize so that ||W*||_F^2 = number of entries
    Ws = Ws / Ws.norm() * math.sqrt(Ws.numel())
    assert M.recon_mse(W, Ws).item() == pytest.approx(M.rel_fro_error(W, Ws).item() ** 2)
    assert M.rel_fro_error(Ws, Ws).item() == 0.0


# --------------------------------------------------------------------------- factorizations


@FAST
@given(
    widths=st.lists(st.integers(1, 5), min_size=2, max_size=6),
    seed=st.integers(0, 10_000),
)
def test_end_to_end_vs_loop(widths, seed):
    g = _gen(seed)
    factors = [
        torch.randn(widths[j + 1], widths[j], generator=g, dtype=DT) for j in range(len(widths) - 1)
    ]
    expected = np.eye(widths[0])
    for f in factors:
        expected = f.numpy() @ expected
    W = M.end_to_end(factors)
    assert W.shape == (widths[-1], widths[0])
    np.testing.assert_allclose(W.numpy(), expected, rtol=1e-10, atol=1e-10)
    # rescaling neighbouring factors leaves the product unchanged
    if len(factors) >= 2:
        j = seed % (len(factors) - 1)
        scaled = list(factors)
        scaled[j + 1] = factors[j + 1] * 3.7
        scaled[j] = factors[j] / 3.7
        torch.testing.assert_close(M.end_to_end(scaled), W)


def test_end_to_end_errors():
    with pytest.raises(ValueError):
        M.end_to_end([])
    with pytest.raises(ValueError):
        M.end_to_end([_randn(3, 2), _randn(4, 4)])


def _balanced_factors(W: torch.Tensor, depth: int) -> list[torch.Tensor]:
    U, S, Vh = torch.linalg.svd(W)
    root = torch.diag(S ** (1.0 / depth))
    return [root @ Vh] + [root.clone() for _ in range(depth - 2)] + [U @ root]


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_balancedness_gap(depth):
    W = _randn(4, 4, seed=7)
    factors = _balanced_factors(W, depth)
    torch.testing.assert_close(M.end_to_end(factors), W)
    assert M.balancedness_gap(factors).item() < 1e-10
    assert M.balancedness_gap(factors, relative=True).item() < 1e-10
    rand = [_randn(4, 4, seed=20 + j) for j in range(depth)]
    assert M.balancedness_gap(rand).item() > 0.1
    rel = M.balancedness_gap(rand, relative=True).item()
    assert 0.1 < rel
    # scale invariance of the relative version
    assert M.balancedness_gap([2 * f for f in rand], relative=True).item() == pytest.approx(rel)


def test_balancedness_gap_edge_cases():
    assert M.balancedness_gap([_randn(3, 2)]).item() == 0.0
    assert M.balancedness_gap([_randn(5, 3, 2)]).shape == (5,)
    zeros = [torch.zeros(3, 3, dtype=DT)] * 3
    assert M.balancedness_gap(zeros, relative=True).item() == 0.0


def test_top_singular_vectors():
    W = _randn(3, 6, 4, seed=8)
    U, S, V = M.top_singular_vectors(W, 2)
    assert U.shape == (3, 6, 2) and S.shape == (3, 2) and V.shape == (3, 4, 2)
    torch.testing.assert_close(S, M.singular_values(W)[..., :2])
    torch.testing.assert_close(W @ V, U * S.unsqueeze(-2))
    Uf, Sf, Vf = M.top_singular_vectors(W, 4)
    torch.testing.assert_close(Uf @ torch.diag_embed(Sf) @ Vf.mT, W)
    with pytest.raises(ValueError):
        M.top_singular_vectors(W, 5)


# --------------------------------------------------------------------------- batching


@FAST
@given(
    batch=st.lists(st.integers(1, 3), min_size=1, max_size=2),
    d1=st.integers(1, 5),
    d2=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_batched_equals_loop(batch, d1, d2, seed):
    g = _gen(seed)
    W = torch.randn(*batch, d1, d2, generator=g, dtype=DT)
    Ws = torch.randn(*batch, d1, d2, generator=g, dtype=DT)
    flatW, flatWs = W.reshape(-1, d1, d2), Ws.reshape(-1, d1, d2)
    fns = {
        **M.MATRIX_METRICS,
        "schatten_3": M.schatten_metric(3.0),
        "numerical_rank": M.numerical_rank,
        "recon_mse": lambda X, i=None: M.recon_mse(X, Ws if i is None else flatWs[i]),
        "rel_fro_error": lambda X, i=None: M.rel_fro_error(X, Ws if i is None else flatWs[i]),
    }
    if d1 == d2:
        fns["det"] = M.determinant
    for name, fn in fns.items():
        out = fn(W)
        assert out.shape == tuple(batch), name
        flat = out.reshape(-1)
        for i in range(flatW.shape[0]):
            args = (flatW[i], i) if name in ("recon_mse", "rel_fro_error") else (flatW[i],)
            torch.testing.assert_close(flat[i], fn(*args), msg=name)
    # batched factorizations
    factors = [W.mT, torch.randn(*batch, 3, d2, generator=g, dtype=DT)]
    E = M.end_to_end(factors)
    gap = M.balancedness_gap(factors)
    assert E.shape == (*batch, 3, d1) and gap.shape == tuple(batch)
    flatF = [f.reshape(-1, *f.shape[-2:]) for f in factors]
    for i in range(flatW.shape[0]):
        torch.testing.assert_close(E.reshape(-1, 3, d1)[i], M.end_to_end([f[i] for f in flatF]))
        torch.testing.assert_close(gap.reshape(-1)[i], M.balancedness_gap([f[i] for f in flatF]))


def test_matrix_summary():
    W, Ws = _randn(3, 3, seed=9), _randn(3, 3, seed=10)
    s = M.matrix_summary(W, Ws)
    assert set(s) == set(M.MATRIX_METRICS) | {"recon_mse", "rel_fro_error", "det"}
    assert all(isinstance(v, float) for v in s.values())
    assert s["det"] == pytest.approx(np.linalg.det(W.numpy()))
    s2 = M.matrix_summary(_randn(2, 4))
    assert set(s2) == set(M.MATRIX_METRICS)
    with pytest.raises(ValueError):
        M.matrix_summary(_randn(2, 2, 2))


def test_float32_and_grad():
    W = _randn(4, 3, seed=11).float().requires_grad_()
    for fn in M.MATRIX_METRICS.values():
        out = fn(W)
        assert out.dtype == torch.float32
    M.nuclear_norm(W).backward()
    assert W.grad is not None and W.grad.shape == W.shape
