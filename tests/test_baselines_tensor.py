"""Tensor baselines (Razin & Cohen 2020; Razin, Maman & Cohen 2021): memorizer, CP-ALS, ranks."""

from __future__ import annotations

import numpy as np
import pytest
import tensorly as tl
import torch

import factorflow.baselines.tensor as tensor_baselines
from factorflow.baselines.tensor import (
    cp_als,
    cp_als_error,
    estimate_tensor_rank,
    masked_cp_als,
    memorizer,
)
from factorflow.problems.completion import Completion, sample_indices


def _cp_tensor(shape: tuple[int, ...], rank: int, seed: int) -> np.ndarray:
    """Generic rank-``rank`` tensor with Gaussian factors, scaled to ``||T||_F = 1``."""
    rng = np.random.default_rng(seed)
    factors = [rng.standard_normal((d, rank)) for d in shape]
    t = tl.cp_to_tensor((np.ones(rank), factors))
    return t / np.linalg.norm(t)


def _observe(full: np.ndarray, m: int, seed: int) -> Completion:
    idx = sample_indices(full.shape, m, torch.Generator().manual_seed(seed))
    return Completion.from_array(torch.tensor(full, dtype=torch.float64), idx)


def test_memorizer_keeps_observed_and_zeros_the_rest() -> None:
    full = _cp_tensor((3, 4, 5), 2, seed=0)
    obs = _observe(full, 20, seed=0)
    mem = memorizer(obs)
    assert mem.shape == (3, 4, 5) and mem.dtype == np.float64
    mask = obs.mask().numpy()
    np.testing.assert_array_equal(mem[mask], full[mask])
    assert np.count_nonzero(mem[~mask]) == 0
    assert mask.sum() == 20


def test_cp_als_shapes_and_exact_fit() -> None:
    t = _cp_tensor((5, 6, 7), 2, seed=1)
    weights, factors = cp_als(t, 2, init="svd")
    assert weights.shape == (2,)
    assert [f.shape for f in factors] == [(5, 2), (6, 2), (7, 2)]
    assert np.mean((tl.cp_to_tensor((weights, factors)) - t) ** 2) < 1e-12
    assert cp_als_error(t, 2) < 1e-12
    w2, _ = cp_als(torch.tensor(t), 3, init="random", random_state=0, n_iter_max=50)
    assert w2.shape == (3,)


def test_rank_of_rank_one_tensor() -> None:
    assert estimate_tensor_rank(_cp_tensor((8, 8, 8), 1, seed=2)) == 1


@pytest.mark.parametrize("seed", [0, 1])
def test_rank_of_generic_rank_three_tensor(seed: int) -> None:
    t = _cp_tensor((8, 8, 8), 3, seed=seed)
    assert estimate_tensor_rank(t) == 3
    # the relative threshold is scale-free; the absolute one is not
    assert estimate_tensor_rank(1e3 * t, tol=1e-6, relative=True) == 3


def test_rank_of_zero_and_tiny_tensors_is_zero() -> None:
    assert estimate_tensor_rank(np.zeros((3, 3, 3))) == 0
    assert estimate_tensor_rank(np.full((3, 3), 1e-4)) == 0  # mse of the zero fit is 1e-8


def test_rank_estimate_order_two_is_matrix_rank() -> None:
    rng = np.random.default_rng(3)
    mat = rng.standard_normal((6, 2)) @ rng.standard_normal((2, 5))
    mat /= np.linalg.norm(mat)
    assert estimate_tensor_rank(mat) == 2


def _memorizer_8x8x8(seed: int = 0) -> np.ndarray:
    return memorizer(_observe(_cp_tensor((8, 8, 8), 1, seed=seed), 200, seed=seed))


def test_memorizer_rank_exceeds_nine_fast() -> None:
    # Capping the search at 9 returns the sentinel max_rank + 1: no rank <= 9 fits.
    assert estimate_tensor_rank(_memorizer_8x8x8(), max_rank=9) == 10


@pytest.mark.slow
def test_memorizer_rank_is_high() -> None:
    # 200 of 512 entries of a unit-norm rank-1 8x8x8 tensor: ALS rank ~15 (about 20 s).
    rank = estimate_tensor_rank(_memorizer_8x8x8())
    assert 10 <= rank <= 64


def test_failed_search_with_default_cap_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    # With the default cap (product of all sizes but the largest) the sentinel means ALS failed.
    monkeypatch.setattr(tensor_baselines, "_best_fit", lambda *a, **k: 1.0)
    t = np.random.default_rng(0).standard_normal((2, 3, 4))
    with pytest.warns(RuntimeWarning, match="returning 7"):
        assert estimate_tensor_rank(t) == 7
    assert estimate_tensor_rank(t, max_rank=2) == 3  # explicit cap: no warning, "rank > 2"


def test_masked_cp_als_recovers_rank_two_from_70_percent() -> None:
    full = _cp_tensor((6, 6, 6), 2, seed=4)
    obs = _observe(full, int(0.7 * full.size), seed=4)
    recon = masked_cp_als(obs, 2)
    assert recon.shape == (6, 6, 6) and recon.dtype == np.float64
    assert np.linalg.norm(recon - full) / np.linalg.norm(full) < 1e-4


def test_cp_als_error_non_increasing_in_rank() -> None:
    t = np.random.default_rng(5).standard_normal((4, 4, 4))
    errors = [
        cp_als_error(t, r, n_restarts=3, n_iter_max=400, tol=1e-10, random_state=0)
        for r in range(1, 7)
    ]
    assert all(e >= 0 for e in errors)
    for lo, hi in zip(errors[1:], errors[:-1], strict=True):
        assert lo <= hi * (1 + 1e-6) + 1e-12, errors
    assert errors[-1] < errors[0]


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="rank"):
        cp_als(np.ones((2, 2, 2)), 0)
    with pytest.raises(ValueError, match="init"):
        cp_als(np.ones((2, 2, 2)), 1, init="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="order >= 2"):
        estimate_tensor_rank(np.ones(4))
    bad = np.ones((2, 2, 2))
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cp_als_error(bad, 1)
    with pytest.raises(ValueError, match="tol"):
        estimate_tensor_rank(np.ones((2, 2)), tol=0.0)
    with pytest.raises(TypeError, match="Completion"):
        memorizer(np.ones((2, 2)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_restarts"):
        cp_als_error(np.ones((2, 2)), 1, n_restarts=0)
