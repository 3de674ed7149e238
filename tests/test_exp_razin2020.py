"""The Razin & Cohen 2020 2x2 experiments (razin2020-2x2, razin2020-perturbed) and the library
pieces they run on (float64): the multi-level stop (dynamics.levels), det-sign analysis
(det_sign), the perturbed bounds and nuclear-norm reference (theory), the 2x2 run helpers
(completion2x2); smoke runs end to end; and claims that fail or are not judged on bad input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from factorflow import completion2x2 as c2
from factorflow import theory
from factorflow.det_sign import det_sign_analysis, sign_changes, sign_kept_mask
from factorflow.dynamics import flow_levels_run, gd_levels_batch
from factorflow.experiment import Result
from factorflow.experiments import EXPERIMENTS
from factorflow.factorizations.dmf import end_to_end, init_dmf
from factorflow.objectives import DMFObjective
from factorflow.problems.matrix import razin_2x2, razin_2x2_perturbed
from factorflow.runner import run_experiment

X2 = EXPERIMENTS["razin2020-2x2"]
PERT = EXPERIMENTS["razin2020-perturbed"]
FLOW = {"method": "LSODA", "fallback": "BDF", "rtol": 1e-7, "atol": 1e-10, "max_steps": 1000}
W = {"W": end_to_end}


def _init(depth: int, det_sign: int = 1, seeds=(0,), balance: bool = True):
    f0, _ = init_dmf(
        (2, 2), depth, init="normal", init_scale=8e-3, seeds=list(seeds), width=2,
        balance=balance, det_sign=det_sign,
    )  # fmt: skip
    return f0


# ------------------------------------------------------------------ dynamics.levels


def test_flow_levels_run_exact_crossings_depth3_w11_70():
    """Razin & Cohen's headline: depth 3 from balanced det(W(0)) > 0 reaches |w11| ~ 70.7 at
    half_sse loss 1e-4; each level's state is the exact crossing."""
    obj = DMFObjective(razin_2x2(), "half_sse")
    out = flow_levels_run(_init(3), obj, (1e-2, 1e-4), probes=W, **FLOW)
    assert out.status == "converged" and [s.level for s in out.levels] == [1e-2, 1e-4]
    for s in out.levels:
        assert math.isclose(s.loss, s.level, rel_tol=1e-6)
        assert math.isclose(float(obj(s.params)[0]), s.level, rel_tol=1e-6)
    assert out.final is out.levels[-1]
    assert np.all(np.linalg.det(out.traj["W"]) > 0)
    assert np.all(np.diff(out.traj["time"]) > 0) and np.all(np.diff(out.traj["step"]) >= 0)
    w11 = abs(out.levels[-1].values["W"][0, 0])
    assert abs(w11 - 70.7) / 70.7 < 1e-3 and w11 >= theory.w11_lower_bound(1e-4)


def test_flow_levels_run_fallback_and_resume():
    obj = DMFObjective(razin_2x2(), "half_sse")
    f0 = _init(2)
    kw = {"rtol": 1e-7, "atol": 1e-10, "max_steps": 3, "probes": W}
    fb = flow_levels_run(f0, obj, (0.13,), method="LSODA", fallback="BDF", **kw)
    assert fb.status == "converged" and fb.fallback_levels == [0.13]
    assert [t["method"] for t in fb.segments[0]["tries"]] == ["flow:LSODA", "flow:BDF"]
    assert fb.methods == ["flow:BDF"]
    stuck = flow_levels_run(f0, obj, (0.13, 1e-2), method="LSODA", fallback=None, **kw)
    assert stuck.status == "max_steps" and not stuck.levels and stuck.final.level is None
    assert stuck.final.loss > 0.13
    resumed = flow_levels_run(stuck.final.params, obj, (0.13,), probes=W, **FLOW)
    assert resumed.status == "converged"
    assert math.isclose(resumed.levels[0].loss, 0.13, rel_tol=1e-6)
    with pytest.raises(ValueError, match="descending"):
        flow_levels_run(f0, obj, (1e-4, 1e-2), **FLOW)
    with pytest.raises(ValueError, match="one run"):
        flow_levels_run(_init(2, seeds=(0, 1)), obj, (0.1,), **FLOW)


