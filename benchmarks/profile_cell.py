"""Where the completion grid's costliest cell spends its time: ``bench_precond.run_cell``'s flow
(depth 4, init 1e-6, 2000 observations, ``Flow(method="auto")`` to train mse 1e-6, float32
preconditioner products) under cProfile, one thread, grouped into

- the field: ``DMFObjective``'s gradient and the flow's conversions (``fun`` in
  :mod:`factorflow.dynamics.flow`, cumulative);
- the preconditioner's solves (``DMFCompletionPrecond.solve``) and set-ups (``setup``);
- CVODE's own work: the time inside scikit-sundae's ``step`` minus the Python callbacks it makes
  (field, preconditioner), i.e. SUNDIALS' C code (BDF, GMRES, vector operations);
- RK45's own work (scipy's ``rk_step`` minus its field evaluations);
- the rest (recording, loss look-ups, the loop).

    python benchmarks/profile_cell.py    # ~1 min; writes benchmarks/results/profile_cell.json

cProfile's own overhead inflates the total by ~10 %; the shares are what to read.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_precond  # noqa: E402

from factorflow._threads import set_threads  # noqa: E402
from factorflow.dynamics import stiff  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "profile_cell.json"


def _find(stats: dict, file_part: str, name: str, line: int | None = None) -> tuple:
    """(calls, own seconds, cumulative seconds) of function ``name`` (defined at ``line``, when
    given) in a file matching ``file_part``; zeros when it was not called."""
    for (file, at, func), (_cc, nc, tt, ct, _callers) in stats.items():
        if func == name and file_part in file.replace("\\", "/") and line in (None, at):
            return nc, tt, ct
    return 0, 0.0, 0.0


def _line(fn) -> int:
    return fn.__code__.co_firstlineno


def main() -> None:
    set_threads(1)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    cell = bench_precond.run_cell("float32")
    prof.disable()
    wall = time.perf_counter() - t0
    st = pstats.Stats(prof).stats
    n_fun, _, field = _find(st, "factorflow/dynamics/flow.py", "fun")
    pc = stiff.DMFCompletionPrecond
    n_solve, _, solve = _find(st, "dynamics/stiff.py", "solve", _line(pc.solve))
    n_setup, _, setup = _find(st, "dynamics/stiff.py", "setup", _line(pc.setup))
    n_steps, cvode_own, _ = _find(st, "sksundae/cvode/_solver.py", "step")
    n_rk, rk_own, _ = _find(st, "scipy/integrate/_ivp/rk.py", "rk_step")
    rest = wall - field - solve - setup - cvode_own - rk_own
    parts = {
        "field (gradient and conversions)": field,
        "preconditioner solves": solve,
        "preconditioner set-ups": setup,
        "CVODE's own (C) work": cvode_own,
        "RK45's own work": rk_own,
        "the rest": rest,
    }
    result = {
        "cell": "100x100 r5, 2000 obs, seed 0, depth 4, gaussian 1e-6, mse, stop 1e-6",
        "wall_s_profiled": wall,
        "wall_s_run": cell["wall_s"],
        "n_evals": cell["n_evals"],
        "calls": {"field": n_fun, "solves": n_solve, "setups": n_setup, "cvode_steps": n_steps},
        "calls_rk_step": n_rk,
        "seconds": parts,
        "per_call_ms": {
            "field": 1e3 * field / max(n_fun, 1),
            "preconditioner solve": 1e3 * solve / max(n_solve, 1),
            "CVODE own, per step": 1e3 * cvode_own / max(n_steps, 1),
        },
    }
    print(f"{wall:.1f} s profiled, {cell['n_evals']} evaluations, {n_steps} CVODE steps")
    for k, v in parts.items():
        print(f"  {k:34s} {v:6.2f} s  {100 * v / wall:5.1f} %")
    for k, v in result["per_call_ms"].items():
        print(f"  {k:34s} {v:6.3f} ms")
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
