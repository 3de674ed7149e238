"""Training an IRMAE (Adam on the reconstruction MSE) and reading out its latent codes."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from factorflow.autoencoder.latent import count_above, latent_effective_rank, latent_spectrum
from factorflow.autoencoder.model import IRMAE, check_images
from factorflow.autoencoder.step import EagerStep, GraphedStep, set_capturable, use_cuda_graph
from factorflow.results import write_json

__all__ = ["epoch_line", "latent_codes", "reconstruction_mse", "train_autoencoder"]


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def latent_codes(model: IRMAE, images: Tensor, batch_size: int = 500) -> Tensor:
    """``z_bar`` of every image, in eval mode: ``(N, C, 32, 32)`` in [0, 1] -> ``(N, n)`` (on
    the CPU, the model's dtype)."""
    check_images(images, model.channels, model.image_size)
    was_training = model.training
    model.eval()
    device = _device_of(model)
    out = [model.encode(b.to(device)).cpu() for b in torch.split(images, batch_size)]
    model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def reconstruction_mse(model: IRMAE, images: Tensor, batch_size: int = 500) -> float:
    """Mean over images and pixels of ``(dec(enc(x)) - x)^2`` (the training loss, [0, 1] units)."""
    check_images(images, model.channels, model.image_size)
    was_training = model.training
    model.eval()
    device = _device_of(model)
    total = 0.0
    for b in torch.split(images, batch_size):
        b = b.to(device)
        total += float(F.mse_loss(model(b), b, reduction="sum"))
    model.train(was_training)
    return total / images.numel()


def train_autoencoder(
    model: IRMAE,
    train_images: Tensor,
    *,
    epochs: int,
    batch_size: int = 32,
    lr: float = 1e-4,
    seed: int = 0,
    device: str | torch.device | None = None,
    eval_images: Tensor | None = None,
    spectrum_every: int = 1,
    callback: Callable[[dict], None] | None = None,
    max_time: float | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    cuda_graph: bool | None = None,
) -> dict:
    """Train with Adam on the MSE reconstruction loss; returns the history.

    Args:
        model: an :class:`IRMAE` (moved to ``device``).
        train_images: ``(N, C, 32, 32)`` in [0, 1] (kept on the CPU; batches are moved).
        epochs: passes over the data; batch_size, lr: Adam's (the paper: 32, 1e-4).
        seed: shuffling generator seed (the model's init has its own, :class:`IRMAE`'s).
        device: where to train (default: where the model is).
        eval_images: held-out images; every ``spectrum_every`` epochs (and before training,
            epoch 0) their latent spectrum, effective rank, count above 1e-2 and MSE are recorded.
        callback: called after every epoch with that epoch's record.
        max_time: stop (mid-epoch) once this many seconds have passed.
        checkpoint: a file where the state after each epoch is written (model, Adam, the
            shuffling generator, the history; atomically); when it exists at the start, training
            continues from it, to the same result as without the interruption (a paper-scale
            model is an hour or more on a CPU). Beside it, ``<checkpoint>.json`` says how far
            training is without loading it (``{"done": epoch, "total": epochs, "unit":
            "epochs", "elapsed_s"}``; ``factorflow status`` shows it). The caller removes both
            when done.
        cuda_graph: replay each step from a CUDA graph (:mod:`factorflow.autoencoder.step`;
            CUDA only); None: as ``FACTORFLOW_CUDA_GRAPHS=1`` says, on a CUDA device.

    Batches are drawn from a copy of ``train_images`` on the device when it is a GPU, and the
    loss is summed there: no step waits for the device (on the CPU nothing changes).

    Returns:
        ``{"epochs": [record, ...], "stopped": "epochs" | "max_time", "elapsed_s": float}``
        (``elapsed_s`` and each ``time_s``: wall seconds of training since epoch 0, summed over
        the attempts a checkpoint joins; an interrupted epoch's lost work is not counted), a
        record being ``{"epoch", "train_loss" (mean over the epoch's batches), "time_s"}`` plus
        ``"spectrum" (list), "erank", "count_above_1e-2", "eval_mse"`` when measured.
    """
    check_images(train_images, model.channels, model.image_size, "train_images")
    if eval_images is not None:
        check_images(eval_images, model.channels, model.image_size, "eval_images")
    for value, name in (
        (epochs, "epochs"),
        (batch_size, "batch_size"),
        (spectrum_every, "spectrum_every"),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if device is not None:
        model.to(device)
    dev = _device_of(model)
    graphed = use_cuda_graph(cuda_graph, dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr, capturable=graphed)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    history: dict = {"epochs": [], "stopped": "epochs"}
    done = 0  # epochs finished (by an earlier attempt, when resuming from ``checkpoint``)
    if checkpoint is not None and Path(checkpoint).is_file():
        state = torch.load(checkpoint, map_location=dev, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        set_capturable(opt, graphed)  # the checkpoint's Adam may be of the other kind
        g.set_state(state["generator"])
        history, done = state["history"], int(state["epoch"])
        start -= state["elapsed_s"]

    def measure(record: dict) -> dict:
        if eval_images is not None:
            spec = latent_spectrum(latent_codes(model, eval_images))
            record["spectrum"] = spec.tolist()
            record["erank"] = latent_effective_rank(spec)
            record["count_above_1e-2"] = count_above(spec, 1e-2)
            record["eval_mse"] = reconstruction_mse(model, eval_images)
        return record

    if eval_images is not None and done == 0:
        history["epochs"].append(measure({"epoch": 0, "train_loss": math.nan, "time_s": 0.0}))
    n = train_images.shape[0]
    source = train_images.to(dev) if dev.type == "cuda" else train_images
    shape = (batch_size, *train_images.shape[1:])
    step = GraphedStep(model, opt, shape) if graphed else EagerStep(model, opt)
    for epoch in range(done + 1, epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=g).to(source.device)
        total = torch.zeros((), dtype=torch.float64, device=dev)  # float64, as a Python sum
        batches, out_of_time = 0, False
        for i in range(0, n, batch_size):
            x = source[perm[i : i + batch_size]].to(dev)
            total += step(x)
            batches += 1
            if max_time is not None and time.perf_counter() - start > max_time:
                out_of_time = True
                break
        record = {
            "epoch": epoch if not out_of_time else epoch - 1 + batches * batch_size / n,
            "train_loss": float(total) / batches,
            "time_s": time.perf_counter() - start,
        }
        if epoch % spectrum_every == 0 or epoch == epochs or out_of_time:
            measure(record)
        history["epochs"].append(record)
        if callback is not None:
            callback(record)
        if out_of_time:
            history["stopped"] = "max_time"
            break
        if checkpoint is not None:
            _save(checkpoint, model, opt, g, history, epoch, epochs, time.perf_counter() - start)
    history["elapsed_s"] = time.perf_counter() - start
    model.eval()
    return history


def epoch_line(record: dict) -> str:
    """One epoch's progress line from a :func:`train_autoencoder` record (its ``callback``):
    ``epoch E (T s): loss L``, then ``, count C, erank R`` on epochs that measured the latent
    spectrum. ``T`` is the wall time of training so far, summed over sittings."""
    line = f"epoch {record['epoch']:g} ({record['time_s']:.0f} s): loss {record['train_loss']:.5f}"
    if "erank" in record:
        line += f", count {record['count_above_1e-2']}, erank {record['erank']:.2f}"
    return line


def _save(
    path: str | os.PathLike[str],
    model: nn.Module,
    opt: torch.optim.Optimizer,
    g: torch.Generator,
    history: dict,
    epoch: int,
    epochs: int,
    elapsed: float,
) -> None:
    """Write the state after ``epoch`` to ``path``, then how far training is to ``path.json``,
    each atomically (a temporary name, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    state = {"model": model.state_dict(), "optimizer": opt.state_dict()}
    state.update(generator=g.get_state(), history=history, epoch=epoch, elapsed_s=elapsed)
    torch.save(state, tmp)
    os.replace(tmp, path)
    progress = {"done": epoch, "total": epochs, "unit": "epochs", "elapsed_s": elapsed}
    write_json(path.with_name(f"{path.name}.json"), progress)
