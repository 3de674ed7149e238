"""A talk's experiment processes (``--jobs``) end with the talk, however it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil


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
