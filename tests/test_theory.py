"""Tests for factorflow.theory: the singular-value rates of Arora et al. 2019 (Thm. 3) and the
end-to-end flow field of Arora, Cohen, Hazan 2018 (Thm. 1) hold exactly for balanced factors and
fail for unbalanced ones; the 2x2 w11 bound of Razin & Cohen 2020."""

from __future__ import annotations

import math

import pytest
import torch

from factorflow import metrics, theory
from factorflow.dynamics import Flow, Schedule, Stop, train
from factorflow.factorizations.dmf import (
    balance_factors,
    dmf_factor_gradients,
    end_to_end,
    end_to_end_velocity,
    init_dmf,
)
from factorflow.objectives import DMFObjective
from factorflow.problems.matrix import razin_2x2, synthetic_completion

DT = torch.float64

CASES = [((5, 5), 2, None), ((6, 4), 3, [6, 5]), ((3, 7), 4, 7), ((4, 4), 3, 4)]


def _state(shape, depth, width, balanced: bool, seed: int = 0):
    """Random factors (three runs) and a random dl/dW at their end-to-end matrix."""
    fs, _ = init_dmf(
        shape, depth, init="normal", init_scale=0.8, seeds=[seed, seed + 1, seed + 2], width=width
    )
    if balanced:
        fs = balance_factors(fs, seeds=[seed, seed + 1, seed + 2])
    G = torch.randn(3, *shape, generator=torch.Generator().manual_seed(seed + 99), dtype=DT)
    return fs, G


@pytest.mark.parametrize(("shape", "depth", "width"), CASES)
@pytest.mark.parametrize("seed", [0, 10])
def test_singular_value_rates_exact_for_balanced(shape, depth, width, seed):
    fs, G = _state(shape, depth, width, balanced=True, seed=seed)
    k = min(shape)
    measured, predicted = theory.singular_value_rates(fs, G, k)
    assert measured.shape == predicted.shape == (3, k)
    assert theory.max_relative_error(measured, predicted) < 1e-10


@pytest.mark.parametrize(("shape", "depth", "width"), CASES)
def test_singular_value_rates_fail_for_unbalanced(shape, depth, width):
    fs, G = _state(shape, depth, width, balanced=False)
    measured, predicted = theory.singular_value_rates(fs, G, min(shape))
    assert theory.max_relative_error(measured, predicted) > 1e-2


def test_singular_value_rates_on_a_problem_gradient():
    """Same check with grad_W = dl/dW of a completion objective at the factors."""
    obj = DMFObjective(synthetic_completion((6, 5), 2, 15, seed=0), "mse")
    fs, _ = init_dmf((6, 5), 3, init="balanced", init_scale=2.0, seeds=[0, 1])
    _, G = obj.grad_W(end_to_end(fs))
    measured, predicted = theory.singular_value_rates(fs, G, 5)
    assert theory.max_relative_error(measured, predicted) < 1e-10


def _field_and_velocity(fs, G):
    """The closed-form end-to-end field at W = end_to_end(fs) and the exact end-to-end velocity
    of the factor gradient flow, (B, d_N, d_0) each."""
    field = theory.end_to_end_flow_field(end_to_end(fs), G, len(fs))
    vel = end_to_end_velocity(fs, [-g for g in dmf_factor_gradients(fs, G)])
    return field, vel


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(
    ("shape", "depth", "width"), [((5, 5), 2, None), ((4, 4), 3, 4), ((4, 4), 4, [5, 6, 4])]
)
def test_end_to_end_flow_field_is_the_factor_flow_for_balanced(shape, depth, width):
    """Arora, Cohen, Hazan 2018, Thm. 1, on full-rank square end-to-end matrices."""
    fs, G = _state(shape, depth, width, balanced=True)
    assert _rel(*_field_and_velocity(fs, G)) < 1e-10
    ub, Gu = _state(shape, depth, width, balanced=False)
    assert _rel(*_field_and_velocity(ub, Gu)) > 1e-2


