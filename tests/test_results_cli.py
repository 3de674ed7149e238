"""Tests for run folders (factorflow.results) and the ``factorflow`` command end to end on a tiny
config: what is written can be loaded back and recomputed; bad input gives exit code 2 and a
message; nothing is ever written half."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from factorflow import metrics, results
from factorflow.cli import main
from factorflow.config import config_from_dict, config_to_dict, load_config
from factorflow.factorizations.dmf import end_to_end
from factorflow.fit import build_problem
from factorflow.objectives import DMFObjective
from factorflow.results import load_run, write_json, write_run

REPO = Path(__file__).resolve().parents[1]

TINY = """
loss = "mse"

[problem]
shape = [12, 12]
rank = 2
n_obs = 80

[model]
depth = 2

[optimizer]
name = "flow"

[stop]
loss_below = 1e-5
"""


def _leftovers(folder: Path) -> list[str]:
    """Temporary files or folders left behind by an atomic write."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- CLI end to end


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    cfg_path = tmp / "tiny.toml"
    cfg_path.write_text(TINY)
    out = tmp / "out"
    code = main(
        ["run", "--config", str(cfg_path), "--out", str(out), "--seeds", "0", "1", "--quiet"]
    )
    return code, cfg_path, out


def test_cli_run_writes_loadable_run_folders(cli_run):
    code, cfg_path, out = cli_run
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["seed_0", "seed_1"]
    base = load_config(cfg_path)
    for seed in (0, 1):
        run = load_run(out / f"seed_{seed}")
        s = run.summary
        assert s["seed"] == seed and s["status"] == "converged" and s["batch_size"] == 2
        cfg = config_from_dict(run.config)
        assert cfg.seeds == (seed,)
        assert config_to_dict(cfg) == {**config_to_dict(base), "seeds": [seed]}
        assert run.meta["factorflow"] and "created" in run.meta
        # recompute the stored numbers from the stored factors
        fs = [torch.as_tensor(f)[None] for f in run.factors]
        assert [f.shape[1:] for f in fs] == [(12, 12), (12, 12)]
        problem = build_problem(cfg.problem)
        W = end_to_end(fs)
        loss = float(DMFObjective(problem, cfg.loss)(fs)[0])
        assert math.isclose(loss, s["final_loss"], rel_tol=1e-12)
        assert math.isclose(s["final_loss"], 1e-5, rel_tol=1e-8)
        assert math.isclose(
            float(metrics.recon_mse(W[0], problem.ground_truth)), s["recon_mse"], rel_tol=1e-12
        )
        assert math.isclose(float(metrics.nuclear_norm(W[0])), s["nuclear_norm"], rel_tol=1e-12)
        # the trajectory ends at the run's end
        traj = run.trajectory
        assert traj["loss"][-1] == s["final_loss"] and traj["time"][-1] == s["time"]
        assert traj["singular_values"].shape == (len(traj["time"]), 10)
        assert np.all(np.diff(traj["time"]) > 0)


def test_cli_refuses_existing_run_folders(cli_run, capsys):
    _, cfg_path, out = cli_run
    before = (out / "seed_0" / "summary.json").read_text()
    code = main(["run", "--config", str(cfg_path), "--out", str(out), "--seeds", "0", "--quiet"])
    assert code == 2
    assert "already exist" in capsys.readouterr().err
    assert (out / "seed_0" / "summary.json").read_text() == before


