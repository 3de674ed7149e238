"""Library functions of the natural-data tensor-rank experiment (factorflow.natural_rank)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import factorflow.natural_rank as nr
from factorflow.data.images import ImageData, make_variant, to_tensor_indices
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


def _tiny_images(n_train: int = 40, n_test: int = 20, seed: int = 0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    return ImageData(
        train_images=torch.rand(n_train, 4, 5, generator=g),
        train_labels=torch.arange(n_train) % 10,
        test_images=torch.rand(n_test, 4, 5, generator=g),
        test_labels=torch.arange(n_test) % 10,
        dataset="synthetic",
        source="test",
    )


def test_encode_images_matches_to_tensor_indices() -> None:
    imgs = _tiny_images().train_images
    imgs[0, 0, 0] = 0.5  # a tie goes up
    out = encode_images(imgs, chunk=7)
    assert out.dtype == torch.uint8 and out.shape == (40, 20)
    torch.testing.assert_close(out.long(), to_tensor_indices(imgs))


@pytest.mark.parametrize("variant", ["original", "rand_image", "rand_label"])
def test_build_variant_equals_make_variant(variant: str) -> None:
    data = _tiny_images()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    v = build_variant(data, variant, generator=g1, positive_class=3)
    ref = make_variant(data, variant, generator=g2, positive_class=3)
    for got, want in zip((v.train_x, v.train_y, v.test_x, v.test_y), ref, strict=True):
        torch.testing.assert_close(got.to(want.dtype), want)


def test_build_variant_bad_inputs() -> None:
    data = _tiny_images()
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


def test_fit_group_passes_the_clamp() -> None:
    data = _tiny_images()
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


# --------------------------------------------------------------------------- data preparation


def _idx_set(folder, n_train: int, n_test: int) -> None:
    from factorflow.data.images import write_idx

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            folder / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), np.uint8)
        )
        write_idx(folder / f"{split}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))


def test_load_dataset_uses_a_given_data_dir_strictly(tmp_path, monkeypatch) -> None:
    from factorflow.data.images import ENV_VAR, DataNotFoundError

    with pytest.raises(ValueError, match=f"data_dir {tmp_path / 'missing'}: no such folder"):
        nr.load_dataset("mnist", str(tmp_path / "missing"))
    _idx_set(tmp_path / "env" / "mnist", 20, 10)  # a full set elsewhere must not stand in
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="no mnist IDX files in"):
        nr.load_dataset("mnist", str(tmp_path / "empty"), fallback=True)
    with pytest.raises(DataNotFoundError, match="no fashion-mnist IDX files.*no mnist IDX"):
        nr.load_dataset(None, str(tmp_path / "empty"))
    _idx_set(tmp_path / "data" / "mnist", 30, 10)
    data, name, note = nr.load_dataset(None, str(tmp_path / "data"))
    assert (name, data.source, data.n_train) == ("mnist", "idx:mnist", 30)
    assert "from data_dir" in note
    # without data_dir the usual search applies ($FACTORFLOW_DATA_DIR here)
    data, name, _ = nr.load_dataset("mnist")
    assert (name, data.n_train) == ("mnist", 20)


def test_subset_images_is_seeded_and_says_what_it_did() -> None:
    data = _tiny_images()
    sub, note = nr.subset_images(data, 10, None, seed=4)
    again, _ = nr.subset_images(data, 10, None, seed=4)
    assert sub.n_train == 10 and sub.n_test == data.n_test
    torch.testing.assert_close(sub.train_images, again.train_images)
    g = torch.Generator().manual_seed(4)
    torch.testing.assert_close(
        sub.train_labels, data.train_labels[torch.randperm(data.n_train, generator=g)[:10]]
    )
    assert note == f"train: random 10 of {data.n_train} (subset_seed 4)"
    same, note = nr.subset_images(data, None, 10_000)
    assert same is data and note == "all images"


def test_fit_groups_share_the_design_matrix_and_draw_as_build_variant() -> None:
    data = _tiny_images()
    groups = nr.fit_groups(data, nr.VARIANTS, [0, 1], positive_class=3)
    assert [g.name for g in groups] == ["images", "rand_image_seed0", "rand_image_seed1"]
    images = groups[0]
    assert images.columns == [("original", -1), ("rand_label", 0), ("rand_label", 1)]
    for t, (variant, seed) in enumerate(images.columns):
        gen = None if seed < 0 else nr.data_generator(seed)
        ref = build_variant(data, variant, generator=gen, positive_class=3)
        torch.testing.assert_close(images.train_y[:, t], ref.train_y)
        torch.testing.assert_close(images.test_y[:, t], ref.test_y)
        torch.testing.assert_close(images.train_x, ref.train_x)
    ref = build_variant(data, "rand_image", generator=nr.data_generator(1), positive_class=3)
    torch.testing.assert_close(groups[2].train_x, ref.train_x)
    assert [g.name for g in nr.fit_groups(data, ("rand_label",), [0], positive_class=3)] == [
        "images"
    ]


def test_fit_group_rows_match_a_fit_alone() -> None:
    data = _tiny_images()
    (group,) = nr.fit_groups(data, ("original", "rand_label"), [0, 1], positive_class=3)
    cfg = {"lbfgs": nr.LBFGSConfig(steps=6), "adam": nr.AdamConfig(), "adam_log": nr.AdamConfig()}
    keys, batch, res = nr.fit_group(group, "lbfgs", (1, 2), [0, 1], dtype=F64, **cfg)
    # original (seeds 0, 1) then rand_label seed 0, seed 1; ranks 1, 2 each
    assert [(k["variant"], k["seed"], k["rank"]) for k in keys] == [
        ("original", 0, 1), ("original", 0, 2), ("original", 1, 1), ("original", 1, 2),
        ("rand_label", 0, 1), ("rand_label", 0, 2), ("rand_label", 1, 1), ("rand_label", 1, 2),
    ]  # fmt: skip
    info = {"dataset": "tiny", "source": "test", "n_train": data.n_train, "n_test": data.n_test,
            "positive_class": 3}  # fmt: skip
    rows, traces, weights = nr.group_rows(group, "lbfgs", keys, batch, res, info=info)
    assert set(rows[0]) == set(nr.COLUMNS)
    j = 5  # rand_label seed 0, rank 2, alone
    alone = FitBatch(ranks=(2,), targets=(batch.targets[j],))
    w0 = init_paper_weights(alone, group.train_x.shape[1], 2, [0])
    r1 = fit_lbfgs(group.train_x, group.train_y, alone, w0, max_steps=6, dtype=F64)
    assert rows[j]["train_objective"] == pytest.approx(float(r1.train_error[0]), rel=1e-9)
    want = paper_error(
        batched_predict(r1.weights, group.test_x, alone.comp_fit, 1)[:, 0],
        group.test_y[:, batch.targets[j]],
        clamp=True,
    )
    assert rows[j]["test_error"] == pytest.approx(float(want), rel=1e-9)
    assert rows[j]["label_variance"] == pytest.approx(label_variance(group.train_y[:, 1]))
    assert weights["lbfgs__rand_label__R2__seed0"].shape == (2, group.train_x.shape[1], 2)
    assert (
        traces["lbfgs__original__R1__seed1__train_error"].shape
        == traces["lbfgs__original__R1__seed1__step"].shape
    )
    with pytest.raises(ValueError, match="unknown optimizer"):
        nr.fit_group(group, "sgd", (1,), [0], **cfg)


def test_optimizer_configs_are_checked() -> None:
    with pytest.raises(ValueError, match="lbfgs steps"):
        nr.LBFGSConfig(steps=0)
    with pytest.raises(ValueError, match="adam needs"):
        nr.AdamConfig(batch=-1)


# --------------------------------------------------------------------------- measures


def _frame(errors: dict) -> pd.DataFrame:
    return pd.DataFrame(
        [{"variant": v, "rank": r, "seed": s, "optimizer": "lbfgs", "train_error": tr,
          "test_error": te, "label_variance": 0.1, "test_label_variance": 0.1}
         for (v, r, s), (tr, te) in errors.items()]
    )  # fmt: skip


def test_measures_by_hand() -> None:
    from factorflow.experiment import NotJudged
    from factorflow.natural_rank import measures as m

    rows = _frame({
        ("original", 1, 0): (0.02, 0.05), ("original", 1, 1): (0.04, 0.07),
        ("original", 3, 0): (0.01, 0.08), ("original", 3, 1): (0.01, float("nan")),
        ("rand_image", 1, 0): (0.09, 0.1), ("rand_image", 3, 0): (0.05, 0.12),
        ("rand_label", 1, 0): (0.12, 0.1), ("rand_label", 3, 0): (0.06, 0.15),
    })  # fmt: skip
    gap = m.rank1_train_gap(rows, "lbfgs")
    assert gap["original"] == pytest.approx(0.03) and gap[
        "ratio_original_to_lowest_control"
    ] == pytest.approx(0.03 / 0.09)
    near = m.random_rank1_vs_label_variance(rows, "lbfgs")
    assert near["rand_image_relative_gap"] == pytest.approx(-0.1)
    assert near["worst_abs_relative_gap"] == pytest.approx(0.2)
    orig = m.original_test_vs_label_variance(rows, "lbfgs")
    assert orig["test_error"] == {"R1": pytest.approx(0.06), "R3": pytest.approx(0.08)}
    assert orig["worst_to_label_variance"] == pytest.approx(0.8) and orig["n_nonfinite"] == 1
    rand = m.random_test_vs_label_variance(rows, "lbfgs")
    assert rand["rank"] == 3 and rand["lowest_to_label_variance"] == pytest.approx(1.2)
    drop = m.train_drop_with_rank(rows, "lbfgs")
    assert drop["ratio_largest_R_to_R1"] == pytest.approx(0.01 / 0.03)
    with pytest.raises(NotJudged, match="no adam fits"):
        m.rank1_train_gap(rows, "adam")
    only_orig = rows[rows["variant"] == "original"]
    for fn in (
        m.rank1_train_gap,
        m.random_rank1_vs_label_variance,
        m.random_test_vs_label_variance,
    ):
        with pytest.raises(NotJudged):
            fn(only_orig, "lbfgs")
    with pytest.raises(NotJudged):
        m.train_drop_with_rank(rows[rows["rank"] == 1], "lbfgs")
