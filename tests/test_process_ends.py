"""Worker processes end with their command, however it ends, and SIGTERM (a batch system's time
limit) is handled as Ctrl-C is: a talk's experiment processes (``--jobs``), a sweep's workers.

Each command starts as a script's background job does: ignoring SIGINT, which its processes
inherit, so nothing can rely on SIGINT reaching them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import psutil
import pytest

CLI = [sys.executable, "-m", "factorflow.cli"]


def _background(args: list[str]) -> subprocess.Popen:
    """``factorflow ARGS`` started ignoring SIGINT, stderr kept."""
    return subprocess.Popen(
        CLI + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip


def _kids(proc: subprocess.Popen) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children(recursive=True)


def _alive(procs: list[psutil.Process]) -> list[int]:
    return [p.pid for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not condition():
        time.sleep(0.3)
    assert condition(), "the command's workers did not start"


def _signal_when(
    proc: subprocess.Popen, started: Callable[[], bool], sig: int, settle_s: float = 0.0
) -> tuple[int, list[int]]:
    """Once ``started()`` holds (and ``settle_s`` more seconds), send ``sig`` to ``proc`` alone;
    return its exit status and the pids of the processes it had started that still run up to
    15 s later. Whatever happens, none of them is left running."""
    children: list[psutil.Process] = []
    try:
        _wait_for(started)
        time.sleep(settle_s)
        children = _kids(proc)
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
        deadline = time.time() + 15
        while time.time() < deadline and _alive(children):
            time.sleep(0.2)
        return rc, _alive(children)
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            children += _kids(proc)
        proc.kill()
        proc.wait()
        for p in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


def _talk(tmp_path, jobs: int) -> subprocess.Popen:
    """A quick talk of two experiments (~1-2 min each) on ``jobs`` processes, 2 cell workers."""
    args = ["reproduce", "talk", "--scale", "quick", "--jobs", str(jobs), "--workers", "2"]
    args += ["--out", str(tmp_path / "talk"), "--only", "arora2019-completion,arora2019-dynamics"]
    return _background(args)


def test_killed_talk_leaves_no_experiment_processes(tmp_path):
    """SIGKILL the talk's main process while two experiments run on their own processes (and
    one of them on cell workers): every process it started ends within seconds, as a sweep's
    workers do, instead of computing on for hours for a talk that can no longer record them."""
    proc = _talk(tmp_path, jobs=2)  # started: 2 experiments + 2 cell workers
    rc, alive = _signal_when(proc, lambda: len(_kids(proc)) >= 4, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    assert not alive, f"processes left behind after the talk was killed: {alive}"


@pytest.mark.parametrize("jobs", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_sigterm_stops_a_talk_as_an_interrupt_does(tmp_path, jobs):
    """SIGTERM to the talk's process alone (as a batch system's time limit sends it): exit 143
    within seconds, the experiments recorded as interrupted, their processes gone."""
    out = tmp_path / "talk"
    proc = _talk(tmp_path, jobs)  # started: each running experiment holds its folder's lock
    started = lambda: len(list(out.glob(".*.lock"))) >= jobs  # noqa: E731
    rc, alive = _signal_when(proc, started, signal.SIGTERM, settle_s=2.0)
    assert rc == 143
    assert "factorflow: terminated; what finished is in" in proc.stderr.read()
    index = json.loads((out / "talk.json").read_text())
    status = sorted(e["status"] for e in index["experiments"].values())
    assert status == sorted(["interrupted"] * jobs + ["pending"] * (2 - jobs))
    assert not alive, f"processes left behind: {alive}"
    assert not list(out.glob(".*.partial"))  # each run removed its partial folder


def test_sigterm_leaves_an_idle_experiment_process_quiet(tmp_path):
    """SIGTERM while one experiment process runs and the other, its experiment done, waits:
    the idle one has nothing to clean up and stays quiet (it printed a traceback from the pool's
    queue read), the running one is interrupted, and the talk's log holds no traceback."""
    out = tmp_path / "talk"
    args = ["reproduce", "talk", "--scale", "quick", "--jobs", "2", "--out", str(out)]
    proc = _background(args + ["--only", "razin2020-perturbed,arora2019-completion"])

    def one_done_one_running() -> bool:
        with contextlib.suppress(OSError, ValueError):
            status = json.loads((out / "talk.json").read_text())["experiments"]
            return status["razin2020-perturbed"]["status"] == "ok" and any(out.glob(".*.lock"))
        return False

    rc, alive = _signal_when(proc, one_done_one_running, signal.SIGTERM, settle_s=1.0)
    err = proc.stderr.read()
    assert rc == 143 and "factorflow: terminated" in err
    assert "Traceback" not in err, err
    index = json.loads((out / "talk.json").read_text())["experiments"]
    assert index["arora2019-completion"]["status"] == "interrupted"
    assert not alive, f"processes left behind: {alive}"


def test_only_the_first_sigterm_interrupts():
    """A second SIGTERM (a batch system or a talk signalling again) does not break off the
    clean-up that the first one started; the handler before the block is back after it."""
    from factorflow._signals import Terminated, sigterm_interrupts

    before = signal.getsignal(signal.SIGTERM)
    cleaned = False
    with sigterm_interrupts():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises first
        except Terminated:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
            cleaned = True
    assert cleaned and signal.getsignal(signal.SIGTERM) is before


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
    """SIGTERM to a 2-worker sweep while both workers run a batch of millions of steps: exit
    143 within seconds, no worker left (it used to wait for the batches to end)."""
    (tmp_path / "grid.toml").write_text(LONG_GRID)
    proc = _background(
        ["sweep", str(tmp_path / "grid.toml"), "--out", str(tmp_path / "out"), "--workers", "2"]
        + ["--quiet"]
    )
    started = lambda: sum(c.cpu_percent(0.2) > 20 for c in _kids(proc)) >= 2  # noqa: E731
    rc, alive = _signal_when(proc, started, signal.SIGTERM)  # both busy: the fork server idles
    assert rc == 143 and "factorflow: terminated" in proc.stderr.read()
    assert not alive, f"workers left behind: {alive}"
