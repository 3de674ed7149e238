"""Benchmark 1 of the engine: gradient flow vs plain GD on Razin & Cohen's 2x2 problem. Run on
demand:

    python benchmarks/bench_engine_2x2.py [--measure-steps 20000] [--out FILE]

Problem [[?, 1], [1, 0]], loss half_sse, depth 3, width 2, every layer N(0, 8e-3^2) resampled to
det(W(0)) > 0 (seed 0), split into balanced factors with the same W(0) (``balance=True``): the
setting in which det > 0 is kept exactly, so both methods follow the |w11| -> infinity path (the
plain unbalanced draws of seeds 0-11 all flip det under flow before loss 1e-4 and end at
various finite |w11|, which makes a poor speed reference). Stop at loss 1e-4.

Everything below runs in one process, one thread (``torch.set_num_threads(1)``); ratios within
one process are what counts on a shared machine.

* ``flow``: ``train(..., Flow(), Stop(loss_below=1e-4))`` (LSODA, rtol 1e-7, atol 1e-10), one run,
  with the tiny-problem numpy field (``backend="auto"``), and again with ``backend="torch"``;
  each timed as the median of 5 runs (one takes a fraction of a second).
* ``gd``: plain GD at lr 3e-3, one run, step by step, the way the original code ran it: the
  engine's ``train(..., GD(3e-3), Stop(loss_below=1e-4))`` run to the stop (~3.7e6 steps), with
  the tiny-problem fast path (``backend="auto"``, :mod:`factorflow.dynamics.tiny`).
* ``gd_torch``: the same loop with ``backend="torch"`` (the loop before the fast path), timed on
  ``--measure-steps`` steps and extrapolated to the step count of ``gd`` (at ~150 us per step
  the full run takes ~10 minutes).
* ``numpy_gd``: a minimal numpy loop (:func:`reference_gd`), the same float64 iterates, run to
  the stop: the fastest GD we have, and the reference of both targets of issue 13 item 5: the
  engine's GD within 2x of it, the flow at least 300x faster than it.

Prints the wall times, the ratios and |w11| of each; writes JSON (default
``benchmarks/results/bench_engine_2x2.json``).
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
REPEATS = 5


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


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--measure-steps", type=int, default=20_000)
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
    sched = Schedule(per_decade=10)
    out: dict = {}

    def w11(params) -> float:
        return abs(float(end_to_end(params)[0, 0, 0]))

    for backend in ("auto", "torch"):  # the median of REPEATS runs: one takes well under 1 s
        walls = []
        for _ in range(REPEATS):
            rf, wall = _timed(
                lambda b=backend: train(f0, obj, Flow(), Stop(loss_below=STOP), sched, backend=b)
            )
            walls.append(wall)
        key = "flow" if backend == "auto" else "flow_torch"
        out[key] = {
            "wall_s": float(np.median(walls)),
            "wall_s_runs": walls,
            "evals": rf.n_evals,
            "time": float(rf.time[0]),
            "abs_w11": w11(rf.params),
            "method": rf.method,
            "backend": backend,
        }
        print(
            f"{key} ({rf.method}): {out[key]['wall_s']:.3f} s (median of {REPEATS}), "
            f"{rf.n_evals} evaluations, t = {float(rf.time[0]):.1f}, |w11| = "
            f"{out[key]['abs_w11']:.6f}"
        )

    rg, gd_wall = _timed(lambda: train(f0, obj, GD(LR), Stop(loss_below=STOP), sched))
    gd_steps = int(rg.steps[0])
    out["gd"] = {
        "wall_s": gd_wall,
        "note": "measured: the engine's GD loop (backend auto: tiny-problem fast path) to the stop",
        "us_per_step": 1e6 * gd_wall / gd_steps,
        "steps": gd_steps,
        "abs_w11": w11(rg.params),
    }
    print(
        f"gd (engine, auto): {gd_wall:.1f} s, {gd_steps} steps, |w11| = {out['gd']['abs_w11']:.6f}"
    )

    K = args.measure_steps
    rt, t_wall = _timed(lambda: train(f0, obj, GD(LR), Stop(max_steps=K), sched, backend="torch"))
    out["gd_torch"] = {
        "wall_s": 1e-6 * (1e6 * t_wall / K) * gd_steps,
        "note": f"extrapolated: the torch loop timed on {K} steps x {gd_steps} steps",
        "us_per_step": 1e6 * t_wall / K,
    }
    print(f"gd (engine, torch): {out['gd_torch']['us_per_step']:.1f} us/step on {K} steps")

    np_f0 = [f[0].numpy() for f in f0]
    chk, _, _ = reference_gd(np_f0, LR, 0.0, K)
    dev = max(
        float(np.max(np.abs(a - b[0].numpy())) / np.max(np.abs(b[0].numpy())))
        for a, b in zip(chk, rt.params, strict=True)
    )
    (ref_f, ref_steps, ref_loss), ref_wall = _timed(
        lambda: reference_gd(np_f0, LR, STOP, 50_000_000)
    )
    Wg = ref_f[-1]
    for w in ref_f[-2::-1]:
        Wg = Wg @ w
    out["numpy_gd"] = {
        "wall_s": ref_wall,
        "note": "measured: the numpy reference loop run to the stop",
        "us_per_step": 1e6 * ref_wall / max(ref_steps, 1),
        "steps": ref_steps,
        "abs_w11": abs(float(Wg[0, 0])),
        "vs_engine_torch_rel_diff_after_measure_steps": dev,
    }
    print(f"gd (numpy loop): {ref_wall:.1f} s, {ref_steps} steps, loss {ref_loss:.3e}")

    flow_wall = out["flow"]["wall_s"]
    out["ratios"] = {
        "engine_gd_over_numpy_gd": gd_wall / ref_wall,
        "numpy_gd_over_flow": ref_wall / flow_wall,
        "engine_gd_over_flow": gd_wall / flow_wall,
        "engine_torch_gd_over_engine_gd": out["gd_torch"]["wall_s"] / gd_wall,
        "flow_torch_over_flow": out["flow_torch"]["wall_s"] / flow_wall,
    }
    out["w11_rel_diff_gd_flow"] = (
        abs(out["gd"]["abs_w11"] - out["flow"]["abs_w11"]) / out["flow"]["abs_w11"]
    )
    out["same_steps_engine_numpy"] = gd_steps == ref_steps
    r = out["ratios"]
    print()
    print(
        f"engine GD / numpy GD: {r['engine_gd_over_numpy_gd']:.2f}x (target <= 2x: "
        f"{'met' if r['engine_gd_over_numpy_gd'] <= 2 else 'NOT met'})"
    )
    print(
        f"numpy GD / flow: {r['numpy_gd_over_flow']:.0f}x (target >= 300x: "
        f"{'met' if r['numpy_gd_over_flow'] >= 300 else 'NOT met'})"
    )
    print(
        f"engine GD / flow: {r['engine_gd_over_flow']:.0f}x; torch loop / fast loop: "
        f"{r['engine_torch_gd_over_engine_gd']:.1f}x; flow torch / numpy field: "
        f"{r['flow_torch_over_flow']:.1f}x"
    )
    print(
        f"|w11| GD vs flow: relative difference {out['w11_rel_diff_gd_flow']:.2e}; same step "
        f"count engine and numpy loop: {out['same_steps_engine_numpy']}"
    )
    out.update(
        benchmark="engine_2x2",
        setting={
            "depth": DEPTH,
            "alpha": ALPHA,
            "lr": LR,
            "stop": STOP,
            "balanced": True,
            "seed": args.seed,
        },
        load_avg=list(os.getloadavg()),
        python=platform.python_version(),
        torch=torch.__version__,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
