"""Benchmark: IRMAE's training step at the paper's settings (batch 32, Adam lr 1e-4), three
ways in one process, for each (data set, l) of the paper grid:

- ``sync``: the eager step with the loss read after every step (``float(loss)``, which waits
  for the device): the training loop before the step module;
- ``eager``: the eager step with the loss summed on the device (:class:`EagerStep`, the loop
  now), so the host queues steps ahead of the device;
- ``graph``: the step replayed from a CUDA graph (:class:`GraphedStep`; CUDA only).

Each way trains a fresh model from the same init (a graph captured first, untimed: once per
model in a run) for ``--warmup`` steps, then ``--steps`` timed steps (the device synchronized at both ends), on batches drawn from ``--pool`` random
images already on the device; the ways take turns, ``--rounds`` times, and the median per
step is reported with its ratio to ``sync`` and the epoch time it implies (steps per epoch of
the paper run). On a CPU the host waits for nothing and there are no graphs: the ``sync`` and
``eager`` times should match there.

    python benchmarks/bench_irmae_step.py [--device cuda] [--steps 200] [--rounds 3]
        [--out benchmarks/results/bench_irmae_step_cuda.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from bench_irmae_flops import DATASETS

from factorflow.autoencoder import IRMAE
from factorflow.autoencoder.step import EagerStep, GraphedStep
from factorflow.experiments.jing2020_irmae import PAPER_SCALE

WAYS = ("sync", "eager", "graph")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_way(way: str, arch: str, channels: int, l: int, dev, pool, args) -> float:
    """Seconds per step of ``way``: one timed run of ``args.steps`` steps, after
    ``args.warmup`` untimed ones, of a fresh model of the paper's init."""
    model = IRMAE(PAPER_SCALE.latent_dim, l, channels, arch, seed=0).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=PAPER_SCALE.lr, capturable=way == "graph")
    shape = (args.batch, channels, 32, 32)
    step = GraphedStep(model, opt, shape) if way == "graph" else EagerStep(model, opt)
    g = torch.Generator().manual_seed(1)
    batches = [
        pool[torch.randint(len(pool), (args.batch,), generator=g).to(dev)]
        for _ in range(args.warmup + args.steps)
    ]
    total = torch.zeros((), dtype=torch.float64, device=dev)
    for x in batches[: args.warmup]:
        total += step(x)
    _sync(dev)
    t0 = time.perf_counter()
    for x in batches[args.warmup :]:
        if way == "sync":
            float(step(x))  # waits for the device, as the loop did
        else:
            total += step(x)
    _sync(dev)
    return (time.perf_counter() - t0) / args.steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=PAPER_SCALE.batch_size)
    ap.add_argument("--pool", type=int, default=1024, help="random images on the device")
    ap.add_argument("--ls", default=",".join(map(str, PAPER_SCALE.ls)))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(1)  # as each of the experiment's worker processes
    ways = [w for w in WAYS if w != "graph" or dev.type == "cuda"]
    ls = [int(v) for v in args.ls.split(",")]
    rows = []
    for data, (arch, channels, n_train, _, _) in DATASETS.items():
        pool = torch.rand(args.pool, channels, 32, 32, generator=torch.Generator().manual_seed(0))
        pool = pool.to(dev)
        for l in ls:
            times: dict[str, list[float]] = {w: [] for w in ways}
            for _ in range(args.rounds):
                for w in ways:
                    times[w].append(time_way(w, arch, channels, l, dev, pool, args))
            row = {"dataset": data, "l": l, "steps_per_epoch": -(-n_train // args.batch)}
            for w in ways:
                sec = statistics.median(times[w])
                row[f"{w}_ms"] = 1e3 * sec
                row[f"{w}_epoch_s"] = sec * row["steps_per_epoch"]
                row[f"{w}_speedup"] = statistics.median(times["sync"]) / sec
            rows.append(row)
            print(
                f"{data} l={l}: "
                + ", ".join(
                    f"{w} {row[f'{w}_ms']:.2f} ms ({row[f'{w}_speedup']:.2f}x)" for w in ways
                )
                + f"; an epoch ({row['steps_per_epoch']} steps): "
                + ", ".join(f"{w} {row[f'{w}_epoch_s']:.1f} s" for w in ways),
                flush=True,
            )
    out = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else platform.processor(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": rows,
    }
    path = args.out or Path(__file__).parent / "results" / f"bench_irmae_step_{dev.type}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
