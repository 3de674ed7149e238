"""Benchmark: nuclear-norm minimization by factorflow's ADMM vs CVXPY + SCS, on the problems of
Arora et al. (2019) (PAPERS.md section A and its sensing appendix). Run on demand:

    python benchmarks/bench_nuclear_norm.py [--scs-sensing] [--out FILE]

Problems (seed 0, ``tol = 1e-3``): 100x100 rank-5 completion from 2000 and 5000 observed entries
(``synthetic_completion``) and 100x100 rank-5 sensing from 2000 Gaussian measurements
(``gaussian_sensing``). For each, both solvers in this process, one thread: wall time, status,
iterations, objective ``||X||_*``, largest constraint violation, ``recon_mse`` against the ground
truth, and the relative Frobenius difference of the two solutions. SCS on the sensing problem
takes ~6 minutes on one idle core (its KKT factorization holds the dense 2000 x 10^4 block), so
it runs only with ``--scs-sensing``.

Measured (one idle core): completion 2000 entries ADMM 1.1 s vs SCS 12.8 s, 5000 entries 32.4 s
vs 70.2 s, sensing 2000 measurements 45.5 s vs 342.5 s; solutions equal to 1.1e-5 / 3.8e-5 /
1.2e-5 relative.

Prints a table and writes JSON (default ``benchmarks/results/bench_nuclear_norm.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from factorflow._threads import set_threads
from factorflow.baselines.nuclear_norm import (
    nuclear_norm_min,
    nuclear_norm_min_admm,
    nuclear_norm_min_sensing,
    nuclear_norm_min_sensing_admm,
)
from factorflow.problems.matrix import gaussian_sensing, synthetic_completion

RESULTS = Path(__file__).resolve().parent / "results"


def _measure(solve, truth: np.ndarray) -> tuple[dict, np.ndarray]:
    t0 = time.perf_counter()
    res = solve()
    wall = time.perf_counter() - t0
    return {
        "solver": res.solver,
        "wall_s": wall,
        "status": res.status,
        "iterations": res.solver_iters,
        "objective": res.objective,
        "max_violation": res.max_violation,
        "recon_mse": float(np.mean((res.X - truth) ** 2)),
    }, res.X


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scs-sensing", action="store_true", help="also SCS on sensing (~6 min)")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_nuclear_norm.json")
    args = ap.parse_args()
    set_threads(1)
    cases = []
    for n_obs in (2000, 5000):
        p = synthetic_completion((100, 100), 5, n_obs, 0)
        cases.append(
            (
                f"completion, {n_obs} entries",
                p.ground_truth.cpu().numpy(),
                lambda p=p: nuclear_norm_min_admm(p.obs),
                lambda p=p: nuclear_norm_min(p.obs),
            )
        )
    s = gaussian_sensing((100, 100), 5, 2000, 0)
    cases.append(
        (
            "sensing, 2000 measurements",
            s.ground_truth.cpu().numpy(),
            lambda: nuclear_norm_min_sensing_admm(s.A, s.y),
            (lambda: nuclear_norm_min_sensing(s.A, s.y)) if args.scs_sensing else None,
        )
    )
    out = {"python": platform.python_version(), "threads": 1, "tol": 1e-3, "cases": []}
    for name, truth, admm, scs in cases:
        row = {"problem": name, "truth_nuclear_norm": float(np.linalg.norm(truth, "nuc"))}
        row["admm"], X_admm = _measure(admm, truth)
        if scs is not None:
            row["scs"], X_scs = _measure(scs, truth)
            row["rel_diff_admm_scs"] = float(np.linalg.norm(X_admm - X_scs) / np.linalg.norm(X_scs))
            row["speedup_admm_over_scs"] = row["scs"]["wall_s"] / row["admm"]["wall_s"]
        out["cases"].append(row)
        parts = [f"{name}: ADMM {row['admm']['wall_s']:.1f} s ({row['admm']['status']}, "]
        parts.append(
            f"recon_mse {row['admm']['recon_mse']:.3e}, ||X||_* {row['admm']['objective']:.4f})"
        )
        if scs is not None:
            parts.append(
                f"; SCS {row['scs']['wall_s']:.1f} s (recon_mse {row['scs']['recon_mse']:.3e}, "
                f"||X||_* {row['scs']['objective']:.4f}); solutions differ by "
                f"{row['rel_diff_admm_scs']:.1e} relative; {row['speedup_admm_over_scs']:.1f}x"
            )
        print("".join(parts), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
