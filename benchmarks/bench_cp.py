"""Benchmark: CP tensor completion steps, factorflow's index-based CP vs a dense one-hot
formulation like the original code (Razin, Maman & Cohen 2021), and gradient flow vs group
RMSProp to the same stopping point. Run on demand:

    python benchmarks/bench_cp.py [--steps 20] [--flow-R 1000] [--skip-flow] [--part2-only]
        [--gradient closed|autograd] [--out FILE]

Part 1 (per step = forward + backward + parameter update, float64, one thread, same process):

* ``ours``: :class:`~factorflow.objectives.CPObjective` (prediction at the observed indices only,
  :func:`~factorflow.factorizations.cp.cp_predict`, the closed-form gradient of
  :mod:`factorflow.factorizations.cp_grad`) + a GD update, B = 1; the same by autograd; and the
  same batched over ``--batch`` initial seeds (B runs in one tensor program; time per run).
* ``dense one-hot``: every observation stored as a one-hot tensor of the full shape
  (m x 10^4 = 2e7 numbers, 160 MB in float64 for m = 2000), the full CP tensor built by an einsum
  of the factors, prediction = einsum of the one-hot stack with the full tensor, autograd
  backward, GD update; and the same with the prediction written as the original code's training
  step wrote it, an elementwise product of the stack with the full tensor summed per observation
  (an m x 10^4 temporary in the forward and the backward pass).

The problem is the paper's: a 10x10x10x10 target of CP rank 5, 2000 observations, R = 1000.

Part 2: group RMSProp (lr 1e-2, eps 1e-6, the paper's optimizer) against gradient flow ("flow
then GD": RK45 until its steps are stability-limited, then GD just under 2/lambda_max, as in the
razin2021-dynamics experiment; and "flow then CVODE": the same switch, the stiff phase by
SUNDIALS CVODE instead of GD, ``FlowThenGD(late="cvode")``), same problem, same initial factors
(std 0.005), the experiment's
stopping rule (train mse 1e-8, then 1250 more steps). Reported: wall time to the crossing of
1e-8, and to the larger of the two final rel_fro_errors ("the same final error": the first
record where each run's error is at or below it; wall-clock and error are recorded as probes, so
the times include the probes' small cost). Default R = 1000 (about 5
CPU minutes for part 2); ``--flow-R 100`` is the experiment's quick scale.

Prints a table and writes JSON (default ``benchmarks/results/bench_cp.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)

from factorflow.dynamics import (  # noqa: E402
    FlowThenGD,
    GroupRMSProp,
    Schedule,
    Stop,
    flow_then_gd,
    train_past_crossing,
)
from factorflow.dynamics.train import gradient  # noqa: E402
from factorflow.factorizations.cp import cp_to_tensor, init_cp  # noqa: E402
from factorflow.objectives import CPObjective  # noqa: E402
from factorflow.problems.tensor import low_rank_tensor, tensor_completion  # noqa: E402

DIMS = (10, 10, 10, 10)


def problem(seed: int = 0, n_obs: int = 2000) -> tuple[torch.Tensor, CPObjective]:
    gen = torch.Generator().manual_seed(seed)
    W, _ = low_rank_tensor(DIMS, 5, generator=gen)
    return W, CPObjective(tensor_completion(W, n_obs, gen), "mse")


def time_steps(step, n: int, warmup: int = 2) -> float:
    """Median wall seconds of ``step()`` over ``n`` calls after ``warmup``."""
    for _ in range(warmup):
        step()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


class _Autograd:
    """The objective without its closed-form ``value_and_grad``: the engine falls back to
    autograd through ``cp_predict`` (the gradient before ``factorflow.factorizations.cp_grad``)."""

    def __init__(self, objective: CPObjective) -> None:
        self.objective = objective

    def __call__(self, factors: list[torch.Tensor]) -> torch.Tensor:
        return self.objective(factors)

    def __getattr__(self, name: str):  # noqa: ANN204 - everything else is the objective's
        if name == "value_and_grad":
            raise AttributeError(name)
        return getattr(self.objective, name)


def ours_step_fn(objective: CPObjective, factors: list[torch.Tensor], lr: float):
    state = {"p": [f.clone() for f in factors]}

    def step() -> None:
        _, grads = gradient(objective, state["p"])
        state["p"] = [p - lr * g for p, g in zip(state["p"], grads, strict=True)]

    return step, state


def onehot_stack(objective: CPObjective) -> torch.Tensor:
    """``(m, *dims)`` float64: observation i as the one-hot tensor of its position."""
    idx = objective.obs.indices
    X = torch.zeros((idx.shape[0], *DIMS), dtype=torch.float64)
    X[(torch.arange(idx.shape[0]), *idx.T)] = 1.0
    return X


def dense_step_fn(
    X: torch.Tensor, y: torch.Tensor, factors: list[torch.Tensor], lr: float, how: str = "einsum"
):
    """One GD step of the dense one-hot formulation. ``how="einsum"``: prediction =
    ``einsum('mijkl,ijkl->m', X, W)``; ``how="elementwise"``: ``(X * W).sum`` over the entries
    (an ``m x 10^4`` temporary), the form of the original code's training step."""
    ps = [f[0].clone().requires_grad_(True) for f in factors]  # (d_n, R) each

    def step() -> None:
        W = torch.einsum("ir,jr,kr,lr->ijkl", *ps)
        if how == "einsum":
            pred = torch.einsum("mijkl,ijkl->m", X, W)
        else:
            pred = (X * W.unsqueeze(0)).reshape(X.shape[0], -1).sum(dim=1)
        loss = (pred - y).square().mean()
        grads = torch.autograd.grad(loss, ps)
        with torch.no_grad():
            for p, g in zip(ps, grads, strict=True):
                p -= lr * g

    return step, ps


