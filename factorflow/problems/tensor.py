"""Synthetic tensor problems: low-rank ground truths, completion and sensing, paper settings.

* :func:`low_rank_tensor` — a random CP-rank-``rank`` tensor with a given Frobenius norm.
* :func:`tensor_completion` — observe ``n_obs`` distinct entries, uniformly at random.
* :func:`nested_completion_target` / :func:`observe_first` — a target with one fixed random order
  of its entries, observed ``n_obs`` at a time (nested observation sets).
* :class:`TensorSensing` / :func:`tensor_sensing` — linear measurements ``y_i = <A_i, W*>`` with
  rank-1 (memory-light) or dense Gaussian measurement tensors.
* :data:`PAPER_SETTINGS` / :func:`paper_setting` — the synthetic settings of Razin & Cohen 2020
  ("Implicit regularization in deep learning may not be explainable by norms") and Razin, Maman &
  Cohen 2021 ("Implicit regularization in tensor factorization").

Randomness only through an explicit ``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from factorflow.factorizations.cp import cp_sensing_predict, cp_to_tensor
from factorflow.problems.completion import Completion, sample_indices

__all__ = [
    "low_rank_tensor",
    "tensor_completion",
    "nested_completion_target",
    "observe_first",
    "TensorSensing",
    "tensor_sensing",
    "PaperSetting",
    "PAPER_SETTINGS",
    "paper_setting",
    "UnknownSettingError",
]


def low_rank_tensor(
    dims: Sequence[int],
    rank: int,
    *,
    fro_norm: float = 1.0,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Random tensor of CP rank at most ``rank`` and Frobenius norm ``fro_norm``.

    Factor ``n`` (shape ``(d_n, rank)``) starts with i.i.d. ``N(0, 1)`` entries, drawn mode by mode
    on the generator's device; ``W0 = sum_r u_r^1 (x) ... (x) u_r^N``. The scale
    ``s = fro_norm / ||W0||_F`` is split evenly across the modes: every factor is multiplied by
    ``s^(1/N)``, so the returned factors reproduce the returned tensor exactly
    (``W* = sum_r u_r^1 (x) ... (x) u_r^N`` with the scaled ``u``), with ``||W*||_F = fro_norm``.
    (Ground truths of Razin & Cohen 2020, Sec. 5, and Razin, Maman & Cohen 2021, Sec. 6.)

    Returns:
        ``(tensor of shape dims, [factor (d_n, rank) for each mode])``.
    """
    dims = tuple(int(d) for d in dims)
    if len(dims) == 0 or any(d < 1 for d in dims):
        raise ValueError(f"dims must be a non-empty sequence of positive sizes, got {dims}")
    if rank < 1:
        raise ValueError(f"rank must be positive, got {rank}")
    if not fro_norm > 0:
        raise ValueError(f"fro_norm must be positive, got {fro_norm}")
    factors = [
        torch.randn((d, rank), generator=generator, dtype=dtype, device=generator.device)
        for d in dims
    ]
    raw = cp_to_tensor([f[None] for f in factors])[0]
    scale = (fro_norm / torch.linalg.vector_norm(raw)) ** (1.0 / len(dims))
    factors = [f * scale for f in factors]
    tensor = cp_to_tensor([f[None] for f in factors])[0]
    return tensor, factors


def tensor_completion(target: torch.Tensor, n_obs: int, generator: torch.Generator) -> Completion:
    """Observe ``n_obs`` distinct entries of ``target``, uniformly without replacement.

    Positions come from :func:`~factorflow.problems.completion.sample_indices` (a CPU
    ``generator``); the returned :class:`Completion` lives on ``target``'s device.
    """
    target = torch.as_tensor(target)
    idx = sample_indices(tuple(target.shape), n_obs, generator).to(target.device)
    return Completion.from_array(target, idx)


