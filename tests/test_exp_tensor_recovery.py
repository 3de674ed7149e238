"""The razin2020-tensor-recovery experiment: summary contract, a small scientific check, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from factorflow.experiments import EXPERIMENTS, reproduce
from factorflow.experiments import razin2020_tensor_recovery as exp
from factorflow.factorizations.cp import init_cp
from factorflow.objectives import CPObjective
from factorflow.problems.completion import Completion


@pytest.fixture(autouse=True)
def _one_thread():
    """These problems are tiny: one intra-op thread is fastest (and far faster under load)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


ROW_FIELDS = {
    "setting",
    "method",
    "order",
    "dims",
    "target_rank",
    "n_obs",
    "R",
    "init_scale",
    "optimizer",
    "stop_rule",
    "seed",
    "final_loss",
    "rel_fro_error",
    "estimated_rank",
    "n_large_components",
    "status",
    "steps",
}

TINY = {
    "orders": [3],
    "dim": 4,
    "target_ranks": [1],
    "n_obs": [20, 30],
    "seeds": 2,
    "flow_n_obs": [30],
    "flow_inits": [1e-3],
    "flow_losses": [1e-6, 1e-9],
    "flow_max_evals": 3000,
    "max_steps": 4000,
    "check_every": 25,
    "rank_for": "claims",
    "rank_max": 4,
    "claim_n_obs": 30,
    "comparison_dim": 4,
    "comparison_rank": 1,
    "comparison_frac": 0.5,
}


def test_registered():
    assert EXPERIMENTS[exp.ID] is exp


def test_tiny_end_to_end_summary_contract(tmp_path):
    summary = reproduce(exp.ID, tmp_path, scale="quick", options=dict(TINY))
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["experiment"] == exp.ID and on_disk["scale"] == "quick"
    rows = summary["rows"]
    assert rows and all(ROW_FIELDS <= set(r) for r in rows)
    methods = {r["method"] for r in rows}
    assert methods == {"cp_gd", "cp_flow", "memorizer", "masked_cp_als"}
    gd = [r for r in rows if r["method"] == "cp_gd" and r["stop_rule"] == "paper"]
    # 2 n_obs x 2 inits x 2 seeds in the recovery grid, 1 seed in the comparison
    assert len([r for r in gd if r["setting"] == "recovery"]) == 8
    assert len([r for r in gd if r["setting"] == "als_comparison"]) == 1
    for r in gd:
        assert r["R"] == 16
        assert math.isfinite(r["rel_fro_error"]) and r["final_loss"] >= 0
        assert r["optimizer"] == "group_rmsprop" and r["status"]
    flow = [r for r in rows if r["method"] == "cp_flow"]
    assert {r["stop_rule"] for r in flow} == {"mse<1e-06", "mse<1e-09"}
    assert all(r["optimizer"].startswith("flow:") for r in flow)
    # flow continued from 1e-6 to 1e-9 lowers the loss
    for s in (0, 1):
        by = {r["stop_rule"]: r for r in flow if r["seed"] == s}
        assert by["mse<1e-09"]["final_loss"] <= by["mse<1e-06"]["final_loss"]
    # ranks only where the claims need them
    ranked = [r for r in rows if r["estimated_rank"] is not None]
    assert ranked and all(r["n_obs"] == 30 and r["setting"] == "recovery" for r in ranked)
    claims = summary["claims"]
    ids = {c["id"] for c in claims}
    assert {
        "rank1-order3-recovered",
        "rank1-order3-solution-rank",
        "init-scale-effect",
        "beats-masked-cp-als",
    } <= ids
    for c in claims:
        assert {"id", "text", "paper", "measured", "holds"} <= set(c)
        assert c["holds"] in (True, False, None)
    by_id = {c["id"]: c for c in claims}
    assert by_id["rank1-order4-recovered"]["holds"] is None  # order 4 not run
    assert by_id["rank1-order3-recovered"]["measured"]["median_rel_fro_error"] is not None
    assert by_id["rank1-order3-recovered"]["measured"]["instance0_flow_by_stop_loss"]
    for name in summary["figures"]:
        path = tmp_path / name
        assert path.suffix == ".png" and path.stat().st_size > 1000
    assert set(summary["figures"]) == {"tensor_recovery.png", "flow_steps.png"}
    assert (tmp_path / "runs.json").exists() and (tmp_path / "flow_steps.npz").exists()
    assert summary["flow_steps"] and all(f["nfev"] > 0 for f in summary["flow_steps"])


