"""Benchmark of razin2020-tensor-recovery at paper scale (issue 13, item 2): an order-4 cell
with the flow (``order4_optimizer = "flow"``, the paper preset) vs group RMSProp (the paper's
optimizer and stop rule), and the paper grid's estimated time before and after.

One order-4 cell is the paper's: an 8^4 target of CP rank 1 (``--rank``), ``--n-obs`` of 4096
entries observed, R = 512, inits 1e-2 and 1e-3 x 5 seeds, loss mse, the experiment's settings
(``PAPER``) and its library call (:func:`factorflow.tensor_recovery.recovery_cell`).

- flow: the cell as the paper preset runs it (RK45, rtol 1e-7, atol 1e-10; each init's 5 seeds
  as one batch, to mse 1e-6, 1e-9, 1e-12 in turn), measured in full, with its errors.
- group RMSProp (lr 1e-2, beta 0.99, eps 1e-6; inits one batch each, the experiment's ``auto``
  at order 4): hours at init 1e-3, so EXTRAPOLATED unless ``--full-gd``: the wall time per step
  of each batch (B = 5) timed over ``--gd-steps`` steps, times the steps the patience rule
  takes (pass 1 to the first crossing, then the replay to the third check below 1e-6 plus one
  check), the first crossing MEASURED on seed 0 alone (B = 1, a cheaper run of the same
  iterates; the seeds differ only in the init).
- grid (``--grid``): the paper grid is 20 order-3 cells (group RMSProp, seconds each) and 16
  order-4 cells. The order-3 cell time is the mean of the cells run at ``--o3-n-obs`` x ranks
  1, 3 (in full, through ``recovery_cell``); the order-4 cell time is this cell's (flow:
  measured; group RMSProp: extrapolated as above), so both estimates take this cell as typical
  of order 4. Rank estimates (``rank_for = "all"``) are timed on this cell's flow rows and
  added to both.

Prints a table and writes ``benchmarks/results/bench_tensor_recovery.json``. One thread; the
machine's load average is recorded (times on a loaded shared machine are upper bounds).

    python benchmarks/bench_tensor_recovery.py [--n-obs 1000] [--rank 1] [--gd-steps 300]
        [--grid] [--o3-n-obs 100 300 511] [--full-gd]

Measured (``python benchmarks/bench_tensor_recovery.py``, one thread, load average ~1-2;
``benchmarks/results/bench_tensor_recovery.json``): one order-4 cell (rank 1, 1000 observations)
with the flow (the paper preset's ``auto``: RK45, then CVODE in the stiff last phase) 81 s,
median errors ~1e-4 at mse 1e-12; group RMSProp 473 s extrapolated (5.3 ms per step at B = 5;
first crossing measured at 535 steps for init 1e-2 and 43,511 for 1e-3, 1,435 and 87,411 steps
with the patience replay): 5.8x. The grid estimate (``--grid``) was not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

torch.set_num_threads(1)

from factorflow.dynamics import Patience, Schedule, Stop, train  # noqa: E402
from factorflow.experiments.razin2020_tensor_recovery import PAPER, Settings  # noqa: E402
from factorflow.fit import build_optimizer  # noqa: E402
from factorflow.problems.tensor import nested_completion_target, observe_first  # noqa: E402
from factorflow.tensor_recovery import (  # noqa: E402
    DenseCPObjective,
    add_ranks,
    init_batch,
    recovery_cell,
)

OUT = Path(__file__).resolve().parent / "results" / "bench_tensor_recovery.json"


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


def _patience(s: Settings) -> Patience:
    return Patience(s.stop_loss, s.check_every, s.n_checks, s.extra_checks)


def _target(s: Settings, order: int, rank: int, n_obs: int) -> tuple[torch.Tensor, Any]:
    """The experiment's target and observations of a recovery cell (instance 0)."""
    W, entry_order = nested_completion_target(
        (s.dim,) * order, rank, seed=1000 * s.target_seed + 10 * order + rank
    )
    return W, observe_first(W, entry_order, n_obs)


