"""The command line's shared behaviour: ``list``, an interrupted command's exit, and
``sweep --slurm`` parameters parsed as TOML values."""

from __future__ import annotations

import pandas as pd
import pytest

import factorflow.runs
import factorflow.sweep
from factorflow import cli
from factorflow.experiments import EXPERIMENTS


def test_list_names_every_experiment_and_its_aliases(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(EXPERIMENTS)
    for line, (name, exp) in zip(out, EXPERIMENTS.items(), strict=True):
        assert line.startswith(name) and exp.title in line
        for alias in exp.aliases:
            assert alias in line


def test_an_interrupted_command_exits_130_and_says_where_its_output_is(
    tmp_path, monkeypatch, capsys
):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(factorflow.sweep, "run_sweep", interrupted)
    grid = tmp_path / "grid.toml"
    grid.write_text("")
    assert cli.main(["sweep", str(grid), "--out", str(tmp_path / "out"), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert f"interrupted; what finished is in {tmp_path / 'out'}" in err


def test_sweep_slurm_parameters_are_toml_values_and_bad_ones_are_refused(
    tmp_path, monkeypatch, capsys
):
    seen = {}

    def fake_sweep(grid, out, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(factorflow.sweep, "run_sweep", fake_sweep)
    monkeypatch.setattr(factorflow.runs, "write_runs_table", lambda out: (pd.DataFrame(), out))
    args = ["sweep", str(tmp_path / "g.toml"), "--out", str(tmp_path / "o"), "--executor"]
    args += ["slurm", "--slurm", "slurm_partition=gpu", "--slurm", "timeout_min = 60"]
    assert cli.main(args) == 2
    assert seen["executor"] == "slurm"
    assert seen["executor_options"] == {"parameters": {"slurm_partition": "gpu", "timeout_min": 60}}
    assert "stop here" in capsys.readouterr().err
    assert cli.main([*args, "--slurm", "timeout_min"]) == 2
    assert "--slurm expects key=value, got 'timeout_min'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["nonsense"]])
def test_no_or_an_unknown_command_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
