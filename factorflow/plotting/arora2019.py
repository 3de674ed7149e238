"""Figures of Arora, Cohen, Hu & Luo (2019), drawn only from result files (summary rows and saved
trajectories), in the paper's style.

- :func:`recovery_figure`: reconstruction error, nuclear norm and effective rank of the solution
  vs ||W(0)||_F (log x; log y for the error), one line per depth (mean over seeds, bars from the
  smallest to the largest seed), nuclear-norm minimization and the ground truth as horizontal
  lines (Arora et al. 2019, Sec. 5, the figure with one panel per quantity).
- :func:`singular_value_figure`: the top singular values of the end-to-end matrix over time, one
  panel per depth (the talk's "Completion of low rank matrix via MF" panels).
- :func:`theorem_figure`: the measured and predicted d sigma_r / dt along a flow trajectory and
  their relative error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from factorflow.plotting import new_figure
from factorflow.theory import theorem_errors

__all__ = ["dynamics_figures", "recovery_figure", "singular_value_figure", "theorem_figure"]

_QUANTITIES = (
    ("recon_mse", "reconstruction error (recon_mse)", True),
    ("nuclear_norm", "nuclear norm", False),
    ("effective_rank", "effective rank", False),
)
_DEPTH_COLORS = {1: "tab:gray", 2: "tab:blue", 3: "tab:orange", 4: "tab:green", 5: "tab:red"}


def _finite(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    vals = [r.get(key) for r in rows]
    return [float(v) for v in vals if v is not None and np.isfinite(v)]


def recovery_figure(rows: Sequence[Mapping[str, Any]], *, n_obs: int, title: str = "") -> Figure:
    """Three panels vs ||W(0)||_F for the rows with ``n_obs`` observations (or measurements).

    ``rows``: the experiment's summary rows (methods ``dmf``, ``nuclear_norm_min``,
    ``ground_truth``; dmf rows need ``depth``, ``optimizer``, ``init_scale``, ``init_fro_norm``).
    Flow runs are drawn as filled markers and solid lines, group RMSProp runs as open markers
    and dashed lines. Depth 1 (which only fits the observed entries: nuclear norm ~330 and
    effective rank ~70 at 100x100) appears in the error panel only, so that the other panels
    keep the scale of the paper's figure."""
    fig, axes = new_figure(3, width=4.3, height=3.5)
    sel = [r for r in rows if r.get("n_obs") == n_obs]
    dmf = [r for r in sel if r.get("method") == "dmf"]
    nnm = [r for r in sel if r.get("method") == "nuclear_norm_min"]
    gt = [r for r in sel if r.get("method") == "ground_truth"]
    series = sorted({(r["depth"], r["optimizer"]) for r in dmf}, key=lambda t: (t[1], t[0]))
    for ax, (key, label, logy) in zip(axes, _QUANTITIES, strict=True):
        for depth, opt in series:
            if depth == 1 and key != "recon_mse":
                continue
            runs = [r for r in dmf if r["depth"] == depth and r["optimizer"] == opt]
            scales = sorted({r["init_scale"] for r in runs})
            xs, ys, lo, hi = [], [], [], []
            for sc in scales:
                group = [r for r in runs if r["init_scale"] == sc]
                vals = _finite(group, key)
                if not vals:
                    continue
                xs.append(float(np.mean(_finite(group, "init_fro_norm"))))
                ys.append(float(np.mean(vals)))
                lo.append(ys[-1] - min(vals))
                hi.append(max(vals) - ys[-1])
            if not xs:
                continue
            flow = opt == "flow"
            ax.errorbar(
                xs,
                ys,
                yerr=[lo, hi],
                color=_DEPTH_COLORS.get(depth, "black"),
                marker="o" if flow else "s",
                mfc=None if flow else "none",
                ls="-" if flow else "--",
                capsize=2,
                label=f"depth {depth} ({opt})",
            )
        nnm_vals = _finite(nnm, key)
        if nnm_vals:
            m = float(np.mean(nnm_vals))
            ax.axhline(m, color="tab:purple", ls="-.", label="nuclear-norm min.")
            if len(nnm_vals) > 1:
                ax.axhspan(min(nnm_vals), max(nnm_vals), color="tab:purple", alpha=0.12)
        gt_vals = _finite(gt, key)
        if gt_vals and key != "recon_mse":
            ax.axhline(float(np.mean(gt_vals)), color="black", ls=":", label="ground truth")
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("||W(0)||_F")
        ax.set_ylabel(label)
    handles, labels = axes[0].get_legend_handles_labels()
    extra_h, extra_l = axes[1].get_legend_handles_labels()
    for h, lab in zip(extra_h, extra_l, strict=True):
        if lab not in labels:
            handles.append(h)
            labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def singular_value_figure(
    traces: Sequence[Mapping[str, Any]],
    *,
    title: str = "",
    top_k: int = 10,
    logx: bool = False,
    logy: bool = False,
) -> Figure:
    """One panel per depth: the top ``top_k`` singular values over time.

    ``traces``: dicts with ``depth``, ``label`` (e.g. ``flow`` or ``GD lr 0.01``), ``time`` (T,)
    and ``singular_values`` (T, k) (as saved by the dynamics experiment). The first trace of a
    depth is drawn in colour (one colour per rank), the others as thin black dashed lines on
    top, so that agreement shows as dashes inside the coloured lines."""
    depths = sorted({int(t["depth"]) for t in traces})
    fig, axes = new_figure(max(len(depths), 1), width=4.2, height=3.4)
    for ax, depth in zip(axes, depths, strict=False):
        mine = [t for t in traces if int(t["depth"]) == depth]
        for i, tr in enumerate(mine):
            tt = np.asarray(tr["time"], dtype=float)
            sv = np.asarray(tr["singular_values"], dtype=float)[:, :top_k]
            for r in range(sv.shape[1]):
                ax.plot(
                    tt,
                    sv[:, r],
                    ls="-" if i == 0 else "--",
                    lw=1.6 if i == 0 else 0.8,
                    color=f"C{r % 10}" if i == 0 else "black",
                    label=str(tr.get("label", "")) if r == 0 else None,
                )
        if logx:
            ax.set_xscale("symlog", linthresh=1.0)
        if logy:
            ax.set_yscale("log")
        ax.set_title(f"depth {depth}")
        ax.set_xlabel("time t (GD: step x lr)")
        ax.set_ylabel(f"top {top_k} singular values")
        ax.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def theorem_figure(checks: Sequence[Mapping[str, Any]], *, title: str = "") -> Figure:
    """Left: |measured| vs |predicted| d sigma_r/dt (every recorded row and r; log axes);
    right: the normwise error max_r |measured - predicted| / (N sigma_r^(2-2/N) ||G||_F) over
    time, on the rows whose top-k singular values are separated.

    ``checks``: dicts with ``label``, ``time`` (T,), ``measured``, ``predicted`` and ``scale``
    (T, k), and ``separated`` (T,) booleans."""
    fig, (ax1, ax2) = new_figure(2, width=4.6, height=3.8)
    lo, hi = np.inf, 0.0
    for i, c in enumerate(checks):
        meas = np.abs(np.asarray(c["measured"], dtype=float)).ravel()
        pred = np.abs(np.asarray(c["predicted"], dtype=float)).ravel()
        keep = (meas > 0) & (pred > 0)
        if keep.any():
            lo, hi = min(lo, pred[keep].min()), max(hi, pred[keep].max())
        ax1.loglog(pred[keep], meas[keep], ".", ms=2, color=f"C{i}", label=str(c["label"]))
        sep = np.asarray(c["separated"], dtype=bool)
        scale = np.asarray(c["scale"], dtype=float)
        diff = np.abs(np.asarray(c["measured"], float) - np.asarray(c["predicted"], float))
        with np.errstate(divide="ignore", invalid="ignore"):
            normwise = (diff / scale).max(axis=1)
        t = np.asarray(c["time"], dtype=float)
        ok = sep & np.isfinite(normwise) & (normwise > 0) & (t > 0)
        ax2.loglog(t[ok], normwise[ok], ".", ms=3, color=f"C{i}")
    if hi > 0:
        ax1.plot([lo, hi], [lo, hi], "k:", lw=0.8)
    ax1.set_xlabel("|predicted d sigma_r/dt| (Thm. 3)")
    ax1.set_ylabel("|measured u_r^T (dW/dt) v_r|")
    ax1.legend(fontsize=7)
    ax2.set_xlabel("time t")
    ax2.set_ylabel("normwise error")
    ax2.set_title("max_r |meas. - pred.| / (N sigma_r^(2-2/N) ||G||_F)", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _recovery_figures(prefix: str, title: str, what: str) -> Any:
    def draw(result: Any) -> dict[str, Any]:
        """One :func:`recovery_figure` per observation count of the result."""
        rows = result.summary["rows"]
        return {
            f"{prefix}_{n}": recovery_figure(rows, n_obs=n, title=f"{title}, {n} {what}")
            for n in sorted({r["n_obs"] for r in rows})
        }

    draw.__name__ = f"{prefix}_figures"
    return draw


def _sv_traces(z: Mapping[str, Any], prefix: str, depths: Sequence[int], label: str) -> list:
    return [
        {"depth": d, "label": label, "time": z[f"{prefix}_depth{d}_time"],
         "singular_values": z[f"{prefix}_depth{d}_singular_values"]}
        for d in depths
        if f"{prefix}_depth{d}_time" in z
    ]  # fmt: skip


def dynamics_figures(result: Any) -> dict[str, Any]:
    """arora2019-dynamics: the synthetic singular values over time (flow, GD dashed on top; and
    the flow on a log time axis), the Thm. 3 check, and the MovieLens singular values."""
    s = result.settings
    syn = result.arrays("dynamics_synthetic")
    flow = _sv_traces(syn, "flow", s.depths, "flow")
    title = (
        f"{s.shape[0]}x{s.shape[1]} rank {s.rank}, {s.n_obs} observations, identity init "
        f"{s.init_scale:g}"
    )
    figs = {
        "dynamics_synthetic": singular_value_figure(
            flow + _sv_traces(syn, "gd", s.depths, f"GD lr {s.gd.lr:g}"), title=title
        ),
        "dynamics_synthetic_logtime": singular_value_figure(
            flow, title=f"same, log time axis (flow, to loss {s.loss_below:g})", logx=True
        ),
    }
    z = result.arrays("dynamics_theorem")
    checks = []
    for key in sorted(k[: -len("_time")] for k in z if k.endswith("_time")):
        rates = z[f"{key}_rates"]  # (T, 3, k): measured, predicted, scale
        sep = theorem_errors(z[f"{key}_singular_values"], *rates.transpose(1, 0, 2),
                             s.theorem_k, s.theorem_gap)["separated"]  # fmt: skip
        checks.append(
            {"label": key.replace("_", " "), "time": z[f"{key}_time"], "measured": rates[:, 0],
             "predicted": rates[:, 1], "scale": rates[:, 2], "separated": sep}
        )  # fmt: skip
    figs["dynamics_theorem"] = theorem_figure(
        checks, title="Thm. 3: d sigma_r/dt along gradient flow, balanced init"
    )
    if "dynamics_ratings.npz" in result.summary.get("arrays", []):
        figs["dynamics_ratings"] = singular_value_figure(
            _sv_traces(result.arrays("dynamics_ratings"), "ratings", s.ratings_depths, "flow"),
            title=f"MovieLens, {s.n_train} training ratings, identity init "
            f"{s.ratings_init_scale:g}, gradient flow",
            logy=True,
        )
    return figs


#: Figures per experiment id, drawn from the result folder (see :func:`factorflow.plotting.
#: figure_functions`).
FIGURES: dict[str, tuple[Any, ...]] = {
    "arora2019-completion": (_recovery_figures("completion", "Completion", "observations"),),
    "arora2019-sensing": (_recovery_figures("sensing", "Sensing", "measurements"),),
    "arora2019-dynamics": (dynamics_figures,),
}
