"""The Razin & Cohen 2020 2x2 experiments (razin2020-2x2, razin2020-perturbed): tiny end-to-end
runs through ``options`` (summary contract, claims, figures), the scientific facts they rest on
(|w11| ~ 70.7 at loss 1e-4 at depth 3 with det > 0; the perturbed prediction when det < 0 is
kept), and the helpers against hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from factorflow.experiments import EXPERIMENTS, reproduce
from factorflow.experiments.razin2020_2x2 import (
    flow_levels_run,
    gd_levels_batch,
    make_config,
    matrix_metrics,
    sign_changes,
)
from factorflow.experiments.razin2020_perturbed import (
    make_config as make_perturbed_config,
)
from factorflow.experiments.razin2020_perturbed import (
    min_nuclear_completion,
    perturbed_w11_lower_bound,
)
from factorflow.factorizations.dmf import init_dmf
from factorflow.objectives import DMFObjective
from factorflow.problems.matrix import razin_2x2, razin_2x2_perturbed
from factorflow.theory import w11_lower_bound

ROW_FIELDS = {
    "depth",
    "init",
    "init_scale",
    "balanced",
    "optimizer",
    "seed",
    "loss",
    "w11",
    "det",
    "nuclear_norm",
    "fro_norm",
    "effective_rank",
    "steps",
    "time",
}
FLOW = {"method": "LSODA", "fallback": "BDF", "rtol": 1e-7, "atol": 1e-10, "max_steps": 1000}


def _check_contract(out: Path, summary: dict, exp_id: str) -> None:
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["experiment"] == exp_id
    assert on_disk["scale"] == "quick"
    assert on_disk["rows"], "no rows"
    for row in on_disk["rows"]:
        missing = ROW_FIELDS - set(row)
        assert not missing, f"row lacks {missing}"
    assert on_disk["claims"], "no claims"
    for c in on_disk["claims"]:
        assert {"id", "text", "paper", "measured", "holds"} <= set(c)
        assert c["measured"] is not None, c["id"]
        assert c["holds"] in (True, False, None), c["id"]
    assert on_disk["figures"]
    for name in on_disk["figures"]:
        data = (out / name).read_bytes()
        assert name.endswith(".png") and data[:8] == b"\x89PNG\r\n\x1a\n", name
    traj = np.load(out / on_disk["trajectories"])
    for r in on_disk["runs"]:
        assert f"{r['run_id']}/loss" in traj.files
    assert len(summary["claims"]) == len(on_disk["claims"])


def test_registered():
    assert "razin2020-2x2" in EXPERIMENTS and "razin2020-perturbed" in EXPERIMENTS


def test_options_are_validated():
    with pytest.raises(ValueError, match="unknown options"):
        make_config("quick", {"depth": [3]})
    with pytest.raises(ValueError, match="unknown options"):
        make_perturbed_config("quick", {"epsilon": [0.1]})
    with pytest.raises(ValueError, match="descending"):
        make_config("quick", {"flow_levels": [1e-4, 1e-2]})
    cfg = make_config("quick", {"depths": [3], "seeds": [4]})
    assert cfg.depths == (3,) and cfg.seeds == (4,) and cfg.init_scales == (8e-3,)


def test_2x2_tiny_end_to_end(tmp_path):
    out = tmp_path / "r2x2"
    summary = reproduce(
        "razin2020-2x2",
        out,
        scale="quick",
        options={
            "depths": [2],
            "seeds": [0],
            "flow_levels": [1e-2],
            "gd_depths": [2],
            "gd_levels": [1e-1, 1e-2],
            "gd_max_steps": 3000,
        },
    )
    _check_contract(out, summary, "razin2020-2x2")
    rows = summary["rows"]
    assert {r["optimizer"] for r in rows} == {"flow", "gd"}
    # flow reached its level exactly; GD rows are the first step at or below a level
    for r in rows:
        if r["optimizer"] == "flow":
            assert r["reached"] and math.isclose(r["loss"], 1e-2, rel_tol=1e-6)
        elif r["reached"]:
            assert r["loss"] <= r["level"]
    ids = {c["id"] for c in summary["claims"]}
    assert {"det-sign-balanced-depth2", "w11-lower-bound", "gd-depth2-flips"} <= ids


def test_perturbed_tiny_end_to_end(tmp_path):
    out = tmp_path / "pert"
    summary = reproduce(
        "razin2020-perturbed",
        out,
        scale="quick",
        options={"eps": [0.5], "levels": [1e-2, 1e-4], "inits": [[-1, True], [1, True]]},
    )
    _check_contract(out, summary, "razin2020-perturbed")
    by_id = {c["id"]: c for c in summary["claims"]}
    assert by_id["det-negative-kept"]["holds"] is True
    assert by_id["w11-bound-det-negative"]["holds"] is True


def test_flow_depth3_balanced_reaches_w11_70_at_1e4():
    """Razin & Cohen's headline number: depth 3 from det(W(0)) > 0 (balanced, so the sign is
    kept exactly) reaches |w11| ~ 70.7 at half_sse loss 1e-4, above the det > 0 bound 68.7."""
    obj = DMFObjective(razin_2x2(), "half_sse")
    f0, _ = init_dmf(
        (2, 2), 3, init="normal", init_scale=8e-3, seeds=[0], width=2, balance=True, det_sign=1
    )
    out = flow_levels_run(f0, obj, (1e-2, 1e-4), **FLOW)
    assert out["status"] == "converged"
    W = out["levels"][-1]["W"]
    assert math.isclose(out["levels"][-1]["loss"], 1e-4, rel_tol=1e-6)
    assert np.linalg.det(W) > 0
    assert np.all(np.linalg.det(out["traj"]["W"]) > 0)  # at every accepted integrator step
    w11 = abs(W[0, 0])
    assert abs(w11 - 70.7) / 70.7 < 1e-3
    assert w11 >= w11_lower_bound(1e-4)


def test_perturbed_prediction_when_det_negative_is_kept():
    """From balanced det(W(0)) < 0 the sign is kept, and |w11| obeys the finite-loss form of
    |w11| > 1/eps at every recorded loss, approaching 1/eps (|w11| eps -> 1) as the loss falls."""
    eps = 0.5
    obj = DMFObjective(razin_2x2_perturbed(eps), "half_sse")
    f0, _ = init_dmf(
        (2, 2), 3, init="normal", init_scale=8e-3, seeds=[0], width=2, balance=True, det_sign=-1
    )
    out = flow_levels_run(f0, obj, (1e-4, 1e-6), **FLOW)
    assert out["status"] == "converged"
    m = matrix_metrics(out["traj"]["W"], 3)
    assert np.all(m["det"] < 0)
    loss = out["traj"]["loss"]
    sel = np.sqrt(2 * loss) < 0.5
    bounds = np.array([perturbed_w11_lower_bound(float(v), eps) for v in loss[sel]])
    assert np.all(m["abs_w11"][sel] >= bounds)
    gaps = [abs(1 - abs(s["W"][0, 0]) * eps) for s in out["levels"]]
    assert gaps[1] < gaps[0] < 0.1 and gaps[1] < 0.01
    # the bound itself tends to 1/eps
    assert perturbed_w11_lower_bound(1e-12, eps) == pytest.approx(1 / eps, rel=1e-5)


def test_min_nuclear_completion_closed_form():
    for eps in (0.0, 0.05, 0.5):
        x, v = min_nuclear_completion(eps)
        assert x == pytest.approx(-eps, abs=1e-6)
        assert v == pytest.approx(2.5, abs=1e-9)


def test_matrix_metrics_by_hand():
    W = np.array([[[3.0, 0.0], [0.0, 1.0]], [[0.0, 2.0], [0.0, 0.0]]])
    m = matrix_metrics(W, depth=3)
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
    assert m["abs_w11"] == pytest.approx([3.0, 0.0])


def test_sign_changes():
    det = np.array([1.0, 0.5, -0.1, -0.2, 0.3])
    loss = np.array([1.0, 0.9, 0.8, 0.7, 0.6])
    t = np.arange(5.0)
    ch = sign_changes(det, loss, t)
    assert [(c["loss_before"], c["loss_after"]) for c in ch] == [(0.9, 0.8), (0.7, 0.6)]


def test_gd_levels_batch_budget_and_levels():
    """Batched GD: each level's row is the first step at or below it; the budget is shared by
    the batch, so no run takes more steps; a run out of budget reports the loss it reached."""
    obj = DMFObjective(razin_2x2(), "half_sse")
    f0, _ = init_dmf((2, 2), 2, init="normal", init_scale=8e-3, seeds=[0, 1], width=2, det_sign=1)
    outs = gd_levels_batch(f0, obj, (0.5, 1e-6), lr=3e-3, max_steps=2500, per_decade=10)
    for o in outs:
        assert o["final_steps"] <= 2500
        assert o["status"] == "max_steps"
        assert [s["level"] for s in o["levels"]] == [0.5]
        assert o["levels"][0]["loss"] <= 0.5
        assert o["final_loss"] > 1e-6
        assert np.all(np.diff(o["traj"]["step"]) > 0)
        assert np.allclose(o["traj"]["time"], o["traj"]["step"] * 3e-3)
    # the same run alone takes the same steps (batching does not change a run)
    alone = gd_levels_batch(
        [f[:1] for f in f0], obj, (0.5,), lr=3e-3, max_steps=2500, per_decade=10
    )
    assert alone[0]["levels"][0]["steps"] == outs[0]["levels"][0]["steps"]
    assert torch.allclose(
        torch.as_tensor(alone[0]["levels"][0]["W"]), torch.as_tensor(outs[0]["levels"][0]["W"])
    )
