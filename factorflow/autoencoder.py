"""Implicit Rank-Minimizing Autoencoder (IRMAE; Jing, Zbontar, LeCun, NeurIPS 2020, arXiv:2010.00679).

A deterministic autoencoder with ``l`` extra square, bias-free linear layers between the encoder
and the decoder: ``z = enc(x)`` (n numbers), ``z_bar = W_l ... W_1 z`` (a
:class:`~factorflow.nn.DeepLinear` of depth l, PyTorch's default init; l = 0 is the plain
autoencoder), ``x_hat = dec(z_bar)``; loss = MSE(x_hat, x), Adam. Gradient descent on the
product ``W_l ... W_1`` lowers the rank of the latent code as deep matrix factorization lowers
the rank of W; ``z_bar`` is the latent that is analysed, sampled and decoded.

Architecture (the authors' settings, as recorded in ``PAPERS.md`` G and their public code;
no code copied), for ``C x 32 x 32`` images:

- encoder: conv C->32->64->128->256 (4x4 kernels, stride 2, padding 1, ReLU) down to 256x2x2,
  then a linear map to n (``arch="mnist"``: ``nn.Linear(1024, n)``; ``arch="shapes"``: a 2x2
  convolution 256 -> n, the same function with the authors' shape-model init);
- decoder ``arch="mnist"``: linear n -> 128x8x8, ReLU, transposed convs 128->64->32 (4x4,
  stride 2, ReLU), then a 1x1 transposed conv 32->C and tanh;
- decoder ``arch="shapes"``: a 2x2 transposed conv n -> 256x2x2, then transposed convs
  256->128->64->32->C (4x4, stride 2, ReLU between), tanh.

Range: images are in [0, 1] and the targets are the images themselves; tanh's range (-1, 1)
contains [0, 1], so, as in the authors' code, the data are not rescaled (a black pixel is
tanh(0)). Reconstruction MSEs are therefore in [0, 1] pixel units; decoded samples are
clamped to [0, 1] before they are shown or scored.

Measurement (the paper's Fig. of singular values): the singular values of the covariance of the
test set's latent codes ``z_bar``, divided by the largest (:func:`latent_spectrum`), their
effective rank (Roy & Vetterli) and their count above 1e-2.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from factorflow import metrics
from factorflow.nn import DeepLinear

__all__ = [
    "ARCHS",
    "IRMAE",
    "Probe",
    "check_images",
    "count_above",
    "fit_gaussian",
    "fit_probe",
    "generate",
    "interpolate",
    "latent_codes",
    "latent_effective_rank",
    "latent_spectrum",
    "nearest_neighbour_mse",
    "reconstruction_mse",
    "sample_gaussian",
    "train_autoencoder",
]

ARCHS = ("mnist", "shapes")


def _conv_encoder(channels: int, latent_dim: int, arch: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    widths = [channels, 32, 64, 128, 256]
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Conv2d(a, b, 4, 2, 1), nn.ReLU()]
    if arch == "mnist":
        layers += [nn.Flatten(), nn.Linear(256 * 2 * 2, latent_dim)]
    else:
        layers += [nn.Conv2d(256, latent_dim, 2, 1, 0), nn.Flatten()]
    return nn.Sequential(*layers)


def _conv_decoder(channels: int, latent_dim: int, arch: str) -> nn.Sequential:
    if arch == "mnist":
        return nn.Sequential(
            nn.Linear(latent_dim, 128 * 8 * 8),
            nn.Unflatten(1, (128, 8, 8)),
            nn.ReLU(),
            nn.ConvTranspose2d(128, 64, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 1, 1, 0),
            nn.Tanh(),
        )
    layers: list[nn.Module] = [nn.Unflatten(1, (latent_dim, 1, 1))]
    layers += [nn.ConvTranspose2d(latent_dim, 256, 2, 1, 0), nn.ReLU()]
    widths = [256, 128, 64, 32]
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.ReLU()]
    layers += [nn.ConvTranspose2d(32, channels, 4, 2, 1), nn.Tanh()]
    return nn.Sequential(*layers)


def check_images(images: Tensor, channels: int, image_size: int = 32, name: str = "images") -> None:
    """Raise ``ValueError`` unless ``images`` is a float tensor ``(N, channels, image_size,
    image_size)`` with N >= 1 and all values in [0, 1] (the message names expected vs given)."""
    expected = f"(N, {channels}, {image_size}, {image_size})"
    if not isinstance(images, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {expected}, got {type(images).__name__}")
    if (
        images.ndim != 4
        or images.shape[0] < 1
        or tuple(images.shape[1:]) != (channels, image_size, image_size)
    ):
        raise ValueError(f"{name} must have shape {expected}, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be floating point in [0, 1], got dtype {images.dtype}")
    lo, hi = torch.aminmax(images.detach())
    if not (bool(lo >= 0) and bool(hi <= 1)):
        raise ValueError(f"{name} must lie in [0, 1], got values in [{float(lo):g}, {float(hi):g}]")


class IRMAE(nn.Module):
    """Encoder, ``l = n_linear`` extra linear layers, decoder (see the module doc).

    Args:
        latent_dim: n (128 in the paper).
        n_linear: l >= 0 extra n x n bias-free linear layers (a ``DeepLinear`` of depth l,
            PyTorch's default init); 0 = plain autoencoder.
        channels: image channels C (1 for MNIST-like, 3 for shapes).
        arch: "mnist" or "shapes" decoder (encoder the same function).
        seed: if given, parameters are drawn under ``torch.manual_seed(seed)`` without touching
            the caller's global RNG state.

    Shapes: ``forward``: ``(B, C, 32, 32) -> (B, C, 32, 32)``; ``encode``: ``-> (B, n)``
    (``z_bar``); ``decode``: ``(B, n) -> (B, C, 32, 32)`` in (-1, 1).
    """

    image_size = 32

    def __init__(
        self,
        latent_dim: int = 128,
        n_linear: int = 0,
        channels: int = 1,
        arch: str = "mnist",
        seed: int | None = None,
    ) -> None:
        super().__init__()
        for value, name, low in ((latent_dim, "latent_dim", 1), (channels, "channels", 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if isinstance(n_linear, bool) or not isinstance(n_linear, int) or n_linear < 0:
            raise ValueError(f"n_linear (l) must be an integer >= 0, got {n_linear!r}")
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {list(ARCHS)}")
        self.latent_dim, self.n_linear, self.channels, self.arch = (
            latent_dim,
            n_linear,
            channels,
            arch,
        )
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            self.encoder = _conv_encoder(channels, latent_dim, arch)
            self.linear = (
                DeepLinear(latent_dim, latent_dim, n_linear, bias=False) if n_linear else None
            )
            self.decoder = _conv_decoder(channels, latent_dim, arch)

    def encode(self, x: Tensor) -> Tensor:
        """``z_bar = W_l ... W_1 enc(x)``: ``(B, C, 32, 32) -> (B, n)``."""
        z = self.encoder(x)
        return z if self.linear is None else self.linear(z)

    def decode(self, z_bar: Tensor) -> Tensor:
        """``(B, n) -> (B, C, 32, 32)`` in (-1, 1) (tanh)."""
        if z_bar.ndim != 2 or z_bar.shape[1] != self.latent_dim:
            raise ValueError(
                f"latent codes must have shape (B, {self.latent_dim}), got {tuple(z_bar.shape)}"
            )
        return self.decoder(z_bar)

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruction ``dec(W_l ... W_1 enc(x))``, same shape as ``x``."""
        return self.decoder(self.encode(x))

    def latent_map(self) -> Tensor | None:
        """The end-to-end ``W_l ... W_1`` (n, n), or None for l = 0."""
        return None if self.linear is None else self.linear.end_to_end().detach()


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


def latent_spectrum(codes: Tensor) -> Tensor:
    """Singular values of the covariance of the latent codes, divided by the largest.

    ``codes`` ``(N, n)`` with N >= 2 -> ``(n,)`` float64, descending, first entry 1 (all zeros
    if the codes are constant). Cov = (Z - mean)^T (Z - mean) / (N - 1); as in the paper's
    singular-value figure (Jing et al. 2020, Fig. 2/3: "singular values of the covariance matrix
    of the latent variables", normalized by the largest).
    """
    if not isinstance(codes, Tensor) or codes.ndim != 2 or codes.shape[0] < 2:
        shape = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
        raise ValueError(f"codes must have shape (N >= 2, n), got {shape}")
    cov = torch.cov(codes.detach().to(torch.float64).T)
    s = metrics.singular_values(cov.reshape(codes.shape[1], codes.shape[1]))
    return s / s[0] if s[0] > 0 else torch.zeros_like(s)


def latent_effective_rank(spectrum: Tensor) -> float:
    """Effective rank (Roy & Vetterli 2007) ``exp(H(s / ||s||_1))`` of a spectrum ``(n,)``
    (of :func:`latent_spectrum`; scale invariant)."""
    return float(metrics.effective_rank(spectrum, from_spectrum=True))


def count_above(spectrum: Tensor, tol: float = 1e-2) -> int:
    """Number of entries of a spectrum ``(n,)`` above ``tol`` times its largest entry."""
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    return int((spectrum > tol * spectrum.max()).sum())


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

    Returns:
        ``{"epochs": [record, ...], "stopped": "epochs" | "max_time", "elapsed_s": float}``, a
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
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    history: dict = {"epochs": [], "stopped": "epochs"}

    def measure(record: dict) -> dict:
        if eval_images is not None:
            spec = latent_spectrum(latent_codes(model, eval_images))
            record["spectrum"] = spec.tolist()
            record["erank"] = latent_effective_rank(spec)
            record["count_above_1e-2"] = count_above(spec, 1e-2)
            record["eval_mse"] = reconstruction_mse(model, eval_images)
        return record

    if eval_images is not None:
        history["epochs"].append(measure({"epoch": 0, "train_loss": math.nan, "time_s": 0.0}))
    n = train_images.shape[0]
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=g)
        total, batches, out_of_time = 0.0, 0, False
        for i in range(0, n, batch_size):
            x = train_images[perm[i : i + batch_size]].to(dev)
            loss = F.mse_loss(model(x), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            batches += 1
            if max_time is not None and time.perf_counter() - start > max_time:
                out_of_time = True
                break
        record = {
            "epoch": epoch if not out_of_time else epoch - 1 + batches * batch_size / n,
            "train_loss": total / batches,
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
    history["elapsed_s"] = time.perf_counter() - start
    model.eval()
    return history


# --------------------------------------------------------------------------- downstream


@dataclass
class Probe:
    """A classifier on frozen latent codes: ``head((z - center) / scale)``.

    ``center`` (n,) and the scalar ``scale`` (RMS of the centred training codes) put every model's
    codes on one scale without per-coordinate standardization (which would blow up the near-zero
    directions an IRMAE latent has and hide its low rank)."""

    head: nn.Module
    center: Tensor
    scale: float

    @torch.no_grad()
    def proba(self, codes: Tensor) -> Tensor:
        """Class probabilities ``(N, n_classes)`` for codes ``(N, n)``."""
        self.head.eval()
        return torch.softmax(self.head((codes - self.center) / self.scale), dim=1)

    def accuracy(self, codes: Tensor, labels: Tensor) -> float:
        """Fraction of ``labels`` (N,) predicted right from ``codes`` (N, n)."""
        return float((self.proba(codes).argmax(1) == labels).to(torch.float64).mean())

    def confidence(self, codes: Tensor) -> float:
        """Mean over codes of the largest class probability (a generation quality proxy)."""
        return float(self.proba(codes).max(1).values.mean())


def fit_probe(
    codes: Tensor,
    labels: Tensor,
    *,
    n_labels: int,
    head: str = "linear",
    steps: int = 500,
    lr: float = 1e-3,
    seed: int = 0,
) -> Probe:
    """Fit a probe on ``n_labels`` randomly chosen labelled codes (full-batch Adam, cross-entropy).

    Args:
        codes: ``(N, n)`` frozen latent codes of training images; labels: ``(N,)`` int.
        n_labels: how many labelled examples the probe sees (the paper's few-label budgets).
        head: "linear" (logistic regression) or "mlp" (as the authors: two hidden layers of
            width n, ReLU, dropout 0.5).
        steps, lr: Adam steps and rate (the authors: lr 1e-3).
        seed: selects the subset and initializes the head.
    """
    if codes.ndim != 2 or labels.shape != (codes.shape[0],):
        raise ValueError(
            f"codes (N, n) and labels (N,) expected, got {tuple(codes.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if not 1 <= n_labels <= codes.shape[0]:
        raise ValueError(f"n_labels must be in [1, {codes.shape[0]}], got {n_labels}")
    if head not in ("linear", "mlp"):
        raise ValueError(f"unknown head {head!r}; choose 'linear' or 'mlp'")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(codes.shape[0], generator=g)[:n_labels]
    z = codes[idx].detach().to(torch.float32)
    y = labels[idx].to(torch.int64)
    center = z.mean(0)
    scale = float((z - center).pow(2).mean().sqrt()) or 1.0
    n, k = codes.shape[1], int(labels.max()) + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if head == "linear":
            net: nn.Module = nn.Linear(n, k)
        else:
            net = nn.Sequential(
                nn.Linear(n, n), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(n, n), nn.ReLU(), nn.Dropout(0.5),
                nn.Linear(n, k),
            )  # fmt: skip
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        x = (z - center) / scale
        net.train()
        for _ in range(steps):
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    return Probe(net, center, scale)


def fit_gaussian(codes: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``(n,)`` and covariance ``(n, n)`` (float64) of codes ``(N, n)``, N >= 2."""
    if codes.ndim != 2 or codes.shape[0] < 2:
        raise ValueError(f"codes must have shape (N >= 2, n), got {tuple(codes.shape)}")
    z = codes.detach().to(torch.float64)
    return z.mean(0), torch.cov(z.T).reshape(z.shape[1], z.shape[1])


def sample_gaussian(mean: Tensor, cov: Tensor, n: int, seed: int) -> Tensor:
    """``n`` draws of N(mean, cov) ``(n, d)``, float64; cov may be singular (an IRMAE latent's
    is nearly so): ``mean + eps V diag(sqrt(max(lambda, 0)))^T`` from the eigendecomposition."""
    lam, V = torch.linalg.eigh(cov)
    root = V * lam.clamp(min=0).sqrt()
    eps = torch.randn(
        n, mean.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    return mean + eps @ root.T


@torch.no_grad()
def generate(model: IRMAE, train_codes: Tensor, n: int, seed: int = 0) -> Tensor:
    """Decode ``n`` samples of a Gaussian fitted to the training latents (the paper's
    generation): ``(n, C, 32, 32)`` clamped to [0, 1], on the CPU."""
    if train_codes.ndim != 2 or train_codes.shape[1] != model.latent_dim:
        raise ValueError(
            f"train_codes must have shape (N, {model.latent_dim}), got {tuple(train_codes.shape)}"
        )
    mean, cov = fit_gaussian(train_codes)
    z = sample_gaussian(mean, cov, n, seed)
    return _decode(model, z)


def _decode(model: IRMAE, z: Tensor, batch_size: int = 500) -> Tensor:
    was_training = model.training
    model.eval()
    p = next(model.parameters())
    out = [
        model.decode(b.to(device=p.device, dtype=p.dtype)).clamp(0, 1).cpu()
        for b in torch.split(z, batch_size)
    ]
    model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def interpolate(model: IRMAE, z0: Tensor, z1: Tensor, steps: int = 8) -> Tensor:
    """Decode ``(1 - t) z0 + t z1`` for ``t = 0, 1/(steps-1), ..., 1``: codes ``(n,)`` each ->
    images ``(steps, C, 32, 32)`` in [0, 1]."""
    for z, name in ((z0, "z0"), (z1, "z1")):
        if z.shape != (model.latent_dim,):
            raise ValueError(f"{name} must have shape ({model.latent_dim},), got {tuple(z.shape)}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    t = torch.linspace(0, 1, steps, dtype=torch.float64)[:, None]
    z = (1 - t) * z0.to(torch.float64) + t * z1.to(torch.float64)
    return _decode(model, z)


def nearest_neighbour_mse(images: Tensor, reference: Tensor, batch_size: int = 256) -> Tensor:
    """For each image ``(N, ...)`` the smallest per-pixel MSE to any ``reference`` image
    ``(M, ...)``: ``(N,)``. Low for samples that look like real data (a generation proxy that
    also rewards memorization, so read it with the probe's confidence)."""
    a = images.reshape(images.shape[0], -1).to(torch.float64)
    b = reference.reshape(reference.shape[0], -1).to(torch.float64)
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"images {tuple(images.shape[1:])} and reference {tuple(reference.shape[1:])} differ"
        )
    bb = (b * b).sum(1)
    out = []
    for chunk in torch.split(a, batch_size):
        d = (chunk * chunk).sum(1, keepdim=True) - 2 * chunk @ b.T + bb
        out.append(d.min(1).values.clamp(min=0) / a.shape[1])
    return torch.cat(out)
