"""Benchmark of the razin2020-2x2 experiment: the full paper grid to loss 1e-4 with gradient flow
(the experiment's way) vs plain GD one run at a time (the original code's way). Run on demand:

    python benchmarks/bench_razin2020.py [--measure-steps 5000] [--out FILE]

Grid: depths 2, 3, 4 x balanced / unbalanced x per-layer std alpha in {8e-3, 1e-3} x seeds
0, 1, 2 = 36 runs, 2x2 problem, half_sse, det(W(0)) > 0, stop at loss 1e-4.

* ``flow``: the experiment's :func:`~factorflow.experiments.razin2020_2x2.flow_levels_run`, one
  run per integrator call (LSODA), down the levels 1e-2, 1e-3, 1e-4 (rows at each), every
  accepted step recorded. Measured in full. (Batching flow runs into one integrator call was
  measured slower with LSODA, see the experiment's module doc; GD is where batching pays.)
* ``gd``: plain GD at lr 3e-3, one run at a time, step by step (the engine's ``train`` with
  ``GD`` and B = 1). Running it is out of reach (3e5 to 2e8 steps per run, ~1e11 us in total), so
  its wall time is EXTRAPOLATED: the engine loop is timed on ``--measure-steps`` steps per depth
  (B = 1), and each run's step count is estimated as (flow time to 1e-4) / lr (GD time =
  steps x lr tracks the flow time; bench_engine_2x2.py checks this on one depth-3 run, and the
  experiment's gd-tracks-flow claim on the runs it ran). Also printed: the same with the
  rule-of-thumb 3.3e6 steps per run, and batched GD (one batch of 12 per depth, timed on the
  same number of steps) for reference.

Prints the totals and the ratio; writes JSON (default ``benchmarks/results/bench_razin2020.json``).
One thread; ratios within one process are what counts on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from factorflow.dynamics import GD, Schedule, Stop, train  # noqa: E402
from factorflow.experiments.razin2020_2x2 import flow_levels_run  # noqa: E402
from factorflow.factorizations.dmf import init_dmf  # noqa: E402
from factorflow.objectives import DMFObjective  # noqa: E402
from factorflow.problems.matrix import razin_2x2  # noqa: E402

DEPTHS, ALPHAS, BALANCED, SEEDS = (2, 3, 4), (8e-3, 1e-3), (True, False), (0, 1, 2)
LR, LEVELS = 3e-3, (1e-2, 1e-3, 1e-4)
FLOW = {"method": "LSODA", "fallback": "BDF", "rtol": 1e-7, "atol": 1e-10, "max_steps": 1000}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--measure-steps", type=int, default=5000)
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "bench_razin2020.json",
    )
    args = ap.parse_args()
    obj = DMFObjective(razin_2x2(), "half_sse")

    def init(depth, alpha, balanced, seed):
        f, _ = init_dmf(
            (2, 2),
            depth,
            init="normal",
            init_scale=alpha,
            seeds=[seed],
            width=2,
            balance=balanced,
            det_sign=1,
        )
        return f

    # ---- flow, the experiment's way, all 36 runs
    runs = []
    t_all = time.perf_counter()
    for depth in DEPTHS:
        for alpha in ALPHAS:
            for balanced in BALANCED:
                for seed in SEEDS:
                    out = flow_levels_run(init(depth, alpha, balanced, seed), obj, LEVELS, **FLOW)
                    runs.append(
                        {
                            "depth": depth,
                            "alpha": alpha,
                            "balanced": balanced,
                            "seed": seed,
                            "status": out["status"],
                            "time": out["final_time"],
                            "evals": out["n_evals"],
                            "wall_s": out["wall_s"],
                        }
                    )
    flow_wall = time.perf_counter() - t_all
    print(
        f"flow: {len(runs)} runs to loss {LEVELS[-1]:g} in {flow_wall:.1f} s "
        f"({sum(r['evals'] for r in runs)} gradient evaluations)"
    )
    bad = [r for r in runs if r["status"] != "converged"]
    if bad:
        print(f"  WARNING: {len(bad)} flow runs did not converge: {bad}")

    # ---- GD per-step cost, engine loop, B = 1 and B = 12, per depth
    K = args.measure_steps
    us1, us12 = {}, {}
    for depth in DEPTHS:
        f = init(depth, 8e-3, False, 0)
        t = time.perf_counter()
        train(f, obj, GD(LR), Stop(max_steps=K), Schedule(per_decade=10))
        us1[depth] = 1e6 * (time.perf_counter() - t) / K
        fb = [
            torch.cat(x)
            for x in zip(
                *[init(depth, a, b, s) for a in ALPHAS for b in BALANCED for s in SEEDS],
                strict=True,
            )
        ]
        t = time.perf_counter()
        train(fb, obj, GD(LR), Stop(max_steps=K), Schedule(per_decade=10))
        us12[depth] = 1e6 * (time.perf_counter() - t) / K
        print(
            f"gd engine loop, depth {depth}: {us1[depth]:.1f} us/step (B = 1), "
            f"{us12[depth]:.1f} us/step (B = 12, all runs of the depth)"
        )

    # ---- extrapolation
    for r in runs:
        r["gd_steps_est"] = r["time"] / LR
    gd_wall = sum(1e-6 * us1[r["depth"]] * r["gd_steps_est"] for r in runs)
    gd_wall_thumb = sum(1e-6 * us1[r["depth"]] * 3.3e6 for r in runs)
    gd_wall_batched = sum(
        1e-6 * us12[d] * max(r["gd_steps_est"] for r in runs if r["depth"] == d) for d in DEPTHS
    )
    ratio = gd_wall / flow_wall
    print()
    print("estimated GD steps per run (flow time / lr):")
    for d in DEPTHS:
        for a in ALPHAS:
            s = [r["gd_steps_est"] for r in runs if r["depth"] == d and r["alpha"] == a]
            print(f"  depth {d}, alpha {a:g}: {min(s):.2e} .. {max(s):.2e}")
    print(
        f"GD one run at a time (EXTRAPOLATED from {K} timed steps per depth): "
        f"{gd_wall:.3g} s = {gd_wall / 3600:.3g} h"
    )
    print(
        f"  with the rule of thumb 3.3e6 steps per run instead: {gd_wall_thumb:.3g} s "
        f"(ratio {gd_wall_thumb / flow_wall:.0f}x)"
    )
    print(
        f"  batched GD, one batch per depth (extrapolated): {gd_wall_batched:.3g} s "
        f"(ratio {gd_wall_batched / flow_wall:.0f}x)"
    )
    print(f"flow (measured): {flow_wall:.1f} s")
    print(
        f"ratio GD one at a time / flow: {ratio:.3g}x   "
        f"(target >= 100x: {'met' if ratio >= 100 else 'NOT met'})"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "razin2020",
                "grid": {
                    "depths": DEPTHS,
                    "alphas": ALPHAS,
                    "balanced": BALANCED,
                    "seeds": SEEDS,
                    "lr": LR,
                    "levels": LEVELS,
                },
                "flow_wall_s": flow_wall,
                "gd_one_at_a_time_wall_s_extrapolated": gd_wall,
                "gd_rule_of_thumb_wall_s_extrapolated": gd_wall_thumb,
                "gd_batched_wall_s_extrapolated": gd_wall_batched,
                "us_per_step_B1": us1,
                "us_per_step_B12": us12,
                "measure_steps": K,
                "ratio": ratio,
                "runs": runs,
                "python": platform.python_version(),
                "torch": torch.__version__,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
