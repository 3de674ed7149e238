"""Figures of the tensor completion recovery experiment (Razin & Cohen 2020, appendix).

Drawn only from the result folder of ``razin2020-tensor-recovery``: the rows of
``summary.json`` and ``flow_steps.npz`` (accepted integrator times per flow phase, keys
``o{order}_r{rank}_m{n_obs}_i{init}_p{phase}``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from factorflow.plotting import plt

__all__ = ["FIGURES", "draw", "flow_steps_figure", "recovery_curves", "recovery_figure"]

#: (label, row filter, style) of the lines of the recovery figure
_SERIES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("CP-GD, init 1e-2", {"method": "cp_gd", "stop_rule": "paper", "init_scale": 1e-2},
     {"color": "tab:orange", "marker": "o"}),
    ("CP-GD, init 1e-3", {"method": "cp_gd", "stop_rule": "paper", "init_scale": 1e-3},
     {"color": "tab:blue", "marker": "s"}),
    ("flow to mse 1e-6, init 1e-3",
     {"method": "cp_flow", "stop_rule": "mse<1e-06", "init_scale": 1e-3},
     {"color": "tab:cyan", "marker": "^", "linestyle": "--"}),
    ("flow to mse 1e-12, init 1e-3",
     {"method": "cp_flow", "stop_rule": "mse<1e-12", "init_scale": 1e-3},
     {"color": "tab:purple", "marker": "v", "linestyle": "--"}),
    ("masked CP-ALS (true rank)", {"method": "masked_cp_als"},
     {"color": "tab:green", "marker": "D", "linestyle": ":"}),
    ("memorizer", {"method": "memorizer"}, {"color": "tab:gray", "marker": "x"}),
]  # fmt: skip


def _match(row: dict[str, Any], cond: dict[str, Any]) -> bool:
    for k, v in cond.items():
        rv = row.get(k)
        if isinstance(v, float):
            if rv is None or not math.isclose(float(rv), v, rel_tol=1e-9):
                return False
        elif rv != v:
            return False
    return True


def recovery_curves(
    rows: Sequence[dict[str, Any]], cond: dict[str, Any], key: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(n_obs, median, q25, q75)`` of ``key`` over the rows matching ``cond``, per ``n_obs``
    (rows whose value is null are skipped)."""
    by_m: dict[int, list[float]] = {}
    for r in rows:
        if _match(r, cond) and r.get(key) is not None:
            by_m.setdefault(int(r["n_obs"]), []).append(float(r[key]))
    ms = np.array(sorted(by_m), dtype=float)
    if ms.size == 0:
        return ms, ms, ms, ms
    q = np.array([np.quantile(by_m[int(m)], [0.5, 0.25, 0.75]) for m in ms])
    return ms, q[:, 0], q[:, 1], q[:, 2]


