"""Benchmark: one experiment's cells on one process and on ``--workers N`` processes.

For each experiment named, runs ``factorflow.runner.run_experiment(id, scale=..., workers=w)``
for w = 1 and w = N, one after the other in this process, into fresh folders, and records the
wall time of each (the runner's ``elapsed_s``), the ratio, the pools' log lines (how many cells
ran on how many processes), and whether the
rows are equal apart from wall-clock columns (they must be: where a cell runs never changes its
value). The ratio is bounded by the longest cell and by the machine's free cores: run it on
idle cores.

Run: ``python benchmarks/bench_workers.py [--scale quick] [--workers 2] [--experiments A,B]``
(quick scale, the default three experiments: about 4 minutes on 2 idle cores). Prints a table
and writes ``benchmarks/results/bench_workers_<scale>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from factorflow.runner import run_experiment

#: Wall-clock columns, the only ones allowed to differ between the two runs.
TIMING = {"batch_wall_s", "train_s", "wall_s"}
DEFAULT = "arora2019-completion,razin2020-tensor-recovery,razin2021-dynamics"


def _rows(summary: dict) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in summary["rows"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", default="quick")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--experiments", default=DEFAULT, help="comma-separated experiment ids")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(__file__).parent / "results" / f"bench_workers_{args.scale}.json"
    result: dict = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_before": list(os.getloadavg()),
        "scale": args.scale,
        "workers": args.workers,
        "experiments": {},
    }
    print(f"{'experiment':28s} {'1 process':>10s} {'workers':>10s} ratio rows")
    with tempfile.TemporaryDirectory() as tmp:
        for exp in args.experiments.split(","):
            runs, lines = {}, []
            for w in (1, args.workers):
                runs[w] = run_experiment(
                    exp, Path(tmp) / f"{exp}-w{w}", scale=args.scale, workers=w, log=lines.append
                )
            one, many = runs[1], runs[args.workers]
            d = {
                "wall_s_1": one["elapsed_s"],
                f"wall_s_{args.workers}": many["elapsed_s"],
                "ratio": one["elapsed_s"] / many["elapsed_s"],
                "pools": [m for m in lines if "worker processes" in m],  # cells per map_cells
                "rows_equal": _rows(one) == _rows(many),
                "n_rows": len(one["rows"]),
            }
            result["experiments"][exp] = d
            print(
                f"{exp:28s} {d['wall_s_1']:9.1f}s "
                f"{d[f'wall_s_{args.workers}']:9.1f}s {d['ratio']:5.2f} "
                f"{'equal' if d['rows_equal'] else 'DIFFER'}"
            )
    result["loadavg_after"] = list(os.getloadavg())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
