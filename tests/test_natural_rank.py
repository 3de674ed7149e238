"""Library functions of the natural-data tensor-rank experiment (factorflow.natural_rank): errors,
data encoding, the model and fitting (data preparation and measures: test_natural_rank_data.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import factorflow.natural_rank as nr
from factorflow.data.images import make_variant, to_tensor_indices
from factorflow.factorizations.cp_large_order import cp_predict_large_order
from factorflow.natural_rank import (
    FitBatch,
    batched_predict,
    batched_predict_log,
    build_variant,
    encode_images,
    fit_adam,
    fit_errors,
    fit_lbfgs,
    init_paper_weights,
    label_variance,
    log_to_weights,
    paper_error,
    weights_to_log,
)

F64 = torch.float64


def _binary(n: int, N: int, p: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, N, generator=g, dtype=F64) < p).to(F64)


def _design(X: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.ones(X.shape[0], 1, dtype=X.dtype), X], dim=1)


# --------------------------------------------------------------------------- errors


def test_paper_error_hand_case_and_clamp() -> None:
    pred = torch.tensor([2.0, 0.0, 1.0, 5.0], dtype=F64)
    y = torch.tensor([2.0, 2.0, 0.0, 0.0], dtype=F64)
    # squared errors 0, 4, 1, 25; divided by 4: 0, 1, 0.25, 6.25
    assert paper_error(pred, y).item() == pytest.approx((0 + 1 + 0.25 + 6.25) / 4)
    # clamped at 4 before dividing: 0, 1, 0.25, 1
    assert paper_error(pred, y, clamp=True).item() == pytest.approx((0 + 1 + 0.25 + 1) / 4)
    # other target range: rho = 1 (targets 1 vs 0)
    assert paper_error(pred / 2, y / 2, target_range=1.0).item() == pytest.approx(
        (0 + 1 + 0.25 + 6.25) / 4
    )
    # batched over leading dims
    out = paper_error(torch.stack([pred, y]), y, clamp=True)
    assert out.shape == (2,) and out[1].item() == 0.0
    with pytest.raises(ValueError, match="target_range"):
        paper_error(pred, y, target_range=0.0)


def test_label_variance_is_error_of_best_constant() -> None:
    y = torch.zeros(50, dtype=F64)
    y[:5] = 2.0  # one class in ten
    assert label_variance(y) == pytest.approx(0.09)
    const = torch.full_like(y, float(y.mean()))
    assert paper_error(const, y).item() == pytest.approx(label_variance(y))
    # other encodings of the same labels give the same 0/1 variance
    assert label_variance(y / 2 * 3 - 1, positive_value=2.0, negative_value=-1.0) == pytest.approx(
        0.09
    )
    assert label_variance(torch.zeros(4)) == 0.0
    with pytest.raises(ValueError):
        label_variance(torch.zeros(0))
    with pytest.raises(ValueError):
        label_variance(y, positive_value=1.0, negative_value=1.0)


# --------------------------------------------------------------------------- data


def test_encode_images_matches_to_tensor_indices(tiny_images) -> None:
    imgs = tiny_images().train_images
    imgs[0, 0, 0] = 0.5  # a tie goes up
    out = encode_images(imgs, chunk=7)
    assert out.dtype == torch.uint8 and out.shape == (40, 20)
    torch.testing.assert_close(out.long(), to_tensor_indices(imgs))


@pytest.mark.parametrize("variant", ["original", "rand_image", "rand_label"])
def test_build_variant_equals_make_variant(variant: str, tiny_images) -> None:
    data = tiny_images()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    v = build_variant(data, variant, generator=g1, positive_class=3)
    ref = make_variant(data, variant, generator=g2, positive_class=3)
    for got, want in zip((v.train_x, v.train_y, v.test_x, v.test_y), ref, strict=True):
        torch.testing.assert_close(got.to(want.dtype), want)


def test_build_variant_bad_inputs(tiny_images) -> None:
    data = tiny_images()
    with pytest.raises(ValueError, match=r"train split: positive class 11 does not occur"):
        build_variant(data, "original", positive_class=11)
    with pytest.raises(ValueError, match="unknown variant"):
        build_variant(data, "shuffled")
    with pytest.raises(ValueError, match="Generator"):
        build_variant(data, "rand_label")


# --------------------------------------------------------------------------- model


def test_fit_batch_layout() -> None:
    b = FitBatch(ranks=(1, 3, 2), targets=(0, 1, 0))
    assert b.n_fits == 3 and b.n_components == 6
    assert b.comp_fit.tolist() == [0, 1, 1, 1, 2, 2]
    assert b.components(1) == slice(1, 4)
    with pytest.raises(ValueError):
        FitBatch(ranks=(1, 0), targets=(0, 0))
    with pytest.raises(ValueError):
        FitBatch(ranks=(1,), targets=(0, 1))


def test_batched_predict_matches_per_fit_reference() -> None:
    X = _binary(30, 12, 0.4, 0).long()
    b = FitBatch(ranks=(1, 3, 2), targets=(0, 0, 0))
    W = init_paper_weights(b, 12, 2, [1, 2, 3], std=0.5)
    W[1, 4, 1] = -0.7  # a negative factor: signs flip with the pixel
    pred = batched_predict(W, X, b.comp_fit, b.n_fits)
    assert pred.shape == (30, 3)
    for j in range(3):
        ref = cp_predict_large_order(W[b.components(j)], X)
        torch.testing.assert_close(pred[:, j], ref, rtol=1e-12, atol=1e-14)
    # and the direct sum of products (small order: no overflow)
    direct = (
        torch.stack([W[c, torch.arange(12), X[i]].prod() for i in range(30) for c in range(1, 4)])
        .reshape(30, 3)
        .sum(1)
    )
    torch.testing.assert_close(pred[:, 1], direct, rtol=1e-12, atol=1e-14)


def test_batched_predict_order_784_does_not_overflow() -> None:
    X = _binary(5, 784, 0.5, 1)
    b = FitBatch(ranks=(2,), targets=(0,))
    W = torch.full((2, 784, 2), 1.5, dtype=F64)  # 1.5^784 = 1e138: representable
    pred = batched_predict(W, X, b.comp_fit, 1)
    torch.testing.assert_close(pred[:, 0], torch.full((5,), 2 * 1.5**784, dtype=F64))


def test_log_parametrization_round_trip() -> None:
    X = _binary(25, 9, 0.3, 2)
    b = FitBatch(ranks=(2, 1), targets=(0, 0))
    W = init_paper_weights(b, 9, 2, [4, 5], std=0.2)
    theta = weights_to_log(W)
    assert theta.shape == (3, 10)
    p_w = batched_predict(W, X, b.comp_fit, 2)
    p_log = batched_predict_log(theta, _design(X), b.comp_fit, 2)
    torch.testing.assert_close(p_log, p_w, rtol=1e-12, atol=0)
    W2 = log_to_weights(theta)
    assert bool((W2 > 0).all())
    torch.testing.assert_close(batched_predict(W2, X, b.comp_fit, 2), p_w, rtol=1e-12, atol=0)
    torch.testing.assert_close(weights_to_log(W2), theta, rtol=1e-12, atol=1e-12)
    W[0, 0, 0] = -1.0
    with pytest.raises(ValueError, match="positive"):
        weights_to_log(W)


def test_init_paper_weights_per_fit_seed() -> None:
    b = FitBatch(ranks=(2, 5), targets=(0, 0))
    W = init_paper_weights(b, 7, 2, [11, 11])
    # a fit's init depends only on its seed: the rank-2 init is the rank-5 init's first rows
    torch.testing.assert_close(W[0:2], W[2:4])
    assert abs(float(W.mean()) - 1.0) < 1e-3 and 5e-4 < float(W.std()) < 2e-3
    with pytest.raises(ValueError):
        init_paper_weights(b, 7, 2, [1])


@pytest.mark.parametrize("poisson", [False, True])
def test_log_gradient_matches_autograd(poisson: bool) -> None:
    X = _binary(40, 6, 0.5, 3)
    Xa = _design(X)
    b = FitBatch(ranks=(1, 2, 3), targets=(0, 1, 0))
    g = torch.Generator().manual_seed(0)
    theta = 0.3 * torch.randn(6, 7, generator=g, dtype=F64)
    Y = 2.0 * (torch.rand(40, 2, generator=g, dtype=F64) < 0.3)
    Yf = Y[:, list(b.targets)]
    scale = 1 / (40 * 4.0)
    loss, grad = nr._log_value_and_grad(theta, Xa, Yf, b.comp_fit, 3, scale, 16, poisson=poisson)
    t = theta.clone().requires_grad_()
    f = batched_predict_log(t, Xa, b.comp_fit, 3)
    if poisson:
        ref = scale * (f - torch.where(Yf > 0, Yf * torch.log(f), 0.0)).sum(0)
    else:
        ref = scale * ((f - Yf) ** 2).sum(0)
    ref.sum().backward()
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(grad, t.grad, rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------- fitting


def _log_linear_problem(n: int = 400, N: int = 10, seed: int = 0):
    X = _binary(n, N, 0.4, seed)
    g = torch.Generator().manual_seed(seed + 100)
    b_true = torch.randn(N, generator=g, dtype=F64)
    a_true = -0.5
    y = torch.exp(a_true + X @ b_true)
    return X, y, a_true, b_true


def test_rank1_lbfgs_recovers_log_linear_data() -> None:
    X, y, a_true, b_true = _log_linear_problem()
    b = FitBatch(ranks=(1,), targets=(0,))
    w0 = init_paper_weights(b, X.shape[1], 2, [0])  # the paper's init N(1, 1e-3^2)
    res = fit_lbfgs(X, y[:, None], b, w0, max_steps=500, ftol=0.0, gtol=1e-13)
    assert res.train_error[0] < 1e-14
    theta = weights_to_log(res.weights)[0]
    torch.testing.assert_close(theta[0], torch.tensor(a_true, dtype=F64), rtol=0, atol=1e-6)
    torch.testing.assert_close(theta[1:], b_true, rtol=0, atol=1e-6)
    # the recorded trace starts at the init and never increases (Armijo steps)
    tr = res.trace_error[:, 0]
    assert np.all(np.diff(tr) <= 1e-15) and tr[0] > 1e-2
    assert res.status[0] == "converged"


def test_lbfgs_batch_members_are_independent() -> None:
    X, y, _, _ = _log_linear_problem(n=200, N=8, seed=1)
    Y = torch.stack([y, 2.0 * (y > y.median())], dim=1).to(F64)
    both = FitBatch(ranks=(1, 2), targets=(0, 1))
    w = init_paper_weights(both, 8, 2, [0, 1])
    res = fit_lbfgs(X, Y, both, w, max_steps=40)
    for j in range(2):
        alone = FitBatch(ranks=(both.ranks[j],), targets=(both.targets[j],))
        r1 = fit_lbfgs(X, Y, alone, w[both.components(j)], max_steps=40)
        assert r1.steps[0] == res.steps[j]
        torch.testing.assert_close(
            res.weights[both.components(j)], r1.weights, rtol=1e-8, atol=1e-10
        )
        assert res.train_error[j] == pytest.approx(r1.train_error[0], rel=1e-9)


def test_lbfgs_from_a_far_init_stays_finite_and_monotone() -> None:
    # f = 1.2^500 ~ 3e39 at the start (squared error 1e79): trial steps that overflow exp()
    # must be rejected by the line search, never accepted as NaN
    X = _binary(50, 500, 0.5, 4)
    y = 2.0 * (X[:, 0] > 0.5).to(F64)
    b = FitBatch(ranks=(1,), targets=(0,))
    w0 = torch.full((1, 500, 2), 1.2, dtype=F64)
    res = fit_lbfgs(X, y[:, None], b, w0, max_steps=60)
    tr = res.trace_error[:, 0]
    assert np.all(np.isfinite(tr)) and np.all(np.diff(tr) <= 0)
    # far from the data, log f falls by a roughly constant amount per step (exp curvature)
    assert tr[-1] < 1e-10 * tr[0]
    assert torch.isfinite(res.weights).all()


def test_adam_paper_and_log_parametrizations_decrease_error() -> None:
    X, y, _, _ = _log_linear_problem(n=300, N=10, seed=2)
    Y = y[:, None]
    b = FitBatch(ranks=(1, 2), targets=(0, 0))
    w0 = init_paper_weights(b, 10, 2, [0, 0])
    start = fit_errors(w0, X, Y, b)
    paper = fit_adam(
        X, Y, b, w0, lr=5e-3, batch_size=100, epochs=30, generator=torch.Generator().manual_seed(0)
    )
    log = fit_adam(X, Y, b, w0, lr=0.05, batch_size=None, epochs=300, parametrization="log")
    for res in (paper, log):
        assert np.all(res.train_error < 0.5 * start)
        np.testing.assert_allclose(res.train_error, fit_errors(res.weights, X, Y, b), rtol=1e-9)
    assert paper.steps.tolist() == [90, 90] and log.steps.tolist() == [300, 300]
    assert paper.trace_error.shape == (30, 2)


def test_adam_batch_members_are_independent() -> None:
    X, y, _, _ = _log_linear_problem(n=120, N=6, seed=3)
    Y = torch.stack([y, 2.0 - y.clamp(max=2.0)], dim=1)
    both = FitBatch(ranks=(2, 1), targets=(0, 1))
    w = init_paper_weights(both, 6, 2, [5, 6])
    kw = {"lr": 1e-2, "batch_size": 50, "epochs": 5}
    res = fit_adam(X, Y, both, w, generator=torch.Generator().manual_seed(1), **kw)
    alone = FitBatch(ranks=(1,), targets=(1,))
    r1 = fit_adam(X, Y, alone, w[2:3], generator=torch.Generator().manual_seed(1), **kw)
    torch.testing.assert_close(res.weights[2:3], r1.weights, rtol=1e-12, atol=1e-13)


def _adam_reference(X, Y, w0, lr, batch_size, epochs, seed):
    """Plain Adam on one rank-R fit, written out: the paper's update without the clamp."""
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    cf = torch.zeros(w0.shape[0], dtype=torch.long)
    for _ in range(epochs):
        perm = torch.randperm(X.shape[0], generator=gen)
        for s in range(0, X.shape[0], batch_size):
            idx = perm[s : s + batch_size]
            loss = ((batched_predict(w, X[idx], cf, 1) - Y[idx]) ** 2).mean(dim=0).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return w.detach()


