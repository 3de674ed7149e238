"""Which BLAS is faster for the engine's small products: torch's (MKL in the CPU wheel) or
numpy's (OpenBLAS in numpy's wheel)? The answer depends on the CPU: MKL takes a generic code path
on AMD processors. Two parts, one thread, alternating the two libraries ``--repeats`` times in this
process (medians reported):

1. ``products``: one (100, 100) @ (100, 100) product and a batched (4, 100, 100) one, in float64
   (the flow's field) and float32 (the stiff preconditioner's products), microseconds per call;
2. ``cell``: the completion grid's costliest cell (``bench_precond.run_cell``'s: depth 4, init
   1e-6, ``Flow(method="auto")`` to train mse 1e-6) with the flow's field evaluated through torch
   (``train(..., backend="torch")``, the default at this size) or through the objective's numpy
   kernel (``backend="numpy"``). The preconditioner uses torch either way. The evaluation counts
   differ a little (the two libraries round differently), the end states agree (top-5 singular
   values printed).

    python benchmarks/bench_blas.py [--repeats 2] [--calls 3000] [--skip-cell]

Writes ``benchmarks/results/bench_blas.json`` with the CPU's vendor and model name.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from factorflow._threads import set_threads

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_precond  # noqa: E402  (the cell: bench_precond.run_cell)

OUT = Path(__file__).resolve().parent / "results" / "bench_blas.json"


def cpu() -> dict:
    """Vendor and model name from /proc/cpuinfo (empty where there is none)."""
    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("vendor_id", "model name") and key.strip() not in info:
                info[key.strip()] = value.strip()
    except OSError:  # pragma: no cover - not Linux
        pass
    return info


def products(repeats: int, calls: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for dtype in (np.float64, np.float32):
        for shape in ((100, 100), (4, 100, 100)):
            a, b = rng.random(shape).astype(dtype), rng.random(shape).astype(dtype)
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            fns = {"torch": lambda ta=ta, tb=tb: ta @ tb, "numpy": lambda a=a, b=b: a @ b}
            times: dict[str, list[float]] = {k: [] for k in fns}
            for _ in range(repeats):
                for name, fn in fns.items():
                    for _ in range(50):
                        fn()
                    t = time.perf_counter()
                    for _ in range(calls):
                        fn()
                    times[name].append((time.perf_counter() - t) / calls * 1e6)
            us = {k: statistics.median(v) for k, v in times.items()}
            row = {"dtype": np.dtype(dtype).name, "shape": list(shape), "us": us}
            row["torch_over_numpy"] = us["torch"] / us["numpy"]
            print(
                f"{row['dtype']} {shape}: torch {us['torch']:.1f} us, numpy {us['numpy']:.1f} us",
                flush=True,
            )
            rows.append(row)
    return rows


def cell(repeats: int) -> dict:
    runs: dict[str, list[dict]] = {"torch": [], "numpy": []}
    for _ in range(repeats):
        for backend in runs:
            r = bench_precond.run_cell("float32", backend=backend)
            runs[backend].append({k: r[k] for k in ("wall_s", "n_evals", "status", "top5")})
            print(f"cell, {backend}: {r['wall_s']:.1f} s, {r['n_evals']} evals", flush=True)
    wall = {k: statistics.median(r["wall_s"] for r in v) for k, v in runs.items()}
    t5 = [runs[k][0]["top5"] for k in runs]
    diff = max(abs(a - b) / abs(a) for a, b in zip(*t5, strict=True))
    out = {"median_wall_s": wall, "torch_over_numpy": wall["torch"] / wall["numpy"]}
    out.update(top5_max_rel_diff=diff, runs=runs)
    print(
        f"cell median wall: torch {wall['torch']:.1f} s, numpy {wall['numpy']:.1f} s "
        f"({out['torch_over_numpy']:.2f}x); top-5 singular values equal to {diff:.1e} relative",
        flush=True,
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--skip-cell", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    set_threads(1)
    result = {"cpu": cpu(), "torch": torch.__version__, "numpy": np.__version__, "threads": 1}
    result["products"] = products(args.repeats, args.calls)
    if not args.skip_cell:
        result["cell"] = cell(args.repeats)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
