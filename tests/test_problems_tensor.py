"""Tests of factorflow.problems.tensor (ground truths, completion, sensing, paper settings)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from factorflow.factorizations.cp import cp_dense_sensing_predict, cp_sensing_predict
from factorflow.problems.completion import Completion
from factorflow.problems.tensor import (
    PAPER_SETTINGS,
    TensorSensing,
    UnknownSettingError,
    low_rank_tensor,
    paper_setting,
    tensor_completion,
    tensor_sensing,
)

DT = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def outer_sum(factors: list[torch.Tensor]) -> torch.Tensor:
    """Reference: explicit sum of outer products of the columns."""
    rank = factors[0].shape[1]
    total = None
    for r in range(rank):
        comp = factors[0][:, r]
        for f in factors[1:]:
            comp = torch.tensordot(comp, f[:, r], dims=0)
        total = comp if total is None else total + comp
    return total


@pytest.mark.parametrize(
    ("dims", "rank", "fro"), [((8, 8, 8), 1, 1.0), ((5, 6, 7, 4), 3, 2.5), ((10,) * 4, 5, 1.0)]
)
def test_low_rank_tensor_norm_and_structure(dims, rank, fro):
    W, factors = low_rank_tensor(dims, rank, fro_norm=fro, generator=gen(1))
    assert W.shape == dims and W.dtype == DT
    assert [tuple(f.shape) for f in factors] == [(d, rank) for d in dims]
    torch.testing.assert_close(torch.linalg.vector_norm(W), torch.tensor(fro, dtype=DT))
    torch.testing.assert_close(outer_sum(factors), W)
    # CP rank <= rank => every mode-n matricization has rank <= rank (and = rank generically)
    for n in range(len(dims)):
        mat = W.movedim(n, 0).reshape(dims[n], -1)
        assert int(torch.linalg.matrix_rank(mat)) == min(rank, dims[n])
    # the scale is split evenly: the factors' scale ratios are all equal
    raw = [torch.randn((d, rank), generator=g, dtype=DT) for g in [gen(1)] for d in dims]
    ratios = [float(f.norm() / r.norm()) for f, r in zip(factors, raw, strict=True)]
    assert max(ratios) - min(ratios) < 1e-12


def test_low_rank_tensor_seeded_and_checked():
    a, fa = low_rank_tensor((4, 5, 6), 2, generator=gen(3))
    b, fb = low_rank_tensor((4, 5, 6), 2, generator=gen(3))
    c, _ = low_rank_tensor((4, 5, 6), 2, generator=gen(4))
    assert torch.equal(a, b) and all(torch.equal(x, y) for x, y in zip(fa, fb, strict=True))
    assert not torch.equal(a, c)
    f32, _ = low_rank_tensor((3, 3), 1, generator=gen(0), dtype=torch.float32)
    assert f32.dtype == torch.float32
    with pytest.raises(ValueError):
        low_rank_tensor((3, 0), 1, generator=gen(0))
    with pytest.raises(ValueError):
        low_rank_tensor((3, 3), 0, generator=gen(0))


def test_tensor_completion_sampling():
    W, _ = low_rank_tensor((8, 8, 8), 1, generator=gen(5))
    obs = tensor_completion(W, 300, gen(6))
    assert isinstance(obs, Completion)
    assert obs.shape == (8, 8, 8) and obs.indices.shape == (300, 3)
    assert ((obs.indices >= 0) & (obs.indices < 8)).all()
    assert obs.flat_indices().unique().numel() == 300  # distinct
    torch.testing.assert_close(obs.values, W[tuple(obs.indices.T)])
    again = tensor_completion(W, 300, gen(6))
    assert torch.equal(obs.indices, again.indices)
    everything = tensor_completion(W, 512, gen(7))
    assert everything.flat_indices().sort().values.tolist() == list(range(512))
    with pytest.raises(ValueError):
        tensor_completion(W, 513, gen(7))


def test_tensor_sensing_rank1_from_factors_and_full_agree():
    W, factors = low_rank_tensor((4, 3, 5), 2, generator=gen(8))
    from_factors = tensor_sensing(factors, 20, gen(9))
    from_full = tensor_sensing(W, 20, gen(9))
    assert from_factors.rank1 and from_factors.dense is None
    assert from_factors.shape == (4, 3, 5) and from_factors.n_obs == 20
    assert [tuple(a.shape) for a in from_factors.factors] == [(20, 4), (20, 3), (20, 5)]
    for a, b in zip(from_factors.factors, from_full.factors, strict=True):
        assert torch.equal(a, b)
    torch.testing.assert_close(from_factors.y, from_full.y)
    # y_i = <A_i, W> with A_i the explicit outer product
    meas = from_factors.factors
    ref = torch.stack(
        [
            (torch.einsum("i,j,k->ijk", meas[0][i], meas[1][i], meas[2][i]) * W).sum()
            for i in range(20)
        ]
    )
    torch.testing.assert_close(from_factors.y, ref)
    torch.testing.assert_close(
        cp_sensing_predict([f[None] for f in factors], list(meas))[0], from_factors.y
    )


def test_tensor_sensing_dense():
    W, factors = low_rank_tensor((3, 4, 2), 2, generator=gen(10))
    a = tensor_sensing(W, 15, gen(11), rank1=False)
    b = tensor_sensing(factors, 15, gen(11), rank1=False)
    assert not a.rank1 and a.dense.shape == (15, 3, 4, 2)
    torch.testing.assert_close(a.y, torch.einsum("mijk,ijk->m", a.dense, W))
    torch.testing.assert_close(a.y, b.y)
    torch.testing.assert_close(
        cp_dense_sensing_predict([f[None] for f in factors], a.dense)[0], a.y
    )


def test_tensor_sensing_validation_and_to():
    y = torch.zeros(3, dtype=DT)
    with pytest.raises(ValueError, match="exactly one"):
        TensorSensing((2, 2), y)
    with pytest.raises(ValueError, match="rank-1"):
        TensorSensing((2, 2), y, factors=(torch.zeros(3, 2), torch.zeros(3, 3)))
    with pytest.raises(ValueError, match="dense"):
        TensorSensing((2, 2), y, dense=torch.zeros(3, 2, 3))
    s = tensor_sensing(low_rank_tensor((2, 3), 1, generator=gen(0))[1], 4, gen(1))
    s32 = s.to(dtype=torch.float32)
    assert s32.y.dtype == torch.float32 and s32.factors[0].dtype == torch.float32
    assert s32.order == 2


def test_paper_settings():
    assert set(PAPER_SETTINGS) >= {"razin2020-order3", "razin2020-order4", "razin2021-dynamics"}
    s3 = paper_setting("razin2020-order3")
    assert s3.dims == (8, 8, 8) and s3.target_rank == 1 and s3.n_components == 64
    assert set(s3.init_stds) == {1e-2, 1e-3} and s3.stop_train_loss == 1e-6 and s3.lr == 1e-2
    assert min(s3.n_observations) == 50 and max(s3.n_observations) == 511
    s4 = paper_setting("razin2020-order4")
    assert s4.dims == (8,) * 4 and s4.n_components == 512 and max(s4.n_observations) == 4095
    d = paper_setting("razin2021-dynamics")
    assert d.dims == (10,) * 4 and d.target_rank == 5 and d.n_components == 1000
    assert d.n_observations == (2000,) and set(d.init_stds) == {0.05, 0.01, 0.005}
    assert d.stop_train_loss == 1e-8 and d.optimizer == "group_rmsprop"
    for s in PAPER_SETTINGS.values():
        assert max(s.n_observations) < math.prod(s.dims) + 1
        assert s.order == len(s.dims) and s.n_entries == math.prod(s.dims)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.lr = 1.0  # type: ignore[misc]


def test_paper_setting_typo_lists_names():
    with pytest.raises(KeyError) as err:
        paper_setting("razin2020-order5")
    msg = str(err.value)
    assert "razin2020-order5" in msg
    for name in PAPER_SETTINGS:
        assert name in msg
    with pytest.raises(ValueError):
        paper_setting("nope")
    assert issubclass(UnknownSettingError, KeyError)