def test_gd_levels_batch_budget_and_levels():
    """Batched GD: a level's state is the first step at or below it; the budget is shared by
    the batch; a run out of budget ends with its final state; batching changes no run."""
    obj = DMFObjective(razin_2x2(), "half_sse")
    f0 = _init(2, seeds=(0, 1), balance=False)
    outs = gd_levels_batch(f0, obj, (0.5, 1e-6), lr=3e-3, max_steps=2500, per_decade=10, probes=W)
    for o in outs:
        assert o.status == "max_steps" and [s.level for s in o.levels] == [0.5]
        assert o.levels[0].loss <= 0.5 and o.final.level is None and o.final.loss > 1e-6
        assert o.final.steps <= 2500
        assert np.all(np.diff(o.traj["step"]) > 0)
        assert np.allclose(o.traj["time"], o.traj["step"] * 3e-3)
    alone = gd_levels_batch(
        [f[:1] for f in f0], obj, (0.5,), lr=3e-3, max_steps=2500, per_decade=10, probes=W
    )
    assert alone[0].levels[0].steps == outs[0].levels[0].steps
    assert np.allclose(alone[0].levels[0].values["W"], outs[0].levels[0].values["W"])


def test_gd_levels_batch_budget_spent_exactly_at_a_level():
    """The budget runs out on the step that reaches a level: that level is kept, the run ends
    "max_steps" there (final = that state, level None), and later levels are not tried."""
    obj = DMFObjective(razin_2x2(), "half_sse")
    f0 = _init(2, balance=False)
    n = gd_levels_batch(f0, obj, (0.5,), lr=3e-3, max_steps=2500)[0].levels[0].steps
    for levels in [(0.5, 1e-6), (0.5, 1e-6, 1e-9)]:
        (o,) = gd_levels_batch(f0, obj, levels, lr=3e-3, max_steps=n)
        assert o.status == "max_steps" and [s.level for s in o.levels] == [0.5]
        assert o.final.level is None and o.final.steps == n == o.n_evals
        assert o.final.loss == o.levels[0].loss <= 0.5


# ------------------------------------------------------------------ det_sign, theory


def test_sign_changes_and_analysis_by_hand():
    det = np.array([1.0, 0.5, -0.1, -0.2, 0.3])
    loss = np.array([1.0, 0.9, 0.8, 0.7, 0.6])
    t = np.arange(5.0)
    ch = sign_changes(det, loss, t)
    assert [(c["loss_before"], c["loss_after"]) for c in ch] == [(0.9, 0.8), (0.7, 0.6)]
    fm = np.array([1.0, 1.0, 1e-13, 1e-13, 1e-13])  # floor reached at index 2, the flip too
    a = det_sign_analysis(det, fm, loss, t, 1e-12)
    assert a["sign_kept_until_floor"] and a["flipped_only_after_floor"] and a["n_flips"] == 2
    assert a["floor_loss"] == 0.8 and a["first_flip_loss"] == 0.8 and a["final_det_sign"] == 1
    b = det_sign_analysis(det, np.ones(5), loss, t, 1e-12)  # no floor: the flip counts
    assert not b["sign_kept_until_floor"] and not b["floor_reached"]
    assert sign_kept_mask(det, np.ones(5), 1e-12).tolist() == [True, True, False, False, False]
    with pytest.raises(ValueError):
        sign_changes(det, loss[:3], t)


