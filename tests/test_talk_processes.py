"""A talk's experiment processes (``--jobs``) end with the talk, however it ends; SIGTERM (a batch
system's time limit) is handled as Ctrl-C is."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest


def test_killed_talk_leaves_no_experiment_processes(tmp_path):
    """SIGKILL the talk's main process while two experiments run on their own processes (and
    one of them on cell workers): every process it started ends within seconds, as a sweep's
    workers do, instead of computing on for hours for a talk that can no longer record them."""
    cmd = [sys.executable, "-m", "factorflow.cli", "reproduce", "talk", "--scale", "quick"]
    cmd += ["--jobs", "2", "--workers", "2", "--out", str(tmp_path / "talk")]
    cmd += ["--only", "arora2019-completion,arora2019-dynamics"]  # ~1-2 min each
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    children: list[psutil.Process] = []
    while time.time() < deadline and len(children) < 4:  # 2 experiments + 2 cell workers
        time.sleep(0.5)
        children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 4, [c.cmdline()[-3:] for c in children]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(
        c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children
    ):
        time.sleep(0.2)
    alive = [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    for pid in alive:  # leave nothing behind whatever the outcome
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"processes left behind after the talk was killed: {alive}"


def _talk_running(out, n):
    """Wait until ``n`` experiments of the talk in ``out`` run (each holds its folder's lock)."""
    deadline = time.time() + 60
    while time.time() < deadline and len(list(out.glob(".*.lock"))) < n:
        time.sleep(0.5)
    assert len(list(out.glob(".*.lock"))) >= n, "the talk's experiments did not start"


@pytest.mark.parametrize("jobs", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_sigterm_stops_a_talk_as_an_interrupt_does(tmp_path, jobs):
    """SIGTERM to the talk's process alone (as a batch system's time limit sends it): exit 143
    within seconds, the experiments recorded as interrupted, their processes gone."""
    out = tmp_path / "talk"
    cmd = [sys.executable, "-m", "factorflow.cli", "reproduce", "talk", "--scale", "quick"]
    cmd += ["--jobs", str(jobs), "--workers", "2", "--out", str(out)]
    cmd += ["--only", "arora2019-completion,arora2019-dynamics"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _talk_running(out, jobs)
    time.sleep(2)  # into the experiments' work
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=60) == 143
    finally:
        proc.kill()
        for c in children:
            if c.is_running():
                c.kill()
    assert "factorflow: terminated; what finished is in" in proc.stderr.read()
    status = {
        k: e["status"]
        for k, e in json.loads((out / "talk.json").read_text())["experiments"].items()
    }
    assert sorted(status.values()) == sorted(["interrupted"] * jobs + ["pending"] * (2 - jobs))
    assert not [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not list(out.glob(".*.partial"))  # each run removed its partial folder
