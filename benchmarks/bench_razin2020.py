"""Benchmark of the razin2020-2x2 experiment at paper scale: the grid the experiment runs, flow
(measured) against plain GD (extrapolated). Run on demand:

    python benchmarks/bench_razin2020.py [--measure-steps 5000] [--out FILE]

The grid is the experiment's ``PAPER`` settings (:mod:`factorflow.experiments.razin2020_2x2`),
2x2 problem, half_sse, det(W(0)) > 0, both optimizers taken down the experiment's GD levels
(1.3e-1 ... 1e-4) so that they stop at the same loss:

* ``flow``: the experiment's runs (:func:`factorflow.completion2x2.flow_from_init`: LSODA,
  rtol 1e-7, atol 1e-10, BDF fallback), one run per integrator call: depths 2, 3, 4 x
  balanced / unbalanced x per-layer std alpha in {8e-3, 1e-3} x seeds 0, 1, 2 = 36 runs.
  Measured in full. (The experiment's flow goes on to 1e-6; that last level is not timed here.)
* ``gd``: plain GD at lr 3e-3, which the experiment runs ONLY at alpha 8e-3 (``gd_init_scales``:
  the authors' runner used 8e-3): depths 2, 3, 4 x balanced / unbalanced x 3 seeds = 18 runs.
  Out of reach in full (3e3 to 6e6 steps per run), so EXTRAPOLATED: the engine loop's time per
  step is measured on ``--measure-steps`` steps per depth, B = 1 (the original code's way, one
  run at a time) and B = 6 (the experiment's way, one batch per depth), and each run's step
  count is (its flow time to 1e-4) / lr (GD time = steps x lr tracks the flow time;
  bench_engine_2x2.py checks this on one depth-3 run to 0.01 %).

Headline (``ratio``): GD one run at a time over flow, on the 18 runs GD runs (alpha 8e-3);
``ratio_batched``: GD as the experiment runs it (batched per depth) over the same flow runs.
For reference only, ``alpha_1e-3_gd_never_run`` extrapolates GD at alpha 1e-3 too (depth 4
there needs ~1e8-3e8 steps per run): that is where the earlier 7,580x came from (97 % of its GD
time), for runs neither the experiment nor the authors ran with GD.

Prints the totals and ratios; writes JSON (default ``benchmarks/results/bench_razin2020.json``).
One thread; ratios within one process are what counts on a shared machine.

Measured (``bench_razin2020.json``; 2 cores, one of them running a paper-scale talk): flow 9.9 s
for the 36 runs, 5.1 s for the 18 at alpha 8e-3 (the tiny-problem numpy field,
:mod:`factorflow.dynamics.tiny`; 175 s before it); GD on those 18 with the engine's fast loop
(22-48 us per step), one run at a time, 1.42e3 s = 0.39 h extrapolated: 279x; batched per depth
(the experiment's way) 398 s: 78x. The experiment itself ran at paper scale in 507 s, every GD
run to its stop (``reproduce razin2020-2x2 --scale paper``). Before the fast loop: 11.9 h and
2.7 h (512x and 118x against the slower flow). Reference only: GD one at a time at alpha 1e-3
(never run) would take 12 h.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from itertools import product
from pathlib import Path

import torch

torch.set_num_threads(1)

from factorflow import completion2x2 as c2  # noqa: E402
from factorflow.dynamics import GD, Schedule, Stop, train  # noqa: E402
from factorflow.experiments.razin2020_2x2 import PAPER  # noqa: E402
from factorflow.objectives import DMFObjective  # noqa: E402
from factorflow.problems.matrix import razin_2x2  # noqa: E402

S = PAPER
LEVELS = S.gd_levels  # both optimizers stop at the same loss (1e-4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--measure-steps", type=int, default=5000)
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "bench_razin2020.json",
    )
    args = ap.parse_args()
    load_start = list(os.getloadavg())
    obj = DMFObjective(razin_2x2(), S.loss)
    kw = {"init": S.init, "det_sign": 1}
    stop = {
        "fallback": S.flow_fallback,
        "max_steps": S.flow_max_steps,
        "max_evals": S.flow_max_evals,
    }

    # ---- flow, the experiment's runs (all 36), down to the GD levels' last loss
    runs = []
    t_all = time.perf_counter()
    for depth, alpha, bal, seed in product(S.depths, S.init_scales, S.balanced, range(S.seeds)):
        init = {"init_scale": alpha, "balanced": bal, "seed": seed, **kw}
        out, _ = c2.flow_from_init(obj, depth, LEVELS, S.flow, init, **stop)
        runs.append(
            {"depth": depth, "alpha": alpha, "balanced": bal, "seed": seed, "status": out.status,
             "time": out.final.time, "evals": out.n_evals, "wall_s": out.wall_s}
        )  # fmt: skip
    flow_wall_all = time.perf_counter() - t_all
    gd_alphas = S.gd_init_scales
    is_gd = lambda r: r["depth"] in S.gd_depths and r["alpha"] in gd_alphas  # noqa: E731
    flow_wall_gd = sum(r["wall_s"] for r in runs if is_gd(r))
    print(
        f"flow: {len(runs)} runs to loss {LEVELS[-1]:g} in {flow_wall_all:.1f} s "
        f"({sum(r['evals'] for r in runs)} evaluations); the {sum(map(is_gd, runs))} runs at "
        f"alpha {gd_alphas} (the ones GD runs): {flow_wall_gd:.1f} s"
    )
    bad = [r for r in runs if r["status"] != "converged"]
    if bad:
        print(f"  WARNING: {len(bad)} flow runs did not converge: {bad}")

    # ---- GD per-step cost, engine loop, B = 1 and one batch per depth (the experiment's)
    K = args.measure_steps
    us1, usb = {}, {}
    batch = len(gd_alphas) * len(S.gd_balanced) * S.seeds
    for depth in S.gd_depths:
        f, _ = c2.init_2x2(depth, init_scale=gd_alphas[0], balanced=False, seed=0, **kw)
        t = time.perf_counter()
        train(f, obj, GD(S.gd.lr), Stop(max_steps=K), Schedule(per_decade=S.gd_per_decade))
        us1[depth] = 1e6 * (time.perf_counter() - t) / K
        inits = [
            c2.init_2x2(depth, init_scale=a, balanced=b, seed=k, **kw)[0]
            for a, b, k in product(gd_alphas, S.gd_balanced, range(S.seeds))
        ]
        fb = [torch.cat(x) for x in zip(*inits, strict=True)]
        t = time.perf_counter()
        train(fb, obj, GD(S.gd.lr), Stop(max_steps=K), Schedule(per_decade=S.gd_per_decade))
        usb[depth] = 1e6 * (time.perf_counter() - t) / K
        print(
            f"gd engine loop, depth {depth}: {us1[depth]:.1f} us/step (B = 1), "
            f"{usb[depth]:.1f} us/step (B = {batch}, the experiment's batch of the depth)"
        )

    # ---- extrapolation
    lr = S.gd.lr
    for r in runs:
        r["gd_steps_est"] = r["time"] / lr
    gd_runs = [r for r in runs if is_gd(r)]
    gd_wall = sum(1e-6 * us1[r["depth"]] * r["gd_steps_est"] for r in gd_runs)
    gd_wall_batched = sum(
        1e-6 * usb[d] * max(r["gd_steps_est"] for r in gd_runs if r["depth"] == d)
        for d in S.gd_depths
    )
    other = [r for r in runs if r["alpha"] not in gd_alphas and r["depth"] in us1]
    gd_wall_other = sum(1e-6 * us1[r["depth"]] * r["gd_steps_est"] for r in other)
    ratio, ratio_b = gd_wall / flow_wall_gd, gd_wall_batched / flow_wall_gd
    print()
    print("estimated GD steps per run (flow time / lr):")
    for d, a in product(S.depths, S.init_scales):
        st = [r["gd_steps_est"] for r in runs if r["depth"] == d and r["alpha"] == a]
        note = "" if a in gd_alphas else "   (never run with GD)"
        print(f"  depth {d}, alpha {a:g}: {min(st):.2e} .. {max(st):.2e}{note}")
    print(
        f"GD on the experiment's GD grid ({len(gd_runs)} runs, alpha {gd_alphas}), "
        f"EXTRAPOLATED from {K} timed steps per depth:"
    )
    print(f"  one run at a time: {gd_wall:.3g} s = {gd_wall / 3600:.3g} h  -> {ratio:.0f}x")
    print(
        f"  batched per depth (the experiment's way): {gd_wall_batched:.3g} s = "
        f"{gd_wall_batched / 3600:.3g} h  -> {ratio_b:.0f}x"
    )
    print(f"flow on the same runs (measured): {flow_wall_gd:.1f} s")
    print(
        f"(reference only: GD one at a time at alpha 1e-3, never run: {gd_wall_other:.3g} s = "
        f"{gd_wall_other / 3600:.3g} h)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "razin2020",
                "grid": {
                    "source": "factorflow.experiments.razin2020_2x2.PAPER",
                    "flow": {
                        "depths": S.depths,
                        "alphas": S.init_scales,
                        "balanced": S.balanced,
                        "seeds": S.seeds,
                    },
                    "gd": {
                        "depths": S.gd_depths,
                        "alphas": gd_alphas,
                        "balanced": S.gd_balanced,
                        "seeds": S.seeds,
                        "lr": lr,
                    },
                    "levels": LEVELS,
                },  # fmt: skip
                "flow_wall_s_all_36_runs": flow_wall_all,
                "flow_wall_s_gd_grid_runs": flow_wall_gd,
                "gd_one_at_a_time_wall_s_extrapolated": gd_wall,
                "gd_batched_per_depth_wall_s_extrapolated": gd_wall_batched,
                "ratio": ratio,
                "ratio_batched": ratio_b,
                "alpha_1e-3_gd_never_run": {
                    "gd_one_at_a_time_wall_s_extrapolated": gd_wall_other,
                    "note": "reference only: the experiment runs GD at alpha 8e-3 only",
                },
                "us_per_step_B1": us1,
                f"us_per_step_B{batch}": usb,
                "measure_steps": K,
                "runs": runs,
                "load_avg_start": load_start,
                "load_avg_end": list(os.getloadavg()),
                "machine": "2 CPU cores shared with other engineers' jobs; one torch thread",
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
