"""DeepMatrixCompleter: deep matrix factorization plus biases (see the package doc)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from factorflow.estimators._base import _Completer
from factorflow.factorizations.dmf import DMF_INITS, end_to_end, init_dmf

__all__ = ["DeepMatrixCompleter"]


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
