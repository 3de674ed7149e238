"""Tests for the observations and matrix problems (factorflow.problems): synthetic ground truths,
sampled entries, residuals against explicit references, the 2x2 problems, and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from factorflow.problems import Completion, sample_indices
from factorflow.problems.matrix import (
    MatrixCompletion,
    MatrixSensing,
    gaussian_sensing,
    low_rank_matrix,
    razin_2x2,
    razin_2x2_perturbed,
    synthetic_completion,
)

DT = torch.float64


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


# --------------------------------------------------------------------------- synthetic data


@pytest.mark.parametrize(("shape", "rank"), [((20, 20), 2), ((12, 7), 3), ((5, 9), 1)])
def test_synthetic_ground_truth_norm_and_rank(shape, rank):
    prob = synthetic_completion(shape, rank, n_obs=min(30, shape[0] * shape[1]), seed=3)
    W = prob.ground_truth
    assert W.shape == shape and W.dtype == DT
    # Arora et al. 2019: ||W*||_F = sqrt(d1 d2), i.e. RMS entry 1.
    assert math.isclose(float(torch.linalg.matrix_norm(W)), math.sqrt(shape[0] * shape[1]))
    s = torch.linalg.svdvals(W)
    assert int(torch.linalg.matrix_rank(W)) == rank
    assert float(s[rank - 1]) > 1e-3 * float(s[0])


def test_low_rank_matrix_custom_norm_and_errors():
    g = torch.Generator().manual_seed(0)
    W = low_rank_matrix((6, 4), 2, g, fro_norm=3.0)
    assert math.isclose(float(torch.linalg.matrix_norm(W)), 3.0)
    for rank in (0, 5):
        with pytest.raises(ValueError, match="rank"):
            low_rank_matrix((6, 4), rank, g)


def test_synthetic_completion_seeds_reproducible():
    a = synthetic_completion((10, 8), 2, 30, seed=7)
    b = synthetic_completion((10, 8), 2, 30, seed=7)
    c = synthetic_completion((10, 8), 2, 30, seed=8)
    assert torch.equal(a.ground_truth, b.ground_truth)
    assert torch.equal(a.obs.indices, b.obs.indices)
    assert torch.equal(a.obs.values, b.obs.values)
    assert not torch.equal(a.ground_truth, c.ground_truth)
    assert not torch.equal(a.obs.indices, c.obs.indices)


def test_synthetic_completion_entries_distinct_in_range_and_true():
    prob = synthetic_completion((9, 11), 3, 60, seed=1)
    idx = prob.obs.indices
    assert idx.shape == (60, 2) and idx.dtype == torch.long
    assert prob.n_obs == 60
    assert (idx >= 0).all() and (idx[:, 0] < 9).all() and (idx[:, 1] < 11).all()
    assert len({tuple(r) for r in idx.tolist()}) == 60
    torch.testing.assert_close(prob.obs.values, prob.ground_truth[idx[:, 0], idx[:, 1]])
    # every entry observed: the residual of the ground truth is zero
    assert float(prob.residuals(prob.ground_truth[None]).abs().max()) == 0.0


def test_sample_indices_distinct_and_errors():
    g = torch.Generator().manual_seed(0)
    idx = sample_indices((3, 4, 2), 24, g)  # every entry of an order-3 array
    assert idx.shape == (24, 3)
    assert sorted(map(tuple, idx.tolist())) == sorted(np.ndindex(3, 4, 2))
    for m in (0, 25):
        with pytest.raises(ValueError, match="distinct entries"):
            sample_indices((3, 4, 2), m, g)


# --------------------------------------------------------------------------- residuals


def test_completion_residuals_and_adjoint_match_reference():
    prob = synthetic_completion((7, 5), 2, 20, seed=2)
    W = _randn(3, 7, 5, seed=1)
    r = prob.residuals(W)
    ref = torch.stack(
        [
            torch.stack(
                [
                    W[b, i, j] - v
                    for (i, j), v in zip(prob.obs.indices.tolist(), prob.obs.values, strict=True)
                ]
            )
            for b in range(3)
        ]
    )
    torch.testing.assert_close(r, ref, rtol=0, atol=0)
    # adjoint of the (linear part of the) observation map: <A(W), g> = <W, A*(g)>
    g = _randn(3, 20, seed=2)
    lhs = ((r + prob.obs.values) * g).sum(dim=1)
    rhs = (W * prob.residual_adjoint(g)).sum(dim=(1, 2))
    torch.testing.assert_close(lhs, rhs, rtol=1e-13, atol=1e-13)


def test_sensing_measurements_and_residuals_match_einsum():
    prob = gaussian_sensing((6, 4), 2, 15, seed=0)
    assert prob.A.shape == (15, 6, 4) and prob.y.shape == (15,) and prob.n_obs == 15
    assert prob.shape == (6, 4)
    torch.testing.assert_close(
        prob.y, torch.einsum("mij,ij->m", prob.A, prob.ground_truth), rtol=1e-13, atol=1e-13
    )
    W = _randn(3, 6, 4, seed=5)
    ref = torch.einsum("mij,bij->bm", prob.A, W) - prob.y
    torch.testing.assert_close(prob.residuals(W), ref, rtol=1e-13, atol=1e-13)
    g = _randn(3, 15, seed=6)
    torch.testing.assert_close(
        prob.residual_adjoint(g), torch.einsum("bm,mij->bij", g, prob.A), rtol=1e-13, atol=1e-13
    )
    assert float(prob.residuals(prob.ground_truth[None]).abs().max()) < 1e-12


def test_sensing_default_std_and_seed():
    prob = gaussian_sensing((20, 10), 2, 50, seed=4)
    # default std 1/d1 (the paper's 1/100 for 100x100); 10^4 draws: std within 5%
    assert abs(float(prob.A.std()) * 20 - 1.0) < 0.05
    again = gaussian_sensing((20, 10), 2, 50, seed=4)
    assert torch.equal(prob.A, again.A) and torch.equal(prob.y, again.y)
    scaled = gaussian_sensing((20, 10), 2, 50, seed=4, std=1.0)
    assert abs(float(scaled.A.std()) - 1.0) < 0.05


def test_sensing_shape_mismatch_errors():
    A = _randn(5, 3, 4)
    y = _randn(5)
    MatrixSensing(A, y)  # fine
    with pytest.raises(ValueError, match=r"\(m, d1, d2\)"):
        MatrixSensing(A.reshape(5, 12), y)
    with pytest.raises(ValueError, match="to match A"):
        MatrixSensing(A, _randn(4))
    with pytest.raises(ValueError, match="to match A"):
        MatrixSensing(A, _randn(5, 1))
    with pytest.raises(ValueError, match="ground truth shape"):
        MatrixSensing(A, y, ground_truth=_randn(4, 3))
    with pytest.raises(ValueError, match="empty"):
        MatrixSensing(A[:0], y[:0])
    bad = A.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        MatrixSensing(bad, y)
    with pytest.raises(ValueError, match="NaN or inf"):
        MatrixSensing(A, torch.cat([y[:4], torch.tensor([float("inf")], dtype=DT)]))


def test_matrix_completion_shape_errors():
    obs3 = Completion((2, 2, 2), torch.tensor([[0, 0, 0]]), torch.tensor([1.0], dtype=DT))
    with pytest.raises(ValueError, match="order-2"):
        MatrixCompletion(obs3)
    obs = Completion((3, 4), torch.tensor([[0, 0]]), torch.tensor([1.0], dtype=DT))
    with pytest.raises(ValueError, match="ground truth shape"):
        MatrixCompletion(obs, ground_truth=torch.zeros(4, 3, dtype=DT))


def test_problem_to_dtype_keeps_values():
    prob = synthetic_completion((5, 5), 1, 10, seed=0)
    p32 = prob.to(torch.float32)
    assert p32.obs.values.dtype == torch.float32 and p32.ground_truth.dtype == torch.float32
    torch.testing.assert_close(p32.obs.values.double(), prob.obs.values, rtol=1e-6, atol=1e-6)
    assert torch.equal(p32.obs.indices, prob.obs.indices)
    s32 = gaussian_sensing((4, 3), 1, 6, seed=0).to(torch.float32)
    assert s32.A.dtype == torch.float32 and s32.y.dtype == torch.float32


# --------------------------------------------------------------------------- the 2x2 problems


def test_razin_2x2_values():
    prob = razin_2x2()
    assert prob.shape == (2, 2) and prob.ground_truth is None
    entries = dict(
        zip(map(tuple, prob.obs.indices.tolist()), prob.obs.values.tolist(), strict=True)
    )
    assert entries == {(0, 1): 1.0, (1, 0): 1.0, (1, 1): 0.0}
    # every completion [[x, 1], [1, 0]] has det -1
    for x in (-3.0, 0.0, 2.5, 100.0):
        W = torch.tensor([[x, 1.0], [1.0, 0.0]], dtype=DT)
        assert float(prob.residuals(W[None]).abs().max()) == 0.0
        assert math.isclose(float(torch.linalg.det(W)), -1.0)


@pytest.mark.parametrize("eps", [0.1, 1e-3])
def test_razin_2x2_perturbed_values(eps):
    prob = razin_2x2_perturbed(eps)
    entries = dict(
        zip(map(tuple, prob.obs.indices.tolist()), prob.obs.values.tolist(), strict=True)
    )
    assert entries == {(0, 1): -2.0, (1, 0): 0.5, (1, 1): eps}
    # every completion has det = eps * w11 + 1
    for x in (-5.0, 0.0, 3.0):
        W = torch.tensor([[x, -2.0], [0.5, eps]], dtype=DT)
        assert float(prob.residuals(W[None]).abs().max()) == 0.0
        assert math.isclose(float(torch.linalg.det(W)), eps * x + 1, rel_tol=1e-12)


# --------------------------------------------------------------------------- bad input


def _obs(indices, values, shape=(3, 4)):
    return Completion(shape, torch.as_tensor(indices), torch.as_tensor(values, dtype=DT))


def test_completion_valid_and_helpers():
    c = _obs([[0, 1], [2, 3]], [1.0, -2.0])
    assert c.order == 2 and c.n_obs == 2
    assert c.flat_indices().tolist() == [1, 11]
    assert c.mask().sum() == 2 and bool(c.mask()[2, 3])
    full = _randn(3, 4)
    f = Completion.from_array(full, torch.tensor([[1, 2]]))
    assert float(f.values[0]) == float(full[1, 2])
    # integer-valued float indices are accepted, integer values become float64
    g = Completion((3, 4), torch.tensor([[0.0, 1.0]]), torch.tensor([2]))
    assert g.indices.dtype == torch.long and g.values.dtype == DT


def test_completion_out_of_range_index():
    with pytest.raises(ValueError, match=r"out of range for shape \(3, 4\)"):
        _obs([[0, 1], [3, 0]], [1.0, 2.0])
    with pytest.raises(ValueError, match="out of range"):
        _obs([[0, 4]], [1.0])


def test_completion_negative_index():
    with pytest.raises(ValueError, match="negative index"):
        _obs([[0, 1], [-1, 0]], [1.0, 2.0])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_completion_non_finite_values(bad):
    with pytest.raises(ValueError, match="NaN or inf"):
        _obs([[0, 1], [1, 0]], [1.0, bad])


def test_completion_duplicate_entries():
    with pytest.raises(ValueError, match=r"entry \(1, 2\) is observed more than once"):
        _obs([[1, 2], [0, 0], [1, 2]], [1.0, 2.0, 3.0])


def test_completion_empty_observations():
    with pytest.raises(ValueError, match="empty"):
        Completion((3, 4), torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, dtype=DT))


def test_completion_arity_values_and_shape_errors():
    with pytest.raises(ValueError, match=r"shape \(m, 2\)"):
        _obs([[0, 1, 2]], [1.0])
    with pytest.raises(ValueError, match="to match the indices"):
        _obs([[0, 1], [1, 1]], [1.0])
    with pytest.raises(ValueError, match="integers"):
        Completion((3, 4), torch.tensor([[0.5, 1.0]]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="positive sizes"):
        _obs([[0, 0]], [1.0], shape=(0, 4))
