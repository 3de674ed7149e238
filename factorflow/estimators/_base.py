"""Input checks and the shared fit loop of the completers (see the package doc)."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from factorflow.dynamics.optimizers import make_optimizer
from factorflow.losses import get_loss

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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.regressor_tags.poor_score = True  # fits on ids, not on features
        return tags

    # subclasses: _init(X, y, g) -> (groups: list[list[Tensor]], penalty_fn or None),
    # _forward(groups, Xt) -> predictions, _store(groups)
    def fit(self, X: Any, y: Any) -> _Completer:
        """Fit to values ``y`` ``(n,)`` observed at positions ``X`` ``(n, k)``; returns self."""
        return self._fit(X, y, self.shape)

    def _fit(self, X: Any, y: Any, shape: tuple[int, ...] | None) -> _Completer:
        # torch threads: n_threads for the fit (one by default: the fits are small and
        # parallelism comes from processes), restored after
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
            last = step == self.max_iter or time.perf_counter() - t0 > (
                math.inf if self.max_time is None else self.max_time
            )
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