def _rank3_balanced_6x6() -> tuple[list[torch.Tensor], torch.Tensor]:
    fs, _ = init_dmf((6, 6), 3, init="balanced", init_scale=1.0, seeds=[0])
    U, S, Vh = torch.linalg.svd(end_to_end(fs))
    S[:, 3:] = 0
    W = (U * S.unsqueeze(-2)) @ Vh
    fs = balance_factors([W, torch.eye(6, dtype=DT)[None], torch.eye(6, dtype=DT)[None]], [0])
    return fs, torch.randn(1, 6, 6, generator=torch.Generator().manual_seed(1), dtype=DT)


@pytest.mark.parametrize("case", ["6x4-depth3", "3x7-depth4", "6x6-rank3-depth3"])
def test_end_to_end_flow_field_rank_deficient(case):
    """Thm. 1 holds for any shapes with hidden widths >= min(d_0, d_N), and for singular W: the
    field must match the factor flow to 1e-10 there too."""
    if case == "6x4-depth3":
        fs, G = _state((6, 4), 3, [6, 5], balanced=True)
    elif case == "3x7-depth4":
        fs, G = _state((3, 7), 4, 7, balanced=True)
    else:
        fs, G = _rank3_balanced_6x6()
    assert float(metrics.balancedness_gap(fs, relative=True).max()) < 1e-12
    assert _rel(*_field_and_velocity(fs, G)) < 1e-10


def test_depth_one_flow_field_is_minus_the_gradient():
    W = torch.randn(2, 4, 3, dtype=DT)
    G = torch.randn(2, 4, 3, dtype=DT)
    torch.testing.assert_close(theory.end_to_end_flow_field(W, G, 1), -G)


def test_max_relative_error():
    m = torch.tensor([[1.1, 2.0], [0.0, 5.0]], dtype=DT)
    p = torch.tensor([[1.0, 2.0], [0.0, 4.0]], dtype=DT)
    assert math.isclose(theory.max_relative_error(m, p), 0.25)  # the 0/0 entry is skipped
    assert math.isclose(theory.max_relative_error(m, p, floor=10.0), 0.1)
    assert math.isnan(theory.max_relative_error(torch.zeros(2), torch.zeros(2)))


# --------------------------------------------------------------------------- the 2x2 bound


def test_w11_lower_bound_values():
    assert theory.w11_lower_bound(1e-4) == pytest.approx(68.72, abs=5e-3)
    for loss in (1e-6, 1e-3, 0.1, 0.3):
        e = math.sqrt(2 * loss)
        assert math.isclose(theory.w11_lower_bound(loss), (1 - e) ** 2 / e)
    vals = [theory.w11_lower_bound(x) for x in (1e-6, 1e-4, 1e-2, 0.4)]
    assert vals == sorted(vals, reverse=True)


@pytest.mark.parametrize("loss", [0.5, 0.7, 0.0, -1e-3])
def test_w11_lower_bound_out_of_range(loss):
    with pytest.raises(ValueError, match="0 < loss < 1/2"):
        theory.w11_lower_bound(loss)


def test_w11_bound_holds_along_a_flow():
    """Depth-3 flow from balanced det > 0 init on [[?, 1], [1, 0]]: |w11| >= the bound at every
    recorded point with loss < 1/2."""
    obj = DMFObjective(razin_2x2(), "half_sse")
    fs, _ = init_dmf((2, 2), 3, init="normal", init_scale=0.3, seeds=[0], balance=True, det_sign=1)
    res = train(
        fs,
        obj,
        Flow(),
        Stop(loss_below=1e-2),
        Schedule(accepted=True),
        {
            "w11": lambda ps: end_to_end(ps)[:, 0, 0],
            "det": lambda ps: torch.linalg.det(end_to_end(ps)),
        },
    )
    tr = res.run_trajectory(0)
    assert res.status == ["converged"] and (tr.values["det"] > 0).all()
    checked = 0
    for loss, w11 in zip(tr.values["loss"], tr.values["w11"], strict=True):
        if loss < 0.5:
            assert abs(w11) >= theory.w11_lower_bound(float(loss))
            checked += 1
    assert checked > 5
