"""Arora, Cohen, Hu & Luo (2019), appendix: the matrix sensing version of section A (PAPERS.md).

Same ground truth (100x100, rank 5, ||W*||_F = 100), observed through m Gaussian measurements
y_i = <A_i, W*>, A_i with i.i.d. N(0, 1/100^2) entries (``gaussian_sensing``), m = 2000 or 5000;
loss ``mse`` over the measurements; depth-N factorizations from ``gaussian`` init against
min ||X||_* s.t. |<A_i, X> - y_i| <= 1e-3 (see Memory). Paper: at 2000 measurements depth 3/4
reach ~9e-6 while nuclear-norm minimization stays at ~7e-4.

Memory: the m measurement matrices are stored once (5000 x 100 x 100 float64 = 400 MB) and the
residuals are one product with a flat view of them per step (``MatrixSensing``); nothing is copied
per step or per run (a batch of runs shares them). The convex baseline is solved by factorflow's
ADMM (:func:`~factorflow.baselines.nuclear_norm.nuclear_norm_min_sensing_admm`, ``nnm_solver =
"admm"``), which keeps ``A`` and the m x m matrix ``A A^T``: 45 s at 2000 measurements on one
core. CVXPY + SCS (``nnm_solver = "scs"``) holds the dense m x 10^4 constraint block in its KKT
factorization: 342 s on one idle core at 2000 measurements (``benchmarks/bench_nuclear_norm.py``,
solutions equal to 1.2e-5 relative), ~16 minutes on 2 busy cores, growing about linearly with
m. Quick scale solves it at its lower count only, paper
scale at 2000 and 5000.

Scales: ``quick`` = 1 seed, 50x50 rank 5 with 850 and 1500 measurements (see ``QUICK``), init
1e-3, depths 1-3 by flow; ``paper`` = 1 seed, the four init
scales, depths 1-4 by flow, and the paper's group RMSProp for depth 3 at init 1e-3 and 2000
measurements (each sensing evaluation costs ~3x a completion one). The grid, claims and figures
are those of :mod:`factorflow.experiments.arora2019_completion`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from factorflow.experiments.arora2019_completion import (
    PAPER_SCALE as COMPLETION_PAPER,
)
from factorflow.experiments.arora2019_completion import (
    BaselineResult,
    Problem,
    Settings,
    apply_options,
    check_nnm_solver,
    completion_claims,
    finish,
    run_grid,
)
from factorflow.experiments.common import n_seeds
from factorflow.problems.matrix import MatrixSensing, gaussian_sensing

ID = "arora2019-sensing"
TITLE = "Depth beats nuclear-norm minimization on matrix sensing (Arora et al. 2019, appendix)"
PAPER = (
    "Arora, Cohen, Hu, Luo. Implicit Regularization in Deep Matrix Factorization. NeurIPS 2019 "
    "(arXiv:1905.13655), appendix: matrix sensing with Gaussian measurements"
)

PAPER_NUMBERS = {
    "recon_mse_2000": {"nnm": "~7e-4", "depth3/4": "~9e-6"},
    "recon_mse_5000": None,
}

PAPER_SCALE = dataclasses.replace(
    COMPLETION_PAPER,
    rmsprop_depths=(3,),
    rmsprop_init_scales=(1e-3,),
    rmsprop_n_obs=(2000,),
)
#: Quick: a half-size problem (50x50, rank 5), since a depth-3 flow on 100x100 with 2000
#: measurements takes ~9 minutes on one core (2684 RK45 steps of two products with the
#: 2000 x 10^4 measurement matrix each, memory-bound). The counts sit in the paper's regime, one
#: below and one above where nuclear-norm minimization recovers; measured on seed 0 (recon_mse,
#: nuclear norm vs depth 3): 700 measurements 7.0e-2 vs 1.6e-4, 850: 7.0e-4 vs 7.7e-6 (the
#: paper's 100x100 at 2000: ~7e-4 vs ~9e-6), 1000: 4.8e-6 vs 5.1e-6 (both recover); 1500: every
#: depth >= 2 below 1e-4. About 2 minutes on one core (112 s measured).
QUICK = dataclasses.replace(
    PAPER_SCALE,
    shape=(50, 50),
    n_obs=(850, 1500),
    depths=(1, 2, 3),
    init_scales=(1e-3,),
    optimizers=("flow",),
    nnm_n_obs=(850,),
)
SEEDS = {"quick": 1, "paper": 1}
CLAIMS = ("deep_beats_nnm", "all_recover_at_high_n", "flow_matches_group_rmsprop")


def _solve_nnm_sensing(problem: Problem, tol: float, solver: str) -> BaselineResult:
    from factorflow.baselines.nuclear_norm import (
        SolverError,
        nuclear_norm_min_sensing,
        nuclear_norm_min_sensing_admm,
    )

    assert isinstance(problem, MatrixSensing)
    solve = (
        nuclear_norm_min_sensing_admm
        if check_nnm_solver(solver) == "admm"
        else nuclear_norm_min_sensing
    )
    try:
        res = solve(problem.A, problem.y, tol=tol, allow_inaccurate=True)
    except SolverError as e:
        return BaselineResult(None, "failed", float("nan"), float("nan"), str(e), solver)
    note = None if res.status == "optimal" else f"{res.solver} status {res.status}"
    return BaselineResult(res.X, res.status, res.solve_time_s, res.max_violation, note, solver)


def run(
    out_dir: Path,
    *,
    scale: str = "quick",
    seeds: int | None = None,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the sensing grid (see the module doc); figures ``sensing_<m>.png``."""
    if scale not in ("quick", "paper"):
        raise ValueError(f"scale must be quick or paper, got {scale!r}")
    s: Settings = apply_options(QUICK if scale == "quick" else PAPER_SCALE, dict(options or {}))
    k = n_seeds(seeds, scale, SEEDS["quick"], SEEDS["paper"])
    Path(out_dir).mkdir(parents=True, exist_ok=True)

    def make_problem(n_obs: int, seed: int) -> Problem:
        return gaussian_sensing(s.shape, s.rank, n_obs, seed)

    check_nnm_solver(s.nnm_solver)
    rows, walls = run_grid(
        s, k, device, make_problem, lambda p: _solve_nnm_sensing(p, s.nnm_tol, s.nnm_solver)
    )
    claims = completion_claims(
        rows,
        nnm_min=1e-4,
        paper=PAPER_NUMBERS,
        what="measurements",
        include=CLAIMS,
    )
    return finish(Path(out_dir), s, k, device, rows, walls, claims, "sensing", "Sensing")
