"""``DeepLinear``: a drop-in replacement for ``torch.nn.Linear`` that is a deep linear network.

``DeepLinear(in_features, out_features, depth)`` computes ``y = x W^T + b`` like ``nn.Linear``,
but ``W = W_N ... W_1`` is a product of ``depth = N`` trainable factors
``W_j`` of shape ``(d_j, d_{j-1})`` (``d_0 = in_features``, ``d_N = out_features``), i.e. a deep
matrix factorization (Arora, Cohen, Hu, Luo 2019, eq. 2) inside any torch model. Gradient
descent on such an over-parameterized linear map is biased toward low rank; the Implicit
Rank-Minimizing Autoencoder (Jing, Zbontar, LeCun, NeurIPS 2020) uses exactly this between an
encoder and a decoder.

The bias (if any) sits on the last map only, so the layer is still affine in ``x`` and
:meth:`DeepLinear.collapse` returns an equivalent ``nn.Linear``.

Initializations (``init``):

- ``"default"``: every factor as PyTorch initializes ``nn.Linear(d_{j-1}, d_j)``
  (``kaiming_uniform_(a=sqrt(5))``, i.e. U(-1/sqrt(d_{j-1}), 1/sqrt(d_{j-1}))), drawn from
  torch's global generator in factor order, and the bias as ``nn.Linear``'s of the last map
  (U(-1/sqrt(d_{N-1}), 1/sqrt(d_{N-1}))). With ``depth = 1`` and the same global seed it equals
  ``nn.Linear(in_features, out_features)`` exactly. ``init_scale`` must be left at None.
- ``"gaussian"``, ``"normal"``, ``"identity"``, ``"orthogonal"``, ``"balanced"``: drawn by
  :func:`factorflow.factorizations.dmf.init_dmf` (the meaning of ``init_scale`` per scheme is in
  that module's doc; default 1.0) from ``torch.Generator().manual_seed(seed)``; the bias starts
  at zero. Without ``seed`` one is drawn from torch's global generator, so ``torch.manual_seed``
  makes these reproducible too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from factorflow import metrics
from factorflow.factorizations.dmf import DMF_INITS, init_dmf, layer_widths

__all__ = ["DEEP_LINEAR_INITS", "DeepLinear"]

#: Initializations of :class:`DeepLinear` ("default" = PyTorch's ``nn.Linear`` per factor).
DEEP_LINEAR_INITS = ("default", *DMF_INITS)


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_width(width: object, depth: int) -> int | list[int] | None:
    if width is None:
        return None
    if isinstance(width, int) and not isinstance(width, bool):
        return _check_positive_int(width, "width")
    if isinstance(width, Sequence) and not isinstance(width, str):
        widths = [_check_positive_int(w, "every hidden width") for w in width]
        if len(widths) != depth - 1:
            raise ValueError(
                f"depth {depth} needs {depth - 1} hidden widths, got {len(widths)}: {widths}"
            )
        return widths
    raise ValueError(f"width must be None, an int or a list of ints, got {width!r}")


class DeepLinear(nn.Module):
    """``y = x (W_N ... W_1)^T + b``: an ``nn.Linear`` over-parameterized as ``depth`` factors.

    Args:
        in_features: size of each input sample, ``d_0``.
        out_features: size of each output sample, ``d_N``.
        depth: number of factors ``N >= 1`` (``N = 1`` is ``nn.Linear``).
        width: hidden widths ``d_1..d_{N-1}``: an int for all, a list of ``N - 1`` ints, or
            None for ``max(in_features, out_features)``.
        bias: add a learnable bias (on the last map only).
        init: one of :data:`DEEP_LINEAR_INITS` (see the module doc).
        init_scale: > 0, for the ``dmf`` inits only (default 1.0 there).
        seed: generator seed for the ``dmf`` inits (default: drawn from torch's global RNG).
        device, dtype: as for ``nn.Linear``.

    Shapes: input ``(*, in_features)``, output ``(*, out_features)``. The factors are
    ``self.weights[j - 1]`` of shape ``(d_j, d_{j-1})`` (``nn.Linear``'s ``(out, in)`` layout);
    ``self.weight`` is the end-to-end matrix ``(out_features, in_features)`` (read-only).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        depth: int,
        width: int | Sequence[int] | None = None,
        bias: bool = True,
        init: str = "default",
        init_scale: float | None = None,
        seed: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = _check_positive_int(in_features, "in_features")
        self.out_features = _check_positive_int(out_features, "out_features")
        self.depth = _check_positive_int(depth, "depth")
        if init not in DEEP_LINEAR_INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {list(DEEP_LINEAR_INITS)}")
        if init == "default" and init_scale is not None:
            raise ValueError(
                "init_scale applies to the dmf inits "
                f"{list(DMF_INITS)}, not to init='default' (PyTorch's nn.Linear init)"
            )
        if init_scale is not None and not (
            isinstance(init_scale, int | float) and math.isfinite(init_scale) and init_scale > 0
        ):
            raise ValueError(f"init_scale must be a finite number > 0, got {init_scale!r}")
        self.init = init
        self.init_scale = None if init == "default" else float(init_scale or 1.0)
        self.seed = seed
        self.dims = layer_widths(
            (self.out_features, self.in_features), self.depth, _check_width(width, self.depth)
        )
        factory = {"device": device, "dtype": dtype}
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(self.dims[j + 1], self.dims[j], **factory))
            for j in range(self.depth)
        )
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    # ------------------------------------------------------------------ init

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """(Re)draw the factors and the bias as described in the module doc."""
        if self.init == "default":
            for w in self.weights:
                nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # what nn.Linear does
            if self.bias is not None:
                bound = 1.0 / math.sqrt(self.dims[-2])
                nn.init.uniform_(self.bias, -bound, bound)
            return
        seed = self.seed
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        factors, _ = init_dmf(
            (self.out_features, self.in_features),
            self.depth,
            init=self.init,
            init_scale=self.init_scale,
            seeds=[seed],
            width=self.dims[1:-1],
        )
        for w, f in zip(self.weights, factors, strict=True):
            w.copy_(f[0].to(dtype=w.dtype, device=w.device))
        if self.bias is not None:
            self.bias.zero_()

    # ------------------------------------------------------------------ maps

    def forward(self, x: Tensor) -> Tensor:
        """``(*, in_features) -> (*, out_features)``, applying ``W_1`` first (cheaper than
        forming ``W`` when the batch is smaller than the widths; the gradients are the same)."""
        n = len(self.weights)
        for j, w in enumerate(self.weights):
            x = F.linear(x, w, self.bias if j == n - 1 else None)
        return x

    def factors(self) -> list[Tensor]:
        """``[W_1, ..., W_N]``, ``W_j`` of shape ``(d_j, d_{j-1})`` (the parameters themselves)."""
        return list(self.weights)

    def end_to_end(self) -> Tensor:
        """``W = W_N ... W_1`` of shape ``(out_features, in_features)`` (differentiable)."""
        return metrics.end_to_end(self.factors())

    @property
    def weight(self) -> Tensor:
        """The end-to-end matrix, as ``nn.Linear.weight`` would be (a computed tensor)."""
        return self.end_to_end()

    @torch.no_grad()
    def collapse(self) -> nn.Linear:
        """An ``nn.Linear`` computing the same map (weight ``W_N ... W_1``, the same bias), on
        the same device and dtype, detached from this module."""
        W = self.end_to_end()
        lin = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=W.device,
            dtype=W.dtype,
        )
        lin.weight.copy_(W)
        if self.bias is not None:
            lin.bias.copy_(self.bias)
        return lin

    # ------------------------------------------------------------------ metrics

    @torch.no_grad()
    def singular_values(self) -> Tensor:
        """Singular values of the end-to-end matrix, descending, ``(min(in, out),)``."""
        return metrics.singular_values(self.end_to_end())

    @torch.no_grad()
    def effective_rank(self) -> float:
        """Effective rank (Roy & Vetterli 2007) of the end-to-end matrix:
        ``exp(H(sigma / ||sigma||_1))``."""
        return float(metrics.effective_rank(self.end_to_end()))

    @torch.no_grad()
    def numerical_rank(self, tol: float | None = None) -> int:
        """Number of singular values above ``tol * sigma_max`` (see
        :func:`factorflow.metrics.numerical_rank`; default: machine-precision threshold)."""
        return int(metrics.numerical_rank(self.end_to_end(), tol))

    @torch.no_grad()
    def balancedness_gap(self, relative: bool = False) -> float:
        """``max_j ||W_{j+1}^T W_{j+1} - W_j W_j^T||_F`` (0 for balanced factors; Arora et al.
        2018, def. 1); 0 for ``depth = 1``."""
        return float(metrics.balancedness_gap(self.factors(), relative=relative))

    @torch.no_grad()
    def summary(self) -> dict[str, float]:
        """:func:`factorflow.metrics.matrix_summary` of the end-to-end matrix (nuclear,
        Frobenius, spectral norms, effective rank, Schatten-0.5, det if square)."""
        return metrics.matrix_summary(self.end_to_end())

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"depth={self.depth}, widths={self.dims[1:-1]}, bias={self.bias is not None}, "
            f"init={self.init!r}" + ("" if self.init_scale is None else f", {self.init_scale:g}")
        )
