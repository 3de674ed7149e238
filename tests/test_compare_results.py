"""``benchmarks/compare_results.py``: two stored results compared row by row and claim by claim."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_results.py"
_spec = importlib.util.spec_from_file_location("compare_results", _PATH)
cr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cr)

KEY = ["method", "seed", "depth"]


def _summary(recon: float, held: bool, wall: float = 1.0) -> dict:
    rows = [
        {"method": "dmf", "seed": s, "depth": d, "recon_mse": 1e-3 * (s + d), "wall_s": wall}
        for s in (0, 1)
        for d in (2, 3)
    ]
    rows[-1]["recon_mse"] = recon
    rows[-1]["singular_values"] = [3.0, 2.0, recon]
    rows[0]["singular_values"] = [1.0]
    claims = [{"id": "a", "holds": held}, {"id": "b", "holds": None}]
    return {"rows": rows, "claims": claims}


def test_equal_results_differ_nowhere_and_timing_is_ignored():
    out = cr.compare(_summary(0.5, True), _summary(0.5, True, wall=9.0), KEY, {"wall_s"}, 1e-6)
    assert out["rows_matched"] == 4 and out["rows_differing"] == 0
    assert out["max_rel_diff_by_column"] == {"recon_mse": 0.0, "singular_values": 0.0}
    assert out["claims"] == {"a": ["held", "held"], "b": ["not judged", "not judged"]}


def test_a_moved_row_and_a_changed_claim_are_reported():
    out = cr.compare(_summary(0.5, True), _summary(0.4, False), KEY, {"wall_s"}, 1e-6)
    assert out["rows_differing"] == 1
    assert out["differing"][0]["row"] == {"method": "dmf", "seed": 1, "depth": 3}
    assert out["differing"][0]["max_rel_diff"] == pytest.approx(0.1 / 0.5)
    assert out["max_rel_diff_by_column"]["singular_values"] == pytest.approx(0.1 / 0.5)
    assert out["claims"]["a"] == ["held", "failed"]
    at = out["largest_difference_at"]["recon_mse"]
    assert at == {"row": {"method": "dmf", "seed": 1, "depth": 3}, "old": 0.5, "new": 0.4}
    assert "old" not in out["largest_difference_at"]["singular_values"]  # not a single number
    # restricted to the other rows, nothing moved
    some = cr.compare(
        _summary(0.5, True), _summary(0.4, False), KEY, {"wall_s"}, 1e-6, {"seed": "0"}
    )
    assert some["rows_matched"] == 2 and some["rows_differing"] == 0


def test_a_key_that_does_not_name_each_row_is_refused():
    with pytest.raises(SystemExit, match="does not single out"):
        cr.compare(_summary(0.5, True), _summary(0.5, True), ["method"], set(), 1e-6)


def test_the_command_line_reads_folders_and_writes_json(tmp_path, capsys, monkeypatch):
    for name, recon in (("old", 0.5), ("new", 0.5)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(_summary(recon, True)))
    out = tmp_path / "cmp.json"
    argv = ["compare_results", str(tmp_path / "old"), str(tmp_path / "new"), "--key", *KEY]
    monkeypatch.setattr("sys.argv", [*argv, "--json", str(out)])
    cr.main()
    assert "4 matched, 0 differ" in capsys.readouterr().out
    assert json.loads(out.read_text())["rows_differing"] == 0
