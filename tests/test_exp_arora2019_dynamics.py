"""arora2019-dynamics on the Experiment shape: a tiny run through the runner, settings checks,
and each claim failing (or not judged) on bad hand-made results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from factorflow.experiment import Result
from factorflow.experiments.arora2019_dynamics import CLAIMS, EXPERIMENT, SMOKE, Settings
from factorflow.runner import load_result, run_experiment

CLAIM = {c.id: c for c in CLAIMS}


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


def test_tiny_run_through_the_runner(tmp_path):
    data = _tiny_ratings(tmp_path / "ml")
    opts = {"data_dir": str(data), "n_train": 60, "ratings_depths": [1, 2], "ratings_width": 9}
    summary = run_experiment(
        "arora2019-dynamics", tmp_path / "out", scale="smoke", options=opts, log=lambda _: None
    )
    out = tmp_path / "out"
    assert {r["part"] for r in summary["rows"]} == {"synthetic", "ratings"}
    syn = [r for r in summary["rows"] if r["part"] == "synthetic"]
    assert {(r["depth"], r["optimizer"]) for r in syn} == {
        (1, "flow"),
        (1, "gd lr 0.1"),
        (3, "flow"),
    }
    assert all(r["recon_mse"] >= 0 and len(r["singular_values"]) == 10 for r in syn)
    claims = {c["id"]: c for c in summary["claims"]}
    assert set(claims) == set(CLAIM)
    # Thm. 3 is an identity for balanced factors: numerical precision on any problem
    assert claims["theorem3_rates"]["holds"] is True
    assert claims["theorem3_rates"]["measured"]["max_normwise_error"] < 1e-8
    assert claims["gd_tracks_flow"]["holds"] is True
    assert set(summary["arrays"]) == {
        f"dynamics_{n}.npz" for n in ("synthetic", "theorem", "ratings")
    }
    assert summary["figures"] == [
        f"dynamics_{n}.png" for n in ("synthetic", "synthetic_logtime", "theorem", "ratings")
    ]
    for name in summary["figures"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the claims re-judged from the folder alone give the same outcomes
    result = load_result(out)
    for c in CLAIMS:
        assert c.evaluate(result)["holds"] == claims[c.id]["holds"], c.id


def test_settings_round_trip_and_checks():
    s = EXPERIMENT.settings_for("quick", {"gd.lr": 0.05, "gd_depths": [1]})
    assert s.gd.lr == 0.05 and s.gd_depths == (1,) and s.flow.method == "RK45"
    paper = EXPERIMENT.settings_for("paper")
    assert paper.gd.lr == 0.01 and paper.gd_depths == (1, 2, 3) and paper.ratings_max_evals == 2000
    for bad, match in (
        ({"seeds": 2}, "deterministic"),
        ({"gd_depths": [4]}, "gd_depths"),
        ({"gd.name": "adam"}, "plain GD"),
        ({"flow.name": "gd"}, "flow optimizers"),
        ({"theorem_k": 12}, "theorem_k"),
        ({"dtype": "float16"}, "dtype"),
    ):
        with pytest.raises(ValueError, match=match):
            EXPERIMENT.settings_for("smoke", bad)


# --------------------------------------------------------------------------- claims on bad input


def _result(
    tmp_path: Path, rows: list[dict] | None = None, s: Settings = SMOKE, **arrays
) -> Result:
    for name, z in arrays.items():
        np.savez(tmp_path / f"{name}.npz", **z)
    rows = rows or []
    return Result(tmp_path, {"rows": rows}, EXPERIMENT.rows_frame(rows), s)


def _sig(t: np.ndarray, t0: float, h: float) -> np.ndarray:
    return h / (1 + np.exp(-(t - t0)))


def _traj(t0s: list[float]) -> np.ndarray:
    t = np.linspace(0, 100, 401)
    return t, np.stack([_sig(t, t0, 5.0 - i) for i, t0 in enumerate(t0s)], axis=1)


def test_one_at_a_time_fails_when_the_deep_values_rise_together(tmp_path):
    t, together = _traj([30, 30])
    _, staggered = _traj([20, 60])
    good = {"flow_depth1_time": t, "flow_depth1_singular_values": together,
            "flow_depth3_time": t, "flow_depth3_singular_values": staggered}  # fmt: skip
    assert CLAIM["one_at_a_time"].evaluate(_result(tmp_path, dynamics_synthetic=good))["holds"]
    bad = {**good, "flow_depth3_singular_values": together}
    assert (
        CLAIM["one_at_a_time"].evaluate(_result(tmp_path, dynamics_synthetic=bad))["holds"] is False
    )
    shallow = Settings(depths=(1, 2), gd_depths=(), theorem_gaussian_depths=())
    out = CLAIM["one_at_a_time"].evaluate(_result(tmp_path, s=shallow))
    assert out["holds"] is None and "depth >= 3" in out["reason"]


def test_gd_tracks_flow_fails_when_gd_is_off_by_five_percent(tmp_path):
    t, sv = _traj([20, 60])
    syn = {"flow_depth1_time": t, "flow_depth1_singular_values": sv,
           "gd_depth1_time": t[::4], "gd_depth1_singular_values": sv[::4] * 1.05}  # fmt: skip
    out = CLAIM["gd_tracks_flow"].evaluate(_result(tmp_path, dynamics_synthetic=syn))
    assert out["holds"] is False and out["measured"]["worst"] == pytest.approx(0.05 / 1.05)
    syn = {k: v for k, v in syn.items() if k.startswith("flow")}
    out = CLAIM["gd_tracks_flow"].evaluate(_result(tmp_path, dynamics_synthetic=syn))
    assert out["holds"] is None and "GD was not run" in out["reason"]


def test_theorem3_fails_on_wrong_rates_and_skips_depth1(tmp_path):
    T, k = 5, SMOKE.theorem_k
    sv = np.tile(np.array([3.0, 2.0, 1.0, 0.5]), (T, 1))
    pred = np.ones((T, k))
    rates = np.stack([pred * (1 + 1e-3), pred, 2 * pred], axis=1)  # measured off by 1e-3
    z = {"flow_depth3_time": np.arange(T), "flow_depth3_singular_values": sv,
         "flow_depth3_rates": rates}  # fmt: skip
    out = CLAIM["theorem3_rates"].evaluate(_result(tmp_path, dynamics_theorem=z))
    assert out["holds"] is False and out["measured"]["max_normwise_error"] == pytest.approx(5e-4)
    z1 = {k.replace("depth3", "depth1"): v for k, v in z.items()}
    (tmp_path / "d1").mkdir()
    out = CLAIM["theorem3_rates"].evaluate(_result(tmp_path / "d1", dynamics_theorem=z1))
    assert out["holds"] is None


def test_ratings_claim_fails_without_a_dominant_value(tmp_path):
    def row(depth: int, ratio: float) -> dict:
        return {"part": "ratings", "depth": depth, "sigma1_over_sigma2": ratio, "status": "x",
                "singular_values": [ratio, 1.0], "test_rmse": 1.0, "test_rmse_seen": 1.0,
                "time": 1.0}  # fmt: skip

    rows = [row(1, 1.2), row(2, 60.0), row(3, 2.0)]
    out = CLAIM["ratings_dominant_singular_value"].evaluate(_result(tmp_path, rows))
    assert out["holds"] is False and out["measured"]["min_deep_ratio"] == 2.0
    rows = [row(1, 1.2), row(2, 60.0), row(3, 1e5)]
    assert CLAIM["ratings_dominant_singular_value"].evaluate(_result(tmp_path, rows))["holds"]
    out = CLAIM["ratings_dominant_singular_value"].evaluate(_result(tmp_path, [row(1, 50.0)]))
    assert out["holds"] is None
    json.dumps(out)  # JSON-able