def test_adam_without_clamp_is_unchanged() -> None:
    X, y, _, _ = _log_linear_problem(n=90, N=6, seed=4)
    Y = y[:, None]
    b = FitBatch(ranks=(2,), targets=(0,))
    w0 = init_paper_weights(b, 6, 2, [3])
    kw = {"lr": 1e-2, "batch_size": 30, "epochs": 7}
    off = fit_adam(X, Y, b, w0, generator=torch.Generator().manual_seed(2), **kw)
    never = fit_adam(X, Y, b, w0, generator=torch.Generator().manual_seed(2), max_value=1e30, **kw)
    assert torch.equal(off.weights, never.weights)
    ref = _adam_reference(X, Y, w0, seed=2, **kw)
    torch.testing.assert_close(off.weights, ref, rtol=1e-13, atol=1e-14)
    assert off.status == ["max_steps"] and "clamped" not in off.optimizer


def test_adam_clamp_holds_after_every_step(monkeypatch) -> None:
    # targets 2 on 6 modes need factors ~2^(1/6) = 1.12 > 1.02: the clamp binds
    X = _binary(60, 6, 0.5, seed=5)
    Y = torch.full((60, 1), 2.0, dtype=F64)
    b = FitBatch(ranks=(1,), targets=(0,))
    w0 = init_paper_weights(b, 6, 2, [0])  # the paper's init N(1, 1e-3^2)
    seen: list[float] = []
    real = nr.adam.batched_predict

    def spy(w, x, cf, n_fits):  # every forward sees the weights after the previous step
        seen.append(float(w.detach().max()))
        return real(w, x, cf, n_fits)

    monkeypatch.setattr(nr.adam, "batched_predict", spy)
    kw = {"lr": 1e-2, "batch_size": 20, "epochs": 40}
    res = fit_adam(X, Y, b, w0, max_value=1.02, **kw)
    assert len(seen) == 40 * 3 + 1  # every step, then the final evaluation
    assert max(seen) <= 1.02 and float(res.weights.max()) <= 1.02
    assert bool((res.weights == 1.02).any())  # the clamp was active
    assert "clamped at <= 1.02" in res.optimizer
    free = fit_adam(X, Y, b, w0, **kw)
    assert float(free.weights.max()) > 1.05
    assert free.train_error[0] < res.train_error[0]  # the clamp costs fit here


