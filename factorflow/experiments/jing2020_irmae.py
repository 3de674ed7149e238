"""Jing, Zbontar & LeCun (NeurIPS 2020): the Implicit Rank-Minimizing Autoencoder (IRMAE), the
talk's practical application of deep matrix factorization.

Method (as the authors): an autoencoder (encoder conv 1/3 -> 32 -> 64 -> 128 -> 256 then linear
to a 128-number latent; decoder back to 32x32 with a tanh output) with l extra square bias-free
linear layers between encoder and decoder (``factorflow.nn.DeepLinear``, PyTorch's default init;
l = 0 is the plain autoencoder), MSE reconstruction loss, Adam. Data: the synthetic shape data
set (one coloured circle or square, 7 degrees of freedom; ``factorflow.data.shapes``) and
Fashion-MNIST (or MNIST) resized to 32x32 in [0, 1]. Measured per model: the singular values of
the covariance of the test latents, normalized by the largest (every epoch), their effective
rank and count above 1e-2, the test MSE, a probe on frozen latents with few labels (shapes:
circle vs square; images: the 10 classes), and generation (a Gaussian fitted to the training
latents, decoded) scored by the probe's mean confidence and the nearest-neighbour MSE to the
test set. The library is ``factorflow.autoencoder``.

Scales: ``paper`` is the authors' MNIST setting (100 epochs on the 60,000 training images,
batch 32, Adam lr 1e-4, l in {0, 2, 4, 8}; shapes on 50,000 / 10,000 images): eight models
of ~2 h (shapes) and ~3.5-3.7 h (Fashion-MNIST) each on an idle CPU core, measured
(``docs/irmae-notes.md``), so a GPU job (``--device cuda``) or ``--workers N`` models at once.
``quick`` trains far less (shapes 6,000 / 1,500 images, 6 epochs; Fashion-MNIST 5,000 / 1,000,
4 epochs; batch 64, lr 1e-3; l in {0, 8}); its counts are reported as measured, never tuned
toward the paper's.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from factorflow.autoencoder import (
    IRMAE,
    count_above,
    epoch_line,
    fit_probe,
    generate,
    interpolate,
    latent_codes,
    latent_effective_rank,
    latent_spectrum,
    nearest_neighbour_mse,
    reconstruction_mse,
    train_autoencoder,
)
from factorflow.data.shapes import SHAPE_DOF, load_images32, make_shapes
from factorflow.experiment import (
    Claim,
    Context,
    Experiment,
    NotJudged,
    Result,
    at_least,
    at_most,
    between,
    is_true,
)

SOURCE = "Jing, Zbontar, LeCun, NeurIPS 2020"
_NOT_AT_HAND = "figure/table number not checked: the paper PDF was not at hand"


@dataclass(frozen=True)
class IRMAESettings:
    """One IRMAE comparison: both data sets, every l, one model per (data set, l, seed)."""

    seeds: int = 1
    latent_dim: int = 128
    ls: tuple[int, ...] = (0, 2, 4, 8)
    batch_size: int = 32
    lr: float = 1e-4
    shapes_n_train: int = 50_000
    shapes_n_test: int = 10_000
    shapes_epochs: int = 100
    images: str = "fashion-mnist"
    images_mode: str = "resize"
    images_n_train: int = 60_000
    images_n_test: int = 10_000
    images_epochs: int = 100
    probe_labels: tuple[int, ...] = (100, 1000)
    probe_head: str = "mlp"
    probe_steps: int = 500
    n_generated: int = 500


PAPER_SCALE = IRMAESettings()
QUICK = dataclasses.replace(
    PAPER_SCALE,
    ls=(0, 8),
    batch_size=64,
    lr=1e-3,
    shapes_n_train=6_000,
    shapes_n_test=1_500,
    shapes_epochs=6,
    images_n_train=5_000,
    images_n_test=1_000,
    images_epochs=4,
    probe_head="linear",
)
SMOKE = dataclasses.replace(
    QUICK,
    latent_dim=16,
    shapes_n_train=64,
    shapes_n_test=32,
    shapes_epochs=1,
    images_n_train=64,
    images_n_test=32,
    images_epochs=1,
    probe_labels=(10,),
    probe_steps=20,
    n_generated=16,
)

COLUMNS = {
    "dataset": "str",
    "l": "int",
    "seed": "int",
    "n_train": "int",
    "n_test": "int",
    "epochs": "float",
    "test_mse": "float",
    "erank": "float",
    "count_above_1e-2": "int",
    "count_by_epoch": "json",
    "probe_acc": "json",
    "gen_confidence": "float",
    "gen_nn_mse": "float",
    "test_nn_mse": "float",
    "train_s": "float",
    "arrays": "str",
    "source": "str",
}


def _data(s: IRMAESettings, dataset: str, seed: int) -> tuple[torch.Tensor, ...]:
    """(train images, train labels, test images, test labels, source) for one data set."""
    if dataset == "shapes":
        x, p = make_shapes(s.shapes_n_train + s.shapes_n_test, seed=seed)
        x, y = torch.from_numpy(x), torch.from_numpy(p["kind"])
        n = s.shapes_n_train
        return x[:n], y[:n], x[n:], y[n:], f"make_shapes(seed={seed}), label = circle/square"
    d = load_images32(
        s.images, mode=s.images_mode, n_train=s.images_n_train, n_test=s.images_n_test, seed=seed
    )
    return d.train_images[:, None], d.train_labels, d.test_images[:, None], d.test_labels, d.source


@functools.lru_cache(maxsize=1)
def _cached_data(s: IRMAESettings, dataset: str, seed: int) -> tuple[torch.Tensor, ...]:
    """:func:`_data`, kept for the next model of this process (same data set and seed)."""
    return _data(s, dataset, seed)


def _one_model(
    s: IRMAESettings,
    dataset: str,
    l: int,
    seed: int,
    device: Any,
    checkpoint: Path | None,
    log: Callable[[str], None],
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Train one model and measure it: (its arrays, its row). A cell: it may run in a worker
    process (``--workers``), so it takes plain values, not the run's context."""
    x_tr, y_tr, x_te, y_te, source = _cached_data(s, dataset, seed)
    channels = int(x_tr.shape[1])
    arch = "shapes" if dataset == "shapes" else "mnist"
    epochs = s.shapes_epochs if dataset == "shapes" else s.images_epochs
    model = IRMAE(s.latent_dim, l, channels, arch, seed=seed)
    hist = train_autoencoder(
        model, x_tr, epochs=epochs, batch_size=s.batch_size, lr=s.lr, seed=seed,
        device=device, eval_images=x_te, checkpoint=checkpoint,
        callback=lambda r: log(f"{dataset} l={l} seed {seed} {epoch_line(r)}"),
    )  # fmt: skip
    recs = [r for r in hist["epochs"] if "spectrum" in r]
    codes_tr, codes_te = latent_codes(model, x_tr), latent_codes(model, x_te)
    spec = latent_spectrum(codes_te)
    probes = {
        str(n): fit_probe(
            codes_tr, y_tr, n_labels=min(n, len(y_tr)), head=s.probe_head,
            steps=s.probe_steps, seed=seed,
        )
        for n in s.probe_labels
    }  # fmt: skip
    samples = generate(model, codes_tr, s.n_generated, seed=seed)
    big = probes[str(max(s.probe_labels))]
    path = interpolate(model, codes_te[0], codes_te[1], steps=8)
    arrays = {
        "epochs": np.array([r["epoch"] for r in recs], dtype=np.float64),
        "spectra": np.array([r["spectrum"] for r in recs], dtype=np.float64),
        "spectrum": spec.numpy(),
        "samples": samples[:64].numpy(),
        "interpolation": path.numpy(),
        "test_images": x_te[:2].numpy(),
        "model": model.to_arrays(),  # saved apart by run()
    }
    return arrays, {
        "dataset": dataset,
        "l": l,
        "seed": seed,
        "n_train": int(x_tr.shape[0]),
        "n_test": int(x_te.shape[0]),
        "epochs": float(hist["epochs"][-1]["epoch"]),
        "test_mse": reconstruction_mse(model, x_te),
        "erank": latent_effective_rank(spec),
        "count_above_1e-2": count_above(spec, 1e-2),
        "count_by_epoch": [int(r["count_above_1e-2"]) for r in recs],
        "probe_acc": {n: p.accuracy(codes_te, y_te) for n, p in probes.items()},
        "gen_confidence": big.confidence(latent_codes(model, samples)),
        "gen_nn_mse": float(nearest_neighbour_mse(samples, x_te).mean()),
        "test_nn_mse": float(nearest_neighbour_mse(x_te[:200], x_tr).mean()),
        "train_s": hist["elapsed_s"],  # every sitting's training, when resumed
        "arrays": f"{dataset}_l{l}_s{seed}",
        "source": source,
    }


