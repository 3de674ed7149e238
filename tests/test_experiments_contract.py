"""The contract every registered experiment keeps (parametrized over the registry, so a new
experiment is checked as soon as it is registered): its settings round-trip through TOML, a
smoke run writes a valid summary, every claim has a measurement or a reason, and the figures
redraw from the result folder alone."""

from __future__ import annotations

import dataclasses
import shutil
import tomllib

import pytest

from factorflow.config import build_dataclass, config_to_dict, to_toml
from factorflow.experiments import EXPERIMENTS
from factorflow.runner import load_result, redraw, run_experiment

IDS = sorted(EXPERIMENTS)


@pytest.mark.parametrize("exp_id", IDS)
def test_settings_round_trip_through_toml(exp_id):
    exp = EXPERIMENTS[exp_id]
    for scale, preset in exp.scales.items():
        text = to_toml(config_to_dict(preset))
        back = build_dataclass(exp.settings, tomllib.loads(text))
        assert back == preset, (scale, text)
        assert exp.settings_for(scale) == preset
    for f in dataclasses.fields(exp.settings):  # None has no TOML form: it must be the default
        for preset in exp.scales.values():
            if getattr(preset, f.name) is None:
                assert f.default is None, f"{exp_id}.{f.name} is None but defaults otherwise"


@pytest.mark.parametrize("exp_id", IDS)
def test_smoke_run_writes_a_valid_summary_and_redraws(exp_id, tmp_path):
    exp = EXPERIMENTS[exp_id]
    out = tmp_path / "result"
    summary = run_experiment(exp_id, out, scale="smoke", log=lambda m: None)
    keys = {"experiment", "title", "paper", "scale", "config", "rows", "claims", "figures"}
    assert keys <= set(summary) and summary["experiment"] == exp_id
    assert summary["rows"], "a smoke run gives rows"
    assert set(summary["rows"][0]) == set(exp.columns)
    assert [c["id"] for c in summary["claims"]] == [c.id for c in exp.claims]
    for c in summary["claims"]:
        assert c["source"] and c["tolerance"], c["id"]
        if c["holds"] is None:
            assert c["reason"], f"{c['id']} not judged without a reason"
        else:
            assert c["measured"] is not None, c["id"]
    assert not list(tmp_path.glob(".result.*")), "no temporary folder is left behind"
    # the figures redraw from the result files alone, in a copy without them
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.png"))
    assert sorted(redraw(copy, log=pytest.fail)) == sorted(summary["figures"])
    for name in summary["figures"]:
        assert (copy / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert load_result(copy).settings == exp.scales["smoke"]


def test_aliases_name_registered_experiments_and_clash_with_no_id():
    from factorflow.experiments import ALIASES
    from factorflow.runner import get_experiment

    assert not set(ALIASES) & set(EXPERIMENTS)
    assert get_experiment("irmae").id == "jing2020-irmae"
    with pytest.raises(ValueError, match="unknown experiment"):
        get_experiment("nope")
