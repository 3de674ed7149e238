"""Matrix problems: completion and sensing, synthetic low-rank ground truths, the 2x2 problems.

A problem maps a batch of end-to-end matrices ``W`` of shape ``(B, d1, d2)`` to residuals
``(B, m)`` on its observations; the loss (``factorflow.losses``) is applied on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from factorflow.problems.completion import Completion, sample_indices

__all__ = [
    "MatrixCompletion",
    "MatrixSensing",
    "gaussian_sensing",
    "low_rank_matrix",
    "razin_2x2",
    "razin_2x2_perturbed",
    "synthetic_completion",
]


@dataclass(frozen=True)
class MatrixCompletion:
    """Matrix completion: observed entries of a ``shape = (d1, d2)`` matrix.

    ``residuals(W)[b, i] = W[b, rows_i, cols_i] - values_i``. ``ground_truth`` (d1, d2) is optional
    (None for real data or the 2x2 problem, whose unobserved entry has no truth).
    """

    obs: Completion
    ground_truth: torch.Tensor | None = None
    name: str = "completion"

    def __post_init__(self) -> None:
        if self.obs.order != 2:
            raise ValueError(
                f"matrix completion needs order-2 observations, got shape {self.obs.shape}"
            )
        if self.ground_truth is not None and tuple(self.ground_truth.shape) != self.obs.shape:
            raise ValueError(
                f"ground truth shape {tuple(self.ground_truth.shape)} != observation shape "
                f"{self.obs.shape}"
            )

    @property
    def shape(self) -> tuple[int, int]:
        return self.obs.shape  # type: ignore[return-value]

    @property
    def n_obs(self) -> int:
        return self.obs.n_obs

    def residuals(self, W: torch.Tensor) -> torch.Tensor:
        """``(B, d1, d2) -> (B, m)``: W at the observed entries minus the observed values."""
        rows, cols = self.obs.indices[:, 0], self.obs.indices[:, 1]
        return W[..., rows, cols] - self.obs.values

    def residual_adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """Adjoint of the observation map, ``(B, m) -> (B, d1, d2)``: g scattered to the observed
        entries, zeros elsewhere (dl/dW given dl/dr)."""
        out = g.new_zeros(g.shape[0], self.shape[0] * self.shape[1])
        out[:, self._flat] = g
        return out.reshape(g.shape[0], *self.shape)

    @property
    def _flat(self) -> torch.Tensor:
        return self.obs.indices[:, 0] * self.shape[1] + self.obs.indices[:, 1]

    def to(self, dtype: torch.dtype, device: str | torch.device | None = None) -> MatrixCompletion:
        gt = None if self.ground_truth is None else self.ground_truth.to(dtype=dtype, device=device)
        return MatrixCompletion(self.obs.to(dtype, device), gt, self.name)


@dataclass(frozen=True)
class MatrixSensing:
    """Matrix sensing: y_i = <A_i, W*> for measurement matrices ``A`` (m, d1, d2).

    ``residuals(W) = A_flat @ vec(W) - y`` with ``A_flat`` a view (m, d1*d2) of ``A``: the
    measurements are stored once and never copied per step (5000 dense 100x100 matrices are
    400 MB in float64).
    """

    A: torch.Tensor
    y: torch.Tensor
    ground_truth: torch.Tensor | None = None
    name: str = "sensing"
    _A_flat: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.A.ndim != 3:
            raise ValueError(
                f"measurement matrices must have shape (m, d1, d2), got {tuple(self.A.shape)}"
            )
        if self.y.ndim != 1 or self.y.shape[0] != self.A.shape[0]:
            raise ValueError(
                f"measurements y must have shape ({self.A.shape[0]},) to match A "
                f"{tuple(self.A.shape)}; got {tuple(self.y.shape)}"
            )
        if self.A.shape[0] == 0:
            raise ValueError("the measurement set is empty")
        if not (torch.isfinite(self.A).all() and torch.isfinite(self.y).all()):
            raise ValueError("measurement matrices or values contain NaN or inf")
        if self.ground_truth is not None and tuple(self.ground_truth.shape) != tuple(
            self.A.shape[1:]
        ):
            raise ValueError(
                f"ground truth shape {tuple(self.ground_truth.shape)} != measurement shape "
                f"{tuple(self.A.shape[1:])}"
            )
        object.__setattr__(self, "_A_flat", self.A.reshape(self.A.shape[0], -1))

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.A.shape[1]), int(self.A.shape[2]))

    @property
    def n_obs(self) -> int:
        return int(self.A.shape[0])

    def residuals(self, W: torch.Tensor) -> torch.Tensor:
        """``(B, d1, d2) -> (B, m)``: <A_i, W_b> - y_i, one matrix product."""
        return W.reshape(W.shape[0], -1) @ self._A_flat.T - self.y

    def residual_adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """``(B, m) -> (B, d1, d2)``: sum_i g_i A_i (dl/dW given dl/dr)."""
        return (g @ self._A_flat).reshape(g.shape[0], *self.shape)

    def to(self, dtype: torch.dtype, device: str | torch.device | None = None) -> MatrixSensing:
        gt = None if self.ground_truth is None else self.ground_truth.to(dtype=dtype, device=device)
        return MatrixSensing(
            self.A.to(dtype=dtype, device=device),
            self.y.to(dtype=dtype, device=device),
            gt,
            self.name,
        )


def low_rank_matrix(
    shape: tuple[int, int],
    rank: int,
    generator: torch.Generator,
    *,
    fro_norm: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Synthetic ground truth of Arora et al. 2019: W* = U V^T, U (d1, r), V (d2, r) i.i.d. N(0, 1),
    scaled to ||W*||_F = ``fro_norm`` (default sqrt(d1 d2), i.e. RMS entry 1). Shape ``(d1, d2)``."""
    d1, d2 = int(shape[0]), int(shape[1])
    if d1 < 1 or d2 < 1 or not 1 <= rank <= min(d1, d2):
        raise ValueError(f"need 1 <= rank <= min(shape); got shape {shape}, rank {rank}")
    U = torch.randn(d1, rank, generator=generator, dtype=torch.float64)
    V = torch.randn(d2, rank, generator=generator, dtype=torch.float64)
    W = U @ V.T
    target = (d1 * d2) ** 0.5 if fro_norm is None else float(fro_norm)
    return (W * (target / torch.linalg.matrix_norm(W))).to(dtype)


