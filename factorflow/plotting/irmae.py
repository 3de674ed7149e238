"""IRMAE figures (Jing, Zbontar, LeCun 2020), drawn from the result folder only: latent spectra
per l (the paper's axes), the largest l's spectrum and every model's count above 1e-2 against
training epochs, sample grids and interpolations."""

from __future__ import annotations

from typing import Any

import numpy as np

from factorflow.experiment import Result
from factorflow.plotting import new_figure, plt

__all__ = [
    "FIGURES",
    "count_axes",
    "counts_epochs_figures",
    "interpolation_figures",
    "sample_figures",
    "spectra_epochs_figures",
    "spectra_figures",
]


def _datasets(result) -> list[str]:
    return list(dict.fromkeys(result.rows["dataset"]))


def _first(result, dataset: str, l: int) -> dict[str, np.ndarray]:
    sel = result.select(dataset=dataset, l=l)
    return result.arrays(str(sel.iloc[0]["arrays"]))


def spectra_figures(result: Result) -> dict[str, Any]:
    """Normalized singular values of the test latents' covariance against their index, one
    curve per l (y from 0 to 0.4 as the paper; dashed line at 7 for shapes)."""
    out = {}
    for ds in _datasets(result):
        fig, (ax,) = new_figure()
        for l in sorted(set(result.select(dataset=ds)["l"])):
            s = _first(result, ds, int(l))["spectrum"]
            ax.plot(np.arange(1, len(s) + 1), s, label=f"l = {int(l)}")
        if ds == "shapes":
            ax.axvline(7, color="k", linestyle="--", linewidth=1)
        ax.set_ylim(0, 0.4)
        ax.set_xlim(0, len(s))
        ax.set_xlabel("singular value rank")
        ax.set_ylabel("singular value / largest")
        ax.set_title(f"{ds}: latent covariance spectrum")
        ax.legend()
        out[f"spectra_{ds}"] = fig
    return out


def spectra_epochs_figures(result: Result) -> dict[str, Any]:
    """The largest l's top-16 normalized singular values against training epoch (log scale):
    singular values learned one at a time, inside a network."""
    out = {}
    for ds in _datasets(result):
        l = int(max(result.select(dataset=ds)["l"]))
        a = _first(result, ds, l)
        fig, (ax,) = new_figure(width=5.0)
        k = min(16, a["spectra"].shape[1])
        for i in range(k):
            ax.plot(a["epochs"], np.maximum(a["spectra"][:, i], 1e-6), marker=".", lw=1)
        ax.axhline(1e-2, color="k", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("singular value / largest")
        ax.set_title(f"{ds}, l = {l}: top {k} singular values over training")
        out[f"spectrum_epochs_{ds}"] = fig
    return out


def counts_epochs_figures(result: Result) -> dict[str, Any]:
    """Each model's count of normalized singular values above 1e-2 (the rows' ``count_by_epoch``)
    against training epoch (the arrays' ``epochs``), one line per l and seed, one panel per
    data set (log y); for shapes the paper's 7 degrees of freedom, dashed. The count the
    claims read at the end, and how each l got there."""
    datasets = _datasets(result)
    fig, axes = new_figure(len(datasets), width=4.6)
    ls = sorted({int(l) for l in result.rows["l"]})
    for ax, ds in zip(axes, datasets, strict=True):
        for row in result.select(dataset=ds).itertuples():
            epochs = result.arrays(str(row.arrays))["epochs"]
            first = int(row.seed) == int(result.select(dataset=ds)["seed"].min())
            ax.plot(
                epochs,
                np.maximum(np.asarray(row.count_by_epoch, dtype=float), 0.8),  # 0 on a log axis
                color=f"C{ls.index(int(row.l))}",
                label=f"l = {int(row.l)}" if first else None,
                lw=1.2,
            )
        count_axes(ax, ds)
    return {"counts_epochs": fig}


def count_axes(ax: Any, dataset: str) -> None:
    """The axes of a count-against-epoch panel: log y with plain ticks, labels, the data set as
    title, the paper's 7 for shapes (dashed), and the legend."""
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    if dataset == "shapes":
        ax.axhline(7, color="k", lw=1, ls="--", label="paper: 7")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(FixedLocator([1, 2, 5, 10, 20, 50, 100]))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("epoch")
    ax.set_ylabel("normalized singular values above 1e-2")
    ax.set_title(dataset)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _grid(images: np.ndarray, cols: int) -> np.ndarray:
    n, c, h, w = images.shape
    rows = -(-n // cols)
    canvas = np.ones((rows * (h + 1), cols * (w + 1), c), dtype=np.float64)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        canvas[r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = im.transpose(1, 2, 0)
    return canvas[..., 0] if c == 1 else canvas


def _image_panels(result, key: str, n: int, cols: int, title: str) -> dict[str, Any]:
    out = {}
    for ds in _datasets(result):
        ls = sorted(int(l) for l in set(result.select(dataset=ds)["l"]))
        fig, axes = plt.subplots(1, len(ls), figsize=(3.2 * len(ls), 3.4), squeeze=False)
        for ax, l in zip(axes[0], ls, strict=True):
            imgs = _first(result, ds, l)[key][:n]
            ax.imshow(np.clip(_grid(imgs, cols), 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"l = {l}")
            ax.axis("off")
        fig.suptitle(f"{ds}: {title}")
        out[f"{key}_{ds}"] = fig
    return out


def sample_figures(result: Result) -> dict[str, Any]:
    """Decoded samples of a Gaussian fitted to the training latents, one grid per l."""
    return _image_panels(result, "samples", 36, 6, "samples (Gaussian on the training latents)")


def interpolation_figures(result: Result) -> dict[str, Any]:
    """Linear interpolation between two test codes, one row per l."""
    return _image_panels(result, "interpolation", 8, 8, "interpolation between two test codes")


FIGURES = {
    "jing2020-irmae": (
        spectra_figures,
        spectra_epochs_figures,
        counts_epochs_figures,
        sample_figures,
        interpolation_figures,
    )
}