def test_adam_callback_can_stop_and_clamp_is_checked() -> None:
    X, y, _, _ = _log_linear_problem(n=40, N=4, seed=6)
    b = FitBatch(ranks=(1,), targets=(0,))
    w0 = init_paper_weights(b, 4, 2, [0])
    calls: list[tuple[int, np.ndarray]] = []

    def cb(epoch: int, err: np.ndarray) -> bool:
        calls.append((epoch, err))
        return epoch >= 3

    res = fit_adam(X, y[:, None], b, w0, batch_size=20, epochs=10, callback=cb)
    assert [c[0] for c in calls] == [1, 2, 3]
    assert res.status == ["stopped"] and res.evals == 3 and res.steps.tolist() == [6]
    np.testing.assert_array_equal(res.trace_error[-1], calls[-1][1])
    with pytest.raises(ValueError, match="applies to the 'weights'"):
        fit_adam(X, y[:, None], b, w0, parametrization="log", max_value=1.02)
    with pytest.raises(ValueError, match="finite"):
        fit_adam(X, y[:, None], b, w0, max_value=float("inf"))
    with pytest.raises(ValueError, match="max_value must be finite"):
        nr.AdamConfig(max_value=float("nan"))


def test_fit_group_passes_the_clamp(tiny_images) -> None:
    data = tiny_images()
    (group,) = nr.fit_groups(data, ("original",), [0], positive_class=3)
    cfg = {
        "lbfgs": nr.LBFGSConfig(steps=2),
        "adam": nr.AdamConfig(lr=0.05, batch=0, epochs=30, max_value=1.0005),
        "adam_log": nr.AdamConfig(),
    }
    _, _, res = nr.fit_group(group, "adam", (1,), [0], dtype=F64, **cfg)
    assert float(res.weights.max()) <= 1.0005 and "clamped" in res.optimizer


def test_fit_errors_clamp_and_units() -> None:
    X = _binary(20, 5, 0.5, 5)
    b = FitBatch(ranks=(1,), targets=(0,))
    W = torch.ones(1, 5, 2, dtype=F64)  # f = 1 everywhere
    Y = torch.zeros(20, 1, dtype=F64)
    Y[:4] = 2.0
    # squared error 1 everywhere -> 1/4
    assert fit_errors(W, X, Y, b)[0] == pytest.approx(0.25)
    W = torch.full((1, 5, 2), 2.0, dtype=F64)  # f = 32: squared error ~ 900 > 4 -> clamped to 1
    assert fit_errors(W, X, Y, b, clamp=True)[0] == pytest.approx(1.0)
    assert fit_errors(W, X, Y, b)[0] == pytest.approx((16 * 32**2 + 4 * 30**2) / 20 / 4)
