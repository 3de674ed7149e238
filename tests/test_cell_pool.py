"""Cells on worker processes (factorflow.cell_pool, ``--workers``): the same values in the same
order as one process, each stored as it arrives, nothing finished lost when a cell fails."""

from __future__ import annotations

import subprocess
import sys
import time
from functools import partial

import pytest

from factorflow._progress import log_to, logging_into
from factorflow.cell_pool import map_cells
from factorflow.cells import CellStore
from factorflow.runner import run_experiment
from factorflow.talk import reproduce_talk

# module-level functions: spawned workers import them by name


def _square(x: int) -> dict:
    return {"x": x, "square": x * x}


def _slow_or_fail(x: int) -> int:
    if x == 0:
        raise RuntimeError("cell 0 fails")
    time.sleep(1.5)  # still running when cell 0 has failed
    return x


def _never(x: int) -> int:
    raise AssertionError(f"cell {x} was kept and must not be computed again")


def _store(tmp_path) -> CellStore:
    return CellStore.open(tmp_path / "cells", {"experiment": "t"}, resume=True, log=lambda m: None)


def test_workers_give_the_values_of_one_process_in_order(tmp_path):
    items = [(f"c{i}", partial(_square, i)) for i in range(5)]
    alone = map_cells(items, workers=1)
    store = _store(tmp_path)
    lines: list[str] = []
    pooled = map_cells(items, workers=2, store=store, log=lines.append)
    assert pooled == alone == [{"x": i, "square": i * i} for i in range(5)]
    assert store.computed == 5 and sorted(p.stem for p in store.folder.glob("*.pkl")) == [
        f"c{i}" for i in range(5)
    ]
    assert lines[0] == "5 cells on 2 worker processes (0 kept)"
    assert sum("done in" in line for line in lines) == 5
    # a second attempt loads every cell: _never would raise in a worker or here
    again = _store(tmp_path)
    kept = map_cells([(f"c{i}", partial(_never, i)) for i in range(5)], workers=2, store=again)
    assert kept == alone and again.kept == 5 and again.computed == 0


def test_a_failed_cell_keeps_the_finished_ones_and_starts_no_more(tmp_path):
    store = _store(tmp_path)
    lines: list[str] = []
    items = [(f"c{i}", partial(_slow_or_fail, i)) for i in range(4)]
    with pytest.raises(RuntimeError, match="cell 0 fails"):
        map_cells(items, workers=2, store=store, log=lines.append)
    # c1 was running beside c0: it finished and was kept; c2 and c3 never started
    assert sorted(p.stem for p in store.folder.glob("*.pkl")) == ["c1"]
    assert any("cell c0 failed: RuntimeError" in line for line in lines)
    assert any("waiting for the 1 running cells" in line for line in lines)
    # --resume: only the cells not kept are computed
    again = _store(tmp_path)
    fixed = [("c0", partial(_square, 0))] + [
        (k, partial(_never, i) if k == "c1" else partial(_square, i))
        for i, (k, _) in enumerate(items)
    ][1:]
    values = map_cells(fixed, workers=2, store=again)
    assert values == [{"x": 0, "square": 0}, 1, {"x": 2, "square": 4}, {"x": 3, "square": 9}]
    assert again.kept == 1 and again.computed == 3


def test_bad_calls_are_refused(tmp_path):
    with pytest.raises(ValueError, match="cell keys used twice: \\['a'\\]"):
        map_cells([("a", partial(_square, 1)), ("a", partial(_square, 2))], workers=2)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="workers must be an integer >= 1"):
            map_cells([("a", partial(_square, 1))], workers=bad)
    with pytest.raises(ValueError, match="--workers must be an integer >= 1"):
        run_experiment("razin2020-2x2", tmp_path / "o", scale="smoke", workers=0)
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="--workers must be an integer >= 1"):
        reproduce_talk(tmp_path / "t", scale="smoke", workers=0, log=None)
    assert not (tmp_path / "t").exists()