def model_cells(s: IRMAESettings, workers: int = 1) -> list[tuple[str, str, int, int]]:
    """(cell key, data set, l, seed) of every model in the order the run starts them; with
    ``workers`` > 1 the image models (2-3x a shape model's cost per step) first."""
    models = [(f"{d}-l{l}-seed{k}", d, l, k) for k in range(s.seeds)
              for d in ("shapes", s.images) for l in s.ls]  # fmt: skip
    return sorted(models, key=lambda m: workers > 1 and m[1] == "shapes")  # stable


def run(s: IRMAESettings, ctx: Context) -> list[dict[str, Any]]:
    """One model per (data set, l, seed), seed k drawing the data subset and the init; models
    are cells (``--workers N`` trains N at once: :func:`model_cells`); each trained model is
    kept as ``<arrays>_model.npz`` (``IRMAE.from_arrays(load_result(dir).arrays(name))``)."""
    log = ctx.cell_log  # a worker prints its own progress
    cells = {
        c: partial(_one_model, s, d, l, k, ctx.device, ctx.scratch(f"{c}-training"), log)
        for c, d, l, k in model_cells(s)
    }
    keys = [m[0] for m in model_cells(s, ctx.workers)]
    done = dict(zip(keys, ctx.map_cells([(c, cells[c]) for c in keys]), strict=True))
    _cached_data.cache_clear()  # the images of this process's last model
    rows = []
    for arrays, row in (done[c] for c in cells):  # in the talk's order
        ctx.save_arrays(f"{row['arrays']}_model", **arrays.pop("model"))  # IRMAE.from_arrays
        ctx.save_arrays(row["arrays"], **arrays)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- claims


