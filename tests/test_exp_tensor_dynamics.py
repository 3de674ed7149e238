"""The tensor factorization dynamics experiment (razin2021-dynamics): a tiny end-to-end run
through ``options`` (summary contract, claims, figures) and its helpers against slow, obvious
references."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from factorflow.experiments import EXPERIMENTS, reproduce
from factorflow.experiments.razin2021_dynamics import (
    ID,
    _Run,
    hessian_top_eigenvalue,
    leave_times,
    make_config,
    separated,
)
from factorflow.factorizations.cp import init_cp
from factorflow.objectives import CPObjective
from factorflow.problems.tensor import low_rank_tensor, tensor_completion

TINY = {
    "dims": (4, 4, 4),
    "target_rank": 2,
    "n_obs": 40,
    "R": 8,
    "init_scales": (0.1, 0.01),
    "optimizers": ("group_rmsprop", "flow", "gd"),
    "stop_loss": 1e-6,
    "rmsprop_max_steps": 3000,
    "gd_max_steps": 3000,
    "flow_max_steps": 3000,
    "record_every": 10,
    "gd_record_every": 5,
    "patience_steps": 50,
    "max_wall_s": 10.0,
}

ROW_FIELDS = {
    "order",
    "dims",
    "target_rank",
    "n_obs",
    "R",
    "init_scale",
    "optimizer",
    "seed",
    "final_loss",
    "rel_fro_error",
    "estimated_rank",
    "n_large_components",
    "status",
    "steps",
    "time",
    "wall_s",
}


@pytest.fixture
def one_thread():
    """Small tensor programs run faster on one thread than on two contended ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_registered() -> None:
    assert ID in EXPERIMENTS


def test_tiny_end_to_end(tmp_path, one_thread) -> None:
    torch.manual_seed(0)
    summary = reproduce(ID, tmp_path, scale="quick", seeds=1, options=dict(TINY))
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["experiment"] == ID
    rows = summary["rows"]
    assert len(rows) == 2 * 3  # inits x optimizers, one seed
    for r in rows:
        assert ROW_FIELDS <= set(r), ROW_FIELDS - set(r)
        assert r["status"] in {"converged", "max_steps", "max_wall", "diverged", "failed"}
        assert math.isfinite(r["rel_fro_error"])
        assert (tmp_path / r["trajectory"]).exists()
    flow = [r for r in rows if r["optimizer"] == "flow"]
    assert all("flow" in r["method"] for r in flow)
    assert all(r["method"].startswith("gd(") for r in rows if r["optimizer"] == "gd")
    ids = {c["id"] for c in summary["claims"]}
    for opt in TINY["optimizers"]:
        assert f"one_at_a_time[{opt}]" in ids
        assert f"error_decreases_with_init[{opt}]" in ids
    assert "component_rate_identity" in ids
    for c in summary["claims"]:
        assert {"id", "text", "paper", "measured", "holds"} <= set(c)
        assert c["holds"] in (True, False, None)
        assert c["measured"] is not None
    checks = summary["theorem_checks"]
    assert [c["init_scale"] for c in checks] == list(TINY["init_scales"])
    assert all(c["n_checked_states"] > 0 for c in checks)
    rate = next(c for c in summary["claims"] if c["id"] == "component_rate_identity")
    # flow from balanced init: the identity is exact up to the integrator's error
    assert rate["measured"]["max_relative_error"] < 1e-6
    assert rate["holds"] is True
    for name in summary["figures"]:
        assert name.endswith(".png")
        assert (tmp_path / name).stat().st_size > 0


def test_unknown_option_rejected() -> None:
    with pytest.raises(ValueError, match="unknown options"):
        make_config("quick", {"lr_typo": 1.0})
    with pytest.raises(ValueError, match="unknown optimizers"):
        make_config("quick", {"optimizers": ("sgd",)})


def test_hessian_top_eigenvalue_matches_dense_hessian() -> None:
    gen = torch.Generator().manual_seed(3)
    W, _ = low_rank_tensor((3, 3, 3), 2, generator=gen)
    obs = tensor_completion(W, 15, gen)
    obj = CPObjective(obs, "mse")
    factors = init_cp((3, 3, 3), 4, 0.5, batch=2, generator=gen)
    lam, _, _ = hessian_top_eigenvalue(obj, factors, iters=2000, tol=1e-12, generator=gen)
    for b in range(2):
        flat = torch.cat([f[b].reshape(-1) for f in factors])
        sizes = [f[b].numel() for f in factors]
        shapes = [f[b].shape for f in factors]

        def loss(x: torch.Tensor, sizes=sizes, shapes=shapes) -> torch.Tensor:
            pieces = torch.split(x, sizes)
            return obj([p.reshape(s)[None] for p, s in zip(pieces, shapes, strict=True)])[0]

        H = torch.autograd.functional.hessian(loss, flat)
        ev = torch.linalg.eigvalsh(H)
        top = ev[ev.abs().argmax()]
        assert float(lam[b]) == pytest.approx(float(top), rel=1e-6)


def test_leave_times_and_separation() -> None:
    # two components: 0 rises at t = 2, 1 at t = 4; top-2 recorded at every time
    t = np.arange(6, dtype=float)
    c0 = np.array([0.0, 0.1, 0.6, 1.0, 1.0, 1.0])
    c1 = np.array([0.0, 0.0, 0.1, 0.2, 0.5, 0.5])
    top_c = np.stack([c0, c1], 1)
    top_idx = np.tile([0, 1], (6, 1))
    # final factors: rank-1 components of norms 1.0 and 0.5 (order 1 for simplicity)
    params = [torch.tensor([[[1.0, 0.5]]], dtype=torch.float64)]
    run = _Run(
        step=t,
        time=t,
        loss=t,
        top_c=top_c,
        top_idx=top_idx,
        phase=0 * t.astype(int),
        rate_err=np.full(6, np.nan),
        params=params,
        status="converged",
        final_loss=0.0,
        steps=5,
        t_end=5.0,
        n_evals=5,
        wall_s=0.0,
        info={},
    )
    assert leave_times(run, 2, 0.5) == [2.0, 4.0]
    assert separated([2.0, 4.0], 0.05)
    assert not separated([4.0, 4.1], 0.05)
    assert not separated([2.0, None], 0.05)