def test_on_done_sees_every_cell_in_this_process(tmp_path):
    items = [(f"c{i}", partial(_square, i)) for i in range(4)]
    seen: dict[int, list[tuple[str, int]]] = {1: [], 2: []}
    for workers, got in seen.items():
        map_cells(
            items, workers=workers, on_done=lambda k, v, got=got: got.append((k, v["square"]))
        )
        assert sorted(got) == [(f"c{i}", i * i) for i in range(4)]
    assert [k for k, _ in seen[1]] == [f"c{i}" for i in range(4)]  # one process: in order


#: Wall-clock columns: the only ones allowed to differ between one process and two.
TIMING = {"batch_wall_s", "train_s", "wall_s"}


@pytest.mark.parametrize(
    "experiment",
    [
        "jing2020-irmae",
        "arora2019-completion",
        "arora2019-sensing",
        "razin2020-tensor-recovery",
        "razin2021-dynamics",
        "razin2021-natural-rank",
    ],
)
def test_cells_on_two_workers_equal_one_process(tmp_path, experiment):
    """The runner's path: pickled cells (models, grid cells), rows in the same order."""
    rows = {}
    for workers in (1, 2):
        summary = run_experiment(
            experiment, tmp_path / f"w{workers}", scale="smoke", workers=workers,
            log=lambda m: None,
        )  # fmt: skip
        rows[workers] = [{k: v for k, v in r.items() if k not in TIMING} for r in summary["rows"]]
    if experiment == "jing2020-irmae":
        assert [(r["dataset"], r["l"]) for r in rows[2]] == [
            ("shapes", 0), ("shapes", 8), ("fashion-mnist", 0), ("fashion-mnist", 8)
        ]  # fmt: skip
    assert len(rows[1]) > 1 and rows[2] == rows[1]


def test_log_to_sends_child_processes_output_to_the_file(tmp_path):
    path = tmp_path / "log.txt"
    with path.open("w", buffering=1) as f, log_to(f):
        subprocess.run([sys.executable, "-c", "print('from a child')"], check=True)
    assert path.read_text() == "from a child\n"
    out = subprocess.run(
        [sys.executable, "-c", "print('after')"], check=True, capture_output=True, text=True
    )
    assert out.stdout == "after\n"  # the descriptors were restored


def test_a_resumed_experiments_log_is_added_to(tmp_path):
    """A talk's experiment log (``logging_into``) starts afresh, but a resumed sitting adds to
    it after a dated line, so the earlier sittings' progress is kept."""
    path = tmp_path / "logs" / "exp.txt"
    for text, append in (("stale", False), ("first", False), ("second", True)):
        with logging_into(path, append):
            print(text)
            subprocess.run([sys.executable, "-c", f"print('{text} child')"], check=True)
    lines = path.read_text().splitlines()
    assert lines[:2] == ["first", "first child"] and lines[3:] == ["second", "second child"]
    assert lines[2].startswith("--- ") and lines[2].endswith(": resumed")


def test_a_talks_experiments_run_with_the_processs_threads(tmp_path, monkeypatch):
    """``FACTORFLOW_THREADS`` reaches a talk's experiments as it reaches ``factorflow reproduce
    ID``: the talk leaves the thread count to its process. Before, they ran with one thread
    whatever it said, so a talk with one experiment left used one core of two."""
    import factorflow.runner
    from factorflow.talk import _run_experiment

    seen = {}

    def fake_run(exp_id, exp_dir, **kw):
        seen.update(kw)
        raise RuntimeError("stop here")

    monkeypatch.setattr(factorflow.runner, "run_experiment", fake_run)
    out = _run_experiment("razin2020-2x2", tmp_path / "x", "smoke", None, "cpu", {})
    assert seen["threads"] is None
    assert out["status"] == "failed" and "stop here" in out["error"]
