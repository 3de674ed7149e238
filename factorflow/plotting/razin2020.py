"""Figures of the Razin & Cohen 2020 2x2 experiments (``razin2020-2x2``, ``razin2020-perturbed``),
drawn only from the result: the saved trajectories (``trajectories.npz``: ``<run_id>/<field>``)
and the rows (one run table from their first row per run), in the paper's style: a quantity against the loss on a log x axis, inverted so
that training goes left to right, coloured by time (flow) or iteration (GD).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from factorflow.plotting import new_figure

__all__ = [
    "draw_2x2",
    "draw_perturbed",
    "plot_det_vs_loss",
    "plot_norms_vs_loss",
    "plot_perturbed_det",
    "plot_perturbed_w11",
    "plot_w11_vs_loss",
]


def _axes(n: int, width: float, height: float) -> tuple[Any, list[Any]]:
    """``new_figure`` with a major-only grid (minor log grid lines cost seconds to draw)."""
    fig, axes = new_figure(n, width=width, height=height)
    for ax in axes:
        ax.grid(False)
        ax.grid(True, which="major", alpha=0.25)
    return fig, axes


def _loss_axis(ax: Any) -> None:
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("loss (half_sse)")


def _pick(runs: Sequence[dict], **want: Any) -> list[dict]:
    return [r for r in runs if all(r.get(k) == v for k, v in want.items())]


def _highlight(cands: list[dict]) -> dict | None:
    """The run drawn in colour: balanced, largest init scale, smallest seed."""
    bal = [r for r in cands if r.get("balanced")] or cands
    if not bal:
        return None
    return sorted(bal, key=lambda r: (-r["init_scale"], r["seed"]))[0]


def plot_w11_vs_loss(data: Any, runs: Sequence[dict], optimizer: str = "flow") -> Any:
    """|w11| against the loss, one panel per depth (the paper's Fig. 1 style).

    The highlighted run (balanced, largest alpha, first seed) is coloured by log10 time (flow)
    or log10 iteration (GD); the other runs are thin lines (balanced solid, unbalanced dashed).
    The dashed black curve is the det > 0 bound |w11| >= (1 - sqrt(2l))^2 / sqrt(2l)."""
    runs = [r for r in runs if r["optimizer"] == optimizer]
    if not runs:
        return None
    depths = sorted({r["depth"] for r in runs})
    fig, axes = _axes(len(depths), 5.0, 3.6)
    for ax, depth in zip(axes, depths, strict=True):
        rs = _pick(runs, depth=depth)
        hi = _highlight(rs)
        for r in rs:
            if r is hi:
                continue
            L = data[f"{r['run_id']}/loss"]
            w = data[f"{r['run_id']}/abs_w11"]
            ax.plot(L, w, "-" if r["balanced"] else "--", color="0.6", lw=0.8, alpha=0.8)
        if hi is not None:
            rid = hi["run_id"]
            L, w = data[f"{rid}/loss"], data[f"{rid}/abs_w11"]
            axis = data[f"{rid}/time"] if optimizer == "flow" else data[f"{rid}/step"]
            c = np.log10(np.maximum(axis, axis[axis > 0].min() if np.any(axis > 0) else 1.0))
            sc = ax.scatter(L, w, c=c, s=4, cmap="viridis", zorder=3)
            cb = fig.colorbar(sc, ax=ax)
            cb.set_label("log10 time" if optimizer == "flow" else "log10 iteration")
        lmin = min(float(data[f"{r['run_id']}/loss"].min()) for r in rs)
        lg = np.logspace(np.log10(max(lmin, 1e-12)), np.log10(0.45), 200)
        e = np.sqrt(2 * lg)
        ax.plot(lg, (1 - e) ** 2 / e, "k--", lw=1, label="bound (det > 0)")
        _loss_axis(ax)
        ax.set_yscale("log")
        ax.set_ylim(bottom=1e-3)
        ax.set_ylabel("|w11|")
        ax.set_title(f"depth {depth} ({optimizer})")
        ax.legend(loc="upper left", fontsize=7)
    fig.subplots_adjust(wspace=0.5)
    return fig


def plot_norms_vs_loss(data: Any, runs: Sequence[dict], loss_max: float = 0.5) -> Any:
    """Nuclear and Frobenius norms, Schatten-0.5 and Schatten-2/N quasi-norms (left axis, log)
    and effective rank - 1 (right axis, log: the approach to rank 1) against the loss, below
    ``loss_max`` (the fitting phase), for the highlighted flow run of each depth."""
    runs = [r for r in runs if r["optimizer"] == "flow"]
    depths = sorted({r["depth"] for r in runs})
    fig, axes = _axes(len(depths), 5.2, 3.6)
    styles = {
        "nuclear_norm": ("nuclear", "C0", "-"),
        "fro_norm": ("Frobenius", "C1", "--"),
        "schatten_0.5": ("Schatten 1/2", "C2", "-."),
        "schatten_2/N": ("Schatten 2/N", "C3", ":"),
    }
    for ax, depth in zip(axes, depths, strict=True):
        hi = _highlight(_pick(runs, depth=depth))
        if hi is None:
            continue
        rid = hi["run_id"]
        L = data[f"{rid}/loss"]
        sel = L <= loss_max
        for key, (label, col, ls) in styles.items():
            ax.plot(L[sel], data[f"{rid}/{key}"][sel], color=col, ls=ls, lw=1.4, label=label)
        ax.set_yscale("log")
        ax.set_ylabel("norm of W")
        ax2 = ax.twinx()
        er = np.maximum(data[f"{rid}/effective_rank"][sel] - 1.0, 1e-16)
        ax2.plot(L[sel], er, "k", lw=1.0, alpha=0.6, label="effective rank - 1")
        ax2.set_yscale("log")
        ax2.set_ylabel("effective rank - 1")
        _loss_axis(ax)
        bal = "balanced" if hi["balanced"] else "unbalanced"
        ax.set_title(f"depth {depth}, flow, {bal} a={hi['init_scale']:g}", fontsize=9)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=7)
    fig.subplots_adjust(wspace=0.5)
    return fig


def plot_det_vs_loss(data: Any, runs: Sequence[dict]) -> Any:
    """det(W) / ||W||_F^2 (symmetric log scale, so the sign shows) against the loss for every
    flow run, one panel per depth; balanced solid, unbalanced dashed."""
    runs = [r for r in runs if r["optimizer"] == "flow"]
    depths = sorted({r["depth"] for r in runs})
    fig, axes = _axes(len(depths), 4.8, 3.6)
    for ax, depth in zip(axes, depths, strict=True):
        for i, r in enumerate(_pick(runs, depth=depth)):
            rid = r["run_id"]
            ax.plot(
                data[f"{rid}/loss"],
                data[f"{rid}/rel_det"],
                "-" if r["balanced"] else "--",
                color=f"C{i % 10}",
                lw=1,
                label=f"{'bal' if r['balanced'] else 'unbal'} a={r['init_scale']:g} s{r['seed']}",
            )
        ax.axhline(0, color="k", lw=0.6)
        ax.set_yscale("symlog", linthresh=1e-16)
        ticks = [1e-16, 1e-12, 1e-8, 1e-4, 1.0]
        ax.set_yticks([-t for t in ticks[::-1]] + [0.0] + ticks)
        ax.set_ylim(-1, 1)
        _loss_axis(ax)
        ax.set_ylabel("det(W) / ||W||_F^2")
        ax.set_title(f"depth {depth} (flow)")
        ax.legend(fontsize=6, loc="lower left")
    fig.subplots_adjust(wspace=0.4)
    return fig


def plot_perturbed_w11(data: Any, runs: Sequence[dict]) -> Any:
    """Perturbed problem: |w11| against the loss for every eps (colour), det(W(0)) < 0 solid and
    > 0 dashed, unbalanced thinner; horizontal dotted lines at 1/eps. One panel per depth."""
    depths = sorted({r["depth"] for r in runs})
    eps_all = sorted({r["eps"] for r in runs})
    fig, axes = _axes(len(depths), 5.2, 3.8)
    for ax, depth in zip(axes, depths, strict=True):
        for r in _pick(runs, depth=depth):
            rid = r["run_id"]
            col = f"C{eps_all.index(r['eps']) % 10}"
            first = (
                r["det_sign"] < 0 and r["balanced"] and r["seed"] == min(x["seed"] for x in runs)
            )
            ax.plot(
                data[f"{rid}/loss"],
                data[f"{rid}/abs_w11"],
                "-" if r["det_sign"] < 0 else "--",
                color=col,
                lw=1.4 if r["balanced"] else 0.7,
                label=f"eps={r['eps']:g}" if first else None,
            )
        for e in eps_all:
            if e > 0:
                ax.axhline(1 / e, color=f"C{eps_all.index(e) % 10}", ls=":", lw=0.8)
        _loss_axis(ax)
        ax.set_yscale("log")
        ax.set_ylim(bottom=1e-2)
        ax.set_ylabel("|w11|")
        ax.set_title(f"depth {depth}: solid det<0, dashed det>0 init", fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    return fig


def plot_perturbed_det(data: Any, runs: Sequence[dict]) -> Any:
    """Perturbed problem: |w11| * eps (eps > 0) against the loss, det(W(0)) < 0 solid and > 0
    dashed: the prediction is |w11| * eps >= 1 in the limit for runs that keep det < 0."""
    depths = sorted({r["depth"] for r in runs})
    eps_all = sorted({r["eps"] for r in runs})
    fig, axes = _axes(len(depths), 5.0, 3.6)
    for ax, depth in zip(axes, depths, strict=True):
        for r in _pick(runs, depth=depth):
            if r["eps"] <= 0:
                continue
            rid = r["run_id"]
            ax.plot(
                data[f"{rid}/loss"],
                data[f"{rid}/abs_w11"] * r["eps"],
                "-" if r["det_sign"] < 0 else "--",
                color=f"C{eps_all.index(r['eps']) % 10}",
                lw=1.2 if r["balanced"] else 0.6,
                label=(
                    f"eps={r['eps']:g}"
                    if r["det_sign"] < 0
                    and r["balanced"]
                    and r["seed"] == min(x["seed"] for x in runs)
                    else None
                ),
            )
        ax.axhline(1.0, color="k", lw=0.8)
        _loss_axis(ax)
        ax.set_yscale("log")
        ax.set_ylim(1e-3, 3)
        ax.set_ylabel("|w11| * eps")
        ax.set_title(f"depth {depth}", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    return fig


def _runs(result: Any, cols: Sequence[str]) -> list[dict]:
    """One dict per run: the run columns of its first row."""
    rows = result.rows.drop_duplicates("run_id")
    return [
        {c: (v.item() if hasattr(v, "item") else v) for c, v in r.items()}
        for r in rows[["run_id", *cols]].to_dict(orient="records")
    ]


def draw_2x2(result: Any) -> dict[str, Any]:
    """razin2020-2x2: |w11|, the norms and det against the loss (flow), and |w11| under GD."""
    data = result.arrays("trajectories")
    runs = _runs(result, ["optimizer", "depth", "balanced", "init_scale", "seed"])
    figs = {
        "razin2020_2x2_w11": plot_w11_vs_loss(data, runs, "flow"),
        "razin2020_2x2_norms": plot_norms_vs_loss(data, runs),
        "razin2020_2x2_det": plot_det_vs_loss(data, runs),
    }
    if any(r["optimizer"] == "gd" for r in runs):
        figs["razin2020_2x2_gd_w11"] = plot_w11_vs_loss(data, runs, "gd")
    return {k: v for k, v in figs.items() if v is not None}


def draw_perturbed(result: Any) -> dict[str, Any]:
    """razin2020-perturbed: |w11| and |w11| eps against the loss."""
    data = result.arrays("trajectories")
    runs = _runs(result, ["depth", "eps", "det_sign", "balanced", "seed"])
    return {
        "razin2020_perturbed_w11": plot_perturbed_w11(data, runs),
        "razin2020_perturbed_w11_eps": plot_perturbed_det(data, runs),
    }


FIGURES: dict[str, tuple[Any, ...]] = {
    "razin2020-2x2": (draw_2x2,),
    "razin2020-perturbed": (draw_perturbed,),
}
