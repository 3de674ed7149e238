"""Implicit Rank-Minimizing Autoencoder (IRMAE; Jing, Zbontar, LeCun, NeurIPS 2020, arXiv:2010.00679).

A deterministic autoencoder with ``l`` extra square, bias-free linear layers between the encoder
and the decoder: ``z = enc(x)`` (n numbers), ``z_bar = W_l ... W_1 z`` (a
:class:`~factorflow.nn.DeepLinear` of depth l, PyTorch's default init; l = 0 is the plain
autoencoder), ``x_hat = dec(z_bar)``; loss = MSE(x_hat, x), Adam. Gradient descent on the
product ``W_l ... W_1`` lowers the rank of the latent code as deep matrix factorization lowers
the rank of W; ``z_bar`` is the latent that is analysed, sampled and decoded.

Modules:

- :mod:`~factorflow.autoencoder.model`: the architecture (:class:`IRMAE`, its encoder and
  decoder, the authors' settings) and :func:`check_images`;
- :mod:`~factorflow.autoencoder.train`: :func:`train_autoencoder`, :func:`latent_codes`,
  :func:`reconstruction_mse`, and :func:`epoch_line` (a progress line per epoch);
- :mod:`~factorflow.autoencoder.latent`: the measurement (:func:`latent_spectrum`, its effective
  rank and :func:`count_above`);
- :mod:`~factorflow.autoencoder.downstream`: probes on frozen codes, Gaussian generation,
  interpolation and the nearest-neighbour proxy.
"""

from factorflow.autoencoder.downstream import (
    Probe,
    fit_gaussian,
    fit_probe,
    generate,
    interpolate,
    nearest_neighbour_mse,
    sample_gaussian,
)
from factorflow.autoencoder.latent import count_above, latent_effective_rank, latent_spectrum
from factorflow.autoencoder.model import ARCHS, IRMAE, check_images
from factorflow.autoencoder.train import (
    epoch_line,
    latent_codes,
    reconstruction_mse,
    train_autoencoder,
)

__all__ = [
    "ARCHS",
    "IRMAE",
    "Probe",
    "check_images",
    "count_above",
    "epoch_line",
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
