"""Finished cells survive an interrupted run (factorflow.cells): the store on its own, and the
runner resuming an experiment from the cells an interrupted attempt finished, to the same
result as an uninterrupted run."""

from __future__ import annotations

import pytest

from factorflow import runner
from factorflow.cells import CellStore
from factorflow.recovery import grid as recovery_grid_module

STAMP = {"experiment": "x", "scale": "smoke", "config": {"a": 1}}


def test_store_computes_once_and_keeps_across_attempts(tmp_path):
    calls = []
    s1 = CellStore.open(tmp_path / "c", STAMP, resume=False)
    assert s1.get("a-1", lambda: calls.append(1) or {"v": [1.5]}) == {"v": [1.5]}
    s2 = CellStore.open(tmp_path / "c", STAMP, resume=True)
    assert s2.get("a-1", lambda: calls.append(2) or {"v": 0}) == {"v": [1.5]}
    assert s2.get("a-2", lambda: calls.append(3) or 7) == 7
    assert calls == [1, 3]
    assert (s2.kept, s2.computed) == (1, 1)
    assert s2.summary()["kept_seconds"] >= 0
    s2.remove()
    assert not (tmp_path / "c").exists()


def test_a_resumed_cell_is_stored_with_its_earlier_attempts_time(tmp_path):
    """A cell an earlier attempt started (its scratch side file says 100 s so far) and this one
    finishes is stored with those 100 s added; the summary counts them as resumed, and a later
    attempt that keeps the cell counts its whole time."""
    from factorflow.results import write_json

    s1 = CellStore.open(tmp_path / "c", STAMP, resume=False)
    scratch = s1.scratch("m-1-training")
    scratch.write_bytes(b"state")
    write_json(scratch.with_name(f"{scratch.name}.json"), {"done": 3, "elapsed_s": 100.0})
    s2 = CellStore.open(tmp_path / "c", STAMP, resume=True)
    assert s2.get("m-1", lambda: 5) == 5
    assert s2.get("m-2", lambda: 6) == 6  # no scratch state: nothing earlier
    assert s2.summary()["resumed_seconds"] == 100.0
    s3 = CellStore.open(tmp_path / "c", STAMP, resume=True)
    assert s3.get("m-1", lambda: 0) == 5 and s3.get("m-2", lambda: 0) == 6
    assert 100.0 <= s3.kept_seconds < 101.0  # both cells took ~0 s in attempt 2
    assert "resumed_seconds" not in s3.summary()
    assert "resumed_seconds" not in s1.summary()


def test_store_refuses_other_settings_on_resume_and_discards_without(tmp_path):
    s = CellStore.open(tmp_path / "c", STAMP, resume=False)
    s.get("k", lambda: 1)
    other = {**STAMP, "config": {"a": 2}}
    with pytest.raises(ValueError, match="other settings"):
        CellStore.open(tmp_path / "c", other, resume=True)
    assert (tmp_path / "c" / "k.pkl").is_file()  # refused: nothing discarded
    lines = []
    fresh = CellStore.open(tmp_path / "c", STAMP, resume=False, log=lines.append)
    assert "discarding 1 cells" in lines[0]
    assert fresh.get("k", lambda: 2) == 2


def test_store_rejects_bad_and_repeated_keys(tmp_path):
    s = CellStore.open(tmp_path / "c", STAMP, resume=False)
    with pytest.raises(ValueError, match="letters, digits"):
        s.get("../x", lambda: 1)
    s.get("k", lambda: 1)
    with pytest.raises(ValueError, match="used twice"):
        s.get("k", lambda: 1)


def _rows_without_timing(summary):
    drop = {"wall_s", "elapsed_s"}
    return [{k: v for k, v in r.items() if k not in drop} for r in summary["rows"]]


def test_interrupted_experiment_resumes_from_its_finished_cells(tmp_path, monkeypatch):
    real = recovery_grid_module._train_one
    calls = []

    def counting(*a, **k):
        calls.append(a[2:5])
        return real(*a, **k)

    monkeypatch.setattr(recovery_grid_module, "_train_one", counting)
    exp, quiet = "arora2019-completion", {"log": lambda m: None}
    whole = runner.run_experiment(exp, tmp_path / "whole", scale="smoke", **quiet)
    n = len(calls)
    assert n > 4 and not (tmp_path / ".whole.cells").exists()  # removed when finished

    calls.clear()

    def fail_at_fourth(*a, **k):
        if len(calls) == 3:
            raise KeyboardInterrupt
        return counting(*a, **k)

    monkeypatch.setattr(recovery_grid_module, "_train_one", fail_at_fourth)
    lines = []
    with pytest.raises(KeyboardInterrupt):
        runner.run_experiment(exp, tmp_path / "r", scale="smoke", log=lines.append)
    assert not (tmp_path / "r").exists()
    assert any("rerun with --resume" in m for m in lines)
    assert len(list((tmp_path / ".r.cells").glob("dmf-*.pkl"))) == 3
    n_kept = len(list((tmp_path / ".r.cells").glob("*.pkl")))  # with the baseline solves done

    monkeypatch.setattr(recovery_grid_module, "_train_one", counting)
    calls.clear()
    resumed = runner.run_experiment(exp, tmp_path / "r", scale="smoke", resume=True, **quiet)
    assert len(calls) == n - 3  # the three finished cells were not trained again
    assert resumed["cells"]["kept"] == n_kept and resumed["cells"]["computed"] >= n - 3
    assert resumed["cells"]["kept_seconds"] > 0
    assert _rows_without_timing(resumed) == _rows_without_timing(whole)
    assert [c["holds"] for c in resumed["claims"]] == [c["holds"] for c in whole["claims"]]
    assert not (tmp_path / ".r.cells").exists()


