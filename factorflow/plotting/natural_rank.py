"""Figures of the natural-data tensor-rank experiment (Razin, Maman & Cohen 2021, Sec. 5).

Drawn only from the result folder: the rows (error vs rank) and ``traces.npz`` (train error vs
optimizer step).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from factorflow.plotting import new_figure

__all__ = ["FIGURES", "convergence_figure", "error_vs_rank_figures"]

_STYLE = {
    "original": {"color": "tab:blue", "marker": "o", "label": "original"},
    "rand_image": {"color": "tab:orange", "marker": "s", "label": "rand image"},
    "rand_label": {"color": "tab:green", "marker": "^", "label": "rand label"},
}


def error_vs_rank_figures(result: Any) -> dict[str, Any]:
    """``natural_rank_{dataset}_{optimizer}`` for every optimizer of the result (see
    :func:`error_vs_rank`)."""
    rows = result.summary["rows"]
    figs: dict[str, Any] = {}
    for optimizer in dict.fromkeys(r["optimizer"] for r in rows):
        figs.update(error_vs_rank(rows, optimizer=optimizer))
    return figs


def error_vs_rank(rows: Sequence[dict[str, Any]], *, optimizer: str) -> dict[str, Any]:
    """The paper's figure: train and test error (0/1 units) vs the rank R, one line per variant
    (mean over seeds, shaded min-max), the label variance dashed. One figure per dataset."""
    rows = [r for r in rows if r["optimizer"] == optimizer]
    figs = {}
    for dataset in sorted({r["dataset"] for r in rows}):
        rs = [r for r in rows if r["dataset"] == dataset]
        fig, axes = new_figure(2, width=4.4, height=3.4)
        for ax, key, lv_key, title in (
            (axes[0], "train_error", "label_variance", "train"),
            (axes[1], "test_error", "test_label_variance", "test (per-sample error clamped at 1)"),
        ):
            for variant, style in _STYLE.items():
                vr = [r for r in rs if r["variant"] == variant]
                if not vr:
                    continue
                ranks = sorted({r["rank"] for r in vr})
                vals = [np.array([r[key] for r in vr if r["rank"] == k], float) for k in ranks]
                mean = np.array([v.mean() for v in vals])
                ax.plot(
                    ranks,
                    mean,
                    color=style["color"],
                    marker=style["marker"],
                    label=style["label"],
                    ms=4,
                )
                if any(v.size > 1 for v in vals):
                    ax.fill_between(
                        ranks,
                        [v.min() for v in vals],
                        [v.max() for v in vals],
                        color=style["color"],
                        alpha=0.2,
                        lw=0,
                    )
            lv = float(np.mean([r[lv_key] for r in rs]))
            ax.axhline(lv, color="k", ls="--", lw=1, label="label variance")
            ax.set_xlabel("tensor rank R")
            ax.set_ylabel("error (0/1 units)")
            ax.set_title(title, fontsize=9)
            ax.set_ylim(bottom=0)
            ax.set_xticks(sorted({r["rank"] for r in rs}))
        axes[0].legend(fontsize=8)
        r0 = rs[0]
        fig.suptitle(
            f"{dataset} ({r0['source'].split(' (')[0]}, {r0['n_train']:,} train / "
            f"{r0['n_test']:,} test), {optimizer}",
            fontsize=9,
        )
        figs[f"natural_rank_{dataset}_{optimizer}"] = fig
    return figs


def convergence_figure(result: Any) -> dict[str, Any]:
    """Train error vs optimizer step of every fit in ``traces.npz`` (keys
    ``{optimizer}__{variant}__R{rank}__seed{seed}__step`` / ``__train_error``), one panel per
    optimizer, colour per variant, darker for larger R: ``natural_rank_convergence``."""
    data = result.arrays("traces")
    fits = sorted({k.rsplit("__", 1)[0] for k in data})
    optimizers = sorted({f.split("__")[0] for f in fits})
    if not optimizers:
        return {}
    fig, axes = new_figure(len(optimizers), width=4.6, height=3.4)
    for ax, opt in zip(axes, optimizers, strict=True):
        mine = [f for f in fits if f.startswith(f"{opt}__")]
        ranks = sorted({int(f.split("__")[2][1:]) for f in mine})
        shown = set()
        for f in mine:
            _, variant, rk, _seed = f.split("__")
            r = int(rk[1:])
            step, err = data[f"{f}__step"], data[f"{f}__train_error"]
            alpha = 0.35 + 0.65 * (ranks.index(r) + 1) / len(ranks)
            style = _STYLE.get(variant, {"color": "gray", "label": variant})
            label = style["label"] if variant not in shown else None
            shown.add(variant)
            ax.plot(step + 1, err, color=style["color"], alpha=alpha, lw=1, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step + 1")
        ax.set_ylabel("train error (0/1 units)")
        ax.set_title(f"{opt}: R = {', '.join(map(str, ranks))} (darker = larger R)", fontsize=9)
        ax.legend(fontsize=8)
    return {"natural_rank_convergence": fig}


#: Figures per experiment id, drawn from the result folder.
FIGURES: dict[str, tuple[Any, ...]] = {
    "razin2021-natural-rank": (error_vs_rank_figures, convergence_figure),
}
