"""``benchmarks/irmae_progress.py``: an IRMAE run's models, their progress and the time left."""

from __future__ import annotations

import importlib.util
import json
import pickle
import sys
from pathlib import Path

import pytest
import torch

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "irmae_progress.py"
_spec = importlib.util.spec_from_file_location("irmae_progress", _PATH)
ip = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ip)

CONFIG = {"seeds": 1, "ls": [0, 8], "images": "fashion-mnist"}
CONFIG.update(shapes_epochs=10, images_epochs=4)


def test_models_in_the_order_the_experiment_starts_them():
    shapes = [("shapes-l0-seed0", "shapes", 10), ("shapes-l8-seed0", "shapes", 10)]
    images = [("fashion-mnist-l0-seed0", "fashion-mnist", 4)]
    images += [("fashion-mnist-l8-seed0", "fashion-mnist", 4)]
    assert ip.models_of(CONFIG) == shapes + images
    assert ip.models_of(CONFIG, workers=2) == images + shapes  # the longest first


def test_time_left_gives_each_job_to_the_first_free_worker():
    jobs = [30.0, 5.0, 10.0, 10.0]
    assert ip.time_left(jobs, 1) == 55.0  # one worker: all of them in turn
    assert ip.time_left(jobs, 2) == 30.0  # 30 | 5 + 10 + 10
    assert ip.time_left([7.0], 3) == 7.0
    assert ip.time_left([], 2) == 0.0


def _checkpoint(path: Path, epoch_times: list[float]) -> None:
    epochs = [{"epoch": i, "train_loss": 0.1, "time_s": t} for i, t in enumerate(epoch_times)]
    epochs[-1].update({"count_above_1e-2": 3, "erank": 2.5})
    state = {"epoch": len(epoch_times) - 1, "elapsed_s": epoch_times[-1]}
    state["history"] = {"epochs": epochs}
    torch.save(state, path)


def test_report_and_estimate(tmp_path, monkeypatch, capsys):
    store = tmp_path / ".jing2020-irmae.cells"
    store.mkdir()
    (store / "stamp.json").write_text(json.dumps({"config": CONFIG}))
    row = {"epochs": 10.0, "train_s": 12.0, "test_mse": 0.0123, "count_above_1e-2": 7}
    row.update(erank=3.25, probe_acc={"10": 0.5, "100": 0.75})
    with (store / "shapes-l0-seed0.pkl").open("wb") as f:
        pickle.dump(("factorflow-cell-1", ({}, row), 12.5), f)  # as cells.py stores
    _checkpoint(store / "shapes-l8-seed0-training.partial", [0.0, 10.0, 22.0, 30.0])  # median 10
    _checkpoint(store / "fashion-mnist-l0-seed0-training.partial", [0.0, 100.0])  # median 100
    monkeypatch.setattr(sys, "argv", ["irmae_progress.py", str(tmp_path), "--workers", "2"])
    ip.main()
    out = capsys.readouterr().out
    assert (
        "shapes-l0-seed0: finished (10 epochs, 12 s of training): test mse "
        "0.0123, count above 1e-2 7, "
        "erank 3.25, probe accuracy by labels {10: 0.500, 100: 0.750}"
    ) in out
    assert "shapes-l8-seed0: 3 epochs in 30 s; per epoch median 10.0 s" in out
    assert "fashion-mnist-l8-seed0: not started (4 epochs)" in out
    # fashion l0 3 x 100 s and l8 4 x 100 s on two workers, shapes l8 7 x 10 s after l0: 400 s
    assert "estimated time left: 0.1 h (400 s) with 2 worker(s)" in out


def test_no_store_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["irmae_progress.py", str(tmp_path)])
    with pytest.raises(SystemExit, match="no IRMAE cell store"):
        ip.main()


def test_counts_by_epoch_from_finished_cells_and_checkpoints_and_their_plot(tmp_path, monkeypatch):
    import numpy as np

    store = tmp_path / ".jing2020-irmae.cells"
    store.mkdir()
    (store / "stamp.json").write_text(json.dumps({"config": CONFIG}))
    arrays = {"epochs": np.array([0.0, 5.0, 10.0])}
    row = {"epochs": 10.0, "train_s": 1.0, "test_mse": 0.01, "count_above_1e-2": 7}
    row.update(erank=3.0, probe_acc={"10": 0.5}, count_by_epoch=[40, 9, 7])
    with (store / "shapes-l8-seed0.pkl").open("wb") as f:
        pickle.dump(("factorflow-cell-1", (arrays, row), 1.0), f)
    _checkpoint(store / "shapes-l0-seed0-training.partial", [0.0, 10.0, 22.0])
    assert ip.counts_by_epoch(store, "shapes-l8-seed0") == [(0.0, 40), (5.0, 9), (10.0, 7)]
    assert ip.counts_by_epoch(store, "shapes-l0-seed0") == [(2, 3)]  # measured epochs only
    assert ip.counts_by_epoch(store, "fashion-mnist-l0-seed0") == []  # not started
    png = tmp_path / "counts.png"
    monkeypatch.setattr(sys, "argv", ["irmae_progress.py", str(tmp_path), "--plot", str(png)])
    ip.main()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