def test_perturbed_bounds_hold_on_random_matrices():
    """Both bounds on random W meeting their premises (residuals from a loss l, det < 0)."""
    rng = np.random.default_rng(0)
    c = theory.perturbed_norm_constant(-2.0, 0.5)
    assert c == pytest.approx(0.875)
    for eps in (0.0, 0.01, 0.5):
        checked = 0
        for _ in range(4000):
            loss = 10 ** rng.uniform(-8, math.log10(1 / 32))
            r = rng.normal(size=3)
            r *= math.sqrt(2 * loss) / np.linalg.norm(r)
            w11 = rng.normal(scale=300)
            M = np.array([[w11, -2 + r[0]], [0.5 + r[1], eps + r[2]]])
            if np.linalg.det(M) >= 0:
                continue
            checked += 1
            assert abs(w11) >= theory.perturbed_w11_lower_bound(loss, eps) * (1 - 1e-12)
            spec = np.linalg.norm(M, 2)
            assert spec >= theory.perturbed_norm_lower_bound(loss, eps) * (1 - 1e-12)
        assert checked > 100
    assert theory.perturbed_w11_lower_bound(1e-14, 0.5) == pytest.approx(2.0, rel=1e-6)
    assert theory.perturbed_norm_lower_bound(1 / 32, 0.0) == pytest.approx(0.875 * 0.5 / 0.25)
    with pytest.raises(ValueError):
        theory.perturbed_norm_lower_bound(0.05, 0.1)  # sqrt(2 l) > min(|z|, |z'|) / 2


def test_min_nuclear_completion_closed_form():
    for eps in (0.0, 0.05, 0.5):
        x, v = theory.min_nuclear_completion(eps)
        assert x == pytest.approx(-eps, abs=1e-6) and v == pytest.approx(2.5, abs=1e-9)


def test_perturbed_prediction_when_det_negative_is_kept():
    """From balanced det(W(0)) < 0: det < 0 kept, |w11| above the finite-loss bound at every
    recorded loss, |w11| eps -> 1 as the loss falls."""
    eps = 0.5
    obj = DMFObjective(razin_2x2_perturbed(eps), "half_sse")
    out = flow_levels_run(_init(3, det_sign=-1), obj, (1e-4, 1e-6), probes=W, **FLOW)
    m = c2.trajectory_metrics(out.traj["W"], 3)
    assert out.status == "converged" and np.all(m["det"] < 0)
    loss = out.traj["loss"]
    sel = np.sqrt(2 * loss) < 0.5
    assert np.all(m["abs_w11"][sel] >= theory.perturbed_w11_lower_bound(loss[sel], eps))
    gaps = [abs(1 - abs(s.values["W"][0, 0]) * eps) for s in out.levels]
    assert gaps[1] < gaps[0] < 0.1 and gaps[1] < 0.01


# ------------------------------------------------------------------ experiments


def test_settings_are_typed_and_checked():
    s = X2.settings_for("quick", {"depths": [3], "seeds": 4})
    assert s.depths == (3,) and s.seeds == 4 and s.init_scales == (8e-3,)
    with pytest.raises(ValueError, match="unknown option"):
        X2.settings_for("quick", {"depth": [3]})
    with pytest.raises(ValueError, match="descending"):
        X2.settings_for("quick", {"flow_levels": [1e-4, 1e-2]})
    with pytest.raises(ValueError, match="det signs"):
        PERT.settings_for("quick", {"inits": [[2, True]]})
    assert PERT.settings_for("quick").levels[-1] == 1e-8  # where |w11| eps is judged


