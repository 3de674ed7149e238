"""Sweeps: grid expansion and names, resumable runs, failures, bad inputs, the runs table."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from factorflow import sweep
from factorflow.cli import main
from factorflow.sweep import (
    SweepSpec,
    expand,
    load_grid,
    parse_grid,
    run_sweep,
    runs_table,
)

BASE = {
    "loss": "mse",
    "problem": {"shape": [6, 6], "rank": 1, "n_obs": 20},
    "optimizer": {"name": "flow"},
    "stop": {"loss_below": 1e-4, "max_steps": 2000},
    "record": {"per_decade": 3, "top_k": 3},
}

GRID_TOML = """
[base]
loss = "mse"
problem = { shape = [6, 6], rank = 1, n_obs = 20 }
optimizer = { name = "flow" }
stop = { loss_below = 1e-4, max_steps = 2000 }
record = { per_decade = 3, top_k = 3 }

[grid]
"model.depth" = [2, 3]
"model.init_scale" = [1e-2, 1e-3]
seeds = [0, 1]
"""

TIMING = ["wall_s_batch"]


def _spec(**grid) -> SweepSpec:
    return parse_grid({"base": BASE, "grid": grid})


def _table(out: Path) -> pd.DataFrame:
    return runs_table(out).drop(columns=TIMING)


def test_expand_batches_seeds_and_stable_names():
    spec = _spec(**{"model.depth": [2, 3], "model.init_scale": [1e-2, 1e-3], "seeds": [0, 1]})
    batches = expand(spec)
    assert len(batches) == 4
    assert all(b.config.seeds == (0, 1) for b in batches)
    assert {(b.config.model.depth, b.config.model.init_scale) for b in batches} == {
        (2, 1e-2),
        (2, 1e-3),
        (3, 1e-2),
        (3, 1e-3),
    }
    names = [b.name for b in batches]
    assert len(set(names)) == 4
    assert names == [b.name for b in expand(spec)]  # stable
    assert names[0].startswith("model.depth=2_model.init_scale=0.01_")


def test_grid_file_quoted_and_nested_keys_agree(tmp_path):
    quoted = tmp_path / "a.toml"
    quoted.write_text(GRID_TOML)
    nested = tmp_path / "b.toml"
    nested.write_text(
        GRID_TOML.replace('"model.depth"', "model.depth").replace(
            '"model.init_scale"', "model.init_scale"
        )
    )
    assert load_grid(quoted) == load_grid(nested)


def test_any_field_can_be_swept():
    spec = _spec(**{"optimizer.name": ["gd", "flow"], "problem.shape": [[6, 6], [5, 7]]})
    batches = expand(spec)
    assert {(b.config.optimizer.name, b.config.problem.shape) for b in batches} == {
        ("gd", (6, 6)),
        ("gd", (5, 7)),
        ("flow", (6, 6)),
        ("flow", (5, 7)),
    }
    assert any("problem.shape=5x7" in b.name for b in batches)


def test_sweep_runs_every_seed_and_table_matches(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID_TOML)
    out = tmp_path / "sw"
    res = run_sweep(grid, out, progress=False, log=None)
    assert (res.n_runs, res.n_skipped, res.n_ran, res.failures) == (8, 0, 8, [])
    assert json.loads((out / "sweep.json").read_text())["grid"]["model.depth"] == [2, 3]
    df = runs_table(out)
    assert len(df) == 8
    assert sorted(
        set(zip(df["model.depth"], df["model.init_scale"], df["seed"], strict=True))
    ) == sorted((d, s, k) for d in (2, 3) for s in (1e-2, 1e-3) for k in (0, 1))
    assert (df["batch_size"] == 2).all()  # seeds of one combination ran as one batch
    assert (df["status"] == "converged").all()
    assert df["final_loss"].le(1.0001e-4).all()
    # the CLI: rerun skips everything; `runs` prints and writes runs.csv
    assert main(["sweep", str(grid), "--out", str(out), "--quiet"]) == 0
    assert "8 were done, 0 ran now" in capsys.readouterr().out
    assert main(["runs", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model.depth" in printed and "final_loss" in printed
    csv = pd.read_csv(out / "runs.csv")
    assert list(csv["run"]) == list(df["run"])
    assert csv["final_loss"].to_numpy() == pytest.approx(df["final_loss"].to_numpy(), rel=1e-12)


def test_interrupted_sweep_resumes_without_repeating(tmp_path, monkeypatch):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID_TOML)
    full = tmp_path / "full"
    run_sweep(grid, full, progress=False, log=None)

    real_fit = sweep.fit
    calls: list[int] = []

    def interrupted_fit(cfg, **kw):
        calls.append(cfg.model.depth)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_fit(cfg, **kw)

    monkeypatch.setattr(sweep, "fit", interrupted_fit)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(grid, part, progress=False, log=None)
    assert len(runs_table(part)) == 4  # two whole batches were written
    assert not [p for p in (part / "runs").iterdir() if p.name.startswith(".")]

    # what a hard kill (no cleanup) leaves: a half-written batch folder and a stray temp file
    (part / "runs" / ".depth=3.tmp-123" / "seed_0").mkdir(parents=True)
    (part / "runs" / ".sweep.json.tmp").write_text("{")
    calls.clear()
    monkeypatch.setattr(sweep, "fit", lambda cfg, **kw: calls.append(1) or real_fit(cfg, **kw))
    res = run_sweep(grid, part, progress=False, log=None)
    assert (res.n_skipped, res.n_ran, len(calls)) == (4, 4, 2)  # only the missing batches
    assert not [p for p in (part / "runs").iterdir() if p.name.startswith(".")]
    pd.testing.assert_frame_equal(_table(part), _table(full))


def test_resume_completes_a_partial_batch(tmp_path):
    spec = _spec(**{"model.depth": [2], "seeds": [0, 1, 2]})
    out = tmp_path / "sw"
    run_sweep(spec, out, progress=False, log=None)
    before = _table(out)
    import shutil

    (name,) = [p for p in (out / "runs").iterdir()]
    shutil.rmtree(name / "seed_1")
    res = run_sweep(spec, out, progress=False, log=None)
    assert (res.n_skipped, res.n_ran) == (2, 1)
    after = _table(out)
    assert list(after["seed"]) == [0, 1, 2]
    # the refitted seed ran alone (batch of 1); its own numbers match the batched ones
    row, ref = after.iloc[1], before.iloc[1]
    assert row["batch_size"] == 1
    assert row["final_loss"] == pytest.approx(ref["final_loss"], rel=1e-6)
    assert row["recon_mse"] == pytest.approx(ref["recon_mse"], rel=1e-3)


def test_failing_batch_is_recorded_and_the_rest_run(tmp_path, capsys):
    # 100 distinct entries of a 6x6 matrix cannot be observed: fit raises at problem build
    spec = _spec(**{"problem.n_obs": [20, 100], "seeds": [0, 1]})
    out = tmp_path / "sw"
    res = run_sweep(spec, out, progress=False, log=None)
    assert res.n_ran == 2 and len(res.failures) == 1
    failure = res.failures[0]
    assert "cannot observe 100 distinct entries" in failure["error"]
    assert failure["settings"] == {"problem.n_obs": 100}
    saved = json.loads((out / "failures" / f"{failure['name']}.json").read_text())
    assert "Traceback" in saved["traceback"] and saved["seeds"] == [0, 1]
    assert len(runs_table(out)) == 2
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID_TOML.split("[grid]")[0] + '[grid]\n"problem.n_obs" = [20, 100]\n')
    out2 = tmp_path / "cli"
    assert main(["sweep", str(grid), "--out", str(out2), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "FAILED problem.n_obs=100" in err and "cannot observe" in err


# --- bad inputs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"model.dept": [2]}, "did you mean 'model.depth'"),
        ({"modle.depth": [2]}, "not a config field"),
        ({"model": {"depth": 2}}, "must be a list"),
        ({"model.depth": []}, "has no values"),
        ({"model.depth": 3}, "must be a list"),
        ({}, "[grid] table is empty"),
        ({"seeds": [0, 0]}, "distinct"),
    ],
)
def test_bad_grids_are_clear_errors(grid, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_grid({"base": BASE, "grid": grid})


def test_section_as_grid_field_is_an_error():
    with pytest.raises(ValueError, match="is a config section"):
        parse_grid({"base": BASE, "grid": {"model": [{"depth": 2}]}})


def test_base_must_name_loss_and_tables_are_known():
    with pytest.raises(ValueError, match="must name its loss"):
        parse_grid({"base": {"model": {"depth": 2}}, "grid": {"model.depth": [2]}})
    with pytest.raises(ValueError, match="needs a \\[base\\] table"):
        parse_grid({"grid": {"model.depth": [2]}})
    with pytest.raises(ValueError, match="unknown: \\['grids'\\]"):
        parse_grid({"base": BASE, "grid": {"model.depth": [2]}, "grids": {}})


def test_every_config_is_validated_before_anything_runs(tmp_path):
    spec = _spec(**{"model.depth": [2, 0]})
    out = tmp_path / "sw"
    with pytest.raises(ValueError, match="model.depth=0.*model.depth must be >= 1"):
        run_sweep(spec, out, progress=False, log=None)
    assert not out.exists()
    with pytest.raises(ValueError, match="same config"):
        expand(_spec(**{"model.depth": [2, 2]}))


def test_grid_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_grid(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[base\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_grid(bad)


def test_different_sweep_in_same_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "sw"
    run_sweep(_spec(**{"model.depth": [2]}), out, progress=False, log=None)
    with pytest.raises(ValueError, match="holds a different sweep.*model.depth"):
        run_sweep(_spec(**{"model.depth": [2, 3]}), out, progress=False, log=None)
    other_base = parse_grid(
        {"base": {**BASE, "stop": {"loss_below": 1e-3}}, "grid": {"model.depth": [2]}}
    )
    with pytest.raises(ValueError, match="stop.loss_below"):
        run_sweep(other_base, out, progress=False, log=None)
    # the CLI says so as an error (exit 2), not a traceback
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID_TOML)
    assert main(["sweep", str(grid), "--out", str(out), "--quiet"]) == 2
    assert "holds a different sweep" in capsys.readouterr().err


def test_foreign_runs_in_folder_are_refused(tmp_path):
    out = tmp_path / "sw"
    run_sweep(_spec(**{"model.depth": [2]}), out, progress=False, log=None)
    (out / "sweep.json").unlink()
    with pytest.raises(ValueError, match="no sweep.json"):
        run_sweep(_spec(**{"model.depth": [2]}), out, progress=False, log=None)

    out2 = tmp_path / "sw2"
    run_sweep(_spec(**{"model.depth": [2]}), out2, progress=False, log=None)
    (run_dir,) = (out2 / "runs").iterdir()
    cfg_path = run_dir / "seed_0" / "config.json"
    original = cfg_path.read_text()
    data = json.loads(original)
    data["config"]["model"]["init_scale"] = 0.5
    cfg_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="different settings"):
        run_sweep(_spec(**{"model.depth": [2]}), out2, progress=False, log=None)

    cfg_path.write_text(original)
    (run_dir.parent / "someone_elses_run").mkdir()
    with pytest.raises(ValueError, match="not a run of this sweep"):
        run_sweep(_spec(**{"model.depth": [2]}), out2, progress=False, log=None)


def test_executor_argument_errors(tmp_path):
    spec = _spec(**{"model.depth": [2]})
    with pytest.raises(ValueError, match="unknown executor"):
        run_sweep(spec, tmp_path / "a", executor="mpi", progress=False, log=None)
    with pytest.raises(ValueError, match="only for --executor dask"):
        run_sweep(spec, tmp_path / "b", scheduler="tcp://x:1", progress=False, log=None)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_sweep(spec, tmp_path / "c", workers=0, progress=False, log=None)


def test_unanswering_scheduler_is_a_clear_error_in_bounded_time(tmp_path, capsys):
    pytest.importorskip("distributed")
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID_TOML)
    t0 = time.perf_counter()
    code = main(
        [
            "sweep",
            str(grid),
            "--out",
            str(tmp_path / "sw"),
            "--executor",
            "dask",
            "--scheduler",
            "tcp://127.0.0.1:9",
            "--connect-timeout",
            "2",
        ]
    )
    assert code == 2
    assert time.perf_counter() - t0 < 10
    assert "no Dask scheduler answered at 'tcp://127.0.0.1:9' within 2 s" in capsys.readouterr().err


def test_runs_table_reads_any_run_folders(tmp_path):
    assert runs_table(tmp_path).empty
    with pytest.raises(FileNotFoundError):
        runs_table(tmp_path / "nope")
    assert main(["runs", str(tmp_path)]) == 2
    out = tmp_path / "single"
    argv = ["run", "--out", str(out), "--quiet", "--seeds", "3", "4"]
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
    df = runs_table(tmp_path)
    assert list(df["run"]) == ["single/seed_3", "single/seed_4"]
    assert list(df["seed"]) == [3, 4]
    assert "seeds" not in df.columns and "problem.shape" in df.columns
    assert df["problem.shape"].iloc[0] == "[6, 6]"


def test_a_batch_another_worker_wrote_first_is_kept(tmp_path, monkeypatch):
    """Two workers on one batch (a resubmitted job): the one that renames second finds the
    folder there, keeps it, says so, and leaves no temporary folder behind."""
    target = tmp_path / "runs" / "depth=2"
    real = os.replace

    def raced(src, dst):
        if Path(dst) == target:  # the other worker's rename lands just before ours
            (target / "seed_0").mkdir(parents=True)
            (target / "seed_0" / "theirs.txt").write_text("first")
            raise OSError("Directory not empty")
        real(src, dst)

    monkeypatch.setattr(sweep.os, "replace", raced)
    status = sweep.run_batch({**BASE, "seeds": [0]}, str(target))
    assert status["status"] == "ok" and "another worker wrote this batch first" in status["note"]
    assert (target / "seed_0" / "theirs.txt").read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["depth=2"]
