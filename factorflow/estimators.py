"""Scikit-learn style completers for real data: deep matrix factorization and CP tensor completion.

``X`` holds integer positions (``(n, 2)`` ``(row, col)`` for a matrix, ``(n, k)`` for an order-k
tensor), ``y`` the observed values. Both estimators follow scikit-learn's contract (settings
stored by ``__init__``, learned values ending in ``_``, ``get_params`` / ``set_params`` /
``clone``), so they work in ``GridSearchCV``, ``cross_val_score`` and ``Pipeline``.

Model (DMF; Arora, Cohen, Hu & Luo 2019, eq. 2, plus the usual rating baseline)::

    y_hat[u, i] = mu + b_u + c_i + (W_N ... W_1)[u, i]

``mu`` is the mean training rating; the row / column biases ``b``, ``c`` are parameters of the
same loss, ``loss(residuals) + bias_reg * (|b|^2 + |c|^2) / n_fit`` (the ridge penalty of
Surprise's ``BaselineOnly``; Koren 2010, eq. 2), started at their minimizer with the factorization
at zero (``bias_sweeps`` alternating least-squares sweeps) and then trained with the factors by
the same optimizer, each group with its own optimizer state. The factors have no penalty: their
regularization is the implicit one of small initialization plus early stopping.

Why not :func:`factorflow.train`: its objectives form the dense end-to-end matrix and its dense
gradient each step (O(rows * cols * width)), which for a 600 x 9,000 ratings matrix costs more
than the whole fit here; rating data needs predictions only at observed entries, a penalized
bias term and a validation check with the best state kept. The loop below is that: full-batch,
autograd, one of factorflow's optimizers (``adam``, ``gd``, ``group_rmsprop``) by name.

Scikit-learn's generic checks (``parametrize_with_checks``) that fit on their own data feed
continuous, often negative, many-column features; those are outside this input contract and
fail by design (see :data:`SKLEARN_CHECKS_SKIPPED`). The others pass (``tests/test_estimators.py``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from factorflow.dynamics.optimizers import make_optimizer
from factorflow.factorizations.cp import cp_predict, init_cp
from factorflow.factorizations.dmf import DMF_INITS, end_to_end, init_dmf
from factorflow.losses import get_loss

__all__ = ["SKLEARN_CHECKS_SKIPPED", "CPTensorCompleter", "DeepMatrixCompleter", "check_pairs"]

_INPUT_CONTRACT = "X must be an (n, k) array of non-negative integer positions"
#: ``parametrize_with_checks`` checks expected to fail, and why (all fit on generic features).
SKLEARN_CHECKS_SKIPPED: dict[str, str] = {
    name: _INPUT_CONTRACT + " (the check fits on continuous or negative features)"
    for name in (
        "check_estimators_dtypes check_fit_score_takes_y check_estimators_fit_returns_self "
        "check_dtype_object check_pipeline_consistency check_estimators_empty_data_messages "
        "check_estimators_nan_inf check_estimators_overwrite_params check_estimator_sparse_array "
        "check_estimator_sparse_matrix check_estimator_sparse_tag check_estimators_pickle "
        "check_f_contiguous_array_estimator check_methods_sample_order_invariance "
        "check_methods_subset_invariance check_fit2d_1sample check_fit2d_1feature "
        "check_dict_unchanged check_dont_overwrite_parameters check_fit_check_is_fitted "
        "check_n_features_in check_fit2d_predict1d check_regressors_train "
        "check_regressor_data_not_an_array "
        "check_regressors_no_decision_function check_supervised_y_2d "
        "check_regressors_int check_non_transformer_estimators_n_iter "
        "check_regressor_multioutput check_requires_y_none check_n_features_in_after_fitting "
        "check_positive_only_tag_during_fit check_readonly_memmap_input "
        "check_complex_data check_fit_non_negative check_sample_weight_equivalence_on_dense_data "
        "check_estimators_pickle(readonly_memmap=True) check_fit_idempotent"
    ).split()
}


def check_pairs(X: Any, k: int, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Validate positions: ``X`` ``(n, k)`` of non-negative integers (integral floats allowed) ->
    int64 array; with ``shape``, every index must be below it (``ValueError`` otherwise)."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != k:
        raise ValueError(f"{_INPUT_CONTRACT} with k = {k}; got shape {X.shape}")
    if X.dtype.kind not in "iuf" or (X.dtype.kind == "f" and not np.all(X == np.round(X))):
        raise ValueError(f"{_INPUT_CONTRACT}; got dtype {X.dtype} with non-integer values")
    Xi = X.astype(np.int64)
    if Xi.size and Xi.min() < 0:
        raise ValueError(f"{_INPUT_CONTRACT}; got a negative index {Xi.min()}")
    if shape is not None and Xi.size and np.any(Xi.max(axis=0) >= np.asarray(shape)):
        raise ValueError(f"shape {tuple(shape)} is smaller than the indices (max {Xi.max(0)})")
    return Xi


def _check_y(y: Any, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},), got {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError(f"y has {int((~np.isfinite(y)).sum())} NaN or infinite value(s)")
    return y


def _dedupe(X: np.ndarray, y: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """Repeated positions: ``error`` (ValueError), ``mean`` (average) or ``last`` (keep last)."""
    if how not in ("error", "mean", "last"):
        raise ValueError(f"duplicates must be 'error', 'mean' or 'last', got {how!r}")
    uniq, inv, counts = np.unique(X, axis=0, return_inverse=True, return_counts=True)
    if len(uniq) == len(X):
        return X, y
    if how == "error":
        j = int(np.flatnonzero(counts[inv.ravel()] > 1)[0])
        raise ValueError(
            f"{int((counts > 1).sum())} positions appear more than once, e.g. {X[j].tolist()}; "
            "pass duplicates='mean' or 'last'"
        )
    inv = inv.ravel()
    if how == "mean":
        return uniq, np.bincount(inv, weights=y) / counts
    last = np.zeros(len(uniq), dtype=np.int64)
    last[inv] = np.arange(len(y))  # later rows overwrite earlier ones
    return uniq, y[last]


class _Completer(RegressorMixin, BaseEstimator):
    """Shared fit loop: split, full-batch training, early stopping with the best state kept."""

    def _expected_order(self, X: Any) -> int:
        return 2

    def __sklearn_tags__(self):  # noqa: ANN204 - scikit-learn's Tags
        tags = super().__sklearn_tags__()
        tags.regressor_tags.poor_score = True  # fits on ids, not on features
        return tags

    # subclasses: _init(X, y, g) -> (groups: list[list[Tensor]], penalty_fn or None),
    # _forward(groups, Xt) -> predictions, _store(groups)
    def fit(self, X: Any, y: Any) -> _Completer:
        """Fit to values ``y`` ``(n,)`` observed at positions ``X`` ``(n, k)``; returns self."""
        return self._fit(X, y, self.shape)

    def _fit(self, X: Any, y: Any, shape: tuple[int, ...] | None) -> _Completer:
        # torch threads: 2 threads on 2 busy cores made a small fit 44x slower (measured)
        before = torch.get_num_threads()
        if self.n_threads is not None:
            torch.set_num_threads(int(self.n_threads))
        try:
            return self._fit_impl(X, y, shape)
        finally:
            torch.set_num_threads(before)

    def _fit_impl(self, X: Any, y: Any, shape: tuple[int, ...] | None) -> _Completer:
        k = self._expected_order(X)
        X = check_pairs(X, k, None if shape is None else tuple(shape))
        X, y = _dedupe(X, _check_y(y, len(X)), self.duplicates)
        if len(X) < 2:
            raise ValueError(f"need at least 2 observations to fit, got {len(X)}")
        get_loss(self.loss)
        rs = check_random_state(self.random_state)
        seed = int(rs.randint(2**31 - 1))
        self.shape_ = tuple(int(s) for s in (X.max(0) + 1 if shape is None else shape))
        self.n_features_in_ = k
        n_val = int(round(self.validation_fraction * len(X))) if self.early_stopping else 0
        n_val = min(max(n_val, 1), len(X) - 1) if self.early_stopping else 0
        perm = rs.permutation(len(X))
        fit_rows, val_rows = np.sort(perm[n_val:]), np.sort(perm[:n_val])
        self.seen_ = [
            np.bincount(X[fit_rows, m], minlength=s) > 0 for m, s in enumerate(self.shape_)
        ]
        dtype = getattr(torch, self.dtype)
        dev = torch.device(self.device)

        def tens(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            return (
                torch.as_tensor(X[rows], device=dev),
                torch.as_tensor(y[rows], dtype=dtype, device=dev),
            )

        (Xf, yf), (Xv, yv) = tens(fit_rows), tens(val_rows)
        self.intercept_ = float(yf.mean()) if self.biases else 0.0
        g = torch.Generator().manual_seed(seed)
        groups, penalty = self._init(Xf, yf - self.intercept_, g, dtype, dev)
        opt = make_optimizer(self.optimizer, lr=self.lr)
        states = [opt.init_state(p) for p in groups]
        loss_fn = get_loss(self.loss)
        hist: dict[str, list[float]] = {"step": [], "train_rmse": [], "val_rmse": [], "time": []}
        best, best_step, bad = math.inf, 0, 0
        best_groups = [[p.detach().clone() for p in grp] for grp in groups]
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.max_iter, desc=type(self).__name__, leave=False)
        t0 = time.perf_counter()
        step = 0
        for step in range(1, self.max_iter + 1):
            flat = [p.requires_grad_(True) for grp in groups for p in grp]
            r = self._forward(groups, Xf) + self.intercept_ - yf
            obj = loss_fn(r[None])[0] + (penalty(groups) if penalty else 0.0)
            grads = torch.autograd.grad(obj, flat)
            with torch.no_grad():
                it = iter(grads)
                for j, grp in enumerate(groups):
                    gg = [next(it)[None] for _ in grp]
                    new, states[j] = opt.update(
                        [p.detach()[None] for p in grp], gg, states[j], step
                    )
                    groups[j] = [q[0] for q in new]
            last = step == self.max_iter or time.perf_counter() - t0 > (self.max_time or math.inf)
            if step % self.eval_every and not last:
                continue
            with torch.no_grad():
                tr = float(r.square().mean().sqrt())
                va = math.nan
                if n_val:
                    pv = self._forward(groups, Xv) + self.intercept_
                    va = float((pv - yv).square().mean().sqrt())
            for key, v in zip(hist, (step, tr, va, time.perf_counter() - t0), strict=True):
                hist[key].append(v)
            if bar is not None:
                bar.update(self.eval_every)
                bar.set_postfix(train=f"{tr:.4f}", val=f"{va:.4f}")
            score = va if n_val else tr
            if not math.isfinite(tr):
                break
            if score < best - self.tol:
                best, best_step, bad = score, step, 0
                best_groups = [[p.detach().clone() for p in grp] for grp in groups]
            else:
                bad += 1
            if last or (self.early_stopping and bad >= self.n_iter_no_change):
                break
        if bar is not None:
            bar.close()
        if not math.isfinite(best):
            raise RuntimeError("training diverged (non-finite loss); lower lr or init_scale")
        self._store([[p.detach().cpu().numpy() for p in grp] for grp in best_groups])
        self.history_ = hist
        self.n_iter_ = step
        self.best_iter_ = best_step
        self.best_score_ = best
        self.validation_rmse_ = best if n_val else math.nan
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predictions ``(n,)`` at positions ``X`` ``(n, k)``; indices never seen in training
        (beyond ``shape_`` or without a training observation) get the bias-only prediction."""
        check_is_fitted(self, "history_")
        X = check_pairs(X, len(self.shape_))
        known = [(X[:, m] < s) for m, s in enumerate(self.shape_)]
        Xc = np.where(np.stack(known, 1), X, 0)
        for m in range(len(self.shape_)):
            known[m] &= self.seen_[m][Xc[:, m]]
        return self._predict_known(Xc, np.stack(known, 1))


