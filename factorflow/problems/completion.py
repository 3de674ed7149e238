"""Observed entries of a matrix or tensor: the data every completion problem is made of.

A :class:`Completion` holds ``m`` observed entries of an array of a given ``shape`` (order 2 for
matrices, any order for tensors): integer ``indices`` of shape ``(m, order)`` and float
``values`` of shape ``(m,)``. Validation happens once, here, so everything downstream can trust it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Completion", "sample_indices"]


@dataclass(frozen=True)
class Completion:
    """Observed entries ``W[indices[i]] = values[i]`` of an array of shape ``shape``.

    Attributes:
        shape: the full array's shape, e.g. ``(100, 100)`` or ``(8, 8, 8)``.
        indices: long tensor ``(m, order)``, each row one observed position.
        values: float tensor ``(m,)``, the observed values.

    Raises ``ValueError`` on an empty set, out-of-range or negative indices, an index arity that
    does not match ``len(shape)``, duplicate positions, or non-finite values.
    """

    shape: tuple[int, ...]
    indices: torch.Tensor
    values: torch.Tensor

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        object.__setattr__(self, "shape", shape)
        if len(shape) < 1 or any(s < 1 for s in shape):
            raise ValueError(f"shape must be a non-empty tuple of positive sizes, got {shape}")
        idx = torch.as_tensor(self.indices)
        if idx.is_floating_point():
            if not torch.equal(idx, idx.round()):
                raise ValueError("indices must be integers")
        idx = idx.to(torch.long)
        if idx.ndim == 1 and len(shape) == 1:
            idx = idx[:, None]
        if idx.ndim != 2 or idx.shape[1] != len(shape):
            raise ValueError(
                f"indices must have shape (m, {len(shape)}) for an order-{len(shape)} array "
                f"of shape {shape}; got {tuple(idx.shape)}"
            )
        try:
            vals = torch.as_tensor(self.values)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"values must be numbers (a float tensor or array of shape (m,)), got "
                f"{type(self.values).__name__} {str(self.values)[:60]}"
            ) from None
        if vals.dtype == torch.bool or vals.is_complex():
            raise TypeError(f"values must be real numbers, got dtype {vals.dtype}")
        if not vals.is_floating_point():
            vals = vals.to(torch.float64)
        if vals.ndim != 1 or vals.shape[0] != idx.shape[0]:
            raise ValueError(
                f"values must have shape ({idx.shape[0]},) to match the indices; "
                f"got {tuple(vals.shape)}"
            )
        if vals.device != idx.device:
            raise ValueError(
                f"indices and values must be on one device; got {idx.device} and {vals.device}"
            )
        if idx.shape[0] == 0:
            raise ValueError("the observation set is empty: at least one entry must be observed")
        if (idx < 0).any():
            bad = idx[(idx < 0).any(dim=1)][0].tolist()
            raise ValueError(f"negative index {bad}: indices must lie in [0, size) per mode")
        too_big = idx >= torch.tensor(shape, dtype=torch.long, device=idx.device)
        if too_big.any():
            row = int(too_big.any(dim=1).nonzero()[0])
            raise ValueError(f"index {idx[row].tolist()} is out of range for shape {shape}")
        if not torch.isfinite(vals).all():
            raise ValueError("observed values contain NaN or inf")
        flat = self._flatten(idx, shape)
        uniq, counts = torch.unique(flat, return_counts=True)
        if uniq.numel() != flat.numel():
            dup = uniq[counts > 1][0]
            pos = np.unravel_index(int(dup), shape)
            raise ValueError(
                f"entry {tuple(int(p) for p in pos)} is observed more than once "
                f"({int(counts.max())} times); each entry may appear once"
            )
        object.__setattr__(self, "indices", idx)
        object.__setattr__(self, "values", vals)

    @staticmethod
    def _flatten(idx: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        strides = torch.tensor(
            [int(np.prod(shape[k + 1 :])) for k in range(len(shape))],
            dtype=torch.long,
            device=idx.device,
        )
        return (idx * strides).sum(dim=1)

    @property
    def order(self) -> int:
        return len(self.shape)

    @property
    def n_obs(self) -> int:
        return int(self.indices.shape[0])

    def flat_indices(self) -> torch.Tensor:
        """Row-major linear positions ``(m,)`` of the observed entries."""
        return self._flatten(self.indices, self.shape)

    def mask(self) -> torch.Tensor:
        """Boolean array of ``shape``, True where observed (materializes the full shape)."""
        m = torch.zeros(int(np.prod(self.shape)), dtype=torch.bool, device=self.indices.device)
        m[self.flat_indices()] = True
        return m.reshape(self.shape)

    def to(
        self, dtype: torch.dtype | None = None, device: str | torch.device | None = None
    ) -> Completion:
        """A copy with values cast to ``dtype`` and both tensors moved to ``device``."""
        return Completion(
            self.shape,
            self.indices.to(device=device),
            self.values.to(dtype=dtype or self.values.dtype, device=device),
        )

    @classmethod
    def from_array(cls, full: torch.Tensor, indices: torch.Tensor) -> Completion:
        """Observe ``full`` at ``indices`` ``(m, order)``."""
        full = torch.as_tensor(full)
        idx = torch.as_tensor(indices, dtype=torch.long)
        return cls(tuple(full.shape), idx, full[tuple(idx.T)])


def sample_indices(shape: tuple[int, ...], m: int, generator: torch.Generator) -> torch.Tensor:
    """Draw ``m`` distinct positions of an array of ``shape`` uniformly without replacement.

    Returns a long tensor ``(m, len(shape))``. Seeded only through ``generator``.
    """
    total = int(np.prod(shape))
    if not 1 <= m <= total:
        raise ValueError(f"cannot observe {m} distinct entries of an array with {total} entries")
    flat = torch.randperm(total, generator=generator)[:m]
    return torch.stack(
        [torch.as_tensor(a) for a in np.unravel_index(flat.numpy(), shape)], dim=1
    ).to(torch.long)
