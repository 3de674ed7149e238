"""The trajectory checks and the curvature in factorflow.theory and factorflow.metrics, each
against an independent reference (float64): hand-made numbers, sigmoids with known crossing
times, a dense autograd Hessian, singular values by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from factorflow.factorizations.dmf import init_dmf
from factorflow.metrics import matrix_metrics
from factorflow.objectives import DMFObjective
from factorflow.problems.matrix import synthetic_completion
from factorflow.theory import (
    crossing_times,
    hessian_top_eigenvalue,
    one_at_a_time,
    singular_value_rates,
    theorem_errors,
    trajectory_agreement,
)


def _sig(t: np.ndarray, t0: float, height: float) -> np.ndarray:
    return height / (1.0 + np.exp(-(t - t0)))


def test_crossing_times_and_one_at_a_time():
    t = np.linspace(0.0, 100.0, 1001)
    staggered = np.stack([_sig(t, 20, 5.0), _sig(t, 40, 4.0), _sig(t, 60, 3.0)], axis=1)
    np.testing.assert_allclose(crossing_times(t, staggered, 3), [20, 40, 60], atol=0.05)
    # 90 %: 1 / (1 + e^-x) = 0.9 at x = ln 9
    np.testing.assert_allclose(crossing_times(t, staggered, 1, 0.9), [20 + math.log(9)], atol=0.05)
    res = one_at_a_time(t, staggered, 3)
    assert res["ordered"] and res["n_sequential_pairs"] == 2 and res["n_pairs"] == 2
    assert res["spread"] == pytest.approx(3.0, rel=1e-2)
    together = np.stack([_sig(t, 30, 5.0), _sig(t, 30, 4.0), _sig(t, 30, 3.0)], axis=1)
    res = one_at_a_time(t, together, 3)
    assert res["n_sequential_pairs"] == 0 and abs(res["spread"] - 1.0) < 1e-3
    never = np.stack([np.linspace(1, 0, 5)], axis=1)  # falls: reaches half of 0 at once
    assert crossing_times(np.arange(5.0), never, 1)[0] == 0.0


def test_theorem_errors_separation_and_zero_rates():
    sv = np.array([[1.0, 1.0, 1.0], [3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    pred = np.array([[1.0, 1.0], [1.0, 1e-9], [1.0, 0.5]])
    meas = pred + np.array([[0.5, 0.5], [1e-12, 1e-12], [1e-10, 0.0]])
    scale = np.ones_like(pred)
    r = theorem_errors(sv, meas, pred, scale, k=2, gap=1e-6)
    assert r["n_rows"] == 3 and r["n_separated"] == 2  # the first row: equal singular values
    assert r["separated"].tolist() == [False, True, True]
    assert r["n_rates_numerically_zero"] == 1  # |p| = 1e-9 < 1e-6 x scale
    assert r["max_rel_error"] == pytest.approx(1e-10)
    assert r["max_normwise_error"] == pytest.approx(1e-10)
    assert r["max_rel_error_all_rows"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="need sv"):
        theorem_errors(sv[:, :2], meas, pred, scale, k=2, gap=1e-6)


def test_theorem_errors_on_a_balanced_flow_state_is_rounding():
    """Thm. 3 holds exactly for balanced factors: singular_value_rates at a balanced state of a
    real problem gives errors at rounding level, and at an unbalanced one it does not."""
    problem = synthetic_completion((12, 10), 2, 60, 0)
    obj = DMFObjective(problem, "mse")
    k = 3
    out = {}
    for balance in (True, False):
        fs, _ = init_dmf((12, 10), 3, init="gaussian", init_scale=3.0, seeds=[1], balance=balance)
        _, G = obj.grad_W(fs[2] @ fs[1] @ fs[0])
        meas, pred = singular_value_rates(fs, G, k)
        sv = torch.linalg.svdvals(fs[2] @ fs[1] @ fs[0])
        scale = 3 * sv[:, :k].square().pow(2 / 3) * torch.linalg.matrix_norm(G)[:, None]
        out[balance] = theorem_errors(
            sv.numpy(), meas.numpy(), pred.numpy(), scale.numpy(), k, 1e-6
        )
    assert out[True]["n_separated"] == 1
    assert out[True]["max_normwise_error"] < 1e-12
    assert out[False]["max_normwise_error"] > 1e-3


def test_trajectory_agreement():
    t = np.arange(0.0, 101.0, 1.0)
    a = np.stack([_sig(t, 20, 5.0), _sig(t, 40, 4.0)], axis=1)
    b = np.stack([_sig(t, 21, 5.0), _sig(t, 40, 4.0)], axis=1)
    r = trajectory_agreement(t, a, t[::10], b[::10], 2)
    d = np.abs(a[::10] - b[::10]).max(axis=1) / np.maximum(a[::10, 0], b[::10, 0])
    assert r["max_diff_over_sigma1"] == pytest.approx(d.max())
    assert r["at_time"] == t[::10][d.argmax()]
    fine = trajectory_agreement(t, a, t, b, 2)  # sigma_1's half-height moved by 1
    assert fine["max_t50_shift"] == pytest.approx(1.0, abs=0.05)
    same = trajectory_agreement(t, a, t, a, 2)
    assert same["max_diff_over_sigma1"] == 0.0 and same["max_t50_shift"] == 0.0
    apart = trajectory_agreement(t, a, t + 0.5, a, 2)
    assert math.isnan(apart["max_diff_over_sigma1"])  # no shared record time


def test_hessian_top_eigenvalue_matches_dense_hessian():
    problem = synthetic_completion((5, 4), 1, 12, 0)
    obj = DMFObjective(problem, "mse")
    factors, _ = init_dmf((5, 4), 3, init="gaussian", init_scale=2.0, seeds=[0, 1])
    gen = torch.Generator().manual_seed(0)
    lam, v, n = hessian_top_eigenvalue(obj, factors, iters=5000, tol=1e-13, generator=gen)
    assert n > 1
    for b in range(2):
        sizes = [f[b].numel() for f in factors]
        shapes = [f[b].shape for f in factors]

        def loss(x: torch.Tensor, sizes=sizes, shapes=shapes) -> torch.Tensor:
            pieces = torch.split(x, sizes)
            return obj([p.reshape(s)[None] for p, s in zip(pieces, shapes, strict=True)])[0]

        flat = torch.cat([f[b].reshape(-1) for f in factors])
        ev = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, flat))
        assert float(lam[b]) == pytest.approx(float(ev[ev.abs().argmax()]), rel=1e-6)
        assert float(sum(x[b].square().sum() for x in v)) == pytest.approx(1.0)


def test_matrix_metrics_by_hand():
    W = torch.tensor([[[3.0, 0.0], [0.0, 1.0]], [[0.0, 2.0], [0.0, 0.0]]], dtype=torch.float64)
    m = {k: x.numpy() for k, x in matrix_metrics(W, depth=3).items()}
    assert m["det"] == pytest.approx([3.0, 0.0])
    assert m["rel_det"][0] == pytest.approx(3.0 / 10.0)
    assert m["nuclear_norm"] == pytest.approx([4.0, 2.0])
    assert m["fro_norm"] == pytest.approx([math.sqrt(10.0), 2.0])
    assert m["schatten_0.5"][0] == pytest.approx((math.sqrt(3.0) + 1.0) ** 2)
    assert m["schatten_2/N"][0] == pytest.approx((3 ** (2 / 3) + 1.0) ** 1.5)
    p = np.array([0.75, 0.25])
    assert m["effective_rank"][0] == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert m["effective_rank"][1] == pytest.approx(1.0)
    assert m["floor_measure"] == pytest.approx([(1 / 3) ** (2 / 3), 0.0])
    assert m["w11"] == pytest.approx([3.0, 0.0]) and m["abs_w11"][0] == 3.0
    rect = matrix_metrics(torch.ones(4, 3, dtype=torch.float64), depth=2)
    assert "det" not in rect and float(rect["floor_measure"]) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="depth"):
        matrix_metrics(W, depth=0)
