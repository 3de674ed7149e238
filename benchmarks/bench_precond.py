"""The stiff phase on the completion grid's costliest cell: where its time goes, and the
preconditioner's products in float32 against float64.

Cell (``bench_arora2019.py``'s grid): 100x100 rank 5, 2000 observations, problem seed 0, depth 4,
``gaussian`` init 1e-6 (init seed 0), loss ``mse``, ``Flow(method="auto")`` (RK45, then CVODE
once stability-limited) to train mse 1e-6, one thread. The two precisions run alternately,
``--repeats`` times each, in one process; the end states are compared (top-5 singular values of
W, recon_mse). Also printed: how the evaluations split between the RK45 and CVODE segments, and
the median step of CVODE in the windows where it is small (components being learned).

    python benchmarks/bench_precond.py [--repeats 2]
    python benchmarks/bench_precond.py --tolerances   # evaluations at looser rtol / atol
    python benchmarks/bench_precond.py --stacking     # stacked products vs one per factor

Writes ``benchmarks/results/bench_precond.json`` (``bench_precond_tolerances.json``,
``bench_precond_stacking.json``). Measured
with ``--tolerances``: looser tolerances save at most ~1.5x of the evaluations (see the JSON),
so the step count is not mainly set by the tolerance.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from factorflow._threads import set_threads
from factorflow.dynamics import Flow, Schedule, Stop, train
from factorflow.factorizations.dmf import end_to_end, init_dmf
from factorflow.objectives import DMFObjective
from factorflow.problems.matrix import synthetic_completion

RESULTS = Path(__file__).resolve().parent / "results"


def run_cell(
    precond_dtype: str, rtol: float = 1e-7, atol: float = 1e-10, backend: str = "auto"
) -> dict:
    problem = synthetic_completion((100, 100), 5, 2000, 0)
    obj = DMFObjective(problem, "mse")
    factors, _ = init_dmf((100, 100), 4, init="gaussian", init_scale=1e-6, seeds=[0])
    res = train(
        factors,
        obj,
        Flow(method="auto", rtol=rtol, atol=atol, precond_dtype=precond_dtype),
        Stop(loss_below=1e-6, max_evals=200_000),
        Schedule(per_decade=2),
        backend=backend,
    )
    W = end_to_end(res.params)[0]
    segments = res.info.get("segments", [])
    return {
        "precond_dtype": precond_dtype,
        "status": res.status[0],
        "wall_s": res.wall_s,
        "n_evals": res.n_evals,
        "flow_time": float(res.time[0]),
        "segments": segments,
        "cvode_steps": res.info.get("cvode_steps"),
        "nprec_solves": res.info.get("nprec_solves"),
        "accepted_t": np.asarray(res.info.get("accepted_t", [])).tolist(),
        "top5": torch.linalg.svdvals(W)[:5].tolist(),
        "recon_mse": float(torch.mean((W - problem.ground_truth) ** 2)),
    }


#: (rtol, atol) pairs of ``--tolerances``; the first is the experiments' setting.
TOLERANCES = ((1e-7, 1e-10), (1e-6, 1e-10), (1e-5, 1e-10), (1e-7, 1e-9), (1e-7, 1e-8), (1e-6, 1e-8))


def tolerances() -> None:
    """How far the integrator's tolerances move the cost of the cell: evaluations and CVODE steps
    (counts, not times: they do not depend on the machine's load) and the end state against the
    experiments' tolerances (float32 preconditioner products)."""
    runs = [{"rtol": rt, "atol": at, **run_cell("float32", rt, at)} for rt, at in TOLERANCES]
    ref = runs[0]
    for r in runs:
        r["top5_max_rel_diff"] = max(
            abs(x - y) / abs(x) for x, y in zip(ref["top5"], r["top5"], strict=True)
        )
        r["recon_mse_rel_diff"] = abs(r["recon_mse"] - ref["recon_mse"]) / ref["recon_mse"]
        r["evals_ratio"] = ref["n_evals"] / r["n_evals"]
        print(
            f"rtol {r['rtol']:g} atol {r['atol']:g}: {r['n_evals']} evals "
            f"({r['evals_ratio']:.2f}x fewer), {r['cvode_steps']} CVODE steps; top-5 singular "
            f"values {r['top5_max_rel_diff']:.1e}, recon_mse {r['recon_mse_rel_diff']:.1e} "
            "relative to the first",
            flush=True,
        )
    keep = ("rtol", "atol", "status", "n_evals", "cvode_steps", "nprec_solves", "flow_time",
            "top5_max_rel_diff", "recon_mse_rel_diff", "evals_ratio")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_precond_tolerances.json").write_text(
        json.dumps([{k: r[k] for k in keep} for r in runs], indent=1) + "\n"
    )


