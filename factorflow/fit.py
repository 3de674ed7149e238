"""From a :class:`~factorflow.config.RunConfig` to trained runs and run folders:
config -> problem (seeded) -> initial factors (one seed per run) -> dynamics -> results."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factorflow import metrics
from factorflow.config import (
    OptimizerConfig,
    ProblemConfig,
    RunConfig,
    StopConfig,
    config_to_dict,
)
from factorflow.dynamics import Flow, Schedule, Stop, TrainResult, make_optimizer, train
from factorflow.factorizations.dmf import end_to_end, init_dmf
from factorflow.objectives import DMFObjective
from factorflow.problems.matrix import (
    MatrixCompletion,
    MatrixSensing,
    gaussian_sensing,
    razin_2x2,
    razin_2x2_perturbed,
    synthetic_completion,
)
from factorflow.results import write_run

__all__ = [
    "FitRun",
    "build_optimizer",
    "build_problem",
    "build_stop",
    "fit",
    "matrix_probes",
    "matrix_run_summary",
]

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; a clear error when CUDA is asked for but not there."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but torch sees no CUDA GPU")
    return dev


def build_problem(
    pc: ProblemConfig, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> MatrixCompletion | MatrixSensing:
    """The seeded problem a config names."""
    if pc.kind == "synthetic":
        prob = synthetic_completion(pc.shape, pc.rank, pc.n_obs, pc.seed)
    elif pc.kind == "sensing":
        prob = gaussian_sensing(pc.shape, pc.rank, pc.n_obs, pc.seed)
    elif pc.kind == "razin2x2":
        prob = razin_2x2()
    else:
        prob = razin_2x2_perturbed(pc.eps)
    return prob.to(dtype, device)


def build_optimizer(oc: OptimizerConfig) -> Any:
    """A discrete optimizer or a :class:`Flow` from the config."""
    if oc.name == "flow":
        return Flow(method=oc.method, rtol=oc.rtol, atol=oc.atol)
    if oc.name == "group_rmsprop":
        return make_optimizer("group_rmsprop", lr=oc.lr, beta=oc.beta, eps=oc.eps)
    return make_optimizer(oc.name, lr=oc.lr)


def build_stop(sc: StopConfig) -> Stop:
    """Zero means "no limit"."""
    return Stop(
        loss_below=sc.loss_below or None,
        max_steps=sc.max_steps or None,
        max_time=sc.max_time or None,
        max_evals=sc.max_evals or None,
        max_wall_s=sc.max_wall_s or None,
    )


def matrix_probes(top_k: int = 10, square: bool = False) -> dict[str, Any]:
    """Probes of the end-to-end matrix recorded along a trajectory (each (B, ...))."""

    def top(ps: list[torch.Tensor]) -> torch.Tensor:
        s = metrics.singular_values(end_to_end(ps))
        return s[..., :top_k]

    probes: dict[str, Any] = {
        "singular_values": top,
        "effective_rank": lambda ps: metrics.effective_rank(end_to_end(ps)),
        "nuclear_norm": lambda ps: metrics.nuclear_norm(end_to_end(ps)),
        "fro_norm": lambda ps: metrics.frobenius_norm(end_to_end(ps)),
    }
    if square:
        probes["det"] = lambda ps: metrics.determinant(end_to_end(ps))
    return probes


def matrix_run_summary(W: torch.Tensor, W_star: torch.Tensor | None) -> dict[str, Any]:
    """Final metrics of one end-to-end matrix ``W`` (d1, d2) (named as in DESIGN.md)."""
    W = W.detach().to(torch.float64).cpu()
    out: dict[str, Any] = {
        "nuclear_norm": float(metrics.nuclear_norm(W)),
        "fro_norm": float(metrics.frobenius_norm(W)),
        "spectral_norm": float(metrics.spectral_norm(W)),
        "effective_rank": float(metrics.effective_rank(W)),
        "singular_values": metrics.singular_values(W)[:10].tolist(),
    }
    if W.shape[0] == W.shape[1]:
        out["det"] = float(metrics.determinant(W))
    if W_star is not None:
        Ws = W_star.detach().to(torch.float64).cpu()
        out["recon_mse"] = float(metrics.recon_mse(W, Ws))
        out["rel_fro_error"] = float(metrics.rel_fro_error(W, Ws))
    return out


@dataclass
class FitRun:
    """One trained run: its config (``seeds = (seed,)``), summary, trajectory and factors."""

    config: RunConfig
    summary: dict[str, Any]
    trajectory: dict[str, np.ndarray]
    factors: list[np.ndarray]

    def write(self, run_dir: str | Path, overwrite: bool = False) -> Path:
        return write_run(
            run_dir,
            config_to_dict(self.config),
            self.summary,
            self.trajectory,
            self.factors,
            overwrite=overwrite,
        )


def fit(cfg: RunConfig, *, progress: bool = False) -> list[FitRun]:
    """Train one run per seed of ``cfg`` as one batch; return one :class:`FitRun` per seed."""
    dtype = DTYPES[cfg.dtype]
    device = resolve_device(cfg.device)
    problem = build_problem(cfg.problem, dtype, device)
    m = cfg.model
    factors, init_norms = init_dmf(
        problem.shape,
        m.depth,
        init=m.init,
        init_scale=m.init_scale,
        seeds=cfg.seeds,
        width=m.width or None,
        balance=m.balance,
        det_sign=m.det_sign,
        dtype=dtype,
        device=device,
    )
    objective = DMFObjective(problem, cfg.loss)
    r = cfg.record
    schedule = Schedule(every=r.every or None, per_decade=r.per_decade or None, start=r.start)
    res: TrainResult = train(
        factors,
        objective,
        build_optimizer(cfg.optimizer),
        build_stop(cfg.stop),
        schedule,
        matrix_probes(r.top_k, problem.shape[0] == problem.shape[1]),
        progress=progress,
        desc=f"{cfg.optimizer.name} depth {m.depth}",
    )
    W_final = end_to_end(res.params)
    out = []
    for b, seed in enumerate(cfg.seeds):
        summary = {
            "seed": seed,
            "status": res.status[b],
            "final_loss": float(res.final_loss[b]),
            "steps": int(res.steps[b]),
            "time": float(res.time[b]),
            "method": res.method,
            "n_evals_batch": res.n_evals,
            "wall_s_batch": res.wall_s,
            "batch_size": len(cfg.seeds),
            "init_fro_norm": float(init_norms[b]),
            "n_obs": problem.n_obs,
            "loss_name": cfg.loss,
            **matrix_run_summary(W_final[b], problem.ground_truth),
        }
        traj = res.run_trajectory(b).as_arrays()
        out.append(
            FitRun(
                replace(cfg, seeds=(seed,)),
                summary,
                traj,
                [p[b].detach().cpu().numpy() for p in res.params],
            )
        )
    return out
