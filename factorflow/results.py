"""Run folders: the config (with seeds, package version, git commit), the recorded trajectory,
the final factors and ``summary.json``. Written atomically (a temporary sibling folder renamed
into place), so an interrupted write never leaves a half folder; loading gives the same numbers.

Layout of a run folder::

    config.json       {"config": {...}, "meta": {"factorflow": version, "git_commit", ...}}
    summary.json      final metrics and status of the run
    trajectory.npz    step (T,), time (T,), loss (T,), and every recorded probe (T, ...)
    factors.npz       factor_0 ... factor_{N-1}: the final parameters of this run
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)

__all__ = [
    "Run",
    "jsonable",
    "check_out_dir",
    "is_complete_run",
    "load_run",
    "read_json",
    "read_npz",
    "replace_folders",
    "run_metadata",
    "write_json",
    "write_run",
]


def jsonable(x: Any) -> Any:
    """Numbers, arrays and containers as plain JSON values (non-finite floats become null)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, np.generic):
        return jsonable(x.item())
    if hasattr(x, "detach"):
        return jsonable(x.detach().cpu().numpy())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(jsonable(data), f, indent=2, allow_nan=False)
        f.write("\n")
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; respect the umask like open() would
    os.replace(tmp, path)


def check_out_dir(out_dir: Path) -> None:
    """Fail before any work when ``out_dir`` cannot be written: a file on its path, or a
    folder that does not allow writing (a ValueError naming the path)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir}: exists and is not a folder")
    node = out_dir
    while not node.exists():
        node = node.parent
    if not node.is_dir():
        raise ValueError(f"--out {out_dir}: {node} is a file, not a folder")
    if not os.access(node, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out_dir}: {node} is not writable")
    if out_dir.exists() and not os.access(out_dir.parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out_dir}: its parent {out_dir.parent} is not writable")


def replace_folders(pairs: list[tuple[Path, Path]]) -> None:
    """Move each finished folder ``new`` onto ``target`` for every ``(new, target)`` of
    ``pairs``, as one step: every existing target is moved aside first and removed only after
    all the new folders are in place; if any move fails, the targets moved so far are put back
    (so a set of run folders is either all old or all new)."""
    moved: list[tuple[Path, Path | None]] = []
    try:
        for new, target in pairs:
            aside = None
            if target.exists():
                aside = target.parent / f".{target.name}.old-{os.getpid()}"
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(target, aside)
            moved.append((target, aside))
            os.replace(new, target)
    except BaseException:
        for target, aside in reversed(moved):
            if aside is not None and aside.exists():
                shutil.rmtree(target, ignore_errors=True)
                os.replace(aside, target)
        raise
    for _, aside in moved:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)


def read_json(path: str | Path) -> Any:
    """Read a JSON result file; a missing, unreadable or corrupt file is a ValueError (or
    FileNotFoundError) that names it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable or corrupt ({type(e).__name__}: {e})") from None


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_metadata() -> dict[str, Any]:
    """Package version, git commit (if the package lives in a git checkout), versions, time."""
    import torch

    from factorflow import __version__

    return {
        "factorflow": __version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


@dataclass
class Run:
    """A loaded run folder."""

    path: Path
    config: dict[str, Any]
    meta: dict[str, Any]
    summary: dict[str, Any]
    trajectory: dict[str, np.ndarray]
    factors: list[np.ndarray]


def write_run(
    run_dir: str | Path,
    config: dict[str, Any],
    summary: dict[str, Any],
    trajectory: dict[str, np.ndarray],
    factors: list[np.ndarray],
    *,
    overwrite: bool = False,
) -> Path:
    """Write a complete run folder atomically; refuses to replace an existing one unless
    ``overwrite``."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not overwrite:
        raise FileExistsError(
            f"run folder {run_dir} already exists (pass overwrite=True to replace)"
        )
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=run_dir.parent, prefix=f".{run_dir.name}.tmp-"))
    try:
        write_json(tmp / "config.json", {"config": config, "meta": run_metadata()})
        write_json(tmp / "summary.json", summary)
        np.savez_compressed(
            tmp / "trajectory.npz", **{k: np.asarray(v) for k, v in trajectory.items()}
        )
        np.savez_compressed(
            tmp / "factors.npz", **{f"factor_{j}": np.asarray(f) for j, f in enumerate(factors)}
        )
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700
        if run_dir.exists():
            shutil.rmtree(run_dir)
        os.replace(tmp, run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir


def load_run(run_dir: str | Path) -> Run:
    """Read a run folder written by :func:`write_run`."""
    run_dir = Path(run_dir)
    missing = [
        n
        for n in ("config.json", "summary.json", "trajectory.npz", "factors.npz")
        if not (run_dir / n).is_file()
    ]
    if missing:
        raise FileNotFoundError(f"{run_dir} is not a complete run folder: missing {missing}")
    cfg = read_json(run_dir / "config.json")
    summary = read_json(run_dir / "summary.json")
    if not isinstance(cfg, dict) or "config" not in cfg or not isinstance(summary, dict):
        raise ValueError(f"{run_dir}: config.json or summary.json is not a run's")
    traj = read_npz(run_dir / "trajectory.npz")
    z = read_npz(run_dir / "factors.npz")
    factors = [z[f"factor_{j}"] for j in range(len(z))]
    return Run(run_dir, cfg["config"], cfg.get("meta", {}), summary, traj, factors)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file; a missing, truncated or corrupt file is an error that
    names it (FileNotFoundError or ValueError)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # BadZipFile, EOFError, OSError, ValueError, KeyError ...
        raise ValueError(f"{path}: unreadable or corrupt ({type(e).__name__}: {e})") from None


def is_complete_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a run whose config.json and summary.json both parse (a
    truncated file counts as not finished, so a resumed sweep writes the run again)."""
    d = Path(run_dir)
    try:
        return isinstance(read_json(d / "config.json"), dict) and isinstance(
            read_json(d / "summary.json"), dict
        )
    except (OSError, ValueError):
        return False