def _by_l(rows, dataset: str, column: str) -> dict[int, float]:
    sel = rows[rows["dataset"] == dataset]
    if sel.empty:
        raise NotJudged(f"no rows for {dataset}")
    return {int(l): float(g[column].mean()) for l, g in sel.groupby("l")}


def _need(d: dict[int, Any], *ls: int) -> None:
    missing = [l for l in ls if l not in d]
    if missing:
        raise NotJudged(f"needs runs at l = {missing}")


def shapes_erank(r: Result) -> dict[str, Any]:
    """Effective rank per l on shapes; whether it never rises with l and falls 0 -> max l."""
    e = _by_l(r.rows, "shapes", "erank")
    _need(e, 0)
    ls = sorted(e)
    if len(ls) < 2:
        raise NotJudged("needs at least two values of l")
    vals = [e[l] for l in ls]
    falls = all(b <= a for a, b in zip(vals, vals[1:], strict=False)) and vals[-1] < vals[0]
    return {"erank": {str(l): e[l] for l in ls}, "falls": falls}


def shapes_count(r: Result) -> dict[str, Any]:
    """Count of normalized singular values above 1e-2 on shapes: l = 8 per epoch, l = 0 final."""
    sel = r.rows[r.rows["dataset"] == "shapes"]
    l8, l0 = sel[sel["l"] == 8], sel[sel["l"] == 0]
    if l8.empty or l0.empty:
        raise NotJudged("needs shapes runs at l = 0 and l = 8")
    by_epoch = list(l8.iloc[0]["count_by_epoch"])[1:]  # without the untrained epoch 0
    first, last = by_epoch[0], by_epoch[-1]
    return {
        "l8_by_epoch": by_epoch,
        "l8_final": int(last),
        "l8_dist_to_7": abs(int(last) - SHAPE_DOF),
        "l8_closer_than_first_epoch": abs(last - SHAPE_DOF) <= abs(first - SHAPE_DOF),
        "l0_final": int(l0["count_above_1e-2"].iloc[0]),
    }


def images_rank_mse(r: Result) -> dict[str, Any]:
    """erank and test MSE at l = 8 relative to l = 0 on the image data set."""
    ds = r.settings.images
    e, m = _by_l(r.rows, ds, "erank"), _by_l(r.rows, ds, "test_mse")
    _need(e, 0, 8)
    return {
        "erank_l0": e[0],
        "erank_l8": e[8],
        "erank_ratio": e[8] / e[0],
        "mse_l0": m[0],
        "mse_l8": m[8],
        "mse_ratio": m[8] / m[0],
    }