def recovery_figure(rows: Sequence[dict[str, Any]]) -> Any:
    """Error vs #observations (log y, median line, quartile band) and estimated rank vs
    #observations, one row of panels per (order, target rank) of the recovery grid, in the
    style of Razin & Cohen 2020's appendix figure."""
    data = [r for r in rows if r.get("setting") == "recovery"]
    cells = sorted({(int(r["order"]), int(r["target_rank"])) for r in data})
    n = max(1, len(cells))
    fig, axes = plt.subplots(n, 2, figsize=(9.6, 3.4 * n), squeeze=False)
    for i, (order, trank) in enumerate(cells):
        sub = [r for r in data if r["order"] == order and r["target_rank"] == trank]
        dims = "x".join(str(d) for d in sub[0]["dims"])
        ax_e, ax_r = axes[i]
        for label, cond, style in _SERIES:
            ms, med, lo, hi = recovery_curves(sub, cond, "rel_fro_error")
            if ms.size:
                ax_e.plot(ms, med, label=label, markersize=4, **style)
                ax_e.fill_between(ms, lo, hi, color=style["color"], alpha=0.15, linewidth=0)
            ms, med, lo, hi = recovery_curves(sub, cond, "estimated_rank")
            if ms.size:
                ax_r.plot(ms, med, label=label, markersize=4, **style)
                ax_r.fill_between(ms, lo, hi, color=style["color"], alpha=0.15, linewidth=0)
        capped = [r for r in sub if r.get("estimated_rank_capped")]
        if capped:
            cap = min(int(r["estimated_rank"]) for r in capped)
            ax_r.axhline(cap, color="k", linewidth=0.6, linestyle=":")
            ax_r.annotate(f"{cap} = more than {cap - 1}", (0.02, cap), xycoords=("axes fraction", "data"),
                          fontsize=7, va="bottom")  # fmt: skip
        ax_e.set_yscale("log")
        ax_r.set_xlim(ax_e.get_xlim())
        ax_e.set_xlabel("# observed entries")
        ax_e.set_ylabel("rel. Frobenius error")
        ax_e.set_title(f"{dims}, CP rank {trank}: reconstruction error", fontsize=9)
        ax_r.set_xlabel("# observed entries")
        ax_r.set_ylabel("estimated tensor rank")
        ax_r.set_title(f"{dims}, CP rank {trank}: tensor rank of the solution", fontsize=9)
        for ax in (ax_e, ax_r):
            ax.grid(True, which="both", alpha=0.25)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        axes[0][0].legend(handles, labels, fontsize=7, loc="best")
    fig.suptitle("Tensor completion from small init (median, quartiles over seeds)", fontsize=10)
    fig.tight_layout()
    return fig


def flow_steps_figure(arrays: Mapping[str, np.ndarray]) -> Any:
    """Where gradient flow spends its steps: accepted step size vs flow time, one line per
    (cell, init, phase) (keys ``o{order}_r{rank}_m{n_obs}_i{init}_p{phase}``), phases of a cell
    concatenated in time."""
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.4), squeeze=False)
    ax_dt, ax_n = axes[0]
    offsets: dict[str, float] = {}
    for key in sorted(arrays, key=lambda k: (k.rsplit("_p", 1)[0], int(k.rsplit("_p", 1)[1]))):
        at = np.asarray(arrays[key], dtype=float)
        cell, phase = key.rsplit("_p", 1)
        t0 = offsets.get(cell, 0.0)
        if at.size >= 2:
            t = t0 + at[1:]
            ax_dt.loglog(t, np.diff(at), linewidth=0.8, label=f"{cell} phase {phase}")
            ax_n.semilogx(t, np.arange(1, at.size), linewidth=0.8)
        offsets[cell] = t0 + (at[-1] if at.size else 0.0)
    ax_dt.set_xlabel("flow time (phases concatenated)")
    ax_dt.set_ylabel("accepted step size")
    ax_dt.set_title("gradient flow: step size", fontsize=9)
    ax_n.set_xlabel("flow time")
    ax_n.set_ylabel("accepted steps in the phase")
    ax_n.set_title("gradient flow: steps taken", fontsize=9)
    for ax in (ax_dt, ax_n):
        ax.grid(True, which="both", alpha=0.25)
    if len(arrays) <= 12:
        ax_dt.legend(fontsize=6)
    fig.tight_layout()
    return fig


def draw(result: Any) -> dict[str, Any]:
    """``tensor_recovery`` from the rows, and ``flow_steps`` where flow ran."""
    figs = {"tensor_recovery": recovery_figure(result.summary["rows"])}
    if "flow_steps.npz" in result.summary.get("arrays", []):
        figs["flow_steps"] = flow_steps_figure(result.arrays("flow_steps"))
    return figs


#: Figures per experiment id (see :func:`factorflow.plotting.figure_functions`).
FIGURES: dict[str, tuple[Any, ...]] = {"razin2020-tensor-recovery": (draw,)}
