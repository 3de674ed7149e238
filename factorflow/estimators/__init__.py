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

from factorflow.estimators._base import SKLEARN_CHECKS_SKIPPED, check_pairs
from factorflow.estimators.matrix import DeepMatrixCompleter
from factorflow.estimators.tensor import CPTensorCompleter

__all__ = ["SKLEARN_CHECKS_SKIPPED", "CPTensorCompleter", "DeepMatrixCompleter", "check_pairs"]