def test_scratch_files_live_and_die_with_the_store(tmp_path):
    s = CellStore.open(tmp_path / "c", STAMP, resume=False)
    path = s.scratch("model-l8-seed0-training")
    assert path.parent == tmp_path / "c" and path.suffix == ".partial"
    path.write_bytes(b"state")
    again = CellStore.open(tmp_path / "c", STAMP, resume=True)
    assert again.scratch("model-l8-seed0-training").read_bytes() == b"state"
    with pytest.raises(ValueError, match="other settings"):  # a partial cell counts as work
        CellStore.open(tmp_path / "c", {**STAMP, "scale": "paper"}, resume=True)
    again.remove()
    assert not path.exists()


def test_store_reads_a_bare_value_of_the_first_format(tmp_path):
    import pickle

    s = CellStore.open(tmp_path / "c", STAMP, resume=False)
    (tmp_path / "c" / "old.pkl").write_bytes(pickle.dumps({"rows": [1]}))
    assert s.get("old", lambda: None) == {"rows": [1]} and s.kept_seconds == 0
    assert s.summary() == {"kept": 1, "computed": 0, "kept_seconds": 0.0, "kept_untimed": 1}


def test_talk_resume_reruns_an_experiment_whose_settings_changed(tmp_path):
    """With --resume the talk keeps a finished experiment with the same settings and reruns
    one whose settings changed (its folder is the talk's own), instead of failing it."""
    import json

    from factorflow.talk import reproduce_talk

    kw = {"scale": "smoke", "only": ["razin2020-perturbed"], "log": None}
    reproduce_talk(tmp_path, **kw)
    summary = tmp_path / "razin2020-perturbed" / "summary.json"
    first = json.loads(summary.read_text())
    index = reproduce_talk(tmp_path, resume=True, **kw)
    assert json.loads(summary.read_text())["meta"] == first["meta"]  # kept as it was
    entry = index["experiments"]["razin2020-perturbed"]
    assert entry["kept"] and entry["result_elapsed_s"] == first["elapsed_s"]
    index = reproduce_talk(tmp_path, resume=True, seeds=2, **kw)
    assert index["experiments"]["razin2020-perturbed"]["status"] == "ok"
    assert not index["experiments"]["razin2020-perturbed"]["kept"]  # rerun
    assert json.loads(summary.read_text())["config"]["seeds"] == 2


def test_report_shows_a_kept_results_own_time():
    from factorflow.report import _time

    assert _time({"elapsed_s": 0.02, "result_elapsed_s": 507.4, "kept": True}) == (
        "507.4 s (kept from an earlier run)"
    )
    assert _time({"elapsed_s": 600.0, "result_elapsed_s": 598.0, "kept": False}) == "600.0 s"
    assert _time({"elapsed_s": 3.0}) == "3.0 s" and _time({}) is None


def test_report_shows_the_time_over_all_sittings():
    """A run that kept or resumed cells of earlier sittings: its last sitting's time, and the
    total with the kept cells' and the resumed cells' earlier seconds."""
    from factorflow.report import _run_time, _time

    cells = {"kept": 3, "computed": 1, "kept_seconds": 1000.0, "resumed_seconds": 500.0}
    assert _time({"elapsed_s": 20.0, "kept_cells": cells}) == (
        "20.0 s in the last sitting, 1520.0 s over all sittings"
    )
    kept = {"elapsed_s": 0.1, "result_elapsed_s": 20.0, "kept": True, "kept_cells": cells}
    assert (
        _time(kept)
        == "20.0 s in the last sitting, 1520.0 s over all sittings (kept from an earlier run)"
    )
    untimed = {"kept": 1, "computed": 0, "kept_seconds": 0.0, "kept_untimed": 1}
    assert _run_time({"elapsed_s": 2.0, "cells": untimed}) == (
        "2.0 s in the last sitting, at least 2.0 s over all sittings"
    )
    assert _run_time({"elapsed_s": 2.0}) == "2.0 s" and _run_time({}) == "—"