def run_cell(
    s: Settings, order: int, rank: int, n_obs: int, by: str, ranks: bool = False
) -> dict[str, Any]:
    """One recovery cell as the experiment runs it with ``by`` (``gd`` or ``flow``), in full:
    wall time, median errors per (init, stop rule) and, if ``ranks``, the rank estimates' time."""
    W, obs = _target(s, order, rank, n_obs)
    gd_inits, flow_inits = (s.init_scales, ()) if by == "gd" else ((), s.init_scales)
    t0 = time.perf_counter()
    rows, tensors, _ = recovery_cell(
        "recovery", W, obs, target_rank=rank, target_seed=s.target_seed, inits=gd_inits,
        n_runs=s.seeds, gd=s.gd, patience=_patience(s), max_steps=s.max_steps(order),
        flow=s.flow, flow_inits=flow_inits, flow_losses=s.flow_losses,
        flow_max_evals=s.flow_max_evals, loss=s.loss,
        batch_inits=s.batch_inits == "together" or (s.batch_inits == "auto" and order <= 3),
        base_seed=10_000 * (s.target_seed + 1), als_seed=s.target_seed,
        large_frac=s.large_frac, log=lambda m: print(m, flush=True),
    )  # fmt: skip
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {"order": order, "rank": rank, "n_obs": n_obs, "by": by, "wall_s": wall}
    fits = [r for r in rows if r["method"] in ("cp_gd", "cp_flow")]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in fits:
        groups.setdefault(f"{r['optimizer']} init {r['init_scale']:g} {r['stop_rule']}", []).append(
            r
        )
    out["median_rel_fro_error"] = {
        k: statistics.median(r["rel_fro_error"] for r in g) for k, g in groups.items()
    }
    out["statuses"] = {k: sorted({r["status"] for r in g}) for k, g in groups.items()}
    out["nfev"] = {k: g[0]["nfev"] for k, g in groups.items() if g[0]["nfev"] is not None}
    out["steps_max"] = {k: max(r["steps"] for r in g) for k, g in groups.items()}
    if ranks:
        last = f"mse<{min(s.flow_losses):g}"

        def wanted(row: dict[str, Any]) -> bool:
            return row["method"] != "cp_flow" or row["stop_rule"] == last

        t0 = time.perf_counter()
        add_ranks(rows, tensors, wanted, s.rank_max)
        out["rank_estimates_wall_s"] = time.perf_counter() - t0
        out["rank_estimates_n_rows"] = sum(wanted(r) for r in rows)
    return out


