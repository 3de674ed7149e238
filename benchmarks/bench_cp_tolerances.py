"""Benchmark: where flow-then-CVODE's evaluations go on the paper's tensor-dynamics problem,
and how many the integrator's tolerance saves.

The problem and start are ``bench_cp.py`` part 2's (10^4 target of CP rank 5, 2000
observations, R = 1000, init std 0.005, seed 1000; ``FlowThenGD(late="cvode")``, seed 10,007),
run to the first crossing of train mse 1e-8 (no patience steps) at each (rtol, atol) pair, one
after another in this process, one thread. Recorded per pair: gradient evaluations (all of
them: RK45, CVODE's field evaluations and Jacobian-vector products, the power iterations'
Hessian-vector products), evaluations up to the switch and after it, the flow time of the
switch, wall seconds, and the rel_fro_error at the crossing, the end state the tolerance must
not move. ``group_rmsprop_evals`` is group RMSProp's count to its final error (its stop: the
crossing, then 1250 steps) in ``benchmarks/results/bench_cp.json``; the flow reaches that error
a few dozen GD steps past its crossing (``bench_cp.py`` part 2), so ``ratio_rmsprop_evals`` is
the 10x target's ratio counted in evaluations, up to those steps.

Run: ``python benchmarks/bench_cp_tolerances.py`` (about 3 minutes on an idle core); writes
``benchmarks/results/bench_cp_tolerances.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(1)

from bench_cp import DIMS, problem  # noqa: E402

from factorflow.dynamics import FlowThenGD, Stop, flow_then_gd  # noqa: E402
from factorflow.factorizations.cp import cp_to_tensor, init_cp  # noqa: E402

PAIRS = ((1e-8, 1e-11), (1e-7, 1e-10), (1e-6, 1e-9), (1e-5, 1e-8), (1e-4, 1e-7))


class _Counted:
    """The objective, counting every loss and gradient evaluation (``n``)."""

    def __init__(self, objective: Any) -> None:
        self.objective, self.n = objective, 0

    def __call__(self, factors: Any) -> Any:
        self.n += 1
        return self.objective(factors)

    def value_and_grad(self, factors: Any) -> Any:
        self.n += 1
        return self.objective.value_and_grad(factors)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.objective, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    W, objective = problem(0)
    init = init_cp(DIMS, 1000, 0.005, generator=torch.Generator().manual_seed(1000))
    bench_cp = json.loads((Path(__file__).parent / "results" / "bench_cp.json").read_text())
    rms = bench_cp["flow_vs_rmsprop"]["group_rmsprop"]["n_evals"]
    out = {"torch": torch.__version__, "python": platform.python_version(), "threads": 1}
    out.update(group_rmsprop_evals=rms, runs=[])
    print(f"group RMSProp to its stop (bench_cp.json): {rms} evaluations")
    for rtol, atol in PAIRS:
        counted = _Counted(objective)
        t0 = time.perf_counter()
        res = flow_then_gd(
            init, counted, FlowThenGD(rtol=rtol, atol=atol, seed=10_007, late="cvode"),
            Stop(loss_below=1e-8, max_steps=200_000),
        )  # fmt: skip
        wall = time.perf_counter() - t0
        err = float(torch.linalg.vector_norm(cp_to_tensor(res.params)[0] - W) / W.norm())
        row = {
            "rtol": rtol,
            "atol": atol,
            "status": res.status[0],
            "evals": counted.n,
            "evals_to_switch": int(res.info["flow_nfev"]),
            "late_evals": int(res.info["late_evals"]),
            "switch_time": res.info["switch_time"],
            "flow_time": float(res.time[0]),
            "wall_s": wall,
            "rel_fro_error": err,
            "ratio_rmsprop_evals": rms / counted.n,
        }
        out["runs"].append(row)
        print(
            f"rtol {rtol:.0e} atol {atol:.0e}: {row['status']}, {counted.n} evaluations "
            f"({row['evals_to_switch']} RK45 to the switch at t = {row['switch_time']:.4g}, "
            f"{row['late_evals']} CVODE), {wall:.1f} s, rel_fro_error {err:.4e}, "
            f"group RMSProp / flow evaluations {row['ratio_rmsprop_evals']:.2f}x"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_cp_tolerances.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
