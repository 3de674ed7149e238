"""Nothing lost, nothing half-written: the faults and bad inputs of issue 14, one test each.

Each command checks its output location before any work, writes into a temporary sibling and
moves it into place when complete; result files are read by one reader that names the file;
workers end with their sweep. The API's refusal of bad training input: test_api_input.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factorflow import fit as fit_module
from factorflow import results
from factorflow.cli import main
from factorflow.sweep import runs_table

RUN = ["run", "--set", 'loss="mse"', "--set", "problem.shape=[5,5]", "--set", "problem.rank=1"]
RUN += ["--set", "problem.n_obs=12", "--set", "stop.loss_below=1e-3", "--quiet"]

GRID = """
[base]
loss = "mse"
problem = { shape = [6, 6], rank = 1, n_obs = 20 }
optimizer = { name = "gd", lr = 0.05 }
stop = { loss_below = 1e-9, max_steps = 4000 }
record = { per_decade = 3, top_k = 3 }

[grid]
"model.depth" = [2, 3]
"model.init_scale" = [1e-1, 1e-2, 1e-3]
seeds = [0, 1]
"""


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# --------------------------------------------------------------------------- results lost or mixed


def test_run_seeds_overwrite_is_all_or_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r"
    assert main([*RUN, "--seeds", "0", "1", "--out", str(out)]) == 0
    before = {s: (out / s / "summary.json").read_text() for s in ("seed_0", "seed_1")}
    real_write = fit_module.FitRun.write

    def write(self, run_dir, overwrite=False):
        if Path(run_dir).name == "seed_1":
            raise OSError("seed_1: no space left on device")
        return real_write(self, run_dir, overwrite)

    monkeypatch.setattr(fit_module.FitRun, "write", write)
    args = [*RUN, "--set", "model.depth=2", "--seeds", "0", "1", "--out", str(out), "--overwrite"]
    assert main(args) == 2
    assert "no space left" in _err(capsys)
    after = {s: (out / s / "summary.json").read_text() for s in ("seed_0", "seed_1")}
    assert after == before  # neither seed replaced
    assert sorted(p.name for p in out.iterdir()) == ["seed_0", "seed_1"]


def test_run_track_with_a_missing_package_fails_before_fitting(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    called = []
    monkeypatch.setattr(fit_module, "fit", lambda *a, **k: called.append(1))
    assert main([*RUN, "--out", str(tmp_path / "r"), "--track", "wandb"]) == 2
    assert "wandb" in _err(capsys)
    assert not called and not (tmp_path / "r").exists()


def test_reproduce_into_a_folder_with_another_result_is_refused(tmp_path, capsys):
    out = tmp_path / "o"
    args = ["reproduce", "arora2019-sensing", "--scale", "smoke", "--out", str(out)]
    assert main([*args, "--option", "init_scales=[0.01]"]) == 0
    before = (out / "summary.json").read_text()
    assert main([*args, "--option", "init_scales=[0.05]"]) == 2
    assert "--overwrite" in _err(capsys)
    assert main([*args, "--option", "init_scales=[0.05]", "--resume"]) == 2
    assert "other settings" in _err(capsys)
    assert (out / "summary.json").read_text() == before


def test_sweep_refuses_a_folder_holding_a_run(tmp_path, capsys):
    assert main([*RUN, "--out", str(tmp_path / "o")]) == 0
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    assert main(["sweep", str(grid), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "not a sweep's" in _err(capsys)


# --------------------------------------------------------------------------- corrupt files


def _sweep(tmp_path: Path) -> Path:
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.replace("[1e-1, 1e-2, 1e-3]", "[1e-1]"))
    out = tmp_path / "sw"
    assert main(["sweep", str(grid), "--out", str(out), "--quiet"]) == 0
    return out


@pytest.mark.parametrize("name", ["summary.json", "config.json"])
def test_runs_lists_good_runs_and_names_the_corrupt_one(tmp_path, capsys, name):
    out = _sweep(tmp_path)
    victim = sorted(out.glob("runs/*/seed_0"))[0]
    text = (victim / name).read_text()
    (victim / name).write_text(text[: len(text) // 2])  # truncated
    capsys.readouterr()
    assert main(["runs", str(out)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert f"UNREADABLE {victim.relative_to(out).as_posix()}" in captured.err
    assert name in captured.err and "3 runs" in captured.out  # the 3 good runs are listed
    # a resumed sweep treats the corrupt run as unfinished and writes it again
    grid = tmp_path / "grid.toml"
    assert main(["sweep", str(grid), "--out", str(out), "--quiet"]) == 0
    assert "1 ran now" in capsys.readouterr().out
    assert not runs_table(out).attrs["unreadable"]


def test_truncated_sweep_json_is_named(tmp_path, capsys):
    out = _sweep(tmp_path)
    (out / "sweep.json").write_text('{"base": {"loss": "ms')
    assert main(["sweep", str(tmp_path / "grid.toml"), "--out", str(out), "--quiet"]) == 2
    assert "sweep.json" in _err(capsys)


@pytest.mark.parametrize("name", ["summary.json", "trajectory.npz", "factors.npz"])
def test_load_run_names_the_corrupt_file(tmp_path, name):
    assert main([*RUN, "--out", str(tmp_path / "r")]) == 0
    d = tmp_path / "r" / "seed_0"
    data = (d / name).read_bytes()
    (d / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=name):
        results.load_run(d)


def test_runs_on_a_read_only_sweep(tmp_path, capsys, monkeypatch):
    out = _sweep(tmp_path)
    (out / "runs.csv").unlink()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, m: False if m & os.W_OK else real_access(p, m)
    )  # root can write anywhere: pretend the folder is read-only
    assert main(["runs", str(out)]) == 0
    assert "read-only" in capsys.readouterr().out
    assert not (out / "runs.csv").exists() and not list(out.glob(".runs.csv*"))


# --------------------------------------------------------------------------- checked before any work


def _commands(tmp_path: Path, out: Path, monkeypatch) -> tuple[dict[str, list[str]], list]:
    """The argv of run, reproduce and sweep into ``out``, and a list that records any fit or
    experiment run they start (there must be none)."""
    called: list = []
    monkeypatch.setattr(fit_module, "fit", lambda *a, **k: called.append("fit"))
    monkeypatch.setattr(
        "factorflow.experiments.arora2019_sensing.recovery_grid",
        lambda *a, **k: called.append("reproduce"),
    )
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    return {
        "run": [*RUN, "--out", str(out)],
        "reproduce": ["reproduce", "arora2019-sensing", "--scale", "smoke", "--out", str(out)],
        "sweep": ["sweep", str(grid), "--out", str(out), "--quiet"],
    }, called


@pytest.mark.parametrize("cmd", ["run", "reproduce", "sweep"])
def test_out_below_a_file_fails_before_any_work(tmp_path, capsys, monkeypatch, cmd):
    f = tmp_path / "file"
    f.write_text("x")
    argv, called = _commands(tmp_path, f / "o", monkeypatch)
    assert main(argv[cmd]) == 2
    assert "is a file" in _err(capsys)
    assert not called


@pytest.mark.parametrize("cmd", ["run", "reproduce", "sweep"])
def test_read_only_out_fails_before_any_work(tmp_path, capsys, monkeypatch, cmd):
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(  # root may write anywhere: pretend ro/ is read-only
        os, "access", lambda p, m: False if Path(p) == ro and m & os.W_OK else real_access(p, m)
    )
    argv, called = _commands(tmp_path, ro / "o", monkeypatch)
    assert main(argv[cmd]) == 2
    assert "not writable" in _err(capsys)
    assert not called and not (ro / "o").exists()


@pytest.mark.parametrize(
    "option, message",
    [
        ("depths=3", "'depths' must be a list of an integer, got 3"),
        ('depths="three"', "'depths' must be a list of an integer, got 'three'"),
        ('init_scales="x"', "'init_scales' must be a list of a number, got 'x'"),
        ("init_scales=[-1.0]", "init_scales must list values finite and > 0, got [-1.0]"),
    ],
)
def test_reproduce_options_are_typed(tmp_path, capsys, option, message):
    args = ["reproduce", "arora2019-completion", "--out", str(tmp_path / "o"), "--option", option]
    assert main(args) == 2
    assert message in _err(capsys)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "setting, message",
    [
        ("model.init_scale=inf", "model.init_scale must be a finite number > 0"),
        ("record.top_k=-1", "record.top_k must be >= 1"),
        ("optimizer.lr=-1", "optimizer.lr must be > 0"),  # with optimizer.name = "gd"
    ],
)
def test_run_settings_are_checked(tmp_path, capsys, setting, message):
    gd = ["--set", 'optimizer.name="gd"']
    assert main([*RUN, *gd, "--set", setting, "--out", str(tmp_path / "o")]) == 2
    assert message in _err(capsys)


# --------------------------------------------------------------------------- processes and property tests


@pytest.mark.slow
def test_killed_sweep_leaves_no_workers_and_resumes_to_the_same_table(tmp_path):
    """SIGKILL a 2-worker sweep at several points, resume it, and compare with an uninterrupted
    run: same table, and no worker still alive after its sweep died."""
    import psutil

    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    cmd = [sys.executable, "-m", "factorflow.cli", "sweep", str(grid), "--quiet"]
    ref = tmp_path / "ref"
    subprocess.run([*cmd, "--out", str(ref)], check=True, capture_output=True)
    want = runs_table(ref).drop(columns=["wall_s_batch"], errors="ignore")
    for k, delay in enumerate((1.5, 3.0, 4.5)):
        out = tmp_path / f"k{k}"
        proc = subprocess.Popen([*cmd, "--out", str(out), "--workers", "2"])
        time.sleep(delay)
        children = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while time.time() < deadline and any(
            c.is_running() and c.status() != "zombie" for c in children
        ):
            time.sleep(0.2)
        alive = [c.pid for c in children if c.is_running() and c.status() != "zombie"]
        # the fork server itself ends when its pipe closes; workers end through their watchdog
        assert not alive, f"processes left behind after SIGKILL at {delay} s: {alive}"
        subprocess.run([*cmd, "--out", str(out), "--workers", "2"], check=True, capture_output=True)
        got = runs_table(out).drop(columns=["wall_s_batch"], errors="ignore")
        assert got.drop(columns=["run"]).equals(want.drop(columns=["run"])), delay


@settings(max_examples=200, deadline=None)
@given(
    key=st.sampled_from(["depths", "init_scales", "n_obs", "shape", "rank", "nnm_solver", "seeds"]),
    value=st.one_of(
        st.integers(-3, 3),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=4),
        st.lists(st.integers(-2, 4), max_size=3),
        st.booleans(),
    ),
)
def test_any_option_is_accepted_or_a_one_line_error(key, value):
    from factorflow.experiments import EXPERIMENTS

    exp = EXPERIMENTS["arora2019-completion"]
    try:
        exp.settings_for("smoke", {key: value})
    except ValueError as e:
        assert "\n" not in str(e) and key in str(e)


@settings(max_examples=200, deadline=None)
@given(
    section=st.sampled_from(["model", "stop", "record", "optimizer", "problem"]),
    field=st.sampled_from(["init_scale", "depth", "top_k", "lr", "loss_below", "n_obs", "rank"]),
    value=st.one_of(st.integers(-5, 5), st.floats(), st.text(max_size=3), st.booleans()),
)
def test_any_run_setting_is_accepted_or_a_one_line_error(section, field, value):
    from factorflow.config import config_from_dict

    try:
        config_from_dict({"loss": "mse", section: {field: value}})
    except ValueError as e:
        assert "\n" not in str(e)


def test_worker_watchdog_ends_a_process_whose_parent_is_gone():
    code = (
        "import os, sys, time\n"
        "from factorflow import executors\n"
        "executors.PARENT_CHECK_S = 0.05\n"
        "executors._init_worker(1, int(sys.argv[1]))\n"
        "time.sleep(3600)\n"
        "sys.exit(0)\n"
    )
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer exists
    # exit status 1 is the watchdog's os._exit(1); without it the child would sleep for an hour
    # (the timeout only guards the test run against that)
    res = subprocess.run([sys.executable, "-c", code, str(dead.pid)], timeout=120)
    assert res.returncode == 1


@pytest.mark.slow
def test_killed_reproduce_resumes_to_the_same_summary(tmp_path):
    """SIGKILL `reproduce` at several points: the folder is never half-written (no summary, or
    the whole one), and the rerun with --resume gives the uninterrupted run's rows and claims."""
    cmd = [sys.executable, "-m", "factorflow.cli", "reproduce", "arora2019-completion"]
    cmd += ["--scale", "smoke"]
    subprocess.run([*cmd, "--out", str(tmp_path / "ref")], check=True, capture_output=True)
    want = json.loads((tmp_path / "ref" / "summary.json").read_text())
    timing = {"wall_s", "elapsed_s"}

    def strip(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in timing} for r in rows]

    for k, delay in enumerate((0.5, 2.0, 4.0, 6.0)):
        out = tmp_path / f"k{k}"
        proc = subprocess.Popen([*cmd, "--out", str(out)], stdout=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not out.exists() or (out / "summary.json").is_file()  # whole or absent
        subprocess.run([*cmd, "--out", str(out), "--resume"], check=True, capture_output=True)
        got = json.loads((out / "summary.json").read_text())
        assert strip(got["rows"]) == strip(want["rows"]), delay
        assert [(c["id"], c["holds"]) for c in got["claims"]] == [
            (c["id"], c["holds"]) for c in want["claims"]
        ]
        assert not list(tmp_path.glob(f".k{k}.partial"))  # the rerun cleaned the partial folder
