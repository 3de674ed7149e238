"""The tensor factorization dynamics experiment (razin2021-dynamics): the library pieces it is
built from (flow-then-GD, training past the crossing, the top Hessian eigenvalue) on small
problems, the smoke run through the shared runner, and each claim failing on bad rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from factorflow.dynamics import (
    GD,
    Flow,
    FlowThenGD,
    Schedule,
    Stop,
    flow_then_gd,
    hessian_top_eigenvalue,
    train,
    train_past_crossing,
)
from factorflow.experiment import Result
from factorflow.experiments import EXPERIMENTS
from factorflow.factorizations.cp import component_norms, cp_to_tensor, init_cp
from factorflow.objectives import CPObjective
from factorflow.problems.tensor import low_rank_tensor, tensor_completion
from factorflow.runner import load_result, run_experiment
from factorflow.tensor_dynamics import COLUMNS, fewer_components

ID = "razin2021-dynamics"
EXP = EXPERIMENTS[ID]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _problem(seed: int = 0, dims=(4, 4, 4), rank: int = 2, n_obs: int = 40):
    gen = torch.Generator().manual_seed(seed)
    W, _ = low_rank_tensor(dims, rank, generator=gen)
    return W, CPObjective(tensor_completion(W, n_obs, gen), "mse")


# --------------------------------------------------------------------------- library pieces


def test_hessian_top_eigenvalue_matches_dense_hessian() -> None:
    gen = torch.Generator().manual_seed(3)
    _, obj = _problem(3, (3, 3, 3), 2, 15)
    factors = init_cp((3, 3, 3), 4, 0.5, batch=2, generator=gen)
    lam, v, n = hessian_top_eigenvalue(obj, factors, iters=2000, tol=1e-12, generator=gen)
    assert 1 < n <= 2000
    for b in range(2):
        flat = torch.cat([f[b].reshape(-1) for f in factors])
        sizes = [f[b].numel() for f in factors]
        shapes = [f[b].shape for f in factors]

        def loss(x: torch.Tensor, sizes=sizes, shapes=shapes) -> torch.Tensor:
            pieces = torch.split(x, sizes)
            return obj([p.reshape(s)[None] for p, s in zip(pieces, shapes, strict=True)])[0]

        ev = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, flat))
        assert float(lam[b]) == pytest.approx(float(ev[ev.abs().argmax()]), rel=1e-6)
        assert float(sum((x[b] ** 2).sum() for x in v)) == pytest.approx(1.0)


def test_flow_then_gd_reaches_the_flows_end_state_and_records_the_switch() -> None:
    """From small init the flow turns stiff after the first component: the hybrid switches to
    GD there and ends (at the same loss) where the flow alone ends."""
    _, obj = _problem()
    init = init_cp((4, 4, 4), 8, 0.05, generator=torch.Generator().manual_seed(1))
    init = [f.double() for f in init]
    stop = Stop(loss_below=1e-6, max_steps=20_000)
    flow = train(init, obj, Flow(method="LSODA"), stop, Schedule(per_decade=2))  # stiff: fast
    hybrid = FlowThenGD(check_every=10, gd_record_every=5)
    res = flow_then_gd(init, obj, hybrid, stop, {"c": component_norms})
    assert flow.status == ["converged"] and res.status == ["converged"]
    info = res.info
    assert info["switch_time"] is not None and 0 < info["switch_time"] < float(res.time[0])
    assert info["switch_lambda_max"] > 0 and info["gd_steps"] > 0
    assert info["gd_lr_max"] < 2.0 / info["switch_lambda_max"]  # stable steps
    assert info["h_lambda_checks"][-1][0] == pytest.approx(info["switch_time"])
    phase = res.trajectory.values["phase"][:, 0]
    t = res.trajectory.time
    assert set(np.unique(phase)) == {0, 1}
    assert t[phase == 1].min() >= info["switch_time"] and t[phase == 0].max() <= info["switch_time"]
    assert np.all(np.diff(t) >= 0)
    # the same end state (a generic completion solution from one init: the flow's)
    W_flow, W_hyb = cp_to_tensor(flow.params), cp_to_tensor(res.params)
    assert float((W_flow - W_hyb).norm() / W_flow.norm()) < 1e-2
    c_flow = np.sort(component_norms(flow.params)[0].numpy())[::-1]
    c_hyb = np.sort(component_norms(res.params)[0].numpy())[::-1]
    np.testing.assert_allclose(c_hyb[:2], c_flow[:2], rtol=1e-2)
    # stop_at_switch: the flow part only
    part = flow_then_gd(init, obj, FlowThenGD(check_every=10, stop_at_switch=True), stop)
    assert part.status == ["switched"]
    assert float(part.time[0]) == pytest.approx(info["switch_time"])


def test_flow_then_cvode_reaches_the_flows_end_state() -> None:
    """late="cvode": the stiff phase by CVODE instead of GD; the same end state as the flow
    alone and as flow-then-GD (which is cheaper is a question of scale: bench_cp.py)."""
    pytest.importorskip("sksundae")
    _, obj = _problem()
    init = [
        f.double() for f in init_cp((4, 4, 4), 8, 0.05, generator=torch.Generator().manual_seed(1))
    ]
    stop = Stop(loss_below=1e-6, max_steps=20_000)
    flow = train(init, obj, Flow(method="LSODA"), stop, Schedule(per_decade=2))
    gd = flow_then_gd(init, obj, FlowThenGD(check_every=10), stop)
    res = flow_then_gd(init, obj, FlowThenGD(check_every=10, late="cvode"), stop)
    assert res.status == ["converged"] and float(res.final_loss[0]) <= 1e-6 * (1 + 1e-9)
    info = res.info
    assert res.method == "flow then CVODE" and info["gd_steps"] == 0
    assert info["late_evals"] > 0 and info["switch_time"] < float(res.time[0])
    assert set(np.unique(res.trajectory.values["phase"][:, 0])) == {0, 1}
    W_flow = cp_to_tensor(flow.params)
    assert float((cp_to_tensor(res.params) - W_flow).norm() / W_flow.norm()) < 1e-2
    W_gd = cp_to_tensor(gd.params)
    assert float((cp_to_tensor(res.params) - W_gd).norm() / W_gd.norm()) < 1e-2
    with pytest.raises(ValueError, match="late"):
        FlowThenGD(late="euler")


def test_flow_then_gd_patience_and_input_checks() -> None:
    _, obj = _problem()
    init = [
        f.double() for f in init_cp((4, 4, 4), 8, 0.05, generator=torch.Generator().manual_seed(1))
    ]
    stop = Stop(loss_below=1e-6, max_steps=20_000)
    res = flow_then_gd(init, obj, FlowThenGD(check_every=10, patience_steps=30), stop)
    assert res.status == ["converged"]
    assert res.info["crossing_time"] < float(res.time[0])
    assert (res.trajectory.values["phase"][:, 0] == 2).any()
    assert float(obj(res.info["params_at_crossing"])[0]) <= 1e-6
    with pytest.raises(ValueError, match="one run"):
        flow_then_gd([torch.cat([f, f]) for f in init], obj, FlowThenGD(), stop)
    with pytest.raises(ValueError, match="safety"):
        FlowThenGD(safety=1.0)
    with pytest.raises(ValueError, match="max_steps and max_wall_s"):
        flow_then_gd(init, obj, FlowThenGD(), Stop(max_time=1.0))


class _Diagonal:
    """L(x) = 1/2 sum_i a_i x_i^2 per run, x (B, n): lambda_max = max a."""

    def __init__(self, a: torch.Tensor) -> None:
        self.a = a

    def __call__(self, ps):
        return 0.5 * (self.a * ps[0] ** 2).sum(-1)


def test_flow_then_gd_redoes_a_chunk_at_half_the_step_when_it_diverges(monkeypatch) -> None:
    """The GD phase's step is 0.8 * 2 / lambda_max from a power iteration. Here lambda_max (100)
    is underestimated 8x after the switch, as when the curvature grows inside a chunk: lr 0.128
    makes the a = 100 mode grow by |1 - 12.8| per step, so the chunk diverges and is redone at
    0.064 (|1 - 6.4|, diverges), 0.032 (|1 - 3.2|, diverges) and 0.016 (|1 - 1.6| < 1): three
    redos, the chunk kept at 0.016 (one chunk covers the GD phase here), and the run converges."""
    import factorflow.dynamics.hybrid as hybrid

    real, calls = hybrid.hessian_top_eigenvalue, []

    def underestimate(*args, **kwargs):
        lam, v, n = real(*args, **kwargs)
        calls.append(float(lam[0]))
        return (lam if len(calls) == 1 else lam / 8), v, n  # the first check is the switch's

    monkeypatch.setattr(hybrid, "hessian_top_eigenvalue", underestimate)
    obj = _Diagonal(torch.logspace(0, 2, 4, dtype=torch.float64))  # 1 .. 100: ~600 GD steps
    x0 = [torch.ones(1, 4, dtype=torch.float64)]
    method = FlowThenGD(check_every=10, switch_h_lambda=1e-12, gd_chunk=5000)
    res = flow_then_gd(x0, obj, method, Stop(loss_below=1e-8, max_steps=50_000))
    assert res.status == ["converged"] and float(res.final_loss[0]) <= 1e-8
    assert calls[0] == pytest.approx(100.0, rel=1e-3)  # the power iteration itself is right
    assert len(calls) == 2  # the switch's check and the one GD chunk's
    assert res.info["gd_redos"] == 3
    assert res.info["gd_lr_min"] == res.info["gd_lr_max"] == pytest.approx(0.016, rel=1e-3)
    loss, phase = res.trajectory.values["loss"][:, 0], res.trajectory.values["phase"][:, 0]
    assert np.isfinite(loss).all()  # the diverged tries are not kept
    assert (phase == 1).sum() > 2 and np.all(np.diff(loss[phase == 1]) <= 0)  # stable steps


def test_train_past_crossing_runs_extra_steps_after_the_crossing() -> None:
    _, obj = _problem()
    init = [
        f.double() for f in init_cp((4, 4, 4), 8, 0.3, generator=torch.Generator().manual_seed(2))
    ]
    stop = Stop(loss_below=1e-3, max_steps=5000)
    once = train(init, obj, GD(1.0), stop, Schedule(every=10))
    res = train_past_crossing(init, obj, GD(1.0), stop, 40, Schedule(every=10))
    assert res.status == ["converged"]
    assert res.info["crossing_step"] == int(once.steps[0])
    assert int(res.steps[0]) == int(once.steps[0]) + 40
    assert float(res.final_loss[0]) < float(once.final_loss[0])
    assert np.all(np.diff(res.trajectory.step) > 0)
    never = train_past_crossing(init, obj, GD(1.0), Stop(loss_below=1e-12, max_steps=5), 40)
    assert never.status == ["max_steps"] and never.info["crossing_step"] is None


# --------------------------------------------------------------------------- the experiment


def test_smoke_run_and_redraw(tmp_path) -> None:
    summary = run_experiment(ID, tmp_path / "r", scale="smoke", log=lambda _: None)
    rows = summary["rows"]
    fits = [r for r in rows if r["kind"] == "fit"]
    assert len(fits) == 2 * 3 and len(rows) == 2 * 4  # stds x (optimizers + theorem check)
    assert all(math.isfinite(r["rel_fro_error"]) and r["outcome"] == "converged" for r in fits)
    assert any(r["switch_time"] for r in fits if r["optimizer"] == "flow")
    claims = {c["id"]: c for c in summary["claims"]}
    assert claims["component_rate_identity"]["holds"] is True
    assert claims["component_rate_identity"]["measured"]["max_relative_error"] < 1e-6
    assert {"components_flow.png", "error_vs_init.png", "rate_check.png"} <= set(summary["figures"])
    result = load_result(tmp_path / "r")
    arrays = result.arrays(fits[0]["trajectory"])
    assert arrays["top_c"].shape[1] == 8


def _rows(**by_init) -> pd.DataFrame:
    """Fit rows of one optimizer: ``std=(n_large, rel_fro_error, leave_times)`` per seed 0."""
    rows = []
    for key, (n, err, lt) in by_init.items():
        std = float(key[1:].replace("p", "."))
        rows.append(
            {
                "kind": "fit",
                "optimizer": "group_rmsprop",
                "init_scale": std,
                "seed": 0,
                "n_large_components": n,
                "rel_fro_error": err,
                "leave_times": lt,
                "leave_min_gap": None,
                "outcome": "converged",
            }
        )
    return EXP.rows_frame(rows)


def _judge(claim_id: str, rows: pd.DataFrame, settings=None) -> dict:
    claim = next(c for c in EXP.claims if c.id == claim_id)
    return claim.evaluate(Result(None, {}, rows, settings or EXP.scales["quick"]))


SPREAD = [1.0, 2.0, 4.0, 8.0, 16.0]


def test_claims_hold_on_paper_like_rows() -> None:
    rows = _rows(s0p05=(7, 8e-2, SPREAD), s0p005=(5, 7e-6, SPREAD))
    for cid in ("one_at_a_time", "error_decreases_with_init", "fewer_components_at_small_init"):
        out = _judge(f"{cid}[group_rmsprop]", rows)
        assert out["holds"] is True, out


def test_fewer_components_fails_on_equal_counts_and_on_a_count_other_than_five() -> None:
    # the quick outcome: five large components at both stds
    out = _judge(
        "fewer_components_at_small_init[group_rmsprop]",
        _rows(s0p05=(5, 1e-2, SPREAD), s0p005=(5, 5e-3, SPREAD)),
    )
    assert out["holds"] is False and out["measured"]["drop"] == 0
    out = _judge(
        "fewer_components_at_small_init[group_rmsprop]",
        _rows(s0p05=(9, 1e-2, SPREAD), s0p005=(6, 5e-3, SPREAD)),
    )
    assert out["holds"] is False and "count_small_init" in out["reason"]
    # the median over seeds
    rows = pd.concat([_rows(s0p05=(n, 1e-2, SPREAD), s0p005=(5, 1e-3, SPREAD)) for n in (5, 8, 9)])
    rows["seed"] = [0, 0, 1, 1, 2, 2]
    m = fewer_components(rows, "group_rmsprop")
    assert m["count_large_init"] == 8 and m["seeds"] == 3


def test_one_at_a_time_fails_when_leave_times_are_close_or_too_many_components() -> None:
    close = _rows(s0p05=(7, 8e-2, SPREAD), s0p005=(5, 7e-6, [1.0, 2.0, 4.0, 8.0, 8.2]))
    assert _judge("one_at_a_time[group_rmsprop]", close)["holds"] is False
    many = _rows(s0p05=(7, 8e-2, SPREAD), s0p005=(9, 7e-6, SPREAD))
    assert _judge("one_at_a_time[group_rmsprop]", many)["holds"] is False
    missing = _rows(s0p05=(7, 8e-2, SPREAD), s0p005=(5, 7e-6, [1.0, None, 4.0, 8.0, 16.0]))
    assert _judge("one_at_a_time[group_rmsprop]", missing)["holds"] is False


def test_error_claim_fails_when_error_grows_and_is_not_judged_without_runs() -> None:
    rows = _rows(s0p05=(7, 1e-3, SPREAD), s0p005=(5, 1e-2, SPREAD))
    assert _judge("error_decreases_with_init[group_rmsprop]", rows)["holds"] is False
    one_std = _rows(s0p005=(5, 1e-2, SPREAD))
    assert _judge("error_decreases_with_init[group_rmsprop]", one_std)["holds"] is None
    out = _judge("error_decreases_with_init[gd]", rows)  # gd does not run at quick scale
    assert out["holds"] is None and "no gd runs" in out["reason"]


def test_rate_identity_claim_fails_on_a_large_error() -> None:
    base = {
        "kind": "theorem_check",
        "optimizer": "flow_balanced",
        "seed": 0,
        "n_checked_states": 10,
    }
    bad = EXP.rows_frame([{**base, "init_scale": 0.05, "max_relative_error": 1e-3}])
    out = _judge("component_rate_identity", bad)
    assert out["holds"] is False and out["measured"]["max_relative_error"] == 1e-3
    good = EXP.rows_frame([{**base, "init_scale": 0.05, "max_relative_error": 1e-12}])
    assert _judge("component_rate_identity", good)["holds"] is True
    assert _judge("component_rate_identity", bad.iloc[:0])["holds"] is None


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown optimizers"):
        EXP.settings_for("quick", {"optimizers": ["sgd"]})
    with pytest.raises(ValueError, match="RK45"):
        EXP.settings_for("quick", {"flow.method": "LSODA"})
    with pytest.raises(ValueError, match="unknown option"):
        EXP.settings_for("quick", {"lr_typo": 1.0})
    assert set(COLUMNS) == set(EXP.columns)


def test_smoke_with_the_late_phase_by_cvode(tmp_path) -> None:
    """The paper preset's late_phase="cvode" through the runner: the flow rows say CVODE and
    reach the stop like the GD late phase does."""
    pytest.importorskip("sksundae")
    assert EXP.scales["paper"].late_phase == "cvode" and EXP.scales["quick"].late_phase == "gd"
    out = run_experiment(
        ID, tmp_path / "r", scale="smoke", options={"late_phase": "cvode"}, log=lambda m: None
    )
    flows = [r for r in out["rows"] if r["optimizer"] == "flow"]
    assert flows and all("CVODE after t" in r["method"] for r in flows if r["switch_time"])
    assert any(r["switch_time"] for r in flows)
    assert all(r["status"] in ("converged", "max_wall") for r in flows)
