"""``factorflow status``: running (by whom), finished, or interrupted with its kept cells."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from factorflow.cells import count_cells
from factorflow.cli import main
from factorflow.folder_lock import hold_folder, holder, lock_path
from factorflow.status import folder_states, format_states


def _layout(root):
    done = root / "done"
    done.mkdir(parents=True)
    claims = [{"holds": True}, {"holds": True}, {"holds": False}, {"holds": None}]
    (done / "summary.json").write_text(json.dumps({"claims": claims, "elapsed_s": 12.5}))
    cells = root / ".stopped.cells"
    cells.mkdir()
    # a and b finished (a's training state kept with the store), c in progress
    for name in ("stamp.json", "a.pkl", "b.pkl", "c.partial", "a-training.partial"):
        (cells / name).write_text("{}")
    # how far c is; a's finished, so its last progress is not shown
    (cells / "c.partial.json").write_text(
        '{"done": 3, "total": 10, "unit": "epochs", "elapsed_s": 1800}'
    )
    (cells / "a-training.partial.json").write_text(
        '{"done": 9, "total": 9, "unit": "epochs", "elapsed_s": 1}'
    )
    (root / ".half.partial").mkdir()  # a run killed before its first cell


def test_states_of_a_folder(tmp_path):
    _layout(tmp_path)
    with hold_folder(tmp_path / "live"):
        states = {s["name"]: s for s in folder_states(tmp_path)}
    assert set(states) == {"done", "stopped", "half", "live"}
    assert states["done"]["state"] == "finished"
    assert states["done"]["claims"] == {"held": 2, "failed": 1, "not_judged": 1}
    assert states["stopped"]["state"] == "interrupted"
    assert (states["stopped"]["cells_finished"], states["stopped"]["cells_in_progress"]) == (2, 1)
    (tmp_path / ".stopped.cells" / "ab-training.partial").write_text("{}")  # not a's: ab's
    assert count_cells(tmp_path / ".stopped.cells") == (2, 2)
    assert states["half"]["state"] == "interrupted"
    assert states["live"]["state"] == "running"
    assert states["live"]["holder"].startswith(f"pid {os.getpid()}, since ")
    assert folder_states(tmp_path / "done") == [states["done"]]  # one result folder
    # a first run that has not ended: its folder is not written yet, its cells are kept beside it
    one = folder_states(tmp_path / "stopped")
    assert [(s["name"], s["state"], s["cells_finished"]) for s in one] == [
        ("stopped", "interrupted", 2)
    ]
    with hold_folder(tmp_path / "live"):
        assert folder_states(tmp_path / "live")[0]["state"] == "running"


def test_a_lock_file_left_by_a_killed_run_is_not_a_writer(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True).stdout.strip()  # fmt: skip
    lock_path(tmp_path / "x").write_text(f"pid {dead}, since then: factorflow reproduce ...")
    assert holder(tmp_path / "x") is None
    assert folder_states(tmp_path) == [{"name": "x", "state": "interrupted"}]


def test_cli_status(tmp_path, capsys):
    _layout(tmp_path)
    assert main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == "done finished claims 2 held, 1 failed, 1 not judged; 12.5 s".split()
    assert "cells: 2 finished, 1 in progress; c 3/10 epochs (30.0 min); the same command" in out[2]
    assert main(["status", str(tmp_path / "missing")]) == 2
    assert "no folder" in capsys.readouterr().err


def test_an_empty_folder_says_so(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == "no results here"


def test_progress_in_minutes_below_an_hour_and_hours_above():
    prog = {"done": 9, "total": 100, "unit": "epochs"}
    states = [
        {"name": "a", "state": "running", "holder": "pid 1", "progress": {
            "m": {**prog, "elapsed_s": 150}, "h": {**prog, "elapsed_s": 9000}}},
    ]  # fmt: skip
    assert format_states(states).endswith("m 9/100 epochs (2.5 min); h 9/100 epochs (2.5 h)")
