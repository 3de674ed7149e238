"""The Arora et al. 2019 experiments (arora2019-completion, -dynamics, -sensing): tiny end-to-end
runs through ``options`` (summary contract, claims, figures), the sparse ratings model against the
dense objective, the analysis helpers on hand-made curves, and one scientific check (depth 3 beats
nuclear-norm minimization on a small problem with few observations)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from factorflow.experiments import EXPERIMENTS, reproduce
from factorflow.experiments.arora2019_completion import QUICK, apply_options, completion_claims
from factorflow.experiments.arora2019_dynamics import (
    RatingsDMF,
    crossing_times,
    one_at_a_time,
    theorem_errors,
)
from factorflow.factorizations.dmf import end_to_end
from factorflow.metrics import singular_values
from factorflow.objectives import DMFObjective
from factorflow.problems.completion import Completion
from factorflow.problems.matrix import MatrixCompletion

MODEL_FIELDS = {
    "method",
    "depth",
    "n_obs",
    "init",
    "init_scale",
    "init_fro_norm",
    "optimizer",
    "seed",
    "final_loss",
    "recon_mse",
    "rel_fro_error",
    "nuclear_norm",
    "effective_rank",
}


def _check_contract(out: Path, exp_id: str, fields: set[str]) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    assert summary["experiment"] == exp_id and summary["scale"] == "quick"
    assert summary["rows"]
    for row in summary["rows"]:
        missing = fields - set(row)
        assert not missing, f"row {row.get('method')} lacks {missing}"
    assert summary["claims"]
    for c in summary["claims"]:
        assert {"id", "text", "paper", "measured", "holds"} <= set(c)
        assert c["measured"] is not None, c["id"]
        assert c["holds"] in (True, False, None), c["id"]
    assert summary["figures"]
    for name in summary["figures"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    return summary


def test_registered():
    for exp_id in ("arora2019-completion", "arora2019-dynamics", "arora2019-sensing"):
        assert exp_id in EXPERIMENTS


def test_unknown_option_rejected():
    with pytest.raises(ValueError, match="unknown option"):
        apply_options(QUICK, {"depht": [3]})
    s = apply_options(QUICK, {"depths": [2], "init_scales": 1e-2, "n_obs": [30]})
    assert s.depths == (2,) and s.init_scales == (1e-2,) and s.n_obs == (30,)


def test_completion_end_to_end(tmp_path):
    opts = {
        "shape": [12, 12],
        "rank": 1,
        "n_obs": [40, 100],
        "depths": [1, 2, 3],
        "init_scales": [1e-2, 1e-4],
        "loss_below": 1e-3,
        "rmsprop_depths": [2],
        "rmsprop_init_scales": [1e-2],
        "rmsprop_n_obs": [40],
        "rmsprop_lr": 1e-2,
        "max_steps": 1000,
    }
    reproduce("arora2019-completion", tmp_path, scale="quick", options=opts)
    summary = _check_contract(tmp_path, "arora2019-completion", {"method", "n_obs", "seed"})
    methods = {r["method"] for r in summary["rows"]}
    assert methods == {"dmf", "nuclear_norm_min", "ground_truth"}
    for r in summary["rows"]:
        if r["method"] != "ground_truth":
            assert MODEL_FIELDS <= set(r)
    dmf = [r for r in summary["rows"] if r["method"] == "dmf"]
    # 2 n_obs x (3 depths x 2 scales by flow) + 1 group-RMSProp run
    assert len(dmf) == 13
    assert {r["optimizer"] for r in dmf} == {"flow", "group_rmsprop"}
    assert sorted(summary["figures"]) == ["completion_100.png", "completion_40.png"]
    ids = {c["id"] for c in summary["claims"]}
    assert {
        "deep_beats_nnm",
        "depth_gives_up_min_nuclear_norm",
        "depth2_error_grows_with_init",
        "all_recover_at_high_n",
        "flow_matches_group_rmsprop",
    } <= ids


def test_batched_equals_one_at_a_time(tmp_path):
    opts = {
        "shape": [10, 10],
        "rank": 1,
        "n_obs": [40],
        "depths": [2],
        "init_scales": [1e-2, 1e-3],
        "loss_below": 1e-4,
        "optimizers": ["group_rmsprop"],
        "rmsprop_depths": [2],
        "rmsprop_init_scales": [1e-2, 1e-3],
        "rmsprop_n_obs": [40],
        "rmsprop_lr": 1e-2,
        "max_steps": 2000,
        "nnm": False,
    }
    a = EXPERIMENTS["arora2019-completion"].run(
        tmp_path / "a", scale="quick", seeds=1, device="cpu", options={**opts, "batch": True}
    )
    b = EXPERIMENTS["arora2019-completion"].run(
        tmp_path / "b", scale="quick", seeds=1, device="cpu", options={**opts, "batch": False}
    )
    ra = [r["recon_mse"] for r in a["rows"] if r["method"] == "dmf"]
    rb = [r["recon_mse"] for r in b["rows"] if r["method"] == "dmf"]
    np.testing.assert_allclose(ra, rb, rtol=1e-9)


def test_sensing_end_to_end(tmp_path):
    opts = {
        "shape": [8, 8],
        "rank": 1,
        "n_obs": [30, 50],
        "nnm_n_obs": [30],
        "depths": [1, 3],
        "init_scales": [1e-2],
        "loss_below": 1e-4,
    }
    reproduce("arora2019-sensing", tmp_path, scale="quick", options=opts)
    summary = _check_contract(tmp_path, "arora2019-sensing", {"method", "n_obs", "seed"})
    nnm = [r for r in summary["rows"] if r["method"] == "nuclear_norm_min"]
    assert [r["n_obs"] for r in nnm] == [30]
    assert {c["id"] for c in summary["claims"]} == {
        "deep_beats_nnm",
        "all_recover_at_high_n",
        "flow_matches_group_rmsprop",
    }


def _tiny_ratings(folder: Path, n_users: int = 9, n_items: int = 25, n: int = 120) -> Path:
    g = np.random.default_rng(0)
    cells = g.choice(n_users * n_items, size=n, replace=False)
    lines = ["userId,movieId,rating,timestamp"]
    for c in cells:
        u, i = divmod(int(c), n_items)
        lines.append(f"{u + 1},{10 * i + 3},{g.integers(1, 11) / 2},{1000 + int(c)}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_dynamics_end_to_end(tmp_path):
    data = _tiny_ratings(tmp_path / "ml")
    opts = {
        "shape": [12, 12],
        "rank": 2,
        "n_obs": 70,
        "depths": [1, 3],
        "init_scale": 1e-2,
        "flow_loss_below": 1e-4,
        "gd_max_time": 60.0,
        "record_every": 5.0,
        "one_at_a_time_k": 2,
        "theorem_k": 2,
        "theorem_gaussian_depths": [3],
        "theorem_max_time": 200.0,
        "data_dir": str(data),
        "n_train": 60,
        "ratings_depths": [1, 2],
        "ratings_max_evals": 300,
    }
    reproduce("arora2019-dynamics", tmp_path / "out", scale="quick", options=opts)
    summary = _check_contract(
        tmp_path / "out", "arora2019-dynamics", {"method", "depth", "optimizer", "final_loss"}
    )
    parts = {r["part"] for r in summary["rows"]}
    assert parts == {"synthetic", "ratings"}
    for r in summary["rows"]:
        if r["part"] == "synthetic":
            assert MODEL_FIELDS <= set(r)
        else:
            assert {"test_mse", "test_rmse", "singular_values", "width"} <= set(r)
    claims = {c["id"]: c for c in summary["claims"]}
    assert {
        "one_at_a_time",
        "gd_tracks_flow",
        "theorem3_rates",
        "ratings_dominant_singular_value",
    } <= set(claims)
    # Thm. 3 is an identity for balanced factors: numerical precision, whatever the problem
    assert claims["theorem3_rates"]["measured"]["max_normwise_error"] < 1e-6
    assert claims["theorem3_rates"]["holds"] is True
    for f in ("dynamics_synthetic.npz", "dynamics_theorem.npz", "dynamics_ratings.npz"):
        assert (tmp_path / "out" / f).is_file()


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_ratings_model_matches_dense_objective(depth):
    """RatingsDMF (long side as rows, frozen unobserved rows, no end-to-end matrix) gives the
    loss, gradients, singular values and predictions of DMFObjective on the same factors."""
    g = torch.Generator().manual_seed(depth)
    n_users, n_items, width = 5, 11, 5
    cells = torch.randperm(n_users * (n_items - 3), generator=g)[:20]  # the last 3 items unrated
    idx = torch.stack([cells // (n_items - 3), cells % (n_items - 3)], dim=1)
    vals = torch.randn(20, generator=g, dtype=torch.float64)
    obs = Completion((n_users, n_items), idx, vals)
    model = RatingsDMF(obs, depth, width=width, init_scale=0.3, loss="mse")
    # move away from the identity init: perturb the trainable parameters
    ps = [p + 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype) for p in model.params0]
    # the same factorization of R (n_users x n_items): reverse and transpose, put rows back
    top = model._top0.clone()[None]
    top[:, model._pos >= 0] = ps[-1][:, model._pos[model._pos >= 0]]
    full = [*ps[:-1], top]
    dense = [f.transpose(1, 2) for f in reversed(full)]
    ref = DMFObjective(MatrixCompletion(obs), "mse")
    L_ref, g_ref = ref.value_and_grad(dense)
    L, grads = model.value_and_grad(ps)
    torch.testing.assert_close(L, L_ref)
    g_full_top = g_ref[0].transpose(1, 2)  # gradient w.r.t. the long factor, as model rows
    active = model._pos >= 0
    torch.testing.assert_close(grads[-1], g_full_top[:, active][:, model._pos[active].argsort()])
    assert g_full_top[:, ~active].abs().max() == 0  # frozen rows get no gradient
    for j in range(depth - 1):
        torch.testing.assert_close(grads[j], g_ref[depth - 1 - j].transpose(1, 2))
    W = end_to_end(dense)
    torch.testing.assert_close(model.singular_values(ps, 4), singular_values(W)[:, :4])
    u, i = torch.meshgrid(torch.arange(n_users), torch.arange(n_items), indexing="ij")
    pred = model.predict(ps, u.reshape(-1), i.reshape(-1))
    torch.testing.assert_close(pred, W.reshape(1, -1))


def test_crossing_times_and_one_at_a_time():
    t = np.linspace(0.0, 100.0, 1001)

    def sig(t0: float, height: float) -> np.ndarray:
        return height / (1.0 + np.exp(-(t - t0)))

    staggered = np.stack([sig(20, 5.0), sig(40, 4.0), sig(60, 3.0)], axis=1)
    np.testing.assert_allclose(crossing_times(t, staggered, 3), [20, 40, 60], atol=0.05)
    res = one_at_a_time(t, staggered, 3)
    assert res["ordered"] and res["n_sequential_pairs"] == 2
    together = np.stack([sig(30, 5.0), sig(30, 4.0), sig(30, 3.0)], axis=1)
    res = one_at_a_time(t, together, 3)
    assert res["n_sequential_pairs"] == 0 and abs(res["spread"] - 1.0) < 1e-3


def test_theorem_errors_separation_and_zero_rates():
    sv = np.array([[1.0, 1.0, 1.0], [3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    pred = np.array([[1.0, 1.0], [1.0, 1e-9], [1.0, 0.5]])
    meas = pred + np.array([[0.5, 0.5], [1e-12, 1e-12], [1e-10, 0.0]])
    scale = np.ones_like(pred)
    r = theorem_errors(sv, meas, pred, scale, k=2, gap=1e-6)
    assert r["n_separated"] == 2  # the first row has equal singular values
    assert r["n_rates_numerically_zero"] == 1  # |p| = 1e-9 < 1e-6 x scale
    assert r["max_rel_error"] == pytest.approx(1e-10)
    assert r["max_normwise_error"] == pytest.approx(1e-10)
    assert r["max_rel_error_all_rows"] == pytest.approx(0.5)


def test_claims_from_rows():
    def row(method, n, rec, nuc, er, depth=None, scale=None, opt="flow"):
        return {
            "method": method,
            "n_obs": n,
            "recon_mse": rec,
            "nuclear_norm": nuc,
            "effective_rank": er,
            "depth": depth,
            "init_scale": scale,
            "optimizer": opt if method == "dmf" else None,
            "seed": 0,
        }

    rows = [
        row("ground_truth", 20, 0.0, 10.0, 2.0),
        row("nuclear_norm_min", 20, 0.1, 9.0, 4.0),
        row("dmf", 20, 1e-5, 10.0, 2.05, depth=3, scale=1e-3),
        row("dmf", 20, 2e-5, 10.0, 2.05, depth=3, scale=1e-3, opt="group_rmsprop"),
        row("dmf", 20, 0.01, 10.0, 3.0, depth=2, scale=1e-4),
        row("dmf", 20, 0.05, 10.0, 3.0, depth=2, scale=1e-2),
        row("ground_truth", 50, 0.0, 10.0, 2.0),
        row("nuclear_norm_min", 50, 1e-6, 10.0, 2.0),
        row("dmf", 50, 3e-6, 10.0, 2.0, depth=3, scale=1e-3),
        row("dmf", 50, 2e-4, 10.0, 2.0, depth=2, scale=1e-3),
    ]
    claims = {c["id"]: c for c in completion_claims(rows)}
    assert claims["deep_beats_nnm"]["holds"] is True
    assert claims["depth_gives_up_min_nuclear_norm"]["holds"] is True
    assert claims["depth2_error_grows_with_init"]["holds"] is True
    assert claims["all_recover_at_high_n"]["holds"] is False  # depth 2 at 2e-4 > 1e-4
    assert claims["flow_matches_group_rmsprop"]["holds"] is True
    assert claims["flow_matches_group_rmsprop"]["measured"]["worst_factor"] == pytest.approx(2.0)


def test_depth3_beats_nuclear_norm_with_few_observations(tmp_path):
    """30x30 rank 2 from 300 of 900 entries (about 2.6 entries per degree of freedom, the paper's
    regime of 2000 entries for 975 degrees of freedom): depth-3 gradient flow from small init
    recovers the matrix at least 10x better than the minimum nuclear norm solution (measured on
    problem seeds 0-4: 2.3x to 30x below that margin; with 240 entries one seed of five fails,
    with 120 depth 3 is worse than the nuclear norm)."""
    opts = {
        "shape": [30, 30],
        "rank": 2,
        "n_obs": [300],
        "depths": [3],
        "init_scales": [1e-3],
        "loss_below": 1e-5,
        "optimizers": ["flow"],
    }
    summary = EXPERIMENTS["arora2019-completion"].run(
        tmp_path, scale="quick", seeds=2, device="cpu", options=opts
    )
    for seed in range(2):
        rows = [r for r in summary["rows"] if r["seed"] == seed]
        deep = next(r for r in rows if r["method"] == "dmf")
        nnm = next(r for r in rows if r["method"] == "nuclear_norm_min")
        assert deep["recon_mse"] < 0.1 * nnm["recon_mse"], (seed, deep, nnm)
