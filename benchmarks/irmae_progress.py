"""Progress of an interrupted or running IRMAE run: for every model checkpoint in its cell store,
the epochs finished and the wall seconds per epoch (from the history the checkpoint holds).

    python benchmarks/irmae_progress.py out/paper    # reads out/paper/.jing2020-irmae.cells

The paper-scale times in the README and ``docs/irmae-notes.md`` come from this.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the talk's output folder (or the result's parent)")
    ap.add_argument("--name", default="jing2020-irmae", help="the result folder's name")
    args = ap.parse_args()
    store = args.out / f".{args.name}.cells"
    files = sorted(store.glob("*.partial"))
    if not files:
        raise SystemExit(f"no model checkpoints in {store}")
    for f in files:
        state = torch.load(f, map_location="cpu", weights_only=False)
        epochs = state["history"]["epochs"]
        times = [r["time_s"] for r in epochs]
        per = [b - a for a, b in zip(times[:-1], times[1:], strict=True)]
        last = epochs[-1]
        print(
            f"{f.stem}: {state['epoch']} epochs in {state['elapsed_s']:.0f} s; per epoch median "
            f"{statistics.median(per):.1f} s (min {min(per):.1f}, max {max(per):.1f}); last: "
            f"train loss {last['train_loss']:.3g}, count above 1e-2 "
            f"{last.get('count_above_1e-2')}, erank {last.get('erank', float('nan')):.2f}"
        )


if __name__ == "__main__":
    main()