class DeepMatrixCompleter(_Completer):
    """Matrix completion by a depth-N deep matrix factorization with biases (module doc).

    Args:
        depth: N >= 1 (1 = the matrix itself, no factorization).
        width: hidden width(s) d_1..d_{N-1}; None = min(rows, cols) (no rank limit).
        init, init_scale: as :func:`factorflow.init_dmf` (``gaussian``: per-layer std
            init_scale^(1/N) / sqrt(d_{j-1})).
        optimizer, lr: a factorflow optimizer by name (``adam``, ``gd``, ``group_rmsprop``).
        loss: ``mse`` or ``half_sse`` (:mod:`factorflow.losses`).
        biases: fit mu + row / column biases with the factorization; bias_reg their ridge weight.
        bias_sweeps: ALS sweeps that start the biases at their penalized minimizer.
        validation_fraction, early_stopping, n_iter_no_change, tol, eval_every: the held-out
            part of the training data, checked every ``eval_every`` steps; training stops after
            ``n_iter_no_change`` checks without an improvement of ``tol`` and keeps the best state.
        max_iter, max_time: limits on steps and seconds (None: none).
        shape: (rows, cols), or None to infer (max index + 1).
        duplicates: repeated positions: ``error``, ``mean`` or ``last``.
        dtype, device: torch dtype name and device of the fit.
        random_state: seeds the split and the initialization.
        progress: show a tqdm bar.
        n_threads: torch threads during fit (None: leave torch's setting).

    Fitted: ``factors_`` (list of N arrays (d_j, d_{j-1})), ``row_bias_``, ``col_bias_``,
    ``intercept_``, ``shape_``, ``seen_``, ``history_`` (step, train_rmse, val_rmse, time),
    ``n_iter_``, ``best_iter_``, ``validation_rmse_``, ``n_features_in_`` (= 2).
    """

    def __init__(
        self,
        depth: int = 3,
        width: int | None = None,
        init: str = "gaussian",
        init_scale: float = 1e-3,
        optimizer: str = "adam",
        lr: float = 1e-3,
        loss: str = "mse",
        biases: bool = True,
        bias_reg: float = 10.0,
        bias_sweeps: int = 10,
        validation_fraction: float = 0.1,
        early_stopping: bool = True,
        n_iter_no_change: int = 50,
        tol: float = 0.0,
        eval_every: int = 10,
        max_iter: int = 2000,
        max_time: float | None = None,
        shape: tuple[int, int] | None = None,
        duplicates: str = "error",
        dtype: str = "float32",
        device: str = "cpu",
        random_state: int | np.random.RandomState | None = None,
        progress: bool = False,
        n_threads: int | None = 1,
    ) -> None:
        self.depth = depth
        self.width = width
        self.init = init
        self.init_scale = init_scale
        self.optimizer = optimizer
        self.lr = lr
        self.loss = loss
        self.biases = biases
        self.bias_reg = bias_reg
        self.bias_sweeps = bias_sweeps
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.eval_every = eval_every
        self.max_iter = max_iter
        self.max_time = max_time
        self.shape = shape
        self.duplicates = duplicates
        self.dtype = dtype
        self.device = device
        self.random_state = random_state
        self.progress = progress
        self.n_threads = n_threads

    def _init(self, X, r, g, dtype, dev):
        if self.init not in DMF_INITS:
            raise ValueError(f"unknown init {self.init!r}; choose one of {list(DMF_INITS)}")
        rows, cols = self.shape_
        width = min(rows, cols) if self.width is None else self.width
        facs, _ = init_dmf(
            (rows, cols), self.depth, init=self.init, init_scale=self.init_scale,
            seeds=[int(torch.randint(2**31 - 1, (1,), generator=g))], width=width, dtype=dtype,
        )  # fmt: skip
        facs = [f[0].to(dev) for f in facs]
        if not self.biases:
            return [facs], None
        b, c = (
            torch.zeros(rows, dtype=dtype, device=dev),
            torch.zeros(cols, dtype=dtype, device=dev),
        )
        n_u = torch.bincount(X[:, 0], minlength=rows).to(dtype) + self.bias_reg
        n_i = torch.bincount(X[:, 1], minlength=cols).to(dtype) + self.bias_reg
        for _ in range(self.bias_sweeps):  # coordinate minimization of the penalized bias loss
            b = torch.zeros_like(b).index_add_(0, X[:, 0], r - c[X[:, 1]]) / n_u
            c = torch.zeros_like(c).index_add_(0, X[:, 1], r - b[X[:, 0]]) / n_i
        n, lam = len(r), float(self.bias_reg)
        scale = 2.0 / n if self.loss == "mse" else 1.0

        def penalty(groups):
            return 0.5 * scale * lam * (groups[1][0].square().sum() + groups[1][1].square().sum())

        return [facs, [b, c]], penalty

    def _forward(self, groups, X):
        facs = groups[0]
        u, i = X[:, 0], X[:, 1]
        if len(facs) == 1:
            out = facs[0].reshape(-1).index_select(0, u * facs[0].shape[1] + i)
        else:
            top = end_to_end([f[None] for f in facs[1:]])[0]  # W_N ... W_2, (rows, d_1)
            out = (top.index_select(0, u) * facs[0].T.index_select(0, i)).sum(1)
        if self.biases:
            out = out + groups[1][0].index_select(0, u) + groups[1][1].index_select(0, i)
        return out

    def _store(self, groups) -> None:
        self.factors_ = groups[0]
        rows, cols = self.shape_
        b, c = groups[1] if self.biases else (np.zeros(rows), np.zeros(cols))
        self.row_bias_, self.col_bias_ = b, c

    def _predict_known(self, X: np.ndarray, known: np.ndarray) -> np.ndarray:
        u, i = X[:, 0], X[:, 1]
        top = self.factors_[-1]
        for f in self.factors_[-2:0:-1]:
            top = top @ f
        low = self.factors_[0] if len(self.factors_) > 1 else np.eye(self.shape_[1])
        both = known.all(1)
        inter = np.zeros(len(X))
        inter[both] = np.einsum("nk,kn->n", top[u[both]], low[:, i[both]])
        return (
            self.intercept_
            + known[:, 0] * self.row_bias_[u]
            + known[:, 1] * self.col_bias_[i]
            + inter
        )

    def full_matrix(self) -> np.ndarray:
        """The completed ``shape_`` matrix: mu + b 1^T + 1 c^T + W_N ... W_1."""
        check_is_fitted(self, "history_")
        W = self.factors_[0]
        for f in self.factors_[1:]:
            W = f @ W
        return self.intercept_ + self.row_bias_[:, None] + self.col_bias_[None, :] + W

    def fit_matrix(self, M: Any) -> DeepMatrixCompleter:
        """Fit to the finite entries of a 2-D array ``M`` (NaN = missing); ``shape_ = M.shape``."""
        M = np.asarray(M, dtype=np.float64)
        if M.ndim != 2:
            raise ValueError(f"M must be 2-D, got shape {M.shape}")
        if np.isinf(M).any():
            raise ValueError("M has infinite entries (use NaN for missing)")
        return self._fit(np.argwhere(~np.isnan(M)), M[~np.isnan(M)], M.shape)

    def complete(self, M: Any) -> np.ndarray:
        """``M`` with its NaN entries filled by the fitted model (observed entries kept)."""
        check_is_fitted(self, "history_")
        M = np.asarray(M, dtype=np.float64)
        if M.shape != self.shape_:
            raise ValueError(f"M has shape {M.shape}, the model {self.shape_}")
        return np.where(np.isnan(M), self.full_matrix(), M)

    def save(self, folder: str | Path) -> None:
        """Write the settings (``model.json``) and the fitted arrays (``arrays.npz``)."""
        check_is_fitted(self, "history_")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {k: getattr(self, k) for k in ("shape_", "intercept_", "n_iter_", "best_iter_")}
        meta |= {"params": self.get_params(), "history": self.history_}
        meta["validation_rmse"] = self.validation_rmse_
        (folder / "model.json").write_text(json.dumps(meta, indent=1, default=str))
        arrays = {f"factor_{j}": f for j, f in enumerate(self.factors_)}
        np.savez(folder / "arrays.npz", row_bias=self.row_bias_, col_bias=self.col_bias_,
                 seen_rows=self.seen_[0], seen_cols=self.seen_[1], **arrays)  # fmt: skip

    @classmethod
    def load(cls, folder: str | Path) -> DeepMatrixCompleter:
        """Rebuild an estimator written by :meth:`save` (predict-ready)."""
        folder = Path(folder)
        meta = json.loads((folder / "model.json").read_text())
        params = meta["params"]
        params["shape"] = None if params["shape"] is None else tuple(params["shape"])
        est = cls(**params)
        with np.load(folder / "arrays.npz") as a:
            est.factors_ = [a[f"factor_{j}"] for j in range(est.depth)]
            est.row_bias_, est.col_bias_ = a["row_bias"], a["col_bias"]
            est.seen_ = [a["seen_rows"], a["seen_cols"]]
        est.shape_, est.intercept_ = tuple(meta["shape_"]), meta["intercept_"]
        est.n_iter_, est.best_iter_, est.history_ = (
            meta["n_iter_"],
            meta["best_iter_"],
            meta["history"],
        )
        est.validation_rmse_, est.n_features_in_ = meta["validation_rmse"], 2
        return est


