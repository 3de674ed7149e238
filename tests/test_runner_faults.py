"""The runner's own fault paths: a result folder replaced only once the new one is complete
(and put back if the move fails), and a figure that fails to draw skipped, not fatal."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

import factorflow.plotting
from factorflow import runner


def _folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "summary.json").write_text(text)
    return path


def test_swap_into_place_puts_the_old_result_back_when_the_move_fails(tmp_path, monkeypatch):
    out = _folder(tmp_path / "result", "old")
    tmp = _folder(tmp_path / ".result.tmp", "new")
    real = os.replace

    def failing(src, dst):
        if Path(src) == tmp:
            raise OSError("disk full")
        real(src, dst)

    monkeypatch.setattr(runner.os, "replace", failing)
    with pytest.raises(OSError, match="disk full"):
        runner._swap_into_place(tmp, out)
    assert (out / "summary.json").read_text() == "old"
    assert not (tmp_path / ".result.old").exists()
    monkeypatch.setattr(runner.os, "replace", real)
    runner._swap_into_place(tmp, out)  # and without a failure: the new one, nothing aside
    assert (out / "summary.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]


def test_redraw_logs_and_skips_a_figure_that_fails(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    def broken(result):
        raise RuntimeError("no such column")

    def fine(result):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        return {"fine": fig}

    result = SimpleNamespace(summary={"experiment": "x"}, dir=tmp_path)
    monkeypatch.setattr(runner, "load_result", lambda d: result)
    monkeypatch.setattr(factorflow.plotting, "figure_functions", lambda exp_id: [broken, fine])
    logged: list[str] = []
    assert runner.redraw(tmp_path, log=logged.append) == ["fine.png"]
    assert (tmp_path / "fine.png").is_file()
    assert logged == ["figure broken failed: RuntimeError: no such column"]
