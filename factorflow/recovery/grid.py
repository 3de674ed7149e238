"""The recovery grid of :mod:`factorflow.recovery` (see there for the study): its settings,
its row schema, the nuclear-norm baseline solve and :func:`recovery_grid`, which trains every
(seed, observation count, depth, optimizer, init scale) and returns the tidy rows; each baseline
solve and each training run is one cell of the runner (``cell``), so an interrupted grid
resumes. Seed s draws the problem and the initial factors (``init_dmf(seeds=[s])``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from factorflow import metrics
from factorflow.cell_pool import map_cells as map_cells_here  # one process, no store
from factorflow.config import OptimizerConfig
from factorflow.dynamics import Schedule, Stop, train
from factorflow.factorizations.dmf import end_to_end, init_dmf
from factorflow.fit import build_optimizer
from factorflow.objectives import DMFObjective
from factorflow.problems.matrix import MatrixCompletion, MatrixSensing

__all__ = [
    "COLUMNS",
    "NNM_SOLVERS",
    "RecoverySettings",
    "recovery_grid",
    "solve_nuclear_norm",
]

Problem = MatrixCompletion | MatrixSensing
NNM_SOLVERS = ("admm", "scs")


@dataclass(frozen=True)
class RecoverySettings:
    """The grid of Arora et al. 2019, Sec. 5: ``shape`` rank-``rank`` ground truth, ``n_obs``
    observations (entries or Gaussian measurements), depths x init scales by gradient flow
    (``flow``), the authors' group RMSProp (``rmsprop``) on the sub-grid ``rmsprop_depths`` x
    ``rmsprop_init_scales`` x ``rmsprop_n_obs`` of the first ``rmsprop_seeds`` seeds, loss ``mse``
    to ``loss_below``; nuclear-norm minimization (``nnm_solver``: factorflow's ADMM or CVXPY +
    SCS, constraint half-width ``nnm_tol``) at ``nnm_n_obs`` (empty: every count)."""

    seeds: int = 1
    shape: tuple[int, int] = (100, 100)
    rank: int = 5
    n_obs: tuple[int, ...] = (2000, 5000)
    depths: tuple[int, ...] = (1, 2, 3, 4)
    init: str = "gaussian"
    init_scales: tuple[float, ...] = (1e-3, 1e-4, 1e-5, 1e-6)
    loss: str = "mse"
    loss_below: float = 1e-6
    optimizers: tuple[str, ...] = ("flow", "group_rmsprop")
    flow: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(name="flow", method="RK45", rtol=1e-7, atol=1e-10)
    )
    flow_max_evals: int = 200_000
    rmsprop: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(name="group_rmsprop", lr=1e-3, beta=0.99, eps=1e-4)
    )
    max_steps: int = 1_000_000
    rmsprop_depths: tuple[int, ...] = (2, 3, 4)
    rmsprop_init_scales: tuple[float, ...] = (1e-3, 1e-4, 1e-5, 1e-6)
    rmsprop_n_obs: tuple[int, ...] = (2000, 5000)
    rmsprop_seeds: int = 1
    nnm: bool = True
    nnm_tol: float = 1e-3
    nnm_solver: str = "admm"
    nnm_n_obs: tuple[int, ...] = ()
    dtype: str = "float64"

    def __post_init__(self) -> None:
        if self.nnm_solver not in NNM_SOLVERS:
            raise ValueError(f"nnm_solver must be one of {NNM_SOLVERS}, got {self.nnm_solver!r}")
        bad = sorted(set(self.optimizers) - {"flow", "group_rmsprop"})
        if bad:
            raise ValueError(f"optimizers must be flow or group_rmsprop, got {bad}")
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be float64 or float32, got {self.dtype!r}")
        if min(self.shape) < 1 or not 1 <= self.rank <= min(self.shape):
            raise ValueError(
                f"shape must be two sizes >= 1 and rank in [1, min(shape)], got shape "
                f"{list(self.shape)}, rank {self.rank}"
            )
        cells = self.shape[0] * self.shape[1]
        for key, values, ok, want in (
            ("depths", self.depths, lambda v: v >= 1, ">= 1"),
            (
                "n_obs",
                self.n_obs,
                lambda v: 1 <= v <= cells,
                f"in [1, {cells}] (the entries of shape {list(self.shape)})",
            ),
            ("init_scales", self.init_scales, lambda v: 0 < v < math.inf, "finite and > 0"),
        ):
            if not values or not all(ok(v) for v in values):
                raise ValueError(f"{key} must list values {want}, got {list(values)}")


#: Columns of the rows :func:`recovery_grid` returns (the experiments' schema).
COLUMNS = {
    "method": "str",  # dmf | nuclear_norm_min | ground_truth
    "n_obs": "int",
    "seed": "int",
    "depth": "int",
    "optimizer": "str",
    "init": "str",
    "init_scale": "float",
    "init_fro_norm": "float",
    "status": "str",
    "final_loss": "float",
    "steps": "int",
    "time": "float",
    "n_evals": "int",
    "wall_s": "float",
    "recon_mse": "float",
    "rel_fro_error": "float",
    "nuclear_norm": "float",
    "effective_rank": "float",
    "singular_values": "json",
    "max_violation": "float",
    "error": "str",
}


def _matrix_metrics(X: torch.Tensor, W_star: torch.Tensor) -> dict[str, Any]:
    """recon_mse, rel_fro_error, nuclear norm, effective rank and the top 10 singular values of
    ``X`` (d1, d2) against ``W_star`` (DESIGN.md, "Definitions")."""
    X, W_star = X.to(torch.float64).cpu(), W_star.to(torch.float64).cpu()
    return {
        "recon_mse": float(metrics.recon_mse(X, W_star)),
        "rel_fro_error": float(metrics.rel_fro_error(X, W_star)),
        "nuclear_norm": float(metrics.nuclear_norm(X)),
        "effective_rank": float(metrics.effective_rank(X)),
        "singular_values": metrics.singular_values(X)[:10].tolist(),
    }


def solve_nuclear_norm(problem: Problem, solver: str = "admm", tol: float = 1e-3) -> dict[str, Any]:
    """``min ||X||_* s.t. |<A_i, X> - y_i| <= tol`` on ``problem`` (completion: ``<A_i, X> =
    X_jk``) by ``solver`` (``admm``: factorflow's; ``scs``: CVXPY + SCS), as a row: status,
    solve time, largest constraint violation, and the metrics of the solution (none if the
    solver failed, with the error)."""
    from factorflow.baselines.nuclear_norm import (
        SolverError,
        nuclear_norm_min,
        nuclear_norm_min_admm,
        nuclear_norm_min_sensing,
        nuclear_norm_min_sensing_admm,
    )

    if solver not in NNM_SOLVERS:
        raise ValueError(f"nnm solver must be one of {NNM_SOLVERS}, got {solver!r}")
    row: dict[str, Any] = {"method": "nuclear_norm_min", "optimizer": solver}
    try:
        if isinstance(problem, MatrixSensing):
            solve = nuclear_norm_min_sensing_admm if solver == "admm" else nuclear_norm_min_sensing
            res = solve(problem.A, problem.y, tol=tol, allow_inaccurate=True)
        else:
            solve = nuclear_norm_min_admm if solver == "admm" else nuclear_norm_min
            res = solve(problem.obs, tol=tol, allow_inaccurate=True)
    except SolverError as e:
        return {**row, "status": "failed", "error": str(e)}
    X = torch.as_tensor(res.X, dtype=torch.float64)
    W_star = problem.ground_truth.to(torch.float64)
    residuals = problem.residuals(X[None].to(W_star.dtype))
    return {
        **row,
        "status": res.status,
        "wall_s": res.solve_time_s,
        "max_violation": res.max_violation,
        "final_loss": float(residuals.square().mean()),
        **_matrix_metrics(X, W_star),
    }


def _scales_for(s: RecoverySettings, optimizer: str, depth: int, n_obs: int, seed: int) -> tuple:
    if optimizer == "flow":
        return s.init_scales
    if depth in s.rmsprop_depths and n_obs in s.rmsprop_n_obs and seed < s.rmsprop_seeds:
        return s.rmsprop_init_scales
    return ()


MapCells = Callable[..., list[Any]]  # (items, on_done=) -> values: Context.map_cells's shape


def recovery_grid(
    s: RecoverySettings,
    make_problem: Callable[[int, int], Problem],
    device: torch.device | str = "cpu",
    log: Callable[[str], None] = print,
    map_cells: MapCells = map_cells_here,
) -> list[dict[str, Any]]:
    """Train the grid ``s`` (one run per cell) and solve the baseline; ``make_problem(n_obs,
    seed)`` builds a CPU float64 problem (deterministic in its arguments; it must pickle, e.g.
    a :func:`functools.partial` of a module-level function, for cells on other processes).
    Returns the rows (schema :data:`COLUMNS`) in grid order.

    ``map_cells(items, on_done=)``: computes the cells ``[(key, compute), ...]``, each baseline
    solve and each training run (the runner's :meth:`~factorflow.context.Context.map_cells`,
    so an interrupted grid resumes and ``--workers`` spreads the cells over processes). Each
    cell builds its own problem from ``(n_obs, seed)``; a line is logged as each finishes."""
    layout: list[tuple[dict[str, Any], str | None]] = []  # (row part, cell key or None)
    items: list[tuple[str, Callable[[], Any]]] = []
    for seed in range(s.seeds):
        for n_obs in s.n_obs:
            W_star = make_problem(n_obs, seed).ground_truth.to(torch.float64)
            common = {"n_obs": n_obs, "seed": seed}
            layout.append(
                ({**common, "method": "ground_truth", **_matrix_metrics(W_star, W_star)}, None)
            )
            if s.nnm and (not s.nnm_n_obs or n_obs in s.nnm_n_obs):
                key = f"nnm-seed{seed}-n{n_obs}"
                items.append(
                    (key, partial(_nnm_cell, make_problem, n_obs, seed, s.nnm_solver, s.nnm_tol))
                )
                layout.append((common, key))
            for depth in s.depths:
                for opt in s.optimizers:
                    for scale in _scales_for(s, opt, depth, n_obs, seed):
                        key = f"dmf-seed{seed}-n{n_obs}-depth{depth}-{opt}-init{scale:g}"
                        cell = partial(
                            _train_cell, s, make_problem, n_obs, seed, opt, depth, scale, device
                        )
                        items.append((key, cell))
                        layout.append((common, key))
    where = {key: common for common, key in layout if key is not None}

    def done(key: str, r: dict[str, Any]) -> None:
        head = f"seed {where[key]['seed']} n_obs {where[key]['n_obs']}"
        if r["method"] == "nuclear_norm_min":
            log(
                f"{head}: nuclear-norm min recon_mse {r.get('recon_mse', math.nan):.3e} "
                f"({r.get('wall_s', math.nan):.1f} s, {s.nnm_solver} {r['status']})"
            )
        else:
            log(
                f"{head} depth {r['depth']} {r['optimizer']} init {r['init_scale']:.0e}: "
                f"recon_mse {r['recon_mse']:.3e} ({r['status']}, loss {r['final_loss']:.2e}, "
                f"{r['steps']} steps, {r['wall_s']:.1f} s)"
            )

    values = dict(zip([k for k, _ in items], map_cells(items, on_done=done), strict=True))
    return [{**part, **(values[key] if key else {})} for part, key in layout]


def _nnm_cell(
    make_problem: Callable[[int, int], Problem], n_obs: int, seed: int, solver: str, tol: float
) -> dict[str, Any]:
    return solve_nuclear_norm(make_problem(n_obs, seed), solver, tol)


def _train_cell(
    s: RecoverySettings,
    make_problem: Callable[[int, int], Problem],
    n_obs: int,
    seed: int,
    opt: str,
    depth: int,
    scale: float,
    device: torch.device | str,
) -> dict[str, Any]:
    dtype = {"float64": torch.float64, "float32": torch.float32}[s.dtype]
    dev = torch.device(device)
    objective = DMFObjective(make_problem(n_obs, seed).to(dtype, dev), s.loss)
    return _train_one(s, objective, opt, depth, scale, seed, dtype, dev)


def _train_one(
    s: RecoverySettings,
    objective: DMFObjective,
    opt: str,
    depth: int,
    scale: float,
    seed: int,
    dtype: torch.dtype,
    dev: torch.device,
) -> dict[str, Any]:
    problem = objective.problem
    factors, norms = init_dmf(
        problem.shape, depth, init=s.init, init_scale=[scale], seeds=[seed], dtype=dtype, device=dev
    )
    if opt == "flow":
        optimizer, stop = (
            build_optimizer(s.flow),
            Stop(loss_below=s.loss_below, max_evals=s.flow_max_evals),
        )
    else:
        optimizer, stop = (
            build_optimizer(s.rmsprop),
            Stop(loss_below=s.loss_below, max_steps=s.max_steps),
        )
    t0 = time.perf_counter()
    res = train(factors, objective, optimizer, stop, Schedule(per_decade=2))
    wall = time.perf_counter() - t0
    W = end_to_end(res.params).detach()[0]
    return {
        "method": "dmf",
        "depth": depth,
        "optimizer": opt,
        "init": s.init,
        "init_scale": float(scale),
        "init_fro_norm": float(norms[0]),
        "status": res.status[0],
        "final_loss": float(res.final_loss[0]),
        "steps": int(res.steps[0]),
        "time": float(res.time[0]),
        "n_evals": int(res.n_evals),
        "wall_s": wall,
        **_matrix_metrics(W, problem.ground_truth),
    }
