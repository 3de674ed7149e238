"""What to record and when, and the stopping rules shared by every optimizer.

The axis a schedule counts on is the optimizer's own: steps for the discrete optimizers, time t
for gradient flow (for plain GD, time = step * lr; convert explicitly where runs are compared).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Recorder", "Schedule", "Stop", "Trajectory", "as_numpy"]


@dataclass(frozen=True)
class Schedule:
    """Record points on the optimizer's axis (steps, or flow time). The start (0) and each run's
    end are always recorded. Any combination of:

    - ``every``: every ``every`` steps (or units of time);
    - ``per_decade``: log-spaced, ``per_decade`` points per decade from ``start`` on
      (points start * 10^(k/per_decade), k = 0, 1, ...; integer-rounded for steps);
    - ``points``: explicit points;
    - ``accepted``: (flow only) every accepted integrator step.
    """

    every: float | None = None
    per_decade: int | None = None
    start: float = 1.0
    points: tuple[float, ...] = ()
    accepted: bool = False

    def __post_init__(self) -> None:
        if self.every is not None and not self.every > 0:
            raise ValueError(f"record every must be > 0, got {self.every}")
        if self.per_decade is not None and not self.per_decade >= 1:
            raise ValueError(f"per_decade must be >= 1, got {self.per_decade}")
        if not self.start > 0:
            raise ValueError(f"log-spaced recording needs start > 0, got {self.start}")
        object.__setattr__(self, "points", tuple(sorted(float(p) for p in self.points)))

    def next_point(self, after: float, integer: bool = False) -> float:
        """The first record point strictly greater than ``after`` (``inf`` if none)."""
        cands = [math.inf]
        if self.every is not None:
            cands.append((math.floor(after / self.every + 1e-12) + 1) * self.every)
        if self.per_decade is not None:
            if after < self.start:
                cands.append(self.start)
            else:
                k = math.floor(self.per_decade * math.log10(after / self.start) + 1e-9) + 1
                while True:
                    p = self.start * 10 ** (k / self.per_decade)
                    if integer:
                        p = float(round(p))
                    if p > after:
                        cands.append(p)
                        break
                    k += 1
        idx = np.searchsorted(self.points, after, side="right")
        if idx < len(self.points):
            cands.append(self.points[idx])
        return min(cands)


@dataclass(frozen=True)
class Stop:
    """When to stop. A run stops at the first of:

    - ``loss_below``: its loss <= this ("converged"; flow locates the crossing time exactly);
    - ``max_steps``: discrete steps, or accepted integrator steps for flow ("max_steps");
    - ``max_time``: flow time, or step * lr for GD ("max_time");
    - ``max_evals``: gradient evaluations (flow) ("max_evals");
    - ``max_wall_s``: wall-clock seconds for the whole batch ("max_wall");
    - divergence: loss NaN/inf or above ``diverge_above`` ("diverged": the last finite state and
      the trajectory so far are kept).
    """

    loss_below: float | None = None
    max_steps: int | None = None
    max_time: float | None = None
    max_evals: int | None = None
    max_wall_s: float | None = None
    diverge_above: float = 1e12

    def __post_init__(self) -> None:
        for name in ("loss_below", "max_steps", "max_time", "max_evals", "max_wall_s"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"stop.{name} must be > 0, got {v}")
        if all(
            getattr(self, n) is None
            for n in ("loss_below", "max_steps", "max_time", "max_evals", "max_wall_s")
        ):
            raise ValueError(
                "a stop rule needs at least one of loss_below, max_steps, max_time, "
                "max_evals, max_wall_s"
            )


@dataclass
class Trajectory:
    """Recorded rows: ``step`` (T,), ``time`` (T,), and ``values[name]`` of shape (T, B, ...)
    (``values["loss"]`` always present)."""

    step: np.ndarray
    time: np.ndarray
    values: dict[str, np.ndarray]

    def select_run(self, b: int, end_time: float) -> Trajectory:
        """Run ``b``'s rows up to and including ``end_time``: ``values`` (T_b, ...)."""
        keep = self.time <= end_time * (1 + 1e-12) + 1e-300
        return Trajectory(
            self.step[keep], self.time[keep], {k: v[keep, b] for k, v in self.values.items()}
        )

    def as_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        out = {f"{prefix}step": self.step, f"{prefix}time": self.time}
        out.update({f"{prefix}{k}": v for k, v in self.values.items()})
        return out


Probe = Callable[[Sequence[torch.Tensor]], torch.Tensor]


def as_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """``x`` as a numpy array of its own precision (bfloat16, which numpy lacks, as float32,
    exactly); a CPU tensor's array shares its memory."""
    if isinstance(x, torch.Tensor):
        x = (x.float() if x.dtype == torch.bfloat16 else x).detach().cpu().numpy()
    return x


class Recorder:
    """Collects rows (step, time, loss, probes) during training; probes map params -> (B, ...)."""

    def __init__(self, probes: dict[str, Probe] | None = None) -> None:
        self.probes = dict(probes or {})
        self.steps: list[float] = []
        self.times: list[float] = []
        self.rows: dict[str, list[np.ndarray]] = {"loss": []}
        for k in self.probes:
            self.rows[k] = []

    def add(
        self,
        step: float,
        t: float,
        params: Sequence[torch.Tensor],
        loss: torch.Tensor | np.ndarray,
    ) -> None:
        if self.times and t == self.times[-1] and step == self.steps[-1]:
            return
        self.steps.append(step)
        self.times.append(t)
        self.rows["loss"].append(np.array(as_numpy(loss), copy=True))
        with torch.no_grad():
            for k, fn in self.probes.items():
                self.rows[k].append(np.array(as_numpy(fn(params)), copy=True))

    def finish(self) -> Trajectory:
        order = np.argsort(np.asarray(self.times), kind="stable")
        return Trajectory(
            np.asarray(self.steps)[order],
            np.asarray(self.times, dtype=np.float64)[order],
            {k: np.stack(v)[order] for k, v in self.rows.items()},
        )
