"""Tracking: TensorBoard / W&B logging of run folders; clear errors when the package is absent.

The real packages are optional and not installed by default: tests that need them skip. The
logging logic itself is checked against small stand-ins for the two APIs."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest

from factorflow.config import config_from_dict
from factorflow.fit import fit
from factorflow.results import load_run
from factorflow.sweep import parse_grid, run_sweep
from factorflow.tracking import TensorBoardTracker, WandbTracker, make_tracker

CONFIG = {
    "loss": "mse",
    "problem": {"shape": [6, 6], "rank": 1, "n_obs": 20},
    "model": {"depth": 2, "init_scale": 1e-2},
    "optimizer": {"name": "flow"},
    "stop": {"loss_below": 1e-4},
    "record": {"per_decade": 3, "top_k": 3},
}
HAS_TB = importlib.util.find_spec("tensorboard") is not None
HAS_WANDB = importlib.util.find_spec("wandb") is not None


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    (run,) = fit(config_from_dict(CONFIG))
    return run.write(tmp_path_factory.mktemp("track") / "seed_0")


class FakeWriter:
    instances: list[FakeWriter] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.scalars: list[tuple[str, float, int]] = []
        self.texts: list[tuple[str, str]] = []
        self.closed = False
        FakeWriter.instances.append(self)

    def add_scalar(self, tag: str, value: float, global_step: int) -> None:
        self.scalars.append((tag, value, global_step))

    def add_text(self, tag: str, text: str) -> None:
        self.texts.append((tag, text))

    def close(self) -> None:
        self.closed = True


class FakeWandbRun:
    def __init__(self, **kw) -> None:
        self.init = kw
        self.logged: list[tuple[dict, int]] = []
        self.summary: dict = {}
        self.finished = False

    def log(self, row: dict, step: int) -> None:
        self.logged.append((row, step))

    def finish(self) -> None:
        self.finished = True


@pytest.fixture
def fake_tensorboard(monkeypatch):
    FakeWriter.instances.clear()
    mod = types.ModuleType("torch.utils.tensorboard")
    mod.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", mod)
    return FakeWriter.instances


@pytest.fixture
def fake_wandb(monkeypatch):
    runs: list[FakeWandbRun] = []
    mod = types.ModuleType("wandb")

    def init(**kw):
        runs.append(FakeWandbRun(**kw))
        return runs[-1]

    mod.init = init
    monkeypatch.setitem(sys.modules, "wandb", mod)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return runs


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown tracker"):
        make_tracker("mlflow", ".")


@pytest.mark.skipif(HAS_TB, reason="tensorboard is installed")
def test_missing_tensorboard_is_a_clear_error(tmp_path):
    with pytest.raises(ImportError, match=r"pip install 'factorflow\[tracking\]'"):
        make_tracker("tensorboard", tmp_path)


@pytest.mark.skipif(HAS_WANDB, reason="wandb is installed")
def test_missing_wandb_is_a_clear_error(tmp_path):
    with pytest.raises(ImportError, match="pip install wandb"):
        make_tracker("wandb", tmp_path)


def test_tensorboard_logs_trajectory_and_final_metrics(tmp_path, run_dir, fake_tensorboard):
    tracker = make_tracker("tensorboard", tmp_path)
    assert isinstance(tracker, TensorBoardTracker)
    tracker.log_run(run_dir, "depth=2/seed_0")
    (w,) = fake_tensorboard
    assert w.closed and w.log_dir == str(tmp_path / "tensorboard" / "depth=2" / "seed_0")
    run = load_run(run_dir)
    loss = [(v, s) for tag, v, s in w.scalars if tag == "train/loss"]
    np.testing.assert_allclose([v for v, _ in loss], run.trajectory["loss"])
    assert [s for _, s in loss] == run.trajectory["step"].astype(int).tolist()
    assert {"train/effective_rank", "train/nuclear_norm", "train/det"} <= {t for t, *_ in w.scalars}
    final = {tag: v for tag, v, _ in w.scalars if tag.startswith("final/")}
    assert final["final/final_loss"] == run.summary["final_loss"]
    assert "final/status" not in final and "final/singular_values" not in final
    assert '"depth": 2' in w.texts[0][1]


def test_wandb_logs_offline(tmp_path, run_dir, fake_wandb):
    tracker = make_tracker("wandb", tmp_path)
    assert isinstance(tracker, WandbTracker)
    tracker.log_run(run_dir, "seed_0")
    (wb,) = fake_wandb
    assert wb.init["mode"] == "offline" and wb.init["name"] == "seed_0"
    assert wb.init["config"]["model.depth"] == 2
    run = load_run(run_dir)
    assert [step for _, step in wb.logged] == list(range(len(run.trajectory["loss"])))
    np.testing.assert_allclose([r["loss"] for r, _ in wb.logged], run.trajectory["loss"])
    assert wb.summary["final/recon_mse"] == run.summary["recon_mse"]
    assert wb.finished


def test_sweep_tracks_every_finished_run(tmp_path, fake_tensorboard):
    spec = parse_grid(
        {"base": CONFIG, "grid": {"model.depth": [2], "problem.n_obs": [20, 100], "seeds": [0, 1]}}
    )
    res = run_sweep(spec, tmp_path, track="tensorboard", progress=False, log=None)
    assert res.n_ran == 2 and len(res.failures) == 1  # the failed batch logs nothing
    assert sorted(w.log_dir.rsplit("/", 1)[-1] for w in fake_tensorboard) == ["seed_0", "seed_1"]


def test_missing_tracker_package_stops_before_running(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    spec = parse_grid({"base": CONFIG, "grid": {"model.depth": [2]}})
    with pytest.raises(ImportError, match="pip install wandb"):
        run_sweep(spec, tmp_path / "sw", track="wandb", progress=False, log=None)
    assert not (tmp_path / "sw").exists()


@pytest.mark.skipif(not HAS_TB, reason="tensorboard is not installed")
def test_real_tensorboard_writes_event_files(tmp_path, run_dir):
    tracker = make_tracker("tensorboard", tmp_path)
    tracker.log_run(run_dir, "seed_0")
    tracker.close()
    assert list((tmp_path / "tensorboard" / "seed_0").glob("events.out.tfevents.*"))


@pytest.mark.skipif(not HAS_WANDB, reason="wandb is not installed")
def test_real_wandb_offline_run(tmp_path, run_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = make_tracker("wandb", tmp_path)
    tracker.log_run(run_dir, "seed_0")
    tracker.close()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_cli_run_with_track(tmp_path, fake_tensorboard, capsys):
    from factorflow.cli import main

    argv = ["run", "--out", str(tmp_path), "--quiet", "--track", "tensorboard"]
    for k, v in [
        ("loss", '"mse"'),
        ("problem.shape", "[6, 6]"),
        ("problem.rank", "1"),
        ("problem.n_obs", "20"),
        ("model.depth", "2"),
        ("stop.loss_below", "1e-3"),
    ]:
        argv += ["--set", f"{k}={v}"]
    assert main(argv) == 0
    assert "logged 1 run(s) to tensorboard" in capsys.readouterr().out
    assert len(fake_tensorboard) == 1
