"""Optional experiment tracking: log finished run folders to TensorBoard or Weights & Biases.

The trackers read run folders (``config.json``, ``summary.json``, ``trajectory.npz``, see
:mod:`factorflow.results`), never training state, so they work the same after any executor and
can log an old sweep after the fact::

    tracker = make_tracker("tensorboard", out_dir)     # event files under out_dir/tensorboard/
    tracker.log_run(run_dir, "depth=3/seed_0")
    tracker.close()

What is logged per run: the recorded trajectory (``loss`` and every scalar probe, e.g.
``effective_rank``, ``nuclear_norm``, ``det``) against the record index, the optimizer's step
and time, and the final metrics of ``summary.json`` (numbers only). The config goes along as
text (TensorBoard) or as the run's config (W&B).

Neither package is a dependency: TensorBoard needs ``pip install 'factorflow[tracking]'``
(``tensorboard``), W&B needs ``pip install wandb``; W&B runs offline (``WANDB_MODE=offline``,
sync later with ``wandb sync``) unless ``WANDB_MODE`` is set otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BACKENDS", "TensorBoardTracker", "Tracker", "WandbTracker", "make_tracker"]

BACKENDS = ("tensorboard", "wandb")


def _scalar_series(trajectory: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Recorded series with one number per record point (T,), besides step and time."""
    return {
        k: np.asarray(v, dtype=float)
        for k, v in trajectory.items()
        if k not in ("step", "time") and np.ndim(v) == 1
    }


def _final_scalars(summary: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in summary.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v is not None
    }


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class Tracker:
    """Logs run folders somewhere; ``close()`` when done."""

    def log_run(self, run_dir: str | Path, name: str) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release."""


class TensorBoardTracker(Tracker):
    """One TensorBoard run per run folder, under ``log_dir/<name>``: ``train/<series>`` per
    record point (x axis: the optimizer's step), ``final/<metric>`` at step 0, the config as
    text."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImportError(
                "--track tensorboard needs the package 'tensorboard', which is not installed: "
                "pip install 'factorflow[tracking]'"
            ) from e
        self._writer_cls = SummaryWriter
        self.log_dir = Path(log_dir)

    def log_run(self, run_dir: str | Path, name: str) -> None:
        from factorflow.results import load_run

        run = load_run(run_dir)
        writer = self._writer_cls(log_dir=str(self.log_dir / name))
        try:
            steps = np.asarray(run.trajectory.get("step", []), dtype=np.int64)
            for key, series in _scalar_series(run.trajectory).items():
                for i, value in enumerate(series):
                    step = int(steps[i]) if i < len(steps) else i
                    writer.add_scalar(f"train/{key}", float(value), global_step=step)
            for key, value in _final_scalars(run.summary).items():
                writer.add_scalar(f"final/{key}", value, global_step=0)
            writer.add_text("config", f"```\n{json.dumps(run.config, indent=2)}\n```")
        finally:
            writer.close()


class WandbTracker(Tracker):
    """One W&B run per run folder (project ``project``, files under ``log_dir``), offline by
    default: the trajectory via ``run.log`` (step = record index; the optimizer's ``step`` and
    ``time`` logged alongside), the final metrics in ``run.summary``."""

    def __init__(self, log_dir: str | Path, project: str = "factorflow") -> None:
        try:
            import wandb
        except ImportError as e:
            raise ImportError(
                "--track wandb needs the package 'wandb', which is not installed: pip install wandb"
            ) from e
        self._wandb = wandb
        self.log_dir = Path(log_dir)
        self.project = project
        self.mode = os.environ.get("WANDB_MODE", "offline")

    def log_run(self, run_dir: str | Path, name: str) -> None:
        from factorflow.results import load_run

        run = load_run(run_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        wb = self._wandb.init(
            project=self.project,
            name=name,
            dir=str(self.log_dir),
            mode=self.mode,
            config=_flat(run.config),
        )
        try:
            series = _scalar_series(run.trajectory)
            steps = run.trajectory.get("step")
            times = run.trajectory.get("time")
            n = len(next(iter(series.values()))) if series else 0
            for i in range(n):
                row = {k: float(v[i]) for k, v in series.items()}
                if steps is not None:
                    row["step"] = float(steps[i])
                if times is not None:
                    row["time"] = float(times[i])
                wb.log(row, step=i)
            wb.summary.update({f"final/{k}": v for k, v in _final_scalars(run.summary).items()})
        finally:
            wb.finish()


def make_tracker(backend: str, out_dir: str | Path) -> Tracker:
    """A tracker for ``backend`` (one of :data:`BACKENDS`) writing under ``out_dir``
    (``out_dir/tensorboard`` or ``out_dir/wandb``); a clear ImportError when its package is
    missing."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown tracker {backend!r}; choose one of {list(BACKENDS)}")
    out_dir = Path(out_dir)
    if backend == "tensorboard":
        return TensorBoardTracker(out_dir / "tensorboard")
    return WandbTracker(out_dir)
