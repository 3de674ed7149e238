"""Worker processes end with their command, however it ends, and SIGTERM (a batch system's time
limit) is handled as Ctrl-C is: a talk's experiment processes (``--jobs``), a sweep's workers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest


def _alive(procs: list[psutil.Process]) -> list[int]:
    return [p.pid for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _left_after(procs: list[psutil.Process], timeout: float) -> list[int]:
    """The pids of ``procs`` still running after up to ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline and _alive(procs):
        time.sleep(0.2)
    return _alive(procs)


def _kill_all(proc: subprocess.Popen, procs: list[psutil.Process]) -> None:
    """Whatever a test's outcome, leave none of its processes running."""
    with contextlib.suppress(psutil.NoSuchProcess):
        procs = procs + psutil.Process(proc.pid).children(recursive=True)
    proc.kill()
    proc.wait()
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def _talk(tmp_path, jobs: int) -> subprocess.Popen:
    """A quick talk of two experiments (~1-2 min each) on ``jobs`` processes, 2 cell workers,
    started as a script's background job is: ignoring SIGINT (its processes inherit that)."""
    cmd = [sys.executable, "-m", "factorflow.cli", "reproduce", "talk", "--scale", "quick"]
    cmd += ["--jobs", str(jobs), "--workers", "2", "--out", str(tmp_path / "talk")]
    cmd += ["--only", "arora2019-completion,arora2019-dynamics"]
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip


def _wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not condition():
        time.sleep(0.3)
    assert condition(), "the talk's experiments did not start"


def test_killed_talk_leaves_no_experiment_processes(tmp_path):
    """SIGKILL the talk's main process while two experiments run on their own processes (and
    one of them on cell workers): every process it started ends within seconds, as a sweep's
    workers do, instead of computing on for hours for a talk that can no longer record them."""
    proc, children, alive = _talk(tmp_path, jobs=2), [], []
    try:  # 2 experiments + 2 cell workers
        _wait_for(lambda: len(_kids(proc)) >= 4)
        children = _kids(proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        alive = _left_after(children, 15.0)
    finally:
        _kill_all(proc, children)
    assert not alive, f"processes left behind after the talk was killed: {alive}"


@pytest.mark.parametrize("jobs", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_sigterm_stops_a_talk_as_an_interrupt_does(tmp_path, jobs):
    """SIGTERM to the talk's process alone (as a batch system's time limit sends it): exit 143
    within seconds, the experiments recorded as interrupted, their processes gone."""
    out = tmp_path / "talk"
    proc, children = _talk(tmp_path, jobs), []
    try:  # each running experiment holds its folder's lock
        _wait_for(lambda: len(list(out.glob(".*.lock"))) >= jobs)
        time.sleep(2)  # into the experiments' work
        children = _kids(proc)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        alive = _left_after(children, 15.0)
    finally:
        _kill_all(proc, children)
    assert rc == 143
    assert "factorflow: terminated; what finished is in" in proc.stderr.read()
    index = json.loads((out / "talk.json").read_text())
    status = sorted(e["status"] for e in index["experiments"].values())
    assert status == sorted(["interrupted"] * jobs + ["pending"] * (2 - jobs))
    assert not alive, f"processes left behind: {alive}"
    assert not list(out.glob(".*.partial"))  # each run removed its partial folder


LONG_GRID = """
[base]
loss = "mse"
problem = { shape = [30, 30], rank = 2, n_obs = 300 }
optimizer = { name = "gd", lr = 0.01 }
stop = { loss_below = 1e-30, max_steps = 10000000 }
record = { per_decade = 3, top_k = 3 }

[grid]
"model.depth" = [2, 3]
"""


def test_sigterm_stops_a_sweep_and_its_workers(tmp_path):
    """SIGTERM to a 2-worker sweep started in a script's background (SIGINT ignored) while both
    workers run a batch of millions of steps: exit 143 within seconds, no worker left."""
    (tmp_path / "grid.toml").write_text(LONG_GRID)
    cmd = [sys.executable, "-m", "factorflow.cli", "sweep", str(tmp_path / "grid.toml")]
    cmd += ["--out", str(tmp_path / "out"), "--workers", "2", "--quiet"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    children: list[psutil.Process] = []
    try:  # both workers busy (the fork server idles)
        _wait_for(lambda: sum(c.cpu_percent(0.2) > 20 for c in _kids(proc)) >= 2)
        children = _kids(proc)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        alive = _left_after(children, 15.0)
    finally:
        _kill_all(proc, children)
    assert rc == 143 and "factorflow: terminated" in proc.stderr.read()
    assert not alive, f"workers left behind: {alive}"


def _kids(proc: subprocess.Popen) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children(recursive=True)
