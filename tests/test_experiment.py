"""The experiment shape (checks, claims, typed settings, row schema) and the shared runner
(folders written atomically, refused, replaced or resumed; bad output locations found before
any work)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass

import pandas as pd
import pytest

from factorflow import experiments, plotting
from factorflow.experiment import (
    Check,
    Claim,
    Experiment,
    NotJudged,
    Result,
    at_least,
    at_most,
    between,
    is_true,
    within,
)
from factorflow.runner import run_experiment


@dataclass(frozen=True)
class S:
    seeds: int = 1
    depths: tuple[int, ...] = (1, 2)
    init_scale: float = 1e-3
    shape: tuple[int, int] = (3, 3)
    note: str | None = None
    boom: bool = False


CALLS: list[S] = []


def _run(s: S, ctx) -> list[dict]:
    CALLS.append(s)
    if s.boom:
        raise RuntimeError("boom")
    ctx.save_arrays("traj", t=[0.0, 1.0], loss=[1.0, s.init_scale])
    return [{"depth": d, "err": s.init_scale * d, "tag": "x"} for d in s.depths]


def _measure(r: Result) -> dict:
    return {"worst": float(r.rows["err"].max()), "last_loss": float(r.arrays("traj")["loss"][-1])}


EXP = Experiment(
    id="fake",
    title="Fake",
    paper="Fake et al.",
    settings=S,
    scales={"quick": S(), "paper": S(seeds=3), "smoke": S(depths=(1,))},
    columns={"depth": "int", "err": "float", "tag": "str"},
    claims=(
        Claim(
            "small", "errors are small", 1e-2, "Fake, Fig. 1", _measure, (at_most("worst", 1e-2),)
        ),
    ),
    run=_run,
)


@pytest.fixture
def fake(monkeypatch):
    CALLS.clear()
    monkeypatch.setattr(experiments, "EXPERIMENTS", {"fake": EXP})
    monkeypatch.setattr(plotting, "figure_functions", lambda exp_id: [])
    return EXP


def test_checks_judge_and_describe():
    m = {"a": 1.0, "b": {"c": 5}, "flag": False, "nan": math.nan}
    assert at_most("a", 1.0)(m) and not at_most("a", 0.5)(m)
    assert at_least("b.c", 5)(m) and Check("b.c", ">", 4)(m) and not Check("a", "<", 1.0)(m)
    assert within("a", 1.1, rel=0.1)(m) and not within("a", 1.2, rel=0.1)(m)
    assert between("b.c", 4, 6)(m) and not is_true("flag")(m)
    assert at_most(None, 3)(2.5)
    assert within("a", 1.1, 0.15).describe() == "a within 15% of 1.1"
    for key in ("nan", "missing"):
        with pytest.raises(NotJudged, match=key if key == "missing" else "finite"):
            at_most(key, 1)(m)
    with pytest.raises(ValueError, match="op"):
        Check("a", "~", 1)


def test_claim_outcomes_and_reasons():
    rows = EXP.rows_frame([{"depth": 1, "err": 0.5, "tag": "x"}])
    r = Result(None, {}, rows, S())

    def claim(measure):
        return Claim("c", "text {s.init_scale}", 1, "src", measure, (at_most("v", 1.0),)).evaluate(
            r
        )

    ok = claim(lambda r: {"v": float(r.rows["err"].max())})
    assert ok["holds"] is True and ok["text"] == "text 0.001" and ok["measured"] == {"v": 0.5}
    bad = claim(lambda r: {"v": 2.0})
    assert bad["holds"] is False and bad["reason"] == "fails: v <= 1 (measured 2)"
    flag = Claim(
        "f", "t", None, "src", lambda r: {"ok": False, "n": 3}, (is_true("ok"), at_least("n", 2))
    )
    assert flag.evaluate(r)["reason"] == "fails: ok is true (measured false)"  # n passes: not named
    skip = claim(lambda r: (_ for _ in ()).throw(NotJudged("needs depth 3")))
    assert skip["holds"] is None and skip["reason"] == "needs depth 3"
    broken = claim(lambda r: 1 / 0)  # a bug is visible and never a pass
    assert broken["holds"] is None and "ZeroDivisionError" in broken["reason"]
    with pytest.raises(ValueError, match="source"):
        Claim("c", "t", 1, "", lambda r: 1, (at_most(None, 1),))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"depths": 3}, "option 'depths' must be a list of an integer, got 3"),
        ({"depths": ["three"]}, "'depths[0]' must be an integer, got 'three'"),
        ({"init_scale": "x"}, "'init_scale' must be a number, got 'x'"),
        ({"shape": [1, 2, 3]}, "'shape' must be a list of 2"),
        ({"seeds": 0}, "seeds must be >= 1"),
        ({"depht": [3]}, "unknown option 'depht'"),
        ({"boom": "yes"}, "'boom' must be true or false"),
    ],
)
def test_options_are_checked_against_the_typed_settings(options, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        EXP.settings_for("quick", options)


def test_options_convert_and_reach_nested_settings():
    s = EXP.settings_for("paper", {"depths": [3], "init_scale": 1, "note": "n"})
    assert s == S(seeds=3, depths=(3,), init_scale=1.0, note="n")
    with pytest.raises(ValueError, match="scale must be one of"):
        EXP.settings_for("huge")


def test_rows_are_checked_against_the_schema():
    frame = EXP.rows_frame([{"depth": 1, "err": 0.1}, {"depth": None, "err": 1, "tag": "y"}])
    assert list(frame.columns) == ["depth", "err", "tag"]
    assert str(frame["depth"].dtype) == "Int64" and frame["depth"].iloc[0] == 1
    with pytest.raises(ValueError, match="undeclared columns \\['extra'\\]"):
        EXP.rows_frame([{"depth": 1, "extra": 2}])
    with pytest.raises(ValueError, match="column 'depth' must be int, got 1.5"):
        EXP.rows_frame([{"depth": 1.5}])


def test_runner_writes_a_summary_with_claims_from_the_saved_files(tmp_path, fake):
    summary = run_experiment("fake", tmp_path / "r")
    on_disk = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary == on_disk
    assert on_disk["claims"][0]["measured"] == {"worst": 0.002, "last_loss": 0.001}
    assert on_disk["arrays"] == ["traj.npz"] and (tmp_path / "r" / "traj.npz").is_file()
    assert on_disk["meta"]["factorflow"] and on_disk["config"]["seeds"] == 1
    assert sorted(os.listdir(tmp_path)) == ["r"]  # no temporary folder left


def test_a_finished_result_is_refused_kept_or_replaced_atomically(tmp_path, fake):
    out = tmp_path / "r"
    run_experiment("fake", out, options={"init_scale": 0.1})
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_experiment("fake", out, options={"init_scale": 0.05})
    CALLS.clear()
    kept = run_experiment("fake", out, options={"init_scale": 0.1}, resume=True)
    assert CALLS == [] and kept["config"]["init_scale"] == 0.1
    with pytest.raises(ValueError, match="other settings"):
        run_experiment("fake", out, options={"init_scale": 0.05}, resume=True)
    # a failing replacement leaves the old result whole
    with pytest.raises(RuntimeError, match="boom"):
        run_experiment("fake", out, options={"boom": True}, overwrite=True)
    assert json.loads((out / "summary.json").read_text())["config"]["init_scale"] == 0.1
    run_experiment("fake", out, options={"init_scale": 0.05}, overwrite=True)
    assert json.loads((out / "summary.json").read_text())["config"]["init_scale"] == 0.05
    assert sorted(os.listdir(tmp_path)) == ["r"]


def test_bad_output_locations_fail_before_any_work(tmp_path, fake):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        run_experiment("fake", f / "below")
    with pytest.raises(ValueError, match="not a folder"):
        run_experiment("fake", f)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(ValueError, match="not writable"):
            run_experiment("fake", ro / "out")
    finally:
        ro.chmod(0o700)
    assert CALLS == []


def test_result_select_matches_missing_values():
    rows = EXP.rows_frame([{"depth": 1, "err": 0.1}, {"depth": None, "err": 0.2}])
    r = Result(None, {}, rows, S())
    assert r.select(depth=None)["err"].tolist() == [0.2]
    assert r.select(depth=1, err=0.1).shape[0] == 1
    assert isinstance(r.select(tag=None), pd.DataFrame)


def test_a_folder_with_other_files_is_never_replaced_without_overwrite(tmp_path, fake):
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for kw in ({}, {"resume": True}):
        with pytest.raises(FileExistsError, match="not a result"):
            run_experiment("fake", out, **kw)
    assert (out / "notes.txt").read_text() == "mine" and CALLS == []
    (out / "notes.txt").unlink()
    (out / "error.txt").write_text("an earlier failure")  # a failed run's note is not a result
    run_experiment("fake", out, resume=True)
    assert (out / "summary.json").is_file()


@dataclass(frozen=True)
class NoSeeds:
    depths: tuple[int, ...] = (1,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"settings": dict}, "settings must be a dataclass"),
        (
            {"settings": NoSeeds, "scales": dict.fromkeys(("quick", "paper", "smoke"), NoSeeds())},
            "settings need a 'seeds' field",
        ),
        ({"scales": {"quick": S(), "paper": S()}}, r"scales\['smoke'\] must be a S"),
        ({"columns": {"depth": "integer"}}, r"unknown column kinds \{'depth': 'integer'\}"),
        ({"claims": (EXP.claims[0], EXP.claims[0])}, "claim ids repeat"),
    ],
)
def test_a_malformed_experiment_definition_is_refused_when_defined(change, message):
    """A new experiment's definition errors surface at import, naming the experiment."""
    with pytest.raises(TypeError, match=f"fake: {message}"):
        dataclasses.replace(EXP, **change)