def nested_completion_target(
    dims: Sequence[int], rank: int, seed: int, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """The target of Razin & Cohen (2020, appendix): CP rank ``rank``, N(0, 1) factors,
    ``||W*||_F = 1`` (:func:`low_rank_tensor`), and one random order of its entries,
    ``(prod(dims), order)`` positions; the observed set of size m is its first m rows, so the sets
    of a sweep over m are nested. Both drawn from one CPU generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    W, _ = low_rank_tensor(dims, rank, generator=gen, dtype=dtype)
    perm = torch.randperm(math.prod(W.shape), generator=gen)
    pos = np.unravel_index(perm.numpy(), tuple(W.shape))
    return W, torch.stack([torch.as_tensor(a) for a in pos], dim=1).to(torch.long)


def observe_first(target: torch.Tensor, order: torch.Tensor, n_obs: int) -> Completion:
    """``target`` observed at the first ``n_obs`` positions of ``order`` (a :class:`Completion`)."""
    if not 1 <= n_obs <= order.shape[0]:
        raise ValueError(f"cannot observe {n_obs} of {order.shape[0]} entries")
    return Completion.from_array(target, order[:n_obs])


@dataclass(frozen=True)
class TensorSensing:
    """Linear measurements ``y_i = <A_i, W*>``, ``i = 1..m``, of an order-``N`` tensor.

    Exactly one of the two measurement forms is set:

    * ``factors``: rank-1 measurements ``A_i = a_i^1 (x) ... (x) a_i^N``, a tuple of ``N``
      tensors of shape ``(m, d_n)`` (``factors[n][i] = a_i^n``) — memory ``m * sum_n d_n``;
      predict with :func:`~factorflow.factorizations.cp.cp_sensing_predict`.
    * ``dense``: measurement tensors ``(m, d_1, ..., d_N)`` — for small tensors only; predict
      with :func:`~factorflow.factorizations.cp.cp_dense_sensing_predict`.

    Attributes:
        shape: ``(d_1, ..., d_N)``.
        y: ``(m,)`` measured values.
    """

    shape: tuple[int, ...]
    y: torch.Tensor
    factors: tuple[torch.Tensor, ...] | None = None
    dense: torch.Tensor | None = None

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        object.__setattr__(self, "shape", shape)
        if (self.factors is None) == (self.dense is None):
            raise ValueError("exactly one of factors (rank-1) or dense measurements must be set")
        if self.y.ndim != 1:
            raise ValueError(f"y must have shape (m,), got {tuple(self.y.shape)}")
        m = self.y.shape[0]
        if self.factors is not None:
            facs = tuple(self.factors)
            object.__setattr__(self, "factors", facs)
            if len(facs) != len(shape) or any(
                tuple(a.shape) != (m, d) for a, d in zip(facs, shape, strict=False)
            ):
                raise ValueError(
                    f"rank-1 measurement factors must be {len(shape)} tensors of shapes "
                    f"{[(m, d) for d in shape]}; got {[tuple(a.shape) for a in facs]}"
                )
        elif self.dense is not None and tuple(self.dense.shape) != (m, *shape):
            raise ValueError(
                f"dense measurements must have shape {(m, *shape)}, got {tuple(self.dense.shape)}"
            )
        if not torch.isfinite(self.y).all():
            raise ValueError("measured values contain NaN or inf")

    @property
    def rank1(self) -> bool:
        return self.factors is not None

    @property
    def order(self) -> int:
        return len(self.shape)

    @property
    def n_obs(self) -> int:
        return int(self.y.shape[0])

    def to(
        self, dtype: torch.dtype | None = None, device: str | torch.device | None = None
    ) -> TensorSensing:
        """A copy with every tensor cast to ``dtype`` (if given) and moved to ``device``."""

        def mv(t: torch.Tensor) -> torch.Tensor:
            return t.to(dtype=dtype or t.dtype, device=device)

        return TensorSensing(
            self.shape,
            mv(self.y),
            None if self.factors is None else tuple(mv(a) for a in self.factors),
            None if self.dense is None else mv(self.dense),
        )


def tensor_sensing(
    target: torch.Tensor | Sequence[torch.Tensor],
    m: int,
    generator: torch.Generator,
    rank1: bool = True,
) -> TensorSensing:
    """Gaussian tensor sensing of a ground truth ``W*``.

    Args:
        target: either the full tensor ``(d_1, ..., d_N)``, or its CP factors (a list of
            ``(d_n, rank)`` tensors, as returned by :func:`low_rank_tensor`) — then no full
            tensor is formed when ``rank1=True``.
        m: number of measurements.
        generator: the only source of randomness; draws happen on its device, mode by mode.
        rank1: ``True`` — ``A_i = a_i^1 (x) ... (x) a_i^N`` with i.i.d. ``N(0, 1)`` entries in
            every ``a_i^n`` (so ``E <A_i, W>^2 = ||W||_F^2``); ``False`` — dense ``A_i`` with
            i.i.d. ``N(0, 1)`` entries.

    Returns:
        :class:`TensorSensing` in the target's dtype, on the generator's device.
    """
    if m < 1:
        raise ValueError(f"m must be positive, got {m}")
    if isinstance(target, torch.Tensor):
        full: torch.Tensor | None = target
        cp_factors: list[torch.Tensor] | None = None
        shape = tuple(target.shape)
        dtype = target.dtype
    else:
        cp_factors = list(target)
        if not cp_factors or any(f.ndim != 2 for f in cp_factors):
            raise ValueError("target factors must be a non-empty list of (d_n, rank) tensors")
        full = None
        shape = tuple(int(f.shape[0]) for f in cp_factors)
        dtype = cp_factors[0].dtype
    dev = generator.device

    if rank1:
        meas = tuple(
            torch.randn((m, d), generator=generator, dtype=dtype, device=dev) for d in shape
        )
        if cp_factors is not None:
            y = cp_sensing_predict([f.to(dev)[None] for f in cp_factors], meas)[0]
        else:
            assert full is not None
            # contract one mode at a time: z_i <- sum_d z_i[d, ...] a_i^n[d]
            z = torch.tensordot(meas[0], full.to(dev), dims=([1], [0]))  # (m, d_2, ..., d_N)
            for a in meas[1:]:
                z = torch.einsum("md...,md->m...", z, a)
            y = z
        return TensorSensing(shape, y, factors=meas)

    dense = torch.randn((m, *shape), generator=generator, dtype=dtype, device=dev)
    if full is None:
        assert cp_factors is not None
        full = cp_to_tensor([f.to(dev)[None] for f in cp_factors])[0]
    y = dense.reshape(m, -1) @ full.to(dev).reshape(-1)
    return TensorSensing(shape, y, dense=dense)


# --------------------------------------------------------------------------------------------
# settings of the papers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaperSetting:
    """One synthetic experiment setting of a paper (values as reported; see ``notes``).

    Attributes:
        name: key in :data:`PAPER_SETTINGS`.
        source: paper and experiment.
        task: ``"completion"`` (observed entries) or ``"sensing"``.
        dims: ground-truth shape.
        target_rank: CP rank of the ground truth (:func:`low_rank_tensor`).
        target_fro_norm: its Frobenius norm.
        n_components: ``R``, components of the fitted CP factorization.
        init_stds: initialization standard deviations compared (i.i.d. ``N(0, std^2)`` factors).
        loss: training loss (``"mse"``: mean squared residual over the observations).
        optimizer: ``"group_rmsprop"`` (adaptive step per factor; see the training engine).
        lr: learning rate.
        stop_train_loss: training stops once the train loss is below this value.
        n_observations: observation counts used (one run per count and init).
        notes: what is ours rather than the paper's, if anything.
    """

    name: str
    source: str
    task: str
    dims: tuple[int, ...]
    target_rank: int
    target_fro_norm: float
    n_components: int
    init_stds: tuple[float, ...]
    loss: str
    optimizer: str
    lr: float
    stop_train_loss: float
    n_observations: tuple[int, ...]
    notes: str = field(default="")

    @property
    def order(self) -> int:
        return len(self.dims)

    @property
    def n_entries(self) -> int:
        return math.prod(self.dims)


PAPER_SETTINGS: dict[str, PaperSetting] = {
    s.name: s
    for s in (
        PaperSetting(
            name="razin2020-order3",
            source="Razin & Cohen 2020, tensor completion experiments (order 3)",
            task="completion",
            dims=(8, 8, 8),
            target_rank=1,
            target_fro_norm=1.0,
            n_components=64,
            init_stds=(1e-2, 1e-3),
            loss="mse",
            optimizer="group_rmsprop",
            lr=1e-2,
            stop_train_loss=1e-6,
            n_observations=(50, 100, 150, 200, 250, 300, 350, 400, 450, 511),
        ),
        PaperSetting(
            name="razin2020-order4",
            source="Razin & Cohen 2020, tensor completion experiments (order 4)",
            task="completion",
            dims=(8, 8, 8, 8),
            target_rank=1,
            target_fro_norm=1.0,
            n_components=512,
            init_stds=(1e-2, 1e-3),
            loss="mse",
            optimizer="group_rmsprop",
            lr=1e-2,
            stop_train_loss=1e-6,
            n_observations=(500, 1000, 1500, 2000, 2500, 3000, 3500, 4095),
            notes=(
                "the paper's counts go up to 4095 (all entries but one); this grid of counts, "
                "and the inits/lr/stop copied from the order-3 setting, are factorflow's choice"
            ),
        ),
        PaperSetting(
            name="razin2021-dynamics",
            source="Razin, Maman & Cohen 2021, dynamics of learning (tensor completion)",
            task="completion",
            dims=(10, 10, 10, 10),
            target_rank=5,
            target_fro_norm=1.0,
            n_components=1000,
            init_stds=(0.05, 0.01, 0.005),
            loss="mse",
            optimizer="group_rmsprop",
            lr=1e-2,
            stop_train_loss=1e-8,
            n_observations=(2000,),
        ),
    )
}


class UnknownSettingError(KeyError, ValueError):
    """An unknown :func:`paper_setting` name (both a ``KeyError`` and a ``ValueError``)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


def paper_setting(name: str) -> PaperSetting:
    """The :class:`PaperSetting` called ``name``.

    Raises:
        UnknownSettingError: (a ``KeyError`` and ``ValueError``) on an unknown name; the message
            lists the known names.
    """
    try:
        return PAPER_SETTINGS[name]
    except KeyError:
        known = ", ".join(sorted(PAPER_SETTINGS))
        raise UnknownSettingError(
            f"unknown paper setting {name!r}; known settings: {known}"
        ) from None
