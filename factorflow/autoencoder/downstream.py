"""Downstream uses of a trained IRMAE's latent codes: probes on frozen codes, generation from a
Gaussian fitted to them, interpolation, and a nearest-neighbour proxy of sample quality."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from factorflow.autoencoder.model import IRMAE

__all__ = [
    "Probe",
    "fit_gaussian",
    "fit_probe",
    "generate",
    "interpolate",
    "nearest_neighbour_mse",
    "sample_gaussian",
]


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
