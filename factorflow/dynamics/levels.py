"""Training down a list of loss levels: the exact state where each level is crossed.

Claims such as "|w11| ~ 70 at loss 1e-4" compare the state *at* a loss, not at the nearest
recorded point. :func:`flow_levels_run` integrates gradient flow of one run down descending
``levels``, one :func:`~factorflow.dynamics.train` call with ``Stop(loss_below=level)`` per
level, each resumed from the previous level's final parameters. Gradient flow is memoryless, so
this is one trajectory, and the state at every level is the crossing located by the engine
(an integrator event, to the integrator's tolerance), not a recorded neighbour.

Integrator fallback: a segment that ``method`` does not finish within ``max_steps`` accepted
steps or ``max_evals`` gradient evaluations is redone from the same state with ``fallback``
(given ``max_evals`` only). Measured on the Razin & Cohen 2x2 problem: a restarted LSODA can stay
in its non-stiff (Adams) mode with stability-limited steps once |w11| is large (~3000 accepted
steps and 6000 evaluations from the loss-1.3e-4 state of a depth-3 run without reaching 1e-4),
where BDF needs ~220 evaluations; normal segments take a few hundred accepted steps.

:func:`gd_levels_batch` does the same for plain GD over a batch of B runs (one tensor program;
each level's state is the first step at or below it), with one step budget shared by the batch.

Both return :class:`LevelsRun` per run: the recorded trajectory, one :class:`LevelState` per
level reached, and the final state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from factorflow.dynamics.optimizers import GD
from factorflow.dynamics.record import Probe, Schedule, Stop
from factorflow.dynamics.train import Flow, TrainResult, train

__all__ = ["LevelState", "LevelsRun", "flow_levels_run", "gd_levels_batch"]

LossFn = Callable[[Sequence[torch.Tensor]], torch.Tensor]


@dataclass
class LevelState:
    """The state of one run where it stopped: ``level`` (None for a run's final state when it
    did not reach its last level), ``loss``, ``time`` (flow time, or steps * lr for GD),
    ``steps`` (accepted integrator steps or GD steps, cumulative), ``method`` (the engine's
    method name, e.g. ``flow:LSODA`` or ``gd``), ``params`` (this run's parameters, (1, ...)
    tensors) and ``values`` (every probe evaluated there, float64 arrays without the batch
    dimension)."""

    level: float | None
    loss: float
    time: float
    steps: int
    method: str
    params: list[torch.Tensor]
    values: dict[str, np.ndarray]


@dataclass
class LevelsRun:
    """One run down the loss levels.

    ``traj``: recorded rows, float64 arrays ``time``, ``step``, ``loss`` (T,) and every probe
    (T, ...); ``levels``: one :class:`LevelState` per level reached, in order; ``final``: the
    last state (equal to the last level's when every level was reached); ``status``:
    ``converged`` when every level was reached, else the engine's status of the failing segment
    (``max_steps``, ``max_evals``, ...); ``segments``: per level, the attempts
    (``{"method", "evals", "status"}``; two entries where the fallback ran); ``n_evals``:
    gradient evaluations over all attempts (GD: steps); ``wall_s``."""

    traj: dict[str, np.ndarray]
    levels: list[LevelState]
    final: LevelState
    status: str
    segments: list[dict[str, Any]] = field(default_factory=list)
    n_evals: int = 0
    wall_s: float = 0.0

    @property
    def methods(self) -> list[str]:
        """The method that ended each segment (flow: the fallback's where it ran)."""
        return [g["tries"][-1]["method"] for g in self.segments] or [self.final.method]

    @property
    def fallback_levels(self) -> list[float]:
        """Levels whose segment needed the fallback integrator."""
        return [g["level"] for g in self.segments if len(g["tries"]) > 1]


def _check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    lv = tuple(float(x) for x in levels)
    if not lv or any(not x > 0 for x in lv) or list(lv) != sorted(lv, reverse=True):
        raise ValueError(f"levels must be positive and descending, got {list(levels)}")
    if len(set(lv)) != len(lv):
        raise ValueError(f"levels must be distinct, got {list(levels)}")
    return lv


def _state(
    level: float | None,
    res: TrainResult,
    b: int,
    t: float,
    steps: int,
    probes: dict[str, Probe],
) -> LevelState:
    params = [p[b : b + 1].detach().clone() for p in res.params]
    with torch.no_grad():
        values = {
            k: fn(params)[0].detach().cpu().double().numpy().copy() for k, fn in probes.items()
        }
    return LevelState(
        level, float(res.final_loss[b]), float(t), int(steps), res.method, params, values
    )


def _piece(res: TrainResult, b: int, first: bool, t_off: float, step_off: int) -> dict:
    tr = res.run_trajectory(b)
    sl = slice(0 if first else 1, None)  # a resumed segment's first row is the previous last
    out = {
        "time": tr.time[sl].astype(np.float64) + t_off,
        "step": tr.step[sl].astype(np.int64) + step_off,
    }
    out.update({k: np.asarray(v[sl], dtype=np.float64) for k, v in tr.values.items()})
    return out


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def flow_levels_run(
    params: Sequence[torch.Tensor],
    loss_fn: LossFn,
    levels: Sequence[float],
    *,
    method: str = "LSODA",
    fallback: str | None = "BDF",
    rtol: float = 1e-7,
    atol: float = 1e-10,
    max_steps: int = 1000,
    max_evals: int = 20_000,
    probes: dict[str, Probe] | None = None,
) -> LevelsRun:
    """Gradient flow of ONE run (``params``: (1, ...) tensors) down the descending loss
    ``levels``, recording every accepted integrator step (see the module doc).

    Each level is one engine call with ``Stop(loss_below=level, max_steps, max_evals)`` with
    ``method``; if that segment ends with another status it is redone from the same state with
    ``fallback`` (``Stop(loss_below=level, max_evals)``; None: no fallback). The run stops at
    the first level neither reaches (``status`` says why; ``final`` is where it got). Resuming
    a run is calling this again from ``final.params`` with the remaining levels."""
    lv = _check_levels(levels)
    if params[0].shape[0] != 1:
        raise ValueError(f"flow_levels_run takes one run, got a batch of {params[0].shape[0]}")
    if max_steps < 1 or max_evals < 1:
        raise ValueError("max_steps and max_evals must be >= 1")
    probes = dict(probes or {})
    t0 = time.perf_counter()
    cur = list(params)
    t_off, step_off, n_evals = 0.0, 0, 0
    parts: list[dict[str, np.ndarray]] = []
    reached: list[LevelState] = []
    segments: list[dict[str, Any]] = []
    status = "converged"
    final: LevelState | None = None
    for k, level in enumerate(lv):
        tries: list[dict[str, Any]] = []
        for meth in (method, fallback):
            if meth is None:
                break
            stop = (
                Stop(loss_below=level, max_steps=max_steps, max_evals=max_evals)
                if meth == method
                else Stop(loss_below=level, max_evals=max_evals)
            )
            sched = Schedule(accepted=True)
            res = train(cur, loss_fn, Flow(method=meth, rtol=rtol, atol=atol), stop, sched, probes)
            n_evals += res.n_evals
            tries.append({"method": res.method, "evals": res.n_evals, "status": res.status[0]})
            if res.status[0] == "converged":
                break
        segments.append({"level": level, "tries": tries})
        parts.append(_piece(res, 0, k == 0, t_off, step_off))
        t_off += float(res.time[0])
        step_off += int(res.steps[0])
        if res.status[0] != "converged":
            status = res.status[0]
            final = _state(None, res, 0, t_off, step_off, probes)
            break
        cur = res.params
        reached.append(_state(level, res, 0, t_off, step_off, probes))
    return LevelsRun(
        traj=_concat(parts),
        levels=reached,
        final=final if final is not None else reached[-1],
        status=status,
        segments=segments,
        n_evals=n_evals,
        wall_s=time.perf_counter() - t0,
    )


def gd_levels_batch(
    params: Sequence[torch.Tensor],
    loss_fn: LossFn,
    levels: Sequence[float],
    *,
    lr: float,
    max_steps: int,
    per_decade: int = 40,
    probes: dict[str, Probe] | None = None,
) -> list[LevelsRun]:
    """Plain GD at ``lr`` for a batch of B runs (``params``: (B, ...) tensors) down the
    descending loss ``levels``: one engine call per level for the runs still going, so each
    level's state is the first step at or below it. ``max_steps`` is the batch's budget over
    all levels (no run takes more steps); a run out of budget gets status ``max_steps`` and its
    ``final`` state is where it got. Rows are recorded ``per_decade`` log-spaced steps per
    decade (plus each segment's ends). Returns one :class:`LevelsRun` per run (``time`` =
    steps * lr, ``n_evals`` = steps, ``wall_s`` = the batch's wall time)."""
    lv = _check_levels(levels)
    if not lr > 0 or max_steps < 1 or per_decade < 1:
        raise ValueError("lr must be > 0, max_steps and per_decade >= 1")
    probes = dict(probes or {})
    t0 = time.perf_counter()
    B = params[0].shape[0]
    cur = list(params)
    active = list(range(B))
    parts: list[list[dict[str, np.ndarray]]] = [[] for _ in range(B)]
    reached: list[list[LevelState]] = [[] for _ in range(B)]
    finals: list[LevelState | None] = [None] * B
    status = ["converged"] * B
    done = np.zeros(B, dtype=np.int64)
    used = 0
    for k, level in enumerate(lv):
        if not active:
            break
        budget = max_steps - used
        if budget < 1:
            for b in active:
                status[b] = "max_steps"
            break
        res = train(
            cur, loss_fn, GD(lr), Stop(loss_below=level, max_steps=budget),
            Schedule(per_decade=per_decade), probes,
        )  # fmt: skip
        used += int(res.steps.max())
        keep = []
        for i, b in enumerate(active):
            piece = _piece(res, i, k == 0, 0.0, int(done[b]))
            piece["time"] = piece["step"] * lr
            parts[b].append(piece)
            done[b] += int(res.steps[i])
            st = _state(level, res, i, done[b] * lr, done[b], probes)
            if res.status[i] == "converged":
                keep.append(i)
                reached[b].append(st)
            else:
                status[b] = res.status[i]
                st.level = None
                finals[b] = st
        active = [active[i] for i in keep]
        cur = [p[keep] for p in res.params]
    wall = time.perf_counter() - t0
    out = []
    for b in range(B):
        if finals[b] is None and status[b] != "converged":  # budget ran out between levels
            last = reached[b][-1]
            finals[b] = LevelState(
                None, last.loss, last.time, last.steps, last.method, last.params, last.values
            )
        final = finals[b] if finals[b] is not None else reached[b][-1]
        out.append(
            LevelsRun(
                traj=_concat(parts[b]),
                levels=reached[b],
                final=final,
                status=status[b],
                segments=[],
                n_evals=int(done[b]),
                wall_s=wall,
            )
        )
    return out