class CPTensorCompleter(_Completer):
    """Order-k tensor completion by a rank-R CP factorization plus the mean:
    ``y_hat[i_1..i_k] = mu + sum_r prod_n w_r^n[i_n]`` (Razin, Maman & Cohen 2021, eq. 2).

    ``X`` is ``(n, k)``; ``order`` = k (None: taken from ``X`` at fit). ``init_scale`` is the
    std of the i.i.d. normal factor entries (:func:`factorflow.init_cp`); ``biases`` fits the
    mean ``mu`` only (no per-mode biases). The other settings are those of
    :class:`DeepMatrixCompleter`. Fitted: ``factors_`` (k arrays (d_n, R)), ``intercept_``,
    ``shape_``, ``history_`` and the rest as there; :meth:`to_tensorly` gives the model as a
    TensorLy ``CPTensor``.
    """

    def __init__(
        self,
        rank: int = 10,
        order: int | None = None,
        init_scale: float = 1e-2,
        optimizer: str = "adam",
        lr: float = 1e-2,
        loss: str = "mse",
        biases: bool = True,
        validation_fraction: float = 0.1,
        early_stopping: bool = True,
        n_iter_no_change: int = 50,
        tol: float = 0.0,
        eval_every: int = 10,
        max_iter: int = 2000,
        max_time: float | None = None,
        shape: tuple[int, ...] | None = None,
        duplicates: str = "error",
        dtype: str = "float32",
        device: str = "cpu",
        random_state: int | np.random.RandomState | None = None,
        progress: bool = False,
        n_threads: int | None = 1,
    ) -> None:
        self.rank = rank
        self.order = order
        self.init_scale = init_scale
        self.optimizer = optimizer
        self.lr = lr
        self.loss = loss
        self.biases = biases
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.eval_every = eval_every
        self.max_iter = max_iter
        self.max_time = max_time
        self.shape = shape
        self.duplicates = duplicates
        self.dtype = dtype
        self.device = device
        self.random_state = random_state
        self.progress = progress
        self.n_threads = n_threads

    def _expected_order(self, X: Any) -> int:
        if self.order is not None:
            return int(self.order)
        if self.shape is not None:
            return len(self.shape)
        X = np.asarray(X)
        return X.shape[1] if X.ndim == 2 and X.shape[1] >= 1 else 3

    def _init(self, X, r, g, dtype, dev):
        if not int(self.rank) >= 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        facs = init_cp(
            self.shape_, int(self.rank), float(self.init_scale), generator=g, dtype=dtype
        )
        return [[f[0].to(dev) for f in facs]], None

    def _forward(self, groups, X):
        return cp_predict([f[None] for f in groups[0]], X)[0]

    def _store(self, groups) -> None:
        self.factors_ = groups[0]

    def _predict_known(self, X: np.ndarray, known: np.ndarray) -> np.ndarray:
        prod = np.ones((len(X), int(self.rank)))
        for m, f in enumerate(self.factors_):
            prod *= f[X[:, m]]
        return self.intercept_ + known.all(1) * prod.sum(1)

    def to_tensorly(self) -> Any:
        """The fitted model as a TensorLy ``CPTensor`` of rank R + 1 (weights, factors): the R
        components with unit weights, plus the mean ``mu`` as a rank-1 all-ones component, so
        ``tensorly.cp_to_tensor(est.to_tensorly())`` is the completed tensor."""
        check_is_fitted(self, "history_")
        from tensorly.cp_tensor import CPTensor

        weights = np.concatenate([np.ones(int(self.rank)), [self.intercept_]])
        facs = [np.hstack([f.astype(np.float64), np.ones((f.shape[0], 1))]) for f in self.factors_]
        return CPTensor((weights, facs))