def alternate(variants: dict, repeats: int, restore) -> dict:
    """Run the cell (float32 preconditioner) under each variant in turn, ``repeats`` times:
    ``variants`` maps a name to a callable that installs that implementation; ``restore()``
    reinstates the default afterwards. The first variant is the baseline: returns the median
    walls, baseline / each, the largest top-5 singular value difference and the runs."""
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    try:
        for _ in range(repeats):
            for name, install in variants.items():
                install()
                r = run_cell("float32")
                runs[name].append({k: r[k] for k in ("wall_s", "n_evals", "status", "top5")})
                print(f"cell, {name}: {r['wall_s']:.1f} s, {r['n_evals']} evals", flush=True)
    finally:
        restore()
    wall = {k: statistics.median(x["wall_s"] for x in v) for k, v in runs.items()}
    base, *others = variants
    first = {k: v[0]["top5"] for k, v in runs.items()}
    top = [(a, b) for v in others for a, b in zip(first[base], first[v], strict=True)]
    out = {
        "cell": "100x100 r5, 2000 obs, seed 0, depth 4, gaussian 1e-6, mse, stop 1e-6",
        "median_wall_s": wall,
        "ratio_to_baseline": {v: wall[base] / wall[v] for v in others},
        "top5_max_rel_diff": max(abs(a - b) / abs(a) for a, b in top),
        "runs": runs,
    }
    print(
        f"median wall: {', '.join(f'{k} {w:.1f} s' for k, w in wall.items())}; "
        f"{base} / others: {', '.join(f'{r:.2f}x' for r in out['ratio_to_baseline'].values())}; "
        f"top-5 singular values equal to {out['top5_max_rel_diff']:.1e} relative",
        flush=True,
    )
    return out


def stacking(repeats: int) -> None:
    """The preconditioner's products stacked over the N square factors (one batched product,
    the default) against one product per factor (``stack=False``), alternately."""
    from factorflow.dynamics import stiff

    default = stiff.DMFCompletionPrecond

    class PerFactor(default):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs, stack=False)

    def install(cls):
        return lambda: setattr(stiff, "DMFCompletionPrecond", cls)

    variants = {"per_factor": install(PerFactor), "stacked": install(default)}
    out = alternate(variants, repeats, install(default))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_precond_stacking.json").write_text(json.dumps(out, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--tolerances", action="store_true", help="instead: evaluations at other rtol / atol"
    )
    ap.add_argument(
        "--stacking", action="store_true", help="instead: stacked products vs one per factor"
    )
    args = ap.parse_args()
    set_threads(1)
    if args.tolerances:
        tolerances()
        return
    if args.stacking:
        stacking(args.repeats)
        return
    runs = []
    for _ in range(args.repeats):
        for dtype in ("float64", "float32"):
            r = run_cell(dtype)
            print(
                f"{dtype}: {r['wall_s']:.1f} s, {r['n_evals']} evals, {r['cvode_steps']} CVODE "
                f"steps, {r['nprec_solves']} preconditioner solves, {r['status']}",
                flush=True,
            )
            runs.append(r)
    by = {d: [r for r in runs if r["precond_dtype"] == d] for d in ("float64", "float32")}
    wall = {d: statistics.median(r["wall_s"] for r in rs) for d, rs in by.items()}
    a, b = by["float64"][0], by["float32"][0]
    top5_rel = max(abs(x - y) / abs(x) for x, y in zip(a["top5"], b["top5"], strict=True))
    recon_rel = abs(a["recon_mse"] - b["recon_mse"]) / a["recon_mse"]
    # where the time goes (float64 run): the RK45 and CVODE segments, CVODE's small steps
    seg = {s["method"]: s["evals_end"] - s["evals_start"] for s in a["segments"]}
    t = np.asarray(a["accepted_t"])
    start = next((s["steps_start"] for s in a["segments"] if s["method"] == "cvode"), 0)
    dt = np.diff(t[start:])
    small = dt[dt < 10.0]
    summary = {
        "cell": "100x100 r5, 2000 obs, seed 0, depth 4, gaussian 1e-6, mse, stop 1e-6",
        "median_wall_s": wall,
        "ratio_float64_over_float32": wall["float64"] / wall["float32"],
        "top5_max_rel_diff": top5_rel,
        "recon_mse": {"float64": a["recon_mse"], "float32": b["recon_mse"]},
        "recon_mse_rel_diff": recon_rel,
        "evals_by_segment_float64": seg,
        "cvode_steps_float64": a["cvode_steps"],
        "cvode_steps_below_dt_10": int(small.size),
        "cvode_median_small_dt": float(np.median(small)) if small.size else None,
        "runs": [{k: v for k, v in r.items() if k != "accepted_t"} for r in runs],
    }
    print(
        f"median wall: float64 {wall['float64']:.1f} s, float32 {wall['float32']:.1f} s "
        f"({summary['ratio_float64_over_float32']:.2f}x); top-5 singular values equal to "
        f"{top5_rel:.1e} relative, recon_mse to {recon_rel:.1e}"
    )
    print(
        f"evaluations by segment: {seg}; CVODE steps {a['cvode_steps']}, of which "
        f"{small.size} shorter than 10 (median {summary['cvode_median_small_dt']:.2f})"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_precond.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