def gd_cell_estimate(s: Settings, rank: int, n_obs: int, k_steps: int) -> dict[str, Any]:
    """Group RMSProp on an order-4 cell: per init batch (B = seeds), wall per step timed over
    ``k_steps`` steps; steps to the first crossing measured on seed 0 (B = 1); the cell's steps
    = first crossing + the patience replay; wall = sum over inits of steps x wall per step."""
    W, obs = _target(s, 4, rank, n_obs)
    objective = DenseCPObjective(obs.to(torch.float64, "cpu"), s.loss)
    dims, R, base = (s.dim,) * 4, s.dim**3, 10_000 * (s.target_seed + 1)
    rule = _patience(s)
    per_init = []
    for init in s.init_scales:
        p5 = init_batch(dims, R, [(init, k) for k in range(s.seeds)], base)
        t0 = time.perf_counter()
        train(p5, objective, build_optimizer(s.gd), Stop(max_steps=k_steps), Schedule(every=100))
        s_per_step = (time.perf_counter() - t0) / k_steps
        p1 = init_batch(dims, R, [(init, 0)], base)
        t0 = time.perf_counter()
        first = train(
            p1,
            objective,
            build_optimizer(s.gd),
            Stop(loss_below=s.stop_loss, max_steps=s.max_steps(4)),
            Schedule(every=s.check_every),
        )
        count_wall = time.perf_counter() - t0
        n1 = int(first.steps[0])
        replay = rule.bound(n1) + rule.extra_checks * rule.check_every
        steps = n1 + replay
        per_init.append(
            {
                "init": init,
                "s_per_step_B5": s_per_step,
                "first_crossing_steps_seed0": n1,
                "first_crossing_status": first.status[0],
                "first_crossing_wall_s_B1": count_wall,
                "cell_steps": steps,
                "wall_s_extrapolated": steps * s_per_step,
            }
        )
        print(
            f"  group RMSProp init {init:g}: {1e3 * s_per_step:.1f} ms/step (B = {s.seeds}), "
            f"first crossing at step {n1} ({first.status[0]}; seed 0, {count_wall:.0f} s at "
            f"B = 1), {steps} steps with the replay -> {steps * s_per_step:.0f} s",
            flush=True,
        )
    return {
        "order": 4,
        "rank": rank,
        "n_obs": n_obs,
        "by": "gd",
        "per_init": per_init,
        "wall_s_extrapolated": sum(p["wall_s_extrapolated"] for p in per_init),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-obs", type=int, default=1000)
    ap.add_argument("--rank", type=int, default=1)
    ap.add_argument("--gd-steps", type=int, default=300, help="steps timed per GD batch")
    ap.add_argument("--full-gd", action="store_true", help="run group RMSProp's cell in full")
    ap.add_argument("--grid", action="store_true", help="estimate the paper grid before/after")
    ap.add_argument("--o3-n-obs", type=int, nargs="+", default=[100, 300, 511])
    ap.add_argument("--flow-method", default=PAPER.flow.method, help="the flow's integrator")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    s = dataclasses.replace(PAPER, flow=dataclasses.replace(PAPER.flow, method=args.flow_method))
    out: dict[str, Any] = {
        "benchmark": "tensor_recovery",
        "machine": "2 CPU cores shared with other engineers' jobs; one torch thread",
        "load_avg_start": _load(),
        "settings": {
            "gd": dataclasses.asdict(s.gd),
            "flow": dataclasses.asdict(s.flow),
            "flow_losses": s.flow_losses,
            "flow_max_evals": s.flow_max_evals,
            "seeds": s.seeds,
            "init_scales": s.init_scales,
            "order4_optimizer": s.order4_optimizer,
        },
    }
    print(f"order-4 cell: rank {args.rank}, {args.n_obs} observations, {s.seeds} seeds")
    flow = run_cell(s, 4, args.rank, args.n_obs, "flow", ranks=args.grid)
    print(f"flow: {flow['wall_s']:.0f} s (measured); errors {flow['median_rel_fro_error']}")
    out["flow_cell"] = flow
    if args.full_gd:
        gd = run_cell(s, 4, args.rank, args.n_obs, "gd")
        gd_wall, gd_note = gd["wall_s"], "measured"
    else:
        gd = gd_cell_estimate(s, args.rank, args.n_obs, args.gd_steps)
        gd_wall, gd_note = gd["wall_s_extrapolated"], "extrapolated (see per_init)"
    out["gd_cell"] = gd | {"wall_s": gd_wall, "note": gd_note}
    out["cell_ratio_gd_over_flow"] = gd_wall / flow["wall_s"]
    print(
        f"group RMSProp: {gd_wall:.0f} s ({gd_note}); ratio {out['cell_ratio_gd_over_flow']:.1f}x"
    )
    if args.grid:
        n3 = len(s.target_ranks) * len(s.n_obs3)
        n4 = len(s.target_ranks) * len(s.n_obs4)
        o3 = [run_cell(s, 3, r, m, "gd") for r in s.target_ranks for m in args.o3_n_obs]
        o3_mean = statistics.mean(c["wall_s"] for c in o3)
        ranks_s = flow.get("rank_estimates_wall_s", 0.0)
        before = n3 * o3_mean + n4 * (gd_wall + ranks_s)
        after = n3 * o3_mean + n4 * (flow["wall_s"] + ranks_s)
        out["grid"] = {
            "order3_cells": n3,
            "order4_cells": n4,
            "order3_cells_measured": o3,
            "order3_mean_cell_wall_s": o3_mean,
            "rank_estimates_per_order4_cell_wall_s": ranks_s,
            "before_h_group_rmsprop_everywhere": before / 3600,
            "after_h_order4_by_flow": after / 3600,
            "note": "order-4 cells all taken at this cell's time; order-3 at the mean of the "
            "measured ones; order-3 rank estimates not timed (small tensors)",
        }
        print(
            f"paper grid: {n3} order-3 cells x {o3_mean:.1f} s + {n4} order-4 cells: "
            f"before (group RMSProp) {before / 3600:.2f} h, after (order 4 by flow) "
            f"{after / 3600:.2f} h"
        )
    out["load_avg_end"] = _load()
    out["python"], out["torch"] = platform.python_version(), torch.__version__
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
