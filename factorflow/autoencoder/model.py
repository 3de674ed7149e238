"""The IRMAE network: convolutional encoder, ``l`` extra linear layers, convolutional decoder.

Architecture (the authors' settings, from Jing, Zbontar & LeCun, NeurIPS 2020 and the facts of
their public code; no code copied), for ``C x 32 x 32`` images:

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
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from factorflow.nn import DeepLinear

__all__ = ["ARCHS", "IRMAE", "check_images"]

ARCHS = ("mnist", "shapes")
_CONFIG = ("config.latent_dim", "config.n_linear", "config.channels", "config.arch")


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

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The model as plain arrays, for an ``.npz`` file: every entry of ``state_dict()`` (on
        the CPU) and its configuration under ``config.latent_dim``, ``config.n_linear``,
        ``config.channels`` and ``config.arch``. :meth:`from_arrays` rebuilds it."""
        out = {k: v.detach().cpu().numpy() for k, v in self.state_dict().items()}
        for name in ("latent_dim", "n_linear", "channels", "arch"):
            out[f"config.{name}"] = np.asarray(getattr(self, name))
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> IRMAE:
        """The model that :meth:`to_arrays` wrote (the arrays as ``np.load`` returns them, e.g.
        ``load_result(dir).arrays(name)``); a ValueError names missing or unexpected entries."""
        missing = [k for k in _CONFIG if k not in arrays]
        if missing:
            raise ValueError(f"not an IRMAE model's arrays: no {missing}")
        model = cls(*(int(arrays[k]) for k in _CONFIG[:3]), arch=str(arrays[_CONFIG[3]]))
        state = {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items() if k not in _CONFIG}
        try:
            model.load_state_dict(state)
        except RuntimeError as e:  # missing or unexpected keys, wrong shapes
            raise ValueError(f"arrays do not fit the IRMAE they describe: {e}") from None
        return model

    def latent_map(self) -> Tensor | None:
        """The end-to-end ``W_l ... W_1`` (n, n), or None for l = 0."""
        return None if self.linear is None else self.linear.end_to_end().detach()
