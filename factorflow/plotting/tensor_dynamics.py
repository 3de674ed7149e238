"""Figures of the tensor factorization dynamics experiment (Razin, Maman & Cohen, ICML 2021,
dynamics of learning), drawn only from the result: its rows and the saved trajectories
(``result.arrays(row["trajectory"])``: ``step, time, loss, top_c (T, k), top_idx, phase,
rate_err, switch_time``; theorem checks: ``time, loss, top_c, rate_err``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from factorflow.plotting import new_figure, plt

__all__ = ["FIGURES", "draw", "plot_component_norms", "plot_error_vs_init", "plot_rate_check"]

#: published final rel_fro_error per init std (Razin, Maman & Cohen 2021, with the figure)
PAPER_ERRORS = {0.05: 8e-2, 0.01: 3e-2, 0.005: 7e-6}

_COLORS = {
    "group_rmsprop": "tab:blue",
    "flow": "tab:green",
    "gd": "tab:orange",
    "flow_balanced": "tab:purple",
}
_LABELS = {
    "group_rmsprop": "group RMSProp",
    "flow": "flow then GD",
    "gd": "plain GD",
    "flow_balanced": "flow then GD, balanced init",
}


def plot_component_norms(
    result: Any, rows: Sequence[dict[str, Any]], optimizer: str, seed: int
) -> Figure:
    """Top component norms (sorted, top row) and train loss (bottom row) over the optimizer's
    own axis, one column per init std, for one ``optimizer`` and ``seed``; the switch from flow
    to GD is marked."""
    sel = sorted(
        (r for r in rows if r["optimizer"] == optimizer and r["seed"] == seed),
        key=lambda r: -r["init_scale"],
    )
    n = max(len(sel), 1)
    fig, grid = plt.subplots(2, n, figsize=(4.0 * n, 5.6), squeeze=False, sharex="col")
    for j, r in enumerate(sel):
        tr = result.arrays(r["trajectory"])
        ax, axl = grid[0][j], grid[1][j]
        for a in (ax, axl):
            a.grid(True, alpha=0.25)
        t = tr["time"]
        ax.plot(t, tr["top_c"], lw=1.2)
        axl.semilogy(t, np.maximum(tr["loss"], 1e-300), color="k", lw=1.0)
        sw = float(tr["switch_time"]) if "switch_time" in tr else float("nan")
        if np.isfinite(sw):
            for a in (ax, axl):
                a.axvline(sw, color="grey", ls=":", lw=1.0)
            ax.text(sw, ax.get_ylim()[1] * 0.95, " GD", color="grey", fontsize=7, va="top")
        ax.set_title(
            f"std {r['init_scale']:g}: {r['outcome']}, err {r['rel_fro_error']:.1e}", fontsize=9
        )
        axl.set_xlabel(r["axis"])
        if j == 0:
            ax.set_ylabel(f"top {tr['top_c'].shape[1]} component norms")
            axl.set_ylabel(f"train {r.get('loss', 'mse')}")
    fig.suptitle(
        f"{_LABELS.get(optimizer, optimizer)} (seed {seed}), R = {sel[0]['R'] if sel else '?'}",
        fontsize=10,
    )
    return fig


def plot_error_vs_init(rows: Sequence[dict[str, Any]], paper: dict[float, float]) -> Figure:
    """Final ``rel_fro_error`` against init std, every run (one marker per seed) per optimizer,
    with the published values."""
    fig, (ax,) = new_figure(1)
    opts = list(dict.fromkeys(r["optimizer"] for r in rows))
    for k, opt in enumerate(opts):
        sel = [r for r in rows if r["optimizer"] == opt]
        x = np.array([r["init_scale"] for r in sel]) * (1.0 + 0.06 * (k - (len(opts) - 1) / 2))
        y = np.array([r["rel_fro_error"] for r in sel])
        marker = ["o" if r["outcome"] == "converged" else "x" for r in sel]
        for xi, yi, m in zip(x, y, marker, strict=True):
            ax.scatter(xi, yi, color=_COLORS.get(opt), marker=m, s=22)
        ax.scatter([], [], color=_COLORS.get(opt), label=_LABELS.get(opt, opt))
    ps = sorted(paper)
    ax.plot(ps, [paper[s] for s in ps], "k*--", lw=0.8, ms=8, label="published")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = sorted({*ps, *(r["init_scale"] for r in rows)})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("init std")
    ax.set_ylabel("final rel_fro_error")
    ax.set_title("x = did not converge", fontsize=8)
    ax.legend(fontsize=7)
    return fig


def plot_rate_check(result: Any, checks: Sequence[dict[str, Any]]) -> Figure:
    """Largest relative error of the component-norm rate identity at each accepted flow step
    of the theorem checks (their saved arrays)."""
    fig, (ax,) = new_figure(1)
    for c in checks:
        tr = result.arrays(c["trajectory"])
        keep = np.isfinite(tr["rate_err"]) & (tr["time"] > 0)
        if keep.any():
            ax.loglog(
                tr["time"][keep],
                np.maximum(tr["rate_err"][keep], 1e-18),
                lw=1.0,
                label=f"std {c['init_scale']:g}, seed {c['seed']}",
            )
    ax.set_xlabel("flow time")
    ax.set_ylabel("max_r |measured - predicted| / |predicted|")
    ax.set_title("dc_r/dt = -N c_r^(2-2/N) <grad l, C_r/c_r>, balanced init", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def draw(result: Any) -> dict[str, Any]:
    """``components_<optimizer>`` (first seed), ``error_vs_init`` and, with theorem checks,
    ``rate_check``."""
    rows = result.summary["rows"]
    fits = [r for r in rows if r["kind"] == "fit"]
    checks = [r for r in rows if r["kind"] == "theorem_check"]
    figs: dict[str, Any] = {}
    if fits:
        seed = min(r["seed"] for r in fits)
        for opt in dict.fromkeys(r["optimizer"] for r in fits):
            figs[f"components_{opt}"] = plot_component_norms(result, fits, opt, seed)
        figs["error_vs_init"] = plot_error_vs_init(fits, PAPER_ERRORS)
    if checks:
        figs["rate_check"] = plot_rate_check(result, checks)
    return figs


#: Figures per experiment id (see :func:`factorflow.plotting.figure_functions`).
FIGURES: dict[str, tuple[Any, ...]] = {"razin2021-dynamics": (draw,)}
