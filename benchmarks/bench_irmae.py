"""Benchmark: IRMAE training cost on CPU, and a short schedule on the shape data.

1. ``timing``: seconds per training step (forward + backward + Adam, batch 64, latent 128) of
   :class:`factorflow.autoencoder.IRMAE` on 32x32 images, for l in {0, 8} and both decoders
   ("shapes" on RGB shape images, "mnist" on 1-channel images), timed over ``--steps`` steps
   after 3 warm-up steps and scaled to an epoch of 10,000 images (157 steps).
2. ``schedule``: a real run per l in {0, 8} on ``make_shapes`` data (``--n-train`` /
   ``--n-test``, ``--epochs``, Adam lr 1e-3, batch 64, "shapes" decoder), recording per epoch the
   test latents' normalized covariance spectrum: count above 1e-2, effective rank, test MSE.

Threads: ``--threads`` (default 2). The machine's load average is recorded with the numbers:
on a shared 2-core machine the times are upper bounds.

Run: ``python benchmarks/bench_irmae.py`` (both parts; writes
``benchmarks/results/bench_irmae.json``); ``--part timing`` alone takes about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from factorflow.autoencoder import IRMAE, train_autoencoder
from factorflow.data.shapes import make_shapes

OUT = Path(__file__).parent / "results" / "bench_irmae.json"


def _load() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        return []


def time_steps(arch: str, l: int, steps: int, batch: int = 64) -> float:
    """Median-free mean seconds per Adam step after 3 warm-up steps."""
    channels = 3 if arch == "shapes" else 1
    model = IRMAE(128, l, channels, arch, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, channels, 32, 32, generator=torch.Generator().manual_seed(0))
    for k in range(steps + 3):
        if k == 3:
            start = time.perf_counter()
        loss = F.mse_loss(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / steps


def part_timing(steps: int) -> list[dict]:
    rows = []
    for arch in ("shapes", "mnist"):
        for l in (0, 8):
            load0 = _load()
            s = time_steps(arch, l, steps)
            rows.append(
                {
                    "arch": arch,
                    "l": l,
                    "s_per_step_batch64": round(s, 4),
                    "s_per_epoch_10k": round(s * 157, 1),
                    "loadavg_before": load0,
                }
            )
            print(rows[-1], flush=True)
    return rows


def part_schedule(n_train: int, n_test: int, epochs: int) -> list[dict]:
    x, _ = make_shapes(n_train + n_test, seed=0)
    x = torch.from_numpy(x)
    train, test = x[:n_train], x[n_train:]
    rows = []
    for l in (0, 8):
        model = IRMAE(128, l, 3, "shapes", seed=0)
        hist = train_autoencoder(
            model, train, epochs=epochs, batch_size=64, lr=1e-3, seed=0, eval_images=test,
            callback=lambda r, l=l: print(
                f"l={l} epoch {r['epoch']} loss {r['train_loss']:.5f} "
                f"count {r.get('count_above_1e-2')} erank {r.get('erank', float('nan')):.2f} "
                f"test mse {r.get('eval_mse', float('nan')):.5f} t {r['time_s']:.0f}s",
                flush=True,
            ),
        )  # fmt: skip
        for r in hist["epochs"]:
            rows.append(
                {
                    "l": l,
                    "epoch": r["epoch"],
                    "train_loss": r["train_loss"],
                    "count_above_1e-2": r.get("count_above_1e-2"),
                    "erank": r.get("erank"),
                    "test_mse": r.get("eval_mse"),
                    "time_s": round(r["time_s"], 1),
                    "top10": [round(v, 4) for v in r.get("spectrum", [])[:10]],
                }
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["timing", "schedule", "all"], default="all")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    result = json.loads(a.out.read_text()) if a.out.exists() else {}
    result["machine"] = {
        "cpus": os.cpu_count(),
        "threads": a.threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if a.part in ("timing", "all"):
        result["timing"] = {"loadavg_start": _load(), "rows": part_timing(a.steps)}
    if a.part in ("schedule", "all"):
        t = time.perf_counter()
        rows = part_schedule(a.n_train, a.n_test, a.epochs)
        result["schedule"] = {
            "settings": {
                "data": "make_shapes(seed=0)",
                "n_train": a.n_train,
                "n_test": a.n_test,
                "epochs": a.epochs,
                "batch_size": 64,
                "lr": 1e-3,
                "latent_dim": 128,
                "arch": "shapes",
            },
            "loadavg_start": _load(),
            "elapsed_s": round(time.perf_counter() - t, 1),
            "rows": rows,
        }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