def test_rank1_5x5x5_recovered_from_60_observations(tmp_path):
    """Small init + the paper's optimizer and stop rule recover a rank-1 5x5x5 tensor."""
    summary = exp.run(
        tmp_path,
        scale="quick",
        seeds=2,
        options={
            "dim": 5,
            "n_obs": [60],
            "init_scales": [1e-3],
            "flow": False,
            "comparison": False,
            "rank_for": "all",
            "rank_max": 4,
            "claim_n_obs": 60,
        },
    )
    gd_all = [r for r in summary["rows"] if r["method"] == "cp_gd" and r["stop_rule"] == "paper"]
    gd = [r for r in gd_all if r["setting"] == "recovery"]
    assert len(gd) == 2
    # the claim's extra target instances (claim_targets = 3): two more targets, 2 inits each
    extra = [r for r in gd_all if r["setting"] == "recovery_extra_target"]
    assert sorted({r["target_seed"] for r in extra}) == [1, 2] and len(extra) == 4
    claim = next(c for c in summary["claims"] if c["id"] == "rank1-order3-recovered")
    assert claim["measured"]["n_runs"] == 6
    assert set(claim["measured"]["median_per_target_instance"]) == {"0", "1", "2"}
    for r in gd:
        assert r["status"] == "converged"
        assert r["rel_fro_error"] < 1e-2, r
        assert r["estimated_rank"] == 1
        assert r["n_large_components"] == 1
    mem = [r for r in summary["rows"] if r["method"] == "memorizer"][0]
    assert mem["rel_fro_error"] > 0.3 and mem["estimated_rank"] > 1


def test_paper_stop_rule_bound():
    cfg = exp.make_config("paper", {})
    assert exp._paper_stop_bound(220, cfg) == 500  # checks at 300, 400, 500
    assert exp._paper_stop_bound(300, cfg) == 500
    assert exp._paper_stop_bound(0, cfg) == 300


def test_nested_observations_and_target_norm():
    W, order = exp.make_target((4, 4, 4), 1, seed=3)
    assert math.isclose(float(W.norm()), 1.0, rel_tol=1e-12)
    assert order.shape == (64, 3) and len({tuple(r) for r in order.tolist()}) == 64
    small, big = exp.observe(W, order, 10), exp.observe(W, order, 30)
    assert torch.equal(big.indices[:10], small.indices)
    assert torch.allclose(small.values, W[tuple(small.indices.T)])


# ------------------------------------------------------------------------------- bad input


def test_config_rejects_bad_options():
    with pytest.raises(ValueError, match="unknown options"):
        exp.make_config("quick", {"seed": 3})
    with pytest.raises(ValueError, match="outside"):
        exp.make_config("quick", {"n_obs": [600]})  # 8^3 = 512 entries
    with pytest.raises(ValueError, match="rank_for"):
        exp.make_config("quick", {"rank_for": "some"})
    with pytest.raises(ValueError, match="scale"):
        exp.make_config("huge", {})
    # orders without counts of their own fall back to the paper's counts
    cfg = exp.make_config("quick", {"orders": [4]})
    assert cfg.n_obs[4][0] == 500


def test_completion_rejects_bad_indices():
    with pytest.raises(ValueError, match="out of range"):
        Completion((4, 4, 4), torch.tensor([[0, 1, 4]]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="negative"):
        Completion((4, 4, 4), torch.tensor([[0, -1, 2]]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match=r"shape \(m, 3\)"):
        Completion((4, 4, 4), torch.tensor([[0, 1]]), torch.tensor([1.0]))
    W, order = exp.make_target((4, 4, 4), 1, seed=0)
    with pytest.raises(ValueError, match="cannot observe"):
        exp.observe(W, order, 65)


def test_objectives_reject_mismatched_factors():
    obs = Completion((4, 4, 4), torch.tensor([[0, 1, 2], [3, 3, 3]]), torch.tensor([1.0, 2.0]))
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="order-3"):
        CPObjective(obs, "mse")(init_cp((4, 4), 2, 0.1, generator=gen))
    with pytest.raises(ValueError, match="do not match the observed shape"):
        CPObjective(obs, "mse")(init_cp((5, 5, 5), 2, 0.1, generator=gen))
    dense = exp._DenseCPObjective(obs, "mse")
    with pytest.raises(ValueError, match="factors for an order-3"):
        dense(init_cp((4, 4), 2, 0.1, generator=gen))
    with pytest.raises(ValueError, match="do not match the observed shape"):
        dense(init_cp((5, 5, 5), 2, 0.1, generator=gen))
    with pytest.raises(ValueError, match="unknown loss"):
        CPObjective(obs, "l1")


def test_init_cp_rejects_nonpositive_rank():
    with pytest.raises(ValueError, match="R and batch must be positive"):
        init_cp((4, 4, 4), 0, 1e-3, generator=torch.Generator().manual_seed(0))


def test_too_large_tensor_metric_names_the_size():
    f = [torch.zeros(1, 200, 2) for _ in range(4)]  # 1.6e9 entries: never allocated
    with pytest.raises(ValueError, match=r"1,600,000,000 entries"):
        exp.fitted_tensors(f)
    with pytest.raises(ValueError, match="max_entries"):
        exp.fitted_tensors([torch.zeros(1, 8, 2)] * 3, max_entries=100)


def test_dense_objective_matches_engine_objective():
    W, order = exp.make_target((5, 5, 5), 2, seed=1)
    obs = exp.observe(W, order, 40)
    f = init_cp((5, 5, 5), 7, 0.3, batch=3, generator=torch.Generator().manual_seed(2))
    a = CPObjective(obs, "mse")(f)
    b = exp._DenseCPObjective(obs, "mse")(f)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)