def part1(args: argparse.Namespace) -> dict:
    W, obj = problem(0)
    R, lr = 1000, 1.0
    f1 = init_cp(DIMS, R, 0.05, generator=torch.Generator().manual_seed(1))
    fB = init_cp(DIMS, R, 0.05, batch=args.batch, generator=torch.Generator().manual_seed(1))
    X = onehot_stack(obj)
    # same numbers from both formulations before timing anything
    W_full = torch.einsum("ir,jr,kr,lr->ijkl", *[f[0] for f in f1])
    dense_pred = torch.einsum("mijkl,ijkl->m", X, W_full)
    ours_pred = obj.residuals(f1)[0] + obj.obs.values
    assert torch.allclose(dense_pred, ours_pred, rtol=1e-10, atol=1e-14)

    ours, _ = ours_step_fn(obj, f1, lr)
    ours_ag, _ = ours_step_fn(_Autograd(obj), f1, lr)
    oursB, _ = ours_step_fn(obj, fB, lr)
    dense, _ = dense_step_fn(X, obj.obs.values, f1, lr)
    dense_el, _ = dense_step_fn(X, obj.obs.values, f1, lr, how="elementwise")
    t_ours = time_steps(ours, args.steps)
    t_ours_ag = time_steps(ours_ag, args.steps)
    t_batch = time_steps(oursB, max(args.steps // 2, 3)) / args.batch
    t_dense = time_steps(dense, max(args.steps // 2, 3))
    t_dense_el = time_steps(dense_el, max(args.steps // 4, 3))
    return {
        "problem": {"dims": DIMS, "rank": 5, "n_obs": 2000, "R": R, "dtype": "float64"},
        "onehot_stack_bytes": X.numel() * X.element_size(),
        "ours_s_per_step": t_ours,
        "ours_autograd_s_per_step": t_ours_ag,
        "ratio_autograd_over_closed_form": t_ours_ag / t_ours,
        "ours_batched_s_per_run_step": t_batch,
        "batch": args.batch,
        "dense_onehot_s_per_step": t_dense,
        "ratio_dense_over_ours": t_dense / t_ours,
        "ratio_dense_over_ours_batched": t_dense / t_batch,
        "dense_onehot_elementwise_s_per_step": t_dense_el,
        "ratio_dense_elementwise_over_ours": t_dense_el / t_ours,
    }


def _first_wall(tr, target: float) -> float | None:
    """Wall seconds (probe ``x_wall``) at the first record with ``rel_fro_error <= target``."""
    hit = np.flatnonzero(tr.values["x_rel"] <= target * (1 + 1e-12))
    return float(tr.values["x_wall"][hit[0]]) if len(hit) else None


def part2(args: argparse.Namespace) -> dict:
    W, obj = problem(0)
    if args.gradient == "autograd":
        obj = _Autograd(obj)
    init = init_cp(DIMS, args.flow_R, 0.005, generator=torch.Generator().manual_seed(1000))
    # the experiment's settings (razin2021-dynamics, paper scale) with R, budgets from args
    stop = Stop(loss_below=1e-8, max_steps=args.max_steps, max_wall_s=args.max_wall_s)
    out: dict = {"R": args.flow_R, "init_std": 0.005, "stop": "train mse 1e-8 + 1250 steps"}
    out["gradient"] = args.gradient

    def probes(t0: list[float]) -> dict:
        return {
            "x_rel": lambda p: (
                torch.linalg.vector_norm((cp_to_tensor(p) - W).reshape(p[0].shape[0], -1), dim=1)
                / W.norm()
            ),
            "x_wall": lambda p: torch.full((p[0].shape[0],), time.perf_counter() - t0[0]),
        }

    runs = {}
    t0 = [time.perf_counter()]
    rmsprop = GroupRMSProp(1e-2, beta=0.99, eps=1e-6)
    runs["group_rmsprop"] = train_past_crossing(
        init, obj, rmsprop, stop, 1250, Schedule(every=50), probes(t0)
    )
    for late in ("gd", "cvode"):
        t1 = [time.perf_counter()]
        hybrid = FlowThenGD(patience_steps=1250, seed=10_007, late=late)
        runs[f"flow_then_{late}"] = flow_then_gd(init, obj, hybrid, stop, probes(t1))
    trs = {k: r.run_trajectory(0) for k, r in runs.items()}
    finals = {k: float(trs[k].values["x_rel"][-1]) for k in runs}
    target = max(finals.values())
    for name, r in runs.items():
        cross = r.info.get("crossing_time")
        wall_cross = None
        if cross is not None:
            k = np.flatnonzero(trs[name].time >= cross * (1 - 1e-12))
            wall_cross = float(trs[name].values["x_wall"][k[0]]) if len(k) else None
        out[name] = {
            "status": r.status[0],
            "steps": int(r.steps[0]),
            "n_evals": r.n_evals,
            "wall_s": r.wall_s,
            "final_loss": float(r.final_loss[0]),
            "rel_fro_error": finals[name],
            "wall_s_to_crossing_1e-8": wall_cross,
            "wall_s_to_common_error": _first_wall(trs[name], target),
        }
        if name.startswith("flow_then"):
            keys = ("flow_nfev", "flow_accepted_steps", "switch_time", "gd_steps", "late_evals")
            out[name].update({k: r.info[k] for k in (*keys, "hessian_vector_products")})
    out["common_error"] = target
    g = out["group_rmsprop"]["wall_s_to_common_error"]
    for late in ("gd", "cvode"):
        f = out[f"flow_then_{late}"]["wall_s_to_common_error"]
        # an error no better than the zero tensor's (1.0) is no common target
        ok = target < 1.0 and g is not None and f is not None and f > 0
        key = "ratio_rmsprop_over_flow_to_common_error" + ("" if late == "gd" else "_cvode")
        out[key] = g / f if ok else None
    return out


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per formulation")
    ap.add_argument("--batch", type=int, default=3, help="runs batched in 'ours batched'")
    ap.add_argument("--flow-R", type=int, default=1000, help="components for part 2")
    ap.add_argument("--max-steps", type=int, default=200_000, help="part 2 step budget")
    ap.add_argument("--max-wall-s", type=float, default=3600.0, help="part 2 wall budget/run")
    ap.add_argument("--skip-flow", action="store_true", help="part 1 only")
    ap.add_argument(
        "--part2-only", action="store_true", help="part 2 only (part 1 kept from --out)"
    )
    ap.add_argument(
        "--gradient",
        choices=("closed", "autograd"),
        default="closed",
        help="part 2's gradient: the closed form (default) or autograd through cp_predict",
    )
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_cp.json")
    args = ap.parse_args()
    result = {"torch": torch.__version__, "python": platform.python_version(), "threads": 1}
    if args.part2_only:
        result["per_step"] = json.loads(args.out.read_text())["per_step"]
    p1 = result["per_step"] if args.part2_only else part1(args)
    result["per_step"] = p1
    print("== per step (forward + backward + update), 10^4 tensor, 2000 obs, R = 1000, float64")
    print(f"  ours (index-based, B=1)        {p1['ours_s_per_step'] * 1e3:9.2f} ms")
    if "ours_autograd_s_per_step" in p1:
        print(
            f"  ours by autograd (B=1)         {p1['ours_autograd_s_per_step'] * 1e3:9.2f} ms "
            f"({p1['ratio_autograd_over_closed_form']:.2f}x the closed form)"
        )
    print(
        f"  ours batched (B={p1['batch']}, per run)   "
        f"{p1['ours_batched_s_per_run_step'] * 1e3:9.2f} ms"
    )
    print(
        f"  dense one-hot ({p1['onehot_stack_bytes'] / 1e6:.0f} MB stack)  "
        f"{p1['dense_onehot_s_per_step'] * 1e3:9.2f} ms"
    )
    print(
        f"  dense one-hot, elementwise (X * W).sum as the original trainer "
        f"{p1['dense_onehot_elementwise_s_per_step'] * 1e3:9.2f} ms"
    )
    print(
        f"  ratio dense (einsum) / ours: {p1['ratio_dense_over_ours']:.1f}x (B=1), "
        f"{p1['ratio_dense_over_ours_batched']:.1f}x (batched, per run); "
        f"dense (elementwise) / ours: {p1['ratio_dense_elementwise_over_ours']:.1f}x"
    )
    if not args.skip_flow:
        p2 = part2(args)
        result["flow_vs_rmsprop"] = p2
        print(f"== from init std 0.005, R = {p2['R']}, stop: {p2['stop']}")
        for name in ("group_rmsprop", "flow_then_gd", "flow_then_cvode"):
            d = p2[name]
            extra = (
                f" (RK45 {d['flow_nfev']} evals, then {d['gd_steps']} GD steps / "
                f"{d['late_evals']} CVODE evals, {d['hessian_vector_products']} Hessian-vector "
                "products)"
                if name.startswith("flow_then")
                else ""
            )
            print(
                f"  {name:14s} {d['status']}, {d['n_evals']} gradient evals{extra}, "
                f"{d['wall_s']:.1f} s; rel_fro_error {d['rel_fro_error']:.2e}; "
                f"to train mse 1e-8: {_fmt(d['wall_s_to_crossing_1e-8'])} s; "
                f"to rel_fro_error {p2['common_error']:.2e}: {_fmt(d['wall_s_to_common_error'])} s"
            )
        r = p2["ratio_rmsprop_over_flow_to_common_error"]
        print(f"  wall ratio group_rmsprop / flow-then-GD to the same error: {_fmt(r)}x")
        r = p2["ratio_rmsprop_over_flow_to_common_error_cvode"]
        print(f"  wall ratio group_rmsprop / flow-then-CVODE to the same error: {_fmt(r)}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
