"""Objectives: a factorization, a problem and a named loss composed into ``loss_fn(params) -> (B,)``,
the only thing the training loops see.

Each objective is callable (autograd works through it) and also has ``value_and_grad(params)``
with the gradient written out by the chain rule; the loops use it because for small problems
(the 2x2 problem takes millions of steps) autograd's bookkeeping costs more than the math.
Tests check the two against each other in float64.

:class:`RatingsDMF` is :class:`DMFObjective` on a large, sparsely observed ratings matrix
(MovieLens, Arora et al. 2019, Sec. 5), with its own cheaper parameterization (the moving rows
only) and the end-to-end matrix never formed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from factorflow.factorizations.cp import cp_completion_residuals
from factorflow.factorizations.cp_grad import cp_completion_value_and_grads
from factorflow.factorizations.dmf import (
    check_dmf_factors,
    dmf_factor_gradients,
    end_to_end,
    init_dmf,
    partial_products,
)
from factorflow.losses import LOSS_GRADS, get_loss
from factorflow.problems.completion import Completion
from factorflow.problems.matrix import MatrixCompletion, MatrixSensing

__all__ = ["CPObjective", "DMFObjective", "NumpyDMFKernel", "RatingsDMF"]


@dataclass(frozen=True)
class DMFObjective:
    """l(W_N ... W_1) for a matrix ``problem`` (completion or sensing) and a loss named ``loss``.

    ``__call__(factors) -> (B,)``; ``value_and_grad(factors) -> ((B,), [dl/dW_j])`` with
    dl/dW = A^*(dl/dr) (the observation map's adjoint) and dl/dW_j from
    :func:`factorflow.factorizations.dmf.dmf_factor_gradients`.
    """

    problem: MatrixCompletion | MatrixSensing
    loss: str

    def __post_init__(self) -> None:
        get_loss(self.loss)

    def end_to_end(self, factors: Sequence[torch.Tensor]) -> torch.Tensor:
        return end_to_end(factors)

    def check_params(self, factors: Sequence[torch.Tensor]) -> None:
        """Factors that fit this problem (see :func:`~factorflow.factorizations.dmf.
        check_dmf_factors`): chained shapes ending at the problem's shape, the problem's dtype."""
        p = self.problem
        dtype = p.A.dtype if isinstance(p, MatrixSensing) else p.obs.values.dtype
        check_dmf_factors(factors, p.shape, dtype)

    def __call__(self, factors: Sequence[torch.Tensor]) -> torch.Tensor:
        return get_loss(self.loss)(self.problem.residuals(end_to_end(factors)))

    def grad_W(self, W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Losses (B,) and dl/dW (B, d1, d2) at end-to-end matrices W."""
        r = self.problem.residuals(W)
        return get_loss(self.loss)(r), self.problem.residual_adjoint(LOSS_GRADS[self.loss](r))

    def value_and_grad(
        self, factors: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        partial = partial_products(factors)
        losses, G = self.grad_W(partial[-1])
        return losses, dmf_factor_gradients(factors, G, partial)

    def numpy_kernel(self) -> NumpyDMFKernel:
        """:meth:`value_and_grad` on numpy arrays, for the engine's tiny-problem loop."""
        return NumpyDMFKernel(self)


class NumpyDMFKernel:
    """``DMFObjective.value_and_grad`` on numpy arrays: ``kernel([(B, d_j, d_{j-1})]) -> ((B,),
    [dl/dW_j])``, the same formulas (the same :func:`end_to_end`, :func:`dmf_factor_gradients`
    and loss functions, which are written with operators only) without torch's per-operation
    overhead, which dominates on tiny problems (a 2x2 step is a few microseconds of math). Used
    by :mod:`factorflow.dynamics.tiny`; tests check it against the torch objective in float64.

    Completion: r = W[rows, cols] - values, dl/dW = g scattered to the observed entries.
    Sensing: r = A_flat vec(W) - y, dl/dW = sum_i g_i A_i (Arora et al. 2019's observation maps).
    """

    def __init__(self, objective: DMFObjective) -> None:
        p = objective.problem
        self.shape = p.shape
        self.loss, self.loss_grad = get_loss(objective.loss), LOSS_GRADS[objective.loss]
        if isinstance(p, MatrixSensing):
            self._A = p.A.reshape(p.A.shape[0], -1).detach().cpu().numpy()
            self._y = p.y.detach().cpu().numpy()
        else:
            idx = p.obs.indices.cpu().numpy()
            self._A = None
            self._rows, self._cols = idx[:, 0], idx[:, 1]
            self._flat = idx[:, 0] * self.shape[1] + idx[:, 1]
            self._values = p.obs.values.detach().cpu().numpy()

    def _residuals(self, W: np.ndarray) -> np.ndarray:
        if self._A is not None:
            return W.reshape(W.shape[0], -1) @ self._A.T - self._y
        return W[:, self._rows, self._cols] - self._values

    def value(self, factors: Sequence[np.ndarray]) -> np.ndarray:
        """Losses (B,) only."""
        return self.loss(self._residuals(end_to_end(factors)))

    def __call__(self, factors: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        partial = partial_products(factors)
        W = partial[-1]
        B = W.shape[0]
        r = self._residuals(W)
        if self._A is not None:
            G = (self.loss_grad(r) @ self._A).reshape(B, *self.shape)
        else:
            G = np.zeros((B, self.shape[0] * self.shape[1]), dtype=W.dtype)
            G[:, self._flat] = self.loss_grad(r)
            G = G.reshape(B, *self.shape)
        return self.loss(r), dmf_factor_gradients(factors, G, partial)


@dataclass(frozen=True)
class CPObjective:
    """l(W) for a CP factorization (factors ``[(B, d_n, R)]``) on tensor completion ``obs``, with
    the loss named ``loss``: predictions only at the observed indices (never the full tensor).

    ``value_and_grad`` writes the gradient out (:mod:`factorflow.factorizations.cp_grad`, 1.32x
    faster than autograd on the 10^4 tensor with R = 1000); autograd works through
    ``__call__`` as well (the stiff integrator's Hessian-vector products use it)."""

    obs: Completion
    loss: str

    def __post_init__(self) -> None:
        get_loss(self.loss)

    def residuals(self, factors: Sequence[torch.Tensor]) -> torch.Tensor:
        """``(B, m)``: CP prediction at the observed entries minus the observed values."""
        return cp_completion_residuals(factors, self.obs)  # checks order and mode sizes

    def __call__(self, factors: Sequence[torch.Tensor]) -> torch.Tensor:
        return get_loss(self.loss)(self.residuals(factors))

    def grad_at_obs(self, factors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Losses (B,) and dl/dW at the observed entries (B, m) (the gradient of l w.r.t. the
        full tensor is zero elsewhere)."""
        r = self.residuals(factors)
        return get_loss(self.loss)(r), LOSS_GRADS[self.loss](r)

    def value_and_grad(
        self, factors: Sequence[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Losses (B,) and ``[dl/dA_n]`` shaped like the factors (closed form, no autograd)."""
        r, grads = cp_completion_value_and_grads(factors, self.obs, LOSS_GRADS[self.loss])
        return get_loss(self.loss)(r), grads


class RatingsDMF:
    """Depth-N factorization of a large, sparsely observed ratings matrix, trained on its observed
    entries without ever forming the end-to-end matrix. Exactly the gradient flow of
    ``DMFObjective`` on the same data and init, computed more cheaply:

    - Orientation: the model factors the matrix with its long side as rows (R^T for MovieLens,
      9066 x 671; a depth-N factorization of R^T is one of R with the factors transposed and
      reversed, the same gradient flow). ``W = W_N C`` with C = W_{N-1} ... W_1 (w x n_small)
      and W_N (n_long x w).
    - Only the rows of W_N with at least one observed entry move: a row of W_N whose row of the
      rating matrix has no training entry gets zero gradient (dl/dW_N = G C^T, G = dl/dW is zero
      there), so it stays at its initial value. The parameters are the moving rows
      ``W_N[active]`` (n_active x w) and W_1..W_{N-1}; the frozen rows are kept as constants.
    - Loss and gradient from the observed entries only: r_i = W_N[a_i] . C[:, b_i] - y_i,
      dl/dW_N[a] = sum_{i: a_i = a} g_i C[:, b_i]^T, and with M = W_N^T G (w x n_small, scattered
      from the same products) dl/dW_j = dmf_factor_gradients([W_1..W_{N-1}], M) (chain rule,
      Arora, Cohen, Hazan 2018, eq. 5); g = dl/dr. Work per evaluation: O(m w) plus a few
      w x w x n_small products, instead of O(n_long n_small w).

    Singular values: W^T W = C^T (W_N[active]^T W_N[active] + F) C, F = W_N[frozen]^T W_N[frozen]
    (constant), so the top singular values are the square roots of the top eigenvalues of a
    small n_small x n_small matrix.

    ``params0``: the initial parameters ``[W_1, ..., W_{N-1}, W_N[active]]`` (batch size 1) for
    ``identity`` init (W_j(0) = init_scale^(1/N) times the rectangular identity).
    """

    def __init__(
        self,
        train: Completion,
        depth: int,
        *,
        width: int | None,
        init_scale: float,
        loss: str,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        chunk: int = 1500,
    ) -> None:
        get_loss(loss)
        n_rows, n_cols = train.shape
        self.transposed = n_cols > n_rows
        idx = (train.indices.flip(1) if self.transposed else train.indices).cpu()
        self.shape = (max(n_rows, n_cols), min(n_rows, n_cols))  # (long, short)
        self.depth, self.loss, self.chunk = depth, loss, chunk
        self.width = self.shape[1] if width is None else int(width)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        active = torch.unique(idx[:, 0])
        pos = torch.full((self.shape[0],), -1, dtype=torch.long)
        pos[active] = torch.arange(active.numel())
        self.n_active = int(active.numel())
        self._pos = pos.to(dev)
        self._rows = pos[idx[:, 0]].to(dev)
        self._cols = idx[:, 1].to(dev)
        self._values = train.values.to(dtype=dtype, device=dev)
        factors, _ = init_dmf(
            self.shape,
            depth,
            init="identity",
            init_scale=init_scale,
            seeds=[0],
            width=self.width,
            dtype=dtype,
            device=dev,
        )
        top0 = factors[-1][0]
        frozen = torch.ones(self.shape[0], dtype=torch.bool, device=dev)
        frozen[active.to(dev)] = False
        self._top0 = top0
        F = top0[frozen]
        self._frozen_gram = F.T @ F
        self._active = active.to(dev)
        self.params0 = [*factors[:-1], factors[-1][:, self._active, :].contiguous()]

    def _lower_t(self, ps: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """C^T (B, n_short, w), contiguous (rows gathered per observation)."""
        if len(ps) == 1:
            return None
        return end_to_end(ps[:-1]).transpose(1, 2).contiguous()

    def _chunks(self) -> range:
        return range(0, int(self._rows.numel()), self.chunk)

    def residuals(self, ps: Sequence[torch.Tensor]) -> torch.Tensor:
        """(B, m): prediction minus rating on the training entries."""
        top, Ct = ps[-1], self._lower_t(ps)
        if Ct is None:
            return top[:, self._rows, self._cols] - self._values
        parts = []
        for s in self._chunks():
            r, c = self._rows[s : s + self.chunk], self._cols[s : s + self.chunk]
            parts.append((top[:, r, :] * Ct[:, c, :]).sum(-1))
        return torch.cat(parts, dim=1) - self._values

    def __call__(self, ps: Sequence[torch.Tensor]) -> torch.Tensor:
        return get_loss(self.loss)(self.residuals(ps))

    def value_and_grad(self, ps: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Losses (B,) and the gradients w.r.t. ``ps`` (see the class doc). The rows gathered
        for the residuals (``W_N[a_i]`` and ``C[:, b_i]``, m x w each) are kept for the
        gradient, so each is gathered once per evaluation."""
        top, Ct = ps[-1], self._lower_t(ps)
        gtop = torch.zeros_like(top)
        if Ct is None:
            r = top[:, self._rows, self._cols] - self._values
            g = LOSS_GRADS[self.loss](r)
            flat = self._rows * top.shape[2] + self._cols
            gtop.view(top.shape[0], -1).index_add_(1, flat, g)
            return get_loss(self.loss)(r), [gtop]
        gathered, parts = [], []
        for s in self._chunks():
            rr, cc = self._rows[s : s + self.chunk], self._cols[s : s + self.chunk]
            t_rows, c_rows = top[:, rr, :], Ct[:, cc, :]
            gathered.append((t_rows, c_rows))
            parts.append((t_rows * c_rows).sum(-1))
        r = torch.cat(parts, dim=1) - self._values
        g = LOSS_GRADS[self.loss](r)
        Mt = torch.zeros_like(Ct)
        for s, (t_rows, c_rows) in zip(self._chunks(), gathered, strict=True):
            rr, cc = self._rows[s : s + self.chunk], self._cols[s : s + self.chunk]
            gs = g[:, s : s + self.chunk, None]
            gtop.index_add_(1, rr, c_rows.mul_(gs))
            Mt.index_add_(1, cc, t_rows.mul_(gs))
        return get_loss(self.loss)(r), [*dmf_factor_gradients(ps[:-1], Mt.transpose(1, 2)), gtop]

    def singular_values(self, ps: Sequence[torch.Tensor], k: int | None = 10) -> torch.Tensor:
        """Top ``k`` (all when None) singular values (B, k) of the full end-to-end matrix, from
        the eigenvalues of W^T W (n_short x n_short; values below ~1e-8 sigma_1 are rounding)."""
        top = ps[-1]
        G = top.transpose(1, 2) @ top + self._frozen_gram
        if len(ps) > 1:
            C = end_to_end(ps[:-1])
            G = C.transpose(1, 2) @ G @ C
        G = 0.5 * (G + G.transpose(1, 2))
        s = torch.linalg.eigvalsh(G).flip(-1).clamp_min(0.0).sqrt()
        return s if k is None else s[:, :k]

    def predict(
        self, ps: Sequence[torch.Tensor], users: torch.Tensor, items: torch.Tensor
    ) -> torch.Tensor:
        """(B, n) predictions of the full end-to-end matrix at (users, items) (rating-matrix
        coordinates), frozen rows included: W_N (frozen rows from the init, moving rows from
        ``ps``) gathered at the long index, times C at the short index, in chunks of
        ``4 * chunk`` entries (one pass, memory-bound: ~0.5 s for 90,000 entries at width 671)."""
        long_idx, short_idx = (items, users) if self.transposed else (users, items)
        long_idx, short_idx = long_idx.to(self._pos.device), short_idx.to(self._pos.device)
        top = ps[-1]
        full = self._top0.unsqueeze(0).repeat(top.shape[0], 1, 1)  # (B, n_long, w)
        full[:, self._active] = top
        if len(ps) == 1:
            return full[:, long_idx, short_idx]
        Ct = end_to_end(ps[:-1]).transpose(1, 2).contiguous()  # (B, n_short, w)
        step = 4 * self.chunk
        out = [
            (full[:, long_idx[s : s + step], :] * Ct[:, short_idx[s : s + step], :]).sum(-1)
            for s in range(0, int(long_idx.numel()), step)
        ]
        return torch.cat(out, dim=1)
