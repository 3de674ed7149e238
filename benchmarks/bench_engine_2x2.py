"""Benchmark 1 of the engine: gradient flow vs plain GD on Razin & Cohen's 2x2 problem. Run on
demand:

    python benchmarks/bench_engine_2x2.py [--measure-steps 20000] [--full-gd] [--out FILE]

Problem [[?, 1], [1, 0]], loss half_sse, depth 3, width 2, every layer N(0, 8e-3^2) resampled to
det(W(0)) > 0 (seed 0), split into balanced factors with the same W(0) (``balance=True``): the
setting in which det > 0 is kept exactly, so both methods follow the |w11| -> infinity path (the
plain unbalanced draws of seeds 0-11 all flip det under flow before loss 1e-4 and end at
various finite |w11|, which makes a poor speed reference). Stop at loss 1e-4.

* ``flow``: ``train(..., Flow(), Stop(loss_below=1e-4))`` (LSODA, rtol 1e-7, atol 1e-10), one
  run.
* ``gd``: plain GD at lr 3e-3, one run, step by step: the engine's ``train(..., GD(3e-3))`` with
  B = 1, the way the original code ran it. It needs ~3.7e6 steps; at ~1e2-1e3 us per step that is
  far past 15 minutes, so by default the engine loop is timed on ``--measure-steps`` steps and its
  wall time to the stop is extrapolated as (us per step) x (steps GD needs). The number of steps
  and the final |w11| of GD come from running the very same GD iterates to the stop with a
  minimal numpy loop (same float64 arithmetic; the script checks that its first
  ``--measure-steps`` iterates equal the engine's to 1e-12 relative). ``--full-gd`` runs the
  engine loop to the stop instead (hours).

Prints the wall times, the ratio GD / flow and the |w11| of both; writes JSON (default
``benchmarks/results/bench_engine_2x2.json``), with the numpy loop's own wall time to the stop
(``numpy_gd``: measured in full, the fastest GD we have) and the flow's ratio against it
(``ratio_vs_numpy_gd``) next to the engine loop's (``ratio``). One thread (``torch.set_num_threads(1)``); ratios
within one process are what counts on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

from factorflow.dynamics import GD, Flow, Schedule, Stop, train  # noqa: E402
from factorflow.factorizations.dmf import end_to_end, init_dmf  # noqa: E402
from factorflow.objectives import DMFObjective  # noqa: E402
from factorflow.problems.matrix import razin_2x2  # noqa: E402

DEPTH, ALPHA, LR, STOP = 3, 8e-3, 3e-3, 1e-4


def reference_gd(
    factors: list[np.ndarray], lr: float, loss_below: float, max_steps: int
) -> tuple[list[np.ndarray], int, float]:
    """Plain GD on the 2x2 problem, one run, numpy float64: loss at the current iterate; stop
    when it is <= ``loss_below`` (steps = updates done, as the engine counts); otherwise
    W_j <- W_j - lr (W_N..W_{j+1})^T G (W_{j-1}..W_1)^T with G = dl/dW (half_sse: the residuals
    at (0, 1), (1, 0), (1, 1)). Returns (factors, steps, loss)."""
    Ws = [w.copy() for w in factors]
    n = len(Ws)
    eye = np.eye(2)
    G = np.zeros((2, 2))
    for step in range(max_steps + 1):
        below = [eye]
        for w in Ws[:-1]:
            below.append(w @ below[-1])
        W = Ws[-1] @ below[-1]
        G[0, 1], G[1, 0], G[1, 1] = W[0, 1] - 1.0, W[1, 0] - 1.0, W[1, 1]
        loss = 0.5 * (G[0, 1] ** 2 + G[1, 0] ** 2 + G[1, 1] ** 2)
        if loss <= loss_below or step == max_steps:
            return Ws, step, float(loss)
        above = eye
        grads = [None] * n
        for j in range(n - 1, -1, -1):
            grads[j] = above.T @ G @ below[j].T
            above = above @ Ws[j]
        Ws = [w - lr * g for w, g in zip(Ws, grads, strict=True)]
    raise AssertionError("unreachable")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--measure-steps", type=int, default=20_000)
    ap.add_argument("--full-gd", action="store_true", help="run the engine GD to the stop")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / "bench_engine_2x2.json",
    )
    args = ap.parse_args()

    obj = DMFObjective(razin_2x2(), "half_sse")
    f0, n0 = init_dmf(
        (2, 2),
        DEPTH,
        init="normal",
        init_scale=ALPHA,
        seeds=[args.seed],
        width=2,
        balance=True,
        det_sign=1,
    )
    print(
        f"2x2 problem, depth {DEPTH}, normal init alpha {ALPHA:g} (balanced, det > 0, "
        f"||W(0)||_F = {float(n0[0]):.3g}), half_sse, stop at loss {STOP:g}"
    )

    # ---- gradient flow
    t = time.perf_counter()
    rf = train(f0, obj, Flow(), Stop(loss_below=STOP), Schedule(per_decade=10))
    flow_wall = time.perf_counter() - t
    Wf = end_to_end(rf.params)[0]
    w11_flow = abs(float(Wf[0, 0]))
    print(
        f"flow ({rf.method}): {flow_wall:.2f} s, {rf.n_evals} evaluations, t = "
        f"{float(rf.time[0]):.1f}, |w11| = {w11_flow:.6f}, det = {float(torch.det(Wf)):.3e}"
    )

    # ---- plain GD, engine loop, one run step by step
    K = args.measure_steps
    t = time.perf_counter()
    rg = train(f0, obj, GD(LR), Stop(max_steps=K), Schedule(per_decade=10))
    gd_k_wall = time.perf_counter() - t
    us_per_step = 1e6 * gd_k_wall / K
    print(f"gd engine loop: {K} steps in {gd_k_wall:.2f} s = {us_per_step:.1f} us/step")

    # ---- the same GD iterates to the stop (numpy reference), checked against the engine
    np_f0 = [f[0].numpy() for f in f0]
    chk, _, _ = reference_gd(np_f0, LR, 0.0, K)
    dev = max(
        float(np.max(np.abs(a - b[0].numpy())) / np.max(np.abs(b[0].numpy())))
        for a, b in zip(chk, rg.params, strict=True)
    )
    print(f"numpy reference vs engine after {K} steps: max relative difference {dev:.2e}")
    t = time.perf_counter()
    ref_f, gd_steps, gd_loss = reference_gd(np_f0, LR, STOP, 50_000_000)
    ref_wall = time.perf_counter() - t
    Wg = ref_f[-1]
    for w in ref_f[-2::-1]:
        Wg = Wg @ w
    w11_gd = abs(float(Wg[0, 0]))
    print(
        f"gd to the stop: {gd_steps} steps (t = steps x lr = {gd_steps * LR:.1f}), loss "
        f"{gd_loss:.3e}, |w11| = {w11_gd:.6f} (numpy reference loop, {ref_wall:.1f} s)"
    )

    if args.full_gd:
        t = time.perf_counter()
        rfull = train(f0, obj, GD(LR), Stop(loss_below=STOP), Schedule(per_decade=10))
        gd_wall = time.perf_counter() - t
        gd_note = "measured: engine GD loop run to the stop"
        w11_gd = abs(float(end_to_end(rfull.params)[0, 0, 0]))
        gd_steps = int(rfull.steps[0])
    else:
        gd_wall = us_per_step * 1e-6 * gd_steps
        gd_note = (
            f"extrapolated: engine GD loop timed on {K} steps x {gd_steps} steps to the stop "
            "(step count and |w11| from the numpy reference loop)"
        )
    ratio = gd_wall / flow_wall
    ratio_np = ref_wall / flow_wall
    rel = abs(w11_gd - w11_flow) / w11_flow
    print()
    print(f"GD (engine, one run): {gd_wall:.1f} s  [{gd_note}]")
    print(f"GD (numpy loop, one run, measured to the stop): {ref_wall:.1f} s")
    print(f"flow:                 {flow_wall:.2f} s")
    print(f"ratio numpy GD / flow: {ratio_np:.0f}x")
    print(
        f"ratio GD / flow: {ratio:.0f}x   (target >= 100x: {'met' if ratio >= 100 else 'NOT met'})"
    )
    print(
        f"|w11|: GD {w11_gd:.6f}, flow {w11_flow:.6f}, relative difference {rel:.2e} "
        f"(target <= 1e-3: {'met' if rel <= 1e-3 else 'NOT met'})"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "engine_2x2",
                "setting": {
                    "depth": DEPTH,
                    "alpha": ALPHA,
                    "lr": LR,
                    "stop": STOP,
                    "balanced": True,
                    "seed": args.seed,
                },
                "flow": {
                    "wall_s": flow_wall,
                    "evals": rf.n_evals,
                    "time": float(rf.time[0]),
                    "abs_w11": w11_flow,
                    "method": rf.method,
                },
                "gd": {
                    "wall_s": gd_wall,
                    "note": gd_note,
                    "us_per_step": us_per_step,
                    "steps": gd_steps,
                    "abs_w11": w11_gd,
                    "reference_vs_engine_rel_diff": dev,
                },
                "numpy_gd": {
                    "wall_s": ref_wall,
                    "note": "measured: the numpy reference loop run to the stop",
                    "us_per_step": 1e6 * ref_wall / max(gd_steps, 1),
                    "steps": gd_steps,
                },
                "ratio": ratio,
                "ratio_vs_numpy_gd": ratio_np,
                "w11_rel_diff": rel,
                "load_avg": list(os.getloadavg()),
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