def downstream(r: Result) -> dict[str, Any]:
    """Probe accuracy per label budget and generation proxies, l = 8 vs l = 0, image data."""
    sel = r.rows[r.rows["dataset"] == r.settings.images]
    l0, l8 = sel[sel["l"] == 0], sel[sel["l"] == 8]
    if l0.empty or l8.empty:
        raise NotJudged("needs image runs at l = 0 and l = 8")

    def mean_acc(g, n):
        return float(np.mean([a[n] for a in g["probe_acc"]]))

    budgets = sorted(l0.iloc[0]["probe_acc"], key=int)
    acc = {n: {"l0": mean_acc(l0, n), "l8": mean_acc(l8, n)} for n in budgets}
    conf0, conf8 = float(l0["gen_confidence"].mean()), float(l8["gen_confidence"].mean())
    nn0, nn8 = float(l0["gen_nn_mse"].mean()), float(l8["gen_nn_mse"].mean())
    return {
        "probe_acc": acc,
        "probe_l8_at_least_l0": all(a["l8"] >= a["l0"] for a in acc.values()),
        "gen_confidence": {"l0": conf0, "l8": conf8},
        "gen_nn_mse": {"l0": nn0, "l8": nn8},
        "generation_l8_better": conf8 >= conf0 and nn8 <= nn0,
    }


CLAIMS = (
    Claim(
        "shapes_erank_falls_with_l",
        "on the shape data (7 degrees of freedom) the effective rank of the test latents' "
        "covariance falls as l grows (never rises from one l to the next, l = {s.ls})",
        paper="IRMAE's spectrum drops to ~0 near index 7, the plain AE's stays spread",
        source=f"{SOURCE}, singular-value figure of the shape data ({_NOT_AT_HAND})",
        measure=shapes_erank,
        checks=(is_true("falls"),),
    ),
    Claim(
        "shapes_l8_count_near_7",
        "on shapes, at l = 8 the count of normalized singular values above 1e-2 approaches 7 "
        "over training (final count within 2 of 7 and no farther than after epoch 1), while "
        "l = 0 ends above 7",
        paper={"l8": "~7 (dashed line at rank 7)", "l0": "spread over all 128"},
        source=f"{SOURCE}, singular-value figure of the shape data, read off ({_NOT_AT_HAND})",
        measure=shapes_count,
        checks=(
            at_most("l8_dist_to_7", 2),
            is_true("l8_closer_than_first_epoch"),
            at_least("l0_final", SHAPE_DOF + 1),
        ),
    ),
    Claim(
        "images_rank_halved_mse_kept",
        "on {s.images}, the latent effective rank at l = 8 is at most half of l = 0's, with "
        "test reconstruction MSE within 20% of l = 0's",
        paper="IRMAE's MNIST spectrum drops to ~0 after a few dozen indices (AE: spread over "
        "128); reconstruction about as good as the plain AE",
        source=f"{SOURCE}, MNIST singular-value figure and text ({_NOT_AT_HAND})",
        measure=images_rank_mse,
        checks=(at_most("erank_ratio", 0.5), between("mse_ratio", 0.0, 1.2)),
    ),
    Claim(
        "downstream_irmae_beats_ae",
        "on {s.images}, IRMAE (l = 8) beats the plain AE (l = 0) downstream: probe test "
        "accuracy at every label budget {s.probe_labels} at least l = 0's, and generated "
        "samples scored better (higher probe confidence and lower nearest-neighbour MSE to the "
        "test set)",
        paper="IRMAE better than AE at few-label classification and generation "
        "(comparable to a VAE)",
        source=f"{SOURCE}, downstream classification table and generation figures "
        f"({_NOT_AT_HAND}; its numbers are not compared here, only l = 8 against l = 0)",
        measure=downstream,
        checks=(is_true("probe_l8_at_least_l0"), is_true("generation_l8_better")),
        note="probe and proxies are ours (the paper's MLP head, dropout 0.5, is used at paper "
        "scale, a linear probe at quick scale)",
    ),
)

EXPERIMENT = Experiment(
    id="jing2020-irmae",
    title="Implicit Rank-Minimizing Autoencoder: extra linear layers lower the latent rank "
    "(Jing et al. 2020)",
    paper=f"{SOURCE} (arXiv:2010.00679): Implicit Rank-Minimizing Autoencoder",
    settings=IRMAESettings,
    scales={"quick": QUICK, "paper": PAPER_SCALE, "smoke": SMOKE},
    columns=COLUMNS,
    claims=CLAIMS,
    run=run,
    part="Practical application",
    aliases=("irmae",),
)