def test_smoke_runs_end_to_end(tmp_path):
    s2 = run_experiment("razin2020-2x2", tmp_path / "a", scale="smoke", log=lambda _: None)
    sp = run_experiment("razin2020-perturbed", tmp_path / "b", scale="smoke", log=lambda _: None)
    flow = [r for r in s2["rows"] if r["optimizer"] == "flow"]
    assert flow and all(math.isclose(r["loss"], r["level"], rel_tol=1e-6) for r in flow)
    assert all(r["loss"] <= r["level"] for r in s2["rows"] if r["optimizer"] == "gd")
    got = {c["id"]: c["holds"] for c in s2["claims"] + sp["claims"]}
    assert got["det-sign-balanced-depth2"] is True and got["w11-lower-bound"] is True
    assert got["det-negative-kept"] is True and got["norm-bound-det-negative"] is True
    assert got["w11-at-0.13"] is None and got["w11-eps-to-1"] is None  # smoke stops at 1e-4
    assert set(s2["figures"]) >= {"razin2020_2x2_w11.png", "razin2020_2x2_gd_w11.png"}
    assert set(sp["figures"]) == {"razin2020_perturbed_w11.png", "razin2020_perturbed_w11_eps.png"}


# ------------------------------------------------------------------ claims on hand-made results


def _result(tmp_path, exp, settings, runs: dict, rows: list[dict]) -> Result:
    """A result folder with hand-made trajectories (``runs``: id -> (det, loss, w11)) and rows."""
    arrays = {}
    for rid, (det, loss, w11) in runs.items():
        n = len(det)
        Ws = np.zeros((n, 2, 2))
        Ws[:, 0, 0] = w11
        Ws[:, 0, 1] = Ws[:, 1, 0] = 1.0
        Ws[:, 1, 1] = (np.asarray(det) + 1.0) / np.where(Ws[:, 0, 0] == 0, 1, Ws[:, 0, 0])
        arrays.update(c2.trajectory_arrays(rid, _Run(Ws, loss), 2))
    np.savez(tmp_path / "trajectories.npz", **arrays)
    return Result(tmp_path, {}, exp.rows_frame(rows), settings)


class _Run:
    def __init__(self, Ws, loss):
        n = len(loss)
        self.traj = {"time": np.arange(n, dtype=float), "step": np.arange(n), "loss": np.asarray(loss, float), "W": Ws}  # fmt: skip


def _row(run_id, **kw):
    base = {"run_id": run_id, "optimizer": "flow", "depth": 2, "init": "normal",
            "init_scale": 8e-3, "balanced": True, "seed": 0, "reached": True}  # fmt: skip
    return {**base, **kw}


def _claim(exp, cid):
    return next(c for c in exp.claims if c.id == cid)


def test_2x2_claims_fail_or_are_not_judged_on_bad_input(tmp_path):
    s = X2.settings_for("quick")
    loss = np.array([0.9, 0.5, 0.2, 0.1])
    # a balanced depth-2 flow run whose det flips at loss 0.2 while far from the floor
    runs = {"flow_a": ([0.1, 0.2, -0.3, -0.4], loss, [0.5, 1.0, 2.0, 3.0])}
    rows = [_row("flow_a", level=0.1, loss=0.1, abs_w11=3.0, det=-0.4)]
    r = _result(tmp_path, X2, s, runs, rows)
    ev = _claim(X2, "det-sign-balanced-depth2").evaluate(r)
    assert ev["holds"] is False and "kept until the float64 floor" in ev["text"]
    # GD at depth 2 that flipped but whose |w11| still grows over 1e-3 -> 1e-4: not levelled off
    gd = [
        _row("gd_a", optimizer="gd", level=lv, loss=lv, abs_w11=w, det=-0.5)
        for lv, w in ((1e-3, 2.0), (1e-4, 6.0))
    ]
    runs["gd_a"] = ([0.1, -0.2, -0.3, -0.4], loss, [0.5, 1.0, 2.0, 6.0])
    ev = _claim(X2, "gd-depth2-flips").evaluate(_result(tmp_path, X2, s, runs, rows + gd))
    assert ev["holds"] is False and "max_rel_change" in ev["reason"]
    # no GD at depth 3 / 4: the iteration count is not judged (flow time / lr is no GD count)
    deep = [_row("flow_b", depth=3, level=1e-4, loss=1e-4, abs_w11=70.0, det=0.5, time=1e4)]
    runs["flow_b"] = ([0.1, 0.2, 0.3, 0.5], loss, [0.5, 1.0, 2.0, 3.0])
    r = _result(tmp_path, X2, s, runs, rows + deep)
    ev = _claim(X2, "gd-iterations-to-1e-4").evaluate(r)
    assert ev["holds"] is None and "flow time / lr" in ev["reason"]
    gd_deep = [_row("gd_b", optimizer="gd", depth=3, level=1e-4, loss=1e-4, steps=10**5, det=0.5)]
    runs["gd_b"] = runs["flow_b"]
    ev = _claim(X2, "gd-iterations-to-1e-4").evaluate(
        _result(tmp_path, X2, s, runs, rows + gd_deep)
    )
    assert ev["holds"] is False  # 1e5 steps is far from 3.3e6
    # the loss-0.13 point is never judged (the paper's init draw is unknown)
    at013 = [_row("flow_b", depth=3, level=0.13, loss=0.13, abs_w11=1.7, det=0.5)]
    assert (
        _claim(X2, "w11-at-0.13").evaluate(_result(tmp_path, X2, s, runs, at013))["holds"] is None
    )
    # figure points off by 20 % fail the +-15 % read-off tolerance
    pts = [_row("flow_b", depth=3, level=lv, loss=lv, abs_w11=1.2 * v, det=0.5)
           for lv, v in ((1.3e-2, 6.0), (1.3e-3, 19.5), (1.3e-4, 62.0))]  # fmt: skip
    assert (
        _claim(X2, "w11-vs-loss-points").evaluate(_result(tmp_path, X2, s, runs, pts))["holds"]
        is False
    )


