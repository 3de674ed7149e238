"""The deep-matrix-factorization gradient: shared prefix products against the former formula.

Every DMF training step and flow evaluation computes the loss and dl/dW_j at the end-to-end
matrix W = W_N ... W_1 (``DMFObjective.value_and_grad``). Two ways, timed alternately in this
process on one thread (float64, B = 1, 100x100, the completion grid's sizes):

- former: W by :func:`~factorflow.factorizations.dmf.end_to_end` (N - 1 products), then
  dl/dW_j = (W_N..W_{j+1})^T G (W_{j-1}..W_1)^T with both prefix and suffix products built
  afresh (N - 2 each) and two products per middle factor: 5N - 7 products in all (13 at depth 4);
- now: the prefixes W_j..W_1 once (N - 1 products, the last is W) and backpropagation
  C_j = W_{j+1}^T C_{j+1}, dl/dW_j = C_j (W_{j-1}..W_1)^T: 3(N - 1) products (9 at depth 4).

The gradient ``G`` is a fixed random (d, d) matrix (the loss's own cost is the same both ways and
left out). Also checks the two agree to 1e-12 relative.

``--cell``: also the whole costliest cell of the completion grid (``bench_precond.run_cell``:
depth 4, init 1e-6, ``Flow(method="auto")`` to train mse 1e-6) with ``DMFObjective``'s gradient
done either way, alternately ``--repeats`` times (the evaluation counts differ a little: the
products are associated differently, so the trajectories differ in the last bits).

    python benchmarks/bench_dmf_gradient.py [--repeats 5] [--calls 200] [--cell]

Writes ``benchmarks/results/bench_dmf_gradient.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from factorflow._threads import set_threads
from factorflow.factorizations.dmf import (
    _prefix_suffix,
    dmf_factor_gradients,
    end_to_end,
    partial_products,
)
from factorflow.objectives import DMFObjective

RESULTS = Path(__file__).resolve().parent / "results"


def former(factors: list[torch.Tensor], G: torch.Tensor) -> tuple[torch.Tensor, list]:
    """The implementation before the prefixes were shared (kept here as the baseline)."""
    W = end_to_end(factors)
    below, above = _prefix_suffix(factors)
    out = []
    for j in range(len(factors)):
        g = G
        if above[j] is not None:
            g = above[j].swapaxes(-1, -2) @ g
        if below[j] is not None:
            g = g @ below[j].swapaxes(-1, -2)
        out.append(g)
    return W, out


def now(factors: list[torch.Tensor], G: torch.Tensor) -> tuple[torch.Tensor, list]:
    partial = partial_products(factors)
    return partial[-1], dmf_factor_gradients(factors, G, partial)


def _time(fn, factors, G, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn(factors, G)
    return (time.perf_counter() - start) / calls


def cell(repeats: int) -> dict:
    """The grid's costliest cell with the objective's gradient done the former way and now."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_precond import alternate

    def former_vg(self: DMFObjective, factors: list[torch.Tensor]) -> tuple:
        losses, G = self.grad_W(end_to_end(factors))
        return losses, former(factors, G)[1]

    def install(vg):
        return lambda: setattr(DMFObjective, "value_and_grad", vg)

    now_vg = DMFObjective.value_and_grad
    variants = {"former": install(former_vg), "now": install(now_vg)}
    return alternate(variants, repeats, install(now_vg))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--cell", action="store_true", help="also the completion grid's costliest cell")
    args = ap.parse_args()
    set_threads(1)
    g = torch.Generator().manual_seed(0)
    d = args.size
    rows = []
    for depth in (2, 3, 4):
        fs = [torch.randn(1, d, d, generator=g, dtype=torch.float64) / d**0.5 for _ in range(depth)]
        G = torch.randn(1, d, d, generator=g, dtype=torch.float64)
        (W0, g0), (W1, g1) = former(fs, G), now(fs, G)
        assert torch.equal(W0, W1)
        err = max(float((a - b).norm() / a.norm()) for a, b in zip(g0, g1, strict=True))
        times: dict[str, list[float]] = {"former": [], "now": []}
        for _ in range(args.repeats):
            times["former"].append(_time(former, fs, G, args.calls))
            times["now"].append(_time(now, fs, G, args.calls))
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {
            "depth": depth,
            "size": d,
            "former_us": med["former"] * 1e6,
            "now_us": med["now"] * 1e6,
            "ratio": med["former"] / med["now"],
            "max_rel_diff": err,
        }
        rows.append(row)
        print(
            f"depth {depth}: former {row['former_us']:.0f} us, now {row['now_us']:.0f} us, "
            f"{row['ratio']:.2f}x; gradients equal to {err:.1e} relative",
            flush=True,
        )
        assert err < 1e-12
    RESULTS.mkdir(exist_ok=True)
    out = {"threads": 1, "dtype": "float64", "batch": 1, "calls": args.calls, "rows": rows}
    if args.cell:
        out["cell"] = cell(args.repeats)
    (RESULTS / "bench_dmf_gradient.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
