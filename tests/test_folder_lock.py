"""One writer per output folder (``factorflow.folder_lock``): a second run into a folder that a
live process writes stops at once, naming the holder, and leaves the holder's work alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from factorflow.folder_lock import FolderBusyError, hold_folder, lock_path
from factorflow.runner import run_experiment
from factorflow.talk import reproduce_talk

pytestmark = pytest.mark.skipif(os.name != "posix", reason="flock is POSIX")


def _holder(folder):
    """Another process holding ``folder``'s lock until it is killed."""
    code = textwrap.dedent(
        f"""
        import time
        from factorflow.folder_lock import hold_folder
        with hold_folder({str(folder)!r}):
            print("held", flush=True)
            time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_into_a_held_folder_stops_and_leaves_the_holders_work(tmp_path, capsys):
    from factorflow.cli import main

    out = tmp_path / "exp"
    partial, cells = tmp_path / ".exp.partial", tmp_path / ".exp.cells"
    for d in (partial, cells):  # what a live run has written so far
        d.mkdir()
        (d / "work").write_text("hours of it")
    proc = _holder(out)
    try:
        with pytest.raises(
            FolderBusyError, match=rf"being written by another process \(pid {proc.pid}"
        ):
            run_experiment("razin2020-perturbed", out, scale="smoke", log=lambda _: None)
        argv = ["reproduce", "razin2020-perturbed", "--scale", "smoke", "--out", str(out)]
        assert main(argv) == 2
        assert "--resume" in capsys.readouterr().err  # how to go on, in the one-line error
        assert (partial / "work").is_file() and (cells / "work").is_file()
        assert not out.exists()
    finally:
        proc.send_signal(signal.SIGKILL)  # however the holder ends, the kernel drops its lock
        proc.wait()
    summary = run_experiment("razin2020-perturbed", out, scale="smoke", log=lambda _: None)
    assert summary["experiment"] == "razin2020-perturbed" and (out / "summary.json").is_file()
    assert not lock_path(out).exists()  # removed by the run that finished


def test_a_talk_into_a_held_folder_stops(tmp_path):
    proc = _holder(tmp_path / "talk")
    try:
        with pytest.raises(FolderBusyError):
            reproduce_talk(tmp_path / "talk", scale="smoke", only=["razin2020-perturbed"], log=None)
        assert not (tmp_path / "talk").exists()
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_is_one_holder_at_a_time_and_free_after(tmp_path):
    folder = tmp_path / "d"
    with hold_folder(folder):
        assert f"pid {os.getpid()}" in lock_path(folder).read_text()
        with pytest.raises(FolderBusyError), hold_folder(folder):  # a second open file
            pass
    assert not lock_path(folder).exists()
    with hold_folder(folder):  # free again
        pass


def test_a_folder_and_a_link_to_it_share_one_lock(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "d")
    monkeypatch.chdir(tmp_path / "d")
    assert lock_path(".") == lock_path(tmp_path / "link") == tmp_path.resolve() / ".d.lock"
    with hold_folder(tmp_path / "link"), pytest.raises(FolderBusyError), hold_folder("."):
        pass