def test_perturbed_claims_fail_or_are_not_judged_on_bad_input(tmp_path):
    s = PERT.settings_for("quick")
    kw = {"depth": 3, "eps": 0.1, "det_sign": -1}
    runs = {"p": ([-0.1, -0.2, -0.3, -0.4], [0.9, 1e-4, 1e-6, 1e-8], [0.1, 5.0, 8.0, 9.0])}
    rows = [_row("p", level=lv, loss=lv, abs_w11=w, abs_w11_times_eps=w * 0.1, det=-0.4, **kw)
            for lv, w in ((1e-4, 5.0), (1e-6, 8.0), (1e-8, 9.0))]  # fmt: skip
    r = _result(tmp_path, PERT, s, runs, rows)
    ev = _claim(PERT, "w11-eps-to-1").evaluate(r)
    assert ev["holds"] is False and ev["measured"]["min_at_judge_level"] == pytest.approx(0.9)
    ev = _claim(PERT, "w11-eps-to-1").evaluate(_result(tmp_path, PERT, s, runs, rows[:2]))
    assert ev["holds"] is None and "1e-08" in ev["reason"]
    # |w11| far too small for det < 0 at loss 1e-8: both bounds fail
    runs["p"] = ([-0.1, -0.2, -0.3, -0.4], [0.9, 1e-4, 1e-6, 1e-8], [0.1, 0.2, 0.2, 0.2])
    r = _result(tmp_path, PERT, s, runs, rows)
    assert _claim(PERT, "norm-bound-det-negative").evaluate(r)["holds"] is False
    assert _claim(PERT, "w11-bound-det-negative").evaluate(r)["holds"] is False


def test_gd_flow_agreement_pairs_by_init():
    rows = pd.DataFrame(
        [
            _row("f", level=0.1, abs_w11=2.0, det=1.0),
            _row("g", optimizer="gd", level=0.1, abs_w11=2.2, det=1.0),
            _row("g2", optimizer="gd", seed=1, level=0.1, abs_w11=9.0, det=1.0),
        ]
    )
    out = c2.gd_flow_agreement(rows, keys=("init_scale", "balanced"))
    assert out["pairs"] == 1 and out["max_rel_diff"] == pytest.approx(0.1)
    assert c2.gd_flow_agreement(rows, exclude=["f"])["pairs"] == 0