def test_cli_bad_config_exit_code_2(tmp_path, capsys):
    cfg_path = tmp_path / "bad.toml"
    cfg_path.write_text(TINY.replace("depth = 2", "dpth = 2"))
    out = tmp_path / "out"
    code = main(["run", "--config", str(cfg_path), "--out", str(out), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("factorflow: error:") and "did you mean 'depth'" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "model.depth=0"], "depth must be >= 1"),
        (["--set", 'loss="l1"'], "unknown loss"),
        (
            [
                "--set",
                "model.det_sign=1",
                "--set",
                "problem.shape=[3, 4]",
                "--set",
                "problem.n_obs=6",
            ],
            "square",
        ),
        (["--config", "missing.toml"], "does not exist"),
    ],
)
def test_cli_bad_input_exit_code_2(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY)
    argv = ["run", "--config", "tiny.toml", "--out", "out", "--quiet", *args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_list_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "factorflow.cli", "list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    from factorflow.experiments import EXPERIMENTS

    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert set(EXPERIMENTS) <= listed  # every registered experiment (possibly none) is listed


# --------------------------------------------------------------------------- run folders


def _payload():
    traj = {
        "step": np.arange(4),
        "time": np.linspace(0, 1, 4),
        "loss": np.array([1, 0.5, 0.2, 0.1]),
    }
    factors = [np.arange(6.0).reshape(2, 3), np.eye(2)]
    return {"loss": "mse", "seeds": [0]}, {"final_loss": 0.1, "note": float("nan")}, traj, factors


def test_write_and_load_run_round_trip(tmp_path):
    cfg, summary, traj, factors = _payload()
    path = write_run(tmp_path / "run", cfg, summary, traj, factors)
    run = load_run(path)
    assert run.config == cfg
    assert run.summary == {"final_loss": 0.1, "note": None}  # NaN -> null
    for k, v in traj.items():
        np.testing.assert_array_equal(run.trajectory[k], v)
    assert len(run.factors) == 2
    for a, b in zip(run.factors, factors, strict=True):
        np.testing.assert_array_equal(a, b)
    assert set(run.meta) >= {"factorflow", "git_commit", "python", "torch", "numpy", "created"}
    assert _leftovers(tmp_path) == []


def test_write_run_refuses_to_overwrite(tmp_path):
    cfg, summary, traj, factors = _payload()
    path = write_run(tmp_path / "run", cfg, summary, traj, factors)
    with pytest.raises(FileExistsError, match="already exists"):
        write_run(path, cfg, {"final_loss": 9.0}, traj, factors)
    assert load_run(path).summary["final_loss"] == 0.1
    write_run(path, cfg, {"final_loss": 9.0}, traj, factors, overwrite=True)
    assert load_run(path).summary["final_loss"] == 9.0
    assert _leftovers(tmp_path) == []


def test_exception_inside_write_run_leaves_nothing(tmp_path, monkeypatch):
    cfg, summary, traj, factors = _payload()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(OSError, match="disk full"):
        write_run(tmp_path / "run", cfg, summary, traj, factors)
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_folder(tmp_path, monkeypatch):
    cfg, summary, traj, factors = _payload()
    path = write_run(tmp_path / "run", cfg, summary, traj, factors)
    monkeypatch.setattr(np, "savez_compressed", lambda *a, **k: (_ for _ in ()).throw(OSError("x")))
    with pytest.raises(OSError):
        write_run(path, cfg, {"final_loss": 9.0}, traj, factors, overwrite=True)
    monkeypatch.undo()
    assert load_run(path).summary["final_loss"] == 0.1
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_load_run_incomplete_folder(tmp_path):
    (tmp_path / "half").mkdir()
    write_json(tmp_path / "half" / "summary.json", {"a": 1})
    with pytest.raises(FileNotFoundError, match="missing"):
        load_run(tmp_path / "half")


def test_write_json_values_and_atomicity(tmp_path):
    data = {
        "nan": float("nan"),
        "inf": float("inf"),
        "array": np.array([1.5, np.nan]),
        "np_scalar": np.float64(2.0),
        "tensor": torch.tensor([1.0, 2.0], dtype=torch.float64),
        "tuple": (1, 2),
        "path": Path("a/b"),
        1: "int key",
    }
    write_json(tmp_path / "sub" / "x.json", data)
    loaded = json.loads((tmp_path / "sub" / "x.json").read_text())
    assert loaded == {
        "nan": None,
        "inf": None,
        "array": [1.5, None],
        "np_scalar": 2.0,
        "tensor": [1.0, 2.0],
        "tuple": [1, 2],
        "path": "a/b",
        "1": "int key",
    }
    assert _leftovers(tmp_path / "sub") == []
    assert results.jsonable(float("-inf")) is None


def _folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "f.txt").write_text(text)
    return path


def test_replace_folders_is_all_or_nothing(tmp_path, monkeypatch):
    """When the second move fails, the first target gets its old folder back: every target is
    old (nothing half replaced, no folder set aside left behind); without a failure all are new."""
    targets = [_folder(tmp_path / f"run{i}", f"old{i}") for i in range(2)]
    news = [_folder(tmp_path / f"new{i}", f"new{i}") for i in range(2)]
    real = os.replace
    calls = []

    def failing(src, dst):
        calls.append((Path(src), Path(dst)))
        if Path(src) == news[1]:
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(results.os, "replace", failing)
    with pytest.raises(OSError, match="disk full"):
        results.replace_folders(list(zip(news, targets, strict=True)))
    assert [(t / "f.txt").read_text() for t in targets] == ["old0", "old1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new1", "run0", "run1"]
    assert any(src == news[0] for src, _ in calls)  # the first move had happened
    monkeypatch.setattr(results.os, "replace", real)
    news[0] = _folder(tmp_path / "new0", "new0")
    results.replace_folders(list(zip(news, targets, strict=True)))
    assert [(t / "f.txt").read_text() for t in targets] == ["new0", "new1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run0", "run1"]
