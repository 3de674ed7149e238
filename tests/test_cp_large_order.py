"""Tests of factorflow.factorizations.cp_large_order (order-784 CP in log space)."""

from __future__ import annotations

import math

import pytest
import torch

from factorflow.factorizations.cp_large_order import (
    cp_predict_large_order,
    dense_onehot_predict,
    init_large_order_weights,
    log_abs_predict_large_order,
    log_components,
)

DT = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def slow_predict(weights: torch.Tensor, X: torch.Tensor) -> list[float]:
    """Reference: explicit Python products, sample by sample (small N only)."""
    R, N, _ = weights.shape
    out = []
    for x in X.tolist():
        total = 0.0
        for r in range(R):
            p = 1.0
            for n in range(N):
                p *= float(weights[r, n, x[n]])
            total += p
        out.append(total)
    return out


def direct_predict(weights: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Direct differentiable formulation (gather + product), for small N."""
    R, N, _ = weights.shape
    vals = weights[:, torch.arange(N)[None, :], X]  # (R, n, N)
    return vals.prod(dim=-1).sum(dim=0)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_small_order_matches_explicit_products(k):
    g = gen(k)
    R, N, n = 4, 6, 40
    w = torch.randn(R, N, k, generator=g, dtype=DT)  # mixed signs
    X = torch.randint(0, k, (n, N), generator=g)
    ref = torch.tensor(slow_predict(w, X), dtype=DT)
    torch.testing.assert_close(cp_predict_large_order(w, X), ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(dense_onehot_predict(w, X), ref, rtol=1e-12, atol=1e-14)
    logmag, sign = log_components(w, X)
    assert logmag.shape == sign.shape == (n, R)
    comps = w[:, torch.arange(N)[None, :], X].prod(-1).T  # (n, R)
    torch.testing.assert_close(sign, torch.sign(comps))
    torch.testing.assert_close(logmag, comps.abs().log())
    la, s = log_abs_predict_large_order(w, X)
    torch.testing.assert_close(s * la.exp(), ref, rtol=1e-12, atol=1e-14)


def test_float_and_bool_inputs_for_binary_fast_path():
    g = gen(1)
    w = torch.randn(3, 6, 2, generator=g, dtype=DT)
    X = torch.randint(0, 2, (20, 6), generator=g)
    ref = cp_predict_large_order(w, X)
    torch.testing.assert_close(cp_predict_large_order(w, X.to(DT)), ref)
    torch.testing.assert_close(cp_predict_large_order(w, X.bool()), ref)


@pytest.mark.parametrize("k", [2, 3])
def test_gradient_matches_direct_formulation(k):
    g = gen(10 + k)
    R, N, n = 3, 6, 25
    w = torch.randn(R, N, k, generator=g, dtype=DT)
    X = torch.randint(0, k, (n, N), generator=g)
    coef = torch.randn(n, generator=g, dtype=DT)
    w1 = w.clone().requires_grad_()
    (cp_predict_large_order(w1, X) * coef).sum().backward()
    w2 = w.clone().requires_grad_()
    (direct_predict(w2, X) * coef).sum().backward()
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-10, atol=1e-12)
    w3 = w[:2, :4].clone().requires_grad_()
    X3 = X[:8, :4]
    assert torch.autograd.gradcheck(lambda v: cp_predict_large_order(v, X3), (w3,))


def test_order_784_weights_one_gives_R():
    R, N = 15, 784
    w = torch.ones(R, N, 2, dtype=DT)
    X = torch.randint(0, 2, (50, N), generator=gen(2))
    torch.testing.assert_close(cp_predict_large_order(w, X), torch.full((50,), float(R), dtype=DT))


def test_order_784_near_one_matches_log_space_reference():
    g = gen(3)
    R, N, n = 4, 784, 10
    w = 1 + 1e-2 * torch.randn(R, N, 2, generator=g, dtype=DT)
    X = torch.randint(0, 2, (n, N), generator=g)
    got = cp_predict_large_order(w, X)
    assert torch.isfinite(got).all()
    # reference: per-component log sums with math.fsum, then a plain sum of exponentials
    ref = []
    for x in X.tolist():
        logs = [math.fsum(math.log(float(w[r, i, x[i]])) for i in range(N)) for r in range(R)]
        ref.append(sum(math.exp(v) for v in logs))
    torch.testing.assert_close(got, torch.tensor(ref, dtype=DT), rtol=1e-11, atol=0)
    torch.testing.assert_close(dense_onehot_predict(w, X), got, rtol=1e-11, atol=0)


def test_naive_product_underflows_but_log_space_is_right():
    # NB: 0.9^784 = 1.4e-36 is representable in float64 (and float32); 0.3^784 = 1e-410 is not.
    R, N = 3, 784
    w = torch.full((R, N, 2), 0.3, dtype=DT)
    X = torch.randint(0, 2, (4, N), generator=gen(4))
    naive = torch.tensor(0.3, dtype=DT) ** N
    assert naive == 0  # underflow
    assert (dense_onehot_predict(w, X) == 0).all()
    logmag, sign = log_components(w, X)
    torch.testing.assert_close(logmag, torch.full((4, R), N * math.log(0.3), dtype=DT))
    assert (sign == 1).all()
    la, s = log_abs_predict_large_order(w, X)
    torch.testing.assert_close(la, torch.full((4,), N * math.log(0.3) + math.log(R), dtype=DT))
    assert (s == 1).all()
    assert (cp_predict_large_order(w, X) == 0).all()  # the true value ~1e-410 rounds to 0

    big = torch.full((R, N, 2), 3.0, dtype=DT)  # 3^784 = 1e374 overflows
    assert torch.isinf(dense_onehot_predict(big, X)).all()
    la, s = log_abs_predict_large_order(big, X)
    torch.testing.assert_close(la, torch.full((4,), N * math.log(3.0) + math.log(R), dtype=DT))
    assert torch.isinf(cp_predict_large_order(big, X)).all()


def test_large_magnitudes_that_fit_are_exact():
    # each component is 2 e^700, the sum 2R e^700 ~ 8e304: representable, computed exactly
    R, N = 4, 700
    w = torch.full((R, N, 2), math.e, dtype=DT)
    w[:, 0, :] = 2 * math.e
    X = torch.zeros(3, N, dtype=torch.long)
    la, _ = log_abs_predict_large_order(w, X)
    torch.testing.assert_close(la, torch.full((3,), 700 + math.log(2 * R), dtype=DT))
    got = cp_predict_large_order(w, X)
    torch.testing.assert_close(got.log(), la)
    # components e^710 and -e^710 / 2: each overflows float64 (and so would exp(M) * s), their
    # sum e^710 / 2 = e^709.31 does not, and is returned finite
    w2 = torch.ones(2, 2, 2, dtype=DT)
    w2[:, :, 0] = math.exp(355.0)
    w2[1, 0, 0] = -0.5 * math.exp(355.0)
    X2 = torch.zeros(1, 2, dtype=torch.long)
    assert torch.isinf(torch.exp(torch.tensor(710.0, dtype=DT)))
    out = cp_predict_large_order(w2, X2)
    assert torch.isfinite(out).all() and out.item() > 0
    torch.testing.assert_close(out.log(), torch.tensor([710 + math.log(0.5)], dtype=DT))


def test_negative_and_zero_weights():
    g = gen(5)
    R, N, n = 3, 8, 16
    w = torch.randn(R, N, 2, generator=g, dtype=DT)
    w[1, 2, 1] = 0.0  # component 1 vanishes on samples with x_2 = 1
    X = torch.randint(0, 2, (n, N), generator=g)
    X[0, 2] = 1
    X[1, 2] = 0
    logmag, sign = log_components(w, X)
    assert logmag[0, 1] == -math.inf and sign[0, 1] == 0
    assert torch.isfinite(logmag[1, 1]) and sign[1, 1] != 0
    ref = torch.tensor(slow_predict(w, X), dtype=DT)
    torch.testing.assert_close(cp_predict_large_order(w, X), ref, rtol=1e-12, atol=1e-14)
    # gradients stay finite; the zero weight gets no gradient (documented)
    w1 = w.clone().requires_grad_()
    cp_predict_large_order(w1, X).sum().backward()
    assert torch.isfinite(w1.grad).all()
    # every component exactly zero -> prediction 0 with finite gradients
    wz = torch.zeros(2, 3, 2, dtype=DT, requires_grad=True)
    out = cp_predict_large_order(wz, torch.zeros(2, 3, dtype=torch.long))
    assert (out == 0).all()
    out.sum().backward()
    assert torch.isfinite(wz.grad).all()
    # exact cancellation between components: 0, and finite gradients
    wc = torch.ones(2, 3, 2, dtype=DT)
    wc[1, 0, :] = -1.0
    wc.requires_grad_()
    out = cp_predict_large_order(wc, torch.zeros(2, 3, dtype=torch.long))
    assert (out == 0).all()
    out.sum().backward()
    assert torch.isfinite(wc.grad).all()


def test_shape_checks_and_init():
    w = init_large_order_weights(4, 10, 2, generator=gen(6))
    assert w.shape == (4, 10, 2) and w.dtype == DT
    assert torch.equal(w, init_large_order_weights(4, 10, 2, generator=gen(6)))
    assert (w - 1).abs().max() < 0.01
    with pytest.raises(ValueError, match="shape"):
        cp_predict_large_order(w, torch.zeros(3, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="weights"):
        cp_predict_large_order(w[0], torch.zeros(3, 10, dtype=torch.long))


def test_float32_order_784():
    g = gen(7)
    w = init_large_order_weights(5, 784, 2, generator=g, dtype=torch.float32)
    X = torch.randint(0, 2, (20, 784), generator=g)
    got = cp_predict_large_order(w, X)
    ref = cp_predict_large_order(w.double(), X)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=0)
