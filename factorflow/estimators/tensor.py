"""CPTensorCompleter: CP tensor completion plus the mean (see the package doc)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from factorflow.estimators._base import _Completer
from factorflow.factorizations.cp import cp_predict, init_cp

__all__ = ["CPTensorCompleter"]


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
