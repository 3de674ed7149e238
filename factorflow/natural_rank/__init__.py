"""Tensor rank of natural data: fitting order-784 CP tensors of an explicit rank R to images.

Razin, Maman & Cohen, "Implicit Regularization in Tensor Factorization" (ICML 2021), Sec. 5:
a binarized ``28 x 28`` image ``x in {0, 1}^784`` is an index into an order-784 tensor with
mode size 2, and its one-vs-all label (``2`` for the positive class, ``0`` otherwise) is the
value of that entry. How well a CP tensor of rank ``R``,

    f(x) = sum_{r=1..R} prod_{n=1..N} w_r^n[x_n],          weights ``(R, N, k)``,

fits these entries (train error) and predicts unseen ones (test error), compared with the same
fit on random images and on random labels, measures how low the tensor rank of natural data is.

This package holds the math of that experiment as plain functions, one module per concept:

* :mod:`.errors`: errors in the paper's units, :func:`paper_error` (squared error divided by
  the squared target range, i.e. 0/1 units for targets 2 vs 0; optionally clamped per sample at
  1, as the original code does on the test set) and :func:`label_variance` (the error of the
  best constant predictor in the same units);
* :mod:`.data`: :func:`encode_images` (memory-lean binarization) and :func:`build_variant` (the
  original data and its "rand image" / "rand label" controls, equal to
  :func:`factorflow.data.images.make_variant`), and the experiment's data preparation
  (:func:`load_dataset`, :func:`subset_images`, :func:`fit_groups`);
* :mod:`.model`: a batch of independent fits that share one design matrix (variants with the
  same images, ranks, seeds): :class:`FitBatch`, stacked weights ``(C, N, k)`` with ``C = sum
  of the ranks`` and :func:`batched_predict`, one matrix product for all of them;
* two optimizers, both batched so that every fit is exactly independent of the others:
  :func:`fit_adam` (:mod:`.adam`; the paper's: Adam on the weights, minibatches; or Adam on the
  log-magnitude parametrization) and :func:`fit_lbfgs` (:mod:`.lbfgs`; full-batch L-BFGS on the
  log-magnitude parametrization, per-fit history and line search);
* :mod:`.grid`: one optimizer over a group of fits, and their tidy rows; :mod:`.measures`: the
  claims' measurements over those rows.

Log-magnitude parametrization (binary pixels, positive factors): with ``a_r = sum_n log
w_r^n[0]`` and ``b_r^n = log w_r^n[1] - log w_r^n[0]``, a component is ``exp(a_r + x . b_r)``,
so a rank-1 model is log-linear in the pixels, ``f(x) = exp(a + x . b)``. :func:`weights_to_log`
and :func:`log_to_weights` convert exactly between the two (``log_to_weights`` puts ``exp(a/N)``
on every ``w^n[0]``). This family is the rank-R tensors whose components have positive factors
(every factor of the paper's initialization ``N(1, 1e-3^2)`` is positive): its best error is an
upper bound on the best error over all rank-R tensors.
"""

from __future__ import annotations

from factorflow.natural_rank.adam import fit_adam
from factorflow.natural_rank.data import (
    VARIANTS,
    FitGroup,
    VariantData,
    build_variant,
    data_generator,
    encode_images,
    fit_groups,
    load_dataset,
    subset_images,
)
from factorflow.natural_rank.errors import fit_error_pair, fit_errors, label_variance, paper_error
from factorflow.natural_rank.grid import (
    COLUMNS,
    OPTIMIZERS,
    AdamConfig,
    LBFGSConfig,
    fit_group,
    group_rows,
)

# the private helpers below are re-exported for the benchmark and the gradient test
from factorflow.natural_rank.lbfgs import _log_value_and_grad as _log_value_and_grad
from factorflow.natural_rank.lbfgs import fit_lbfgs
from factorflow.natural_rank.model import (
    FitBatch,
    FitResult,
    batched_predict,
    batched_predict_log,
    init_paper_weights,
    log_to_weights,
    weights_to_log,
)
from factorflow.natural_rank.model import (
    _design as _design,
)

__all__ = [
    "COLUMNS",
    "OPTIMIZERS",
    "VARIANTS",
    "AdamConfig",
    "FitBatch",
    "FitGroup",
    "FitResult",
    "LBFGSConfig",
    "VariantData",
    "batched_predict",
    "batched_predict_log",
    "build_variant",
    "data_generator",
    "encode_images",
    "fit_adam",
    "fit_error_pair",
    "fit_errors",
    "fit_group",
    "fit_groups",
    "fit_lbfgs",
    "group_rows",
    "init_paper_weights",
    "label_variance",
    "load_dataset",
    "log_to_weights",
    "paper_error",
    "subset_images",
    "weights_to_log",
]
