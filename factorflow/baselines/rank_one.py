"""Is a fitted CP factorization a rank-1 solution? (Razin, Maman & Cohen 2021, Sec. 4.)

The proposition: if a tensor completion problem has a rank-1 solution, gradient flow from small
init reaches one (under technical conditions). :func:`is_rank_one_solution` checks a fit for it
with the papers' CP-ALS rank estimate (:func:`factorflow.baselines.tensor.estimate_tensor_rank`),
which is why it lives with the baselines and not in :mod:`factorflow.tensor_theory`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from factorflow.baselines.tensor import cp_als_error, estimate_tensor_rank
from factorflow.factorizations.cp import component_norms, cp_to_tensor

__all__ = ["RankOneCheck", "is_rank_one_solution"]


@dataclass(frozen=True)
class RankOneCheck:
    """Outcome of :func:`is_rank_one_solution`, one entry per run (lists of length ``B``).

    Attributes:
        train_loss: the objective at the factors.
        norm_ratio: second-largest component norm / largest (0 when ``R = 1``).
        rank1_mse: mean over all entries of (W - best rank-1 CP-ALS fit of W)^2.
        estimated_rank: ``estimate_tensor_rank(W, tol=mse_tol, max_rank=max_rank)`` (the
            sentinel ``max_rank + 1`` means "more than ``max_rank``").
        holds: the run fits the observations (``train_loss <= loss_tol``) and its fitted tensor
            is rank 1 (estimated rank 1 and ``norm_ratio <= ratio_tol``).
    """

    train_loss: list[float]
    norm_ratio: list[float]
    rank1_mse: list[float]
    estimated_rank: list[int]
    holds: list[bool]


def is_rank_one_solution(
    loss_fn: Callable[[Sequence[torch.Tensor]], torch.Tensor],
    factors: Sequence[torch.Tensor],
    *,
    loss_tol: float = 1e-6,
    ratio_tol: float = 1e-2,
    mse_tol: float = 1e-6,
    max_rank: int = 3,
) -> RankOneCheck:
    """Check that fitted CP factors are a rank-1 solution of the completion problem.

    The proposition (Razin, Maman & Cohen 2021, Sec. 4): if the completion problem has a rank-1
    solution, gradient flow from small init reaches one. A fitted factorization counts as such
    when (per run):

    1. it fits the observations: ``loss_fn(factors) <= loss_tol`` (e.g. a ``CPObjective``);
    2. one component dominates: ``c_(2) / c_(1) <= ratio_tol`` (sorted component norms);
    3. the fitted tensor ``W`` has estimated CP rank 1: the smallest ``R`` whose CP-ALS fit
       reaches ``mean((W - W_R)^2) < mse_tol`` (the papers' rank estimate,
       :func:`factorflow.baselines.tensor.estimate_tensor_rank`, capped at ``max_rank``).

    ``W`` is materialized (:func:`~factorflow.factorizations.cp.cp_to_tensor` raises a clear
    size error on tensors too large for that).
    """
    fs = [f.detach() for f in factors]
    with torch.no_grad():
        losses = loss_fn(fs).cpu().numpy()
    c = component_norms(fs).cpu()
    top2 = torch.topk(c, k=min(2, c.shape[1]), dim=1).values
    if c.shape[1] >= 2:
        ratio = torch.where(top2[:, 0] > 0, top2[:, 1] / top2[:, 0], torch.nan)
    else:
        ratio = torch.zeros(c.shape[0], dtype=c.dtype)
    W = cp_to_tensor(fs).cpu().numpy()
    ranks, mses, holds = [], [], []
    for b in range(W.shape[0]):
        est = estimate_tensor_rank(W[b], tol=mse_tol, max_rank=max_rank)
        mse1 = cp_als_error(W[b], 1, n_restarts=3)
        ranks.append(int(est))
        mses.append(float(mse1))
        holds.append(
            bool(losses[b] <= loss_tol)
            and est == 1
            and bool(np.isfinite(float(ratio[b])))
            and float(ratio[b]) <= ratio_tol
        )
    return RankOneCheck(
        train_loss=[float(x) for x in losses],
        norm_ratio=[float(x) for x in ratio],
        rank1_mse=mses,
        estimated_rank=ranks,
        holds=holds,
    )
