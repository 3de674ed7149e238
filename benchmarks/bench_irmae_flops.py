"""Benchmark: how much arithmetic IRMAE's paper-scale training is, and how close this CPU runs
it to the core's matrix-product speed (is the 8-model paper run compute-bound?).

1. ``flops``: floating-point operations of one training step (forward + backward of the MSE
   reconstruction loss, batch ``--batch``, the paper's 32) of :class:`factorflow.autoencoder.IRMAE`
   for each (data set, l) of the paper scale, counted by ``torch.utils.flop_counter``
   (convolutions, transposed convolutions and matrix products; a multiply-add is 2 operations;
   Adam's and the activations' elementwise work is not counted: it is O(parameters + activations),
   under 1 % of the products here), and of the per-epoch measurement on the test images
   (``latent_codes`` + ``reconstruction_mse``: one encoder and one full forward pass each).
2. ``rate``: the step's wall time, median of ``--steps`` steps after 3 warm-up steps, with one
   thread (what each of ``--workers`` processes uses), on random images of the model's shape;
   and the core's float32 matrix-product rate (``torch.mm`` of 1024x1024 matrices, best of 5):
   the attainable ceiling for dense arithmetic on one core. The l = 0 steps are timed again in
   the channels-last memory format (oneDNN's preferred layout), interleaved with the default.
3. ``totals``: the paper-scale run's arithmetic (``jing2020_irmae.PAPER_SCALE``: each model's
   epochs x steps per epoch x step operations + (epochs + 1) measurements x test images x
   measurement operations), and the wall time it needs on ``--cores`` cores (one model per core,
   in the run's start order, ``jing2020_irmae.model_cells``) (a) at the measured step rate and
   (b) at the matrix-product ceiling: (b) is a lower bound no
   scheduling or kernel tuning on this machine can beat without changing the settings.

Run with the cores otherwise idle (a paper run in the background: pause it). Writes
``benchmarks/results/bench_irmae_flops.json``. ``--device cuda`` (``benchmarks/gpu.sh``) times the
steps on the GPU against its own float32 product rate (8192x8192), one model at a time
(``--cores 1``).

    python benchmarks/bench_irmae_flops.py [--steps 20] [--batch 32] [--cores 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from irmae_progress import time_left
from torch.utils.flop_counter import FlopCounterMode

from factorflow.autoencoder import IRMAE
from factorflow.experiments.jing2020_irmae import PAPER_SCALE, model_cells

OUT = Path(__file__).parent / "results" / "bench_irmae_flops.json"
DATASETS = {  # data set -> (decoder, channels, training images, test images, epochs)
    "shapes": (
        "shapes",
        3,
        PAPER_SCALE.shapes_n_train,
        PAPER_SCALE.shapes_n_test,
        PAPER_SCALE.shapes_epochs,
    ),
    PAPER_SCALE.images: (
        "mnist",
        1,
        PAPER_SCALE.images_n_train,
        PAPER_SCALE.images_n_test,
        PAPER_SCALE.images_epochs,
    ),
}


def _images(channels: int, batch: int) -> torch.Tensor:
    return torch.rand(batch, channels, 32, 32, generator=torch.Generator().manual_seed(0))


def step_flops(arch: str, channels: int, l: int, batch: int) -> int:
    """Operations of one forward + backward of the MSE loss on a ``(batch, C, 32, 32)`` batch."""
    model = IRMAE(PAPER_SCALE.latent_dim, l, channels, arch, seed=0)
    x = _images(channels, batch)
    with FlopCounterMode(display=False) as counter:
        F.mse_loss(model(x), x).backward()
    return counter.get_total_flops()


def measure_flops_per_image(arch: str, channels: int, l: int) -> int:
    """Operations per test image of the per-epoch measurement: encoder + full forward pass."""
    model = IRMAE(PAPER_SCALE.latent_dim, l, channels, arch, seed=0).eval()
    x = _images(channels, 100)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.encode(x)
        model(x)
    return counter.get_total_flops() // 100


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def step_seconds(
    arch: str,
    channels: int,
    l: int,
    batch: int,
    steps: int,
    channels_last: bool = False,
    device: str = "cpu",
) -> float:
    """Median wall time of one Adam step (forward, backward, update) after 3 warm-up steps, on
    ``device`` (timed to the device's completion); ``channels_last``: model and images in that
    memory format (oneDNN's preferred layout)."""
    model = IRMAE(PAPER_SCALE.latent_dim, l, channels, arch, seed=0).to(device)
    x = _images(channels, batch).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=PAPER_SCALE.lr)
    times = []
    for k in range(steps + 3):
        _sync(device)
        t = time.perf_counter()
        loss = F.mse_loss(model(x), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        if k >= 3:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_rate(n: int = 1024, repeats: int = 5, device: str = "cpu") -> float:
    """Best float32 ``n x n`` matrix-product rate on ``device``, operations per second (2 n^3
    per product)."""
    gen = (torch.rand(n, n, generator=torch.Generator().manual_seed(s)) for s in (1, 2))
    a, b = (m.to(device) for m in gen)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=PAPER_SCALE.batch_size)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--device", default="cpu", help="cpu (one thread) or cuda (gpu.sh)")
    a = p.parse_args()
    torch.set_num_threads(1)
    dev = a.device
    n = 1024 if dev == "cpu" else 8192  # a GPU needs a larger product to reach its rate
    ceiling = matmul_rate(n, device=dev)
    print(f"float32 {n}x{n} products on {dev}: {ceiling / 1e9:.1f} GFLOP/s", flush=True)
    rows, model_seconds, model_floor = [], [], []
    for _, name, l, _ in model_cells(PAPER_SCALE, a.cores):  # the run's start order
        arch, channels, n_train, n_test, epochs = DATASETS[name]
        f_step = step_flops(arch, channels, l, a.batch)
        f_measure = measure_flops_per_image(arch, channels, l)
        s_step = step_seconds(arch, channels, l, a.batch, a.steps, device=dev)
        steps = epochs * math.ceil(n_train / a.batch)
        total = steps * f_step + (epochs + 1) * n_test * f_measure
        rate = f_step / s_step  # the measurement's forward passes counted at the same rate
        model_seconds.append(total / rate)
        model_floor.append(total / ceiling)
        rows.append(
            {
                "dataset": name,
                "l": l,
                "gflop_per_step": round(f_step / 1e9, 3),
                "mflop_per_measured_image": round(f_measure / 1e6, 2),
                "s_per_step": round(s_step, 4),
                "gflop_per_s": round(rate / 1e9, 1),
                "fraction_of_matmul_rate": round(rate / ceiling, 3),
                "model_pflop": round(total / 1e15, 3),
                "model_h_at_measured_rate": round(total / rate / 3600, 2),
                "model_h_at_matmul_rate": round(total / ceiling / 3600, 2),
            }
        )
        print(rows[-1], flush=True)
    layouts = {}  # the default layout against channels-last, interleaved, twice
    for name, (arch, channels, *_) in DATASETS.items():
        for layout in ("channels_last", "default") * 2:
            t = step_seconds(arch, channels, 0, a.batch, a.steps, layout == "channels_last", dev)
            layouts.setdefault(f"{name} l=0", {}).setdefault(layout, []).append(round(t, 4))
    print("s per step by memory layout:", layouts, flush=True)
    # one model per core, in the run's order, each core taking the next model when free
    wall, wall_floor = time_left(model_seconds, a.cores), time_left(model_floor, a.cores)
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        },
        "batch": a.batch,
        "device": dev,
        f"matmul_gflop_per_s_{'one_thread' if dev == 'cpu' else 'device'}": round(ceiling / 1e9, 1),
        "rows": rows,
        "s_per_step_by_memory_layout": layouts,
        "paper_run": {
            "pflop": round(sum(r["model_pflop"] for r in rows), 3),
            "cores": a.cores,
            "h_at_measured_rates": round(wall / 3600, 2),
            "h_at_matmul_rate": round(wall_floor / 3600, 2),
        },
    }
    print(result["paper_run"])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