def synthetic_completion(
    shape: tuple[int, int],
    rank: int,
    n_obs: int,
    seed: int,
    *,
    dtype: torch.dtype = torch.float64,
) -> MatrixCompletion:
    """Arora et al. 2019, section 5: a rank-``rank`` ground truth and ``n_obs`` entries sampled
    uniformly without replacement; everything drawn from ``torch.Generator().manual_seed(seed)``."""
    g = torch.Generator().manual_seed(int(seed))
    W = low_rank_matrix(shape, rank, g, dtype=dtype)
    idx = sample_indices(tuple(shape), n_obs, g)
    return MatrixCompletion(
        Completion.from_array(W, idx), W, f"synthetic-{shape[0]}x{shape[1]}-r{rank}"
    )


def gaussian_sensing(
    shape: tuple[int, int],
    rank: int,
    n_obs: int,
    seed: int,
    *,
    std: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> MatrixSensing:
    """Arora et al. 2019, appendix: Gaussian measurement matrices with i.i.d. N(0, std^2) entries
    (default std = 1/d1, the paper's 1/100 for 100x100) of the same synthetic ground truth."""
    g = torch.Generator().manual_seed(int(seed))
    W = low_rank_matrix(shape, rank, g, dtype=dtype)
    s = 1.0 / shape[0] if std is None else float(std)
    A = torch.randn(n_obs, shape[0], shape[1], generator=g, dtype=dtype) * s
    y = A.reshape(n_obs, -1) @ W.reshape(-1)
    return MatrixSensing(A, y, W, f"sensing-{shape[0]}x{shape[1]}-r{rank}")


def razin_2x2_perturbed(eps: float, *, dtype: torch.dtype = torch.float64) -> MatrixCompletion:
    """Razin & Cohen 2020, perturbed 2x2 problem: observed w12 = -2, w21 = 0.5, w22 = eps (0-based
    positions (0, 1), (1, 0), (1, 1)); w11 unobserved. Every solution has det = eps * w11 + 1, so a
    solution with det < 0 needs |w11| > 1/eps."""
    idx = torch.tensor([[0, 1], [1, 0], [1, 1]])
    vals = torch.tensor([-2.0, 0.5, float(eps)], dtype=dtype)
    return MatrixCompletion(Completion((2, 2), idx, vals), None, f"razin2x2-perturbed-eps{eps:g}")


def razin_2x2(*, dtype: torch.dtype = torch.float64) -> MatrixCompletion:
    """Razin & Cohen 2020: [[?, 1], [1, 0]]; observed (0, 1) = 1, (1, 0) = 1, (1, 1) = 0.

    Every solution has det = -1, so from det(W(0)) > 0 gradient flow (which keeps the sign of det
    for depth >= 2) can only approach the observations with |w11| -> infinity."""
    idx = torch.tensor([[0, 1], [1, 0], [1, 1]])
    vals = torch.tensor([1.0, 1.0, 0.0], dtype=dtype)
    return MatrixCompletion(Completion((2, 2), idx, vals), None, "razin2x2")
