"""Incremental learning in CP tensor factorization (Razin, Maman & Cohen, ICML 2021): the
measurements of one finished run as a tidy row, and the quantities the claims read off the rows.

:func:`fit_row` measures a run of any optimizer (a :class:`~factorflow.dynamics.TrainResult`
recorded with :func:`component_probes`): final and at-crossing ``rel_fro_error``, the number of
components above ``large_frac`` x the largest at the end, the top component norms, and the
times at which each of the top ``target_rank`` components first reaches ``leave_frac`` of its
final norm (:func:`factorflow.tensor_theory.leave_times`). :func:`theorem_row` summarizes a flow
run from balanced init along which the component-norm rate identity (Thm 1) was recorded.

The row schema is :data:`COLUMNS`; the claim measurements (:func:`one_at_a_time`,
:func:`error_decreases`, :func:`fewer_components`, :func:`rate_identity`) take the rows as a
DataFrame and raise :class:`~factorflow.experiment.NotJudged` when the rows cannot judge them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from factorflow.dynamics import TrainResult, gradient
from factorflow.experiment import NotJudged
from factorflow.factorizations.cp import component_norms, count_large_components, cp_to_tensor
from factorflow.tensor_theory import component_rate_error, leave_times, min_relative_gap, separated

__all__ = [
    "COLUMNS",
    "component_probes",
    "error_decreases",
    "fewer_components",
    "fit_row",
    "median_by_init",
    "one_at_a_time",
    "rate_identity",
    "theorem_row",
]

_INT = ("order", "target_rank", "n_obs", "R", "seed", "estimated_rank", "n_large_components")
_INT2 = ("crossing_step", "steps", "n_evals", "flow_accepted_steps", "flow_nfev")
_INT3 = ("hessian_vector_products", "switch_step", "gd_steps", "gd_redos", "n_checked_states")
_FLOAT = ("init_scale", "init_fro_norm", "final_loss", "rel_fro_error", "recon_mse")
_FLOAT2 = ("crossing_time", "rel_fro_error_at_crossing", "max_loss_after_crossing")
_FLOAT3 = ("leave_min_gap", "time", "wall_s", "rate_error_max_flow", "rate_error_max_gd_phase")
_FLOAT4 = ("switch_time", "switch_h", "switch_lambda_max", "gd_lr_min", "gd_lr_max", "gd_lr")
_STR = ("kind", "optimizer", "method", "axis", "loss", "status", "outcome", "flow_method")
#: The row schema. ``kind``: "fit" (one optimizer from one init) or "theorem_check";
#: ``trajectory``: the name of the run's saved arrays.
COLUMNS: dict[str, str] = {
    **dict.fromkeys(_STR + ("trajectory",), "str"),
    **dict.fromkeys(_INT + _INT2 + _INT3, "int"),
    **dict.fromkeys(_FLOAT + _FLOAT2 + _FLOAT3 + _FLOAT4, "float"),
    **dict.fromkeys(("lambda_star", "max_relative_error"), "float"),
    **dict.fromkeys(("dims", "top_component_norms", "leave_times", "h_lambda_checks"), "json"),
}


def component_probes(top_k: int, objective: Any = None, rel_floor: float = 1e-6) -> dict:
    """Probes for :func:`factorflow.dynamics.train`: the top-``top_k`` component norms
    (``top_c``) and their indices (``top_idx``); with a ``CPObjective``, ``rate_err``: per run,
    the largest relative error of the component-norm rate identity at the state."""

    def top(p: Sequence[torch.Tensor]):
        c = component_norms(p)
        return torch.topk(c, k=min(top_k, c.shape[1]), dim=1)

    probes = {"top_c": lambda p: top(p).values, "top_idx": lambda p: top(p).indices.double()}
    if objective is not None:

        def rate_err(p: Sequence[torch.Tensor]) -> torch.Tensor:
            _, grads = gradient(objective, p)
            _, g_obs = objective.grad_at_obs(p)
            errs = component_rate_error(p, grads, objective.obs.indices, g_obs, rel_floor=rel_floor)
            return torch.tensor(errs, dtype=torch.float64)

        probes["rate_err"] = rate_err
    return probes


def run_arrays(res: TrainResult) -> dict[str, np.ndarray]:
    """Run 0's trajectory as flat arrays: ``step, time, loss, top_c (T, k), top_idx, phase``
    (0 where not recorded), ``rate_err`` (NaN where not recorded), ``switch_time`` (NaN: none)."""
    tr = res.run_trajectory(0)
    T = len(tr.step)
    v = {k: np.asarray(x).reshape(T, -1) for k, x in tr.values.items()}
    out = {"step": np.asarray(tr.step, float), "time": np.asarray(tr.time, float)}
    out.update(loss=v["loss"][:, 0], top_c=v["top_c"], top_idx=v["top_idx"].astype(np.int64))
    out["phase"] = v["phase"][:, 0] if "phase" in v else np.zeros(T, np.int64)
    out["rate_err"] = v["rate_err"][:, 0] if "rate_err" in v else np.full(T, np.nan)
    sw = res.info.get("switch_time")
    out["switch_time"] = np.array(np.nan if sw is None else sw)
    return out


def _rel(W: torch.Tensor, W_star: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(W[0] - W_star) / torch.linalg.vector_norm(W_star))


def _max_where(x: np.ndarray, keep: np.ndarray) -> float | None:
    x = x[keep & np.isfinite(x)]
    return float(x.max()) if len(x) else None


def _outcome(status: str) -> str:
    return status if status in ("converged", "diverged", "failed") else "stalled"


def fit_row(
    res: TrainResult,
    W_star: torch.Tensor,
    *,
    target_rank: int,
    top_k: int = 10,
    large_frac: float = 0.1,
    leave_frac: float = 0.5,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The measured columns of one finished run (B = 1) against the target ``W_star`` (see the
    module doc), and its arrays (:func:`run_arrays`). ``res.info`` may hold the first crossing
    (``crossing_step``, ``crossing_time``, ``params_at_crossing``) and flow-then-GD's switch
    statistics, which are copied into the row."""
    a = run_arrays(res)
    W = cp_to_tensor(res.params)
    c = component_norms(res.params)[0].cpu().numpy()
    lt = leave_times(a["time"], a["top_c"], a["top_idx"], c, target_rank, leave_frac)
    cross = res.info.get("params_at_crossing")
    after = a["loss"][a["time"] > res.info["crossing_time"]] if cross is not None else []
    rel = _rel(W, W_star)
    row = {
        "final_loss": float(res.final_loss[0]),
        "rel_fro_error": rel,
        "recon_mse": rel**2 * float(W_star.square().mean()),
        "n_large_components": int(count_large_components(res.params, large_frac)[0]),
        "top_component_norms": np.sort(c)[::-1][:top_k].tolist(),
        "rel_fro_error_at_crossing": None if cross is None else _rel(cp_to_tensor(cross), W_star),
        "max_loss_after_crossing": float(np.max(after)) if len(after) else None,
        "leave_times": lt,
        "leave_min_gap": min_relative_gap(lt),
        "status": res.status[0],
        "outcome": _outcome(res.status[0]),
        "steps": int(res.steps[0]),
        "time": float(res.time[0]),
        "n_evals": int(res.n_evals),
        "wall_s": res.wall_s,
        "rate_error_max_flow": _max_where(a["rate_err"], a["phase"] == 0),
        "rate_error_max_gd_phase": _max_where(a["rate_err"], a["phase"] == 1),
    }
    row.update({k: v for k, v in res.info.items() if k in COLUMNS})
    if "h_lambda_checks" in res.info:
        row["h_lambda_checks"] = [list(x) for x in res.info["h_lambda_checks"]]
    return row, a


def theorem_row(res: TrainResult) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A flow run recorded with ``rate_err``: the largest rate-identity error over its states,
    the number of states checked, and its arrays (``time, loss, top_c, rate_err``)."""
    a = run_arrays(res)
    err = a["rate_err"][np.isfinite(a["rate_err"])]
    row = {
        "max_relative_error": float(err.max()) if len(err) else None,
        "n_checked_states": len(err),
        "status": res.status[0],
        "time": float(res.time[0]),
        "wall_s": res.wall_s,
        "top_component_norms": [float(a["top_c"][-1, 0])],
    }
    row.update({k: res.info[k] for k in ("flow_accepted_steps", "flow_nfev") if k in res.info})
    return row, {k: a[k] for k in ("time", "loss", "top_c", "rate_err")}


# --------------------------------------------------------------------------- claim measurements


def _fits(rows: pd.DataFrame, opt: str) -> pd.DataFrame:
    f = rows[(rows["kind"] == "fit") & (rows["optimizer"] == opt)]
    if f.empty:
        raise NotJudged(f"no {opt} runs in this result")
    return f


def one_at_a_time(
    rows: pd.DataFrame, opt: str, *, target_rank: int, separation: float, max_large: int
) -> dict[str, Any]:
    """Per seed at the smallest init std: the leave times, their smallest relative gap, the
    number of large components; a seed holds when at least ``target_rank`` components are large,
    their leave times are ``separation`` apart and at most ``max_large`` are large."""
    f = _fits(rows, opt)
    per_seed = {}
    for _, r in f[f["init_scale"] == f["init_scale"].min()].iterrows():
        n = int(r["n_large_components"])
        ok = target_rank <= n <= max_large and separated(r["leave_times"], separation)
        per_seed[str(r["seed"])] = {
            "leave_times": r["leave_times"],
            "min_relative_gap": r["leave_min_gap"],
            "n_large_components": n,
            "outcome": r["outcome"],
            "holds": bool(ok),
        }
    held = sum(v["holds"] for v in per_seed.values())
    return {"per_seed": per_seed, "seeds_holding": held, "every_seed": held == len(per_seed)}


def median_by_init(rows: pd.DataFrame, opt: str, column: str) -> dict[str, float]:
    """Median of ``column`` over seeds per init std (``"0.05"`` keys), largest std first;
    NotJudged with fewer than two stds."""
    med = _fits(rows, opt).groupby("init_scale")[column].median().sort_index(ascending=False)
    if len(med) < 2:
        raise NotJudged("needs at least two init scales")
    return {f"{k:g}": float(v) for k, v in med.items()}


def error_decreases(rows: pd.DataFrame, opt: str) -> dict[str, Any]:
    """Median final ``rel_fro_error`` per init std and whether it falls with every smaller std."""
    med = median_by_init(rows, opt, "rel_fro_error")
    v = list(med.values())
    return {"median": med, "decreasing": all(b < a for a, b in zip(v, v[1:], strict=False))}


def fewer_components(rows: pd.DataFrame, opt: str) -> dict[str, Any]:
    """Median number of large components at the largest and at the smallest init std, and
    their difference ``drop``."""
    med = median_by_init(rows, opt, "n_large_components")
    large, small = next(iter(med.values())), list(med.values())[-1]
    n_seeds = int(_fits(rows, opt)["seed"].nunique())
    return {
        "count_large_init": large,
        "count_small_init": small,
        "drop": large - small,
        "by_init": med,
        "seeds": n_seeds,
    }


def rate_identity(rows: pd.DataFrame) -> dict[str, Any]:
    """The largest rate-identity error over the theorem checks and the ``flow_balanced`` runs'
    flow phases."""
    th = rows[rows["kind"] == "theorem_check"]
    per_run = {f"std{x.init_scale:g}_seed{x.seed}": x.max_relative_error for x in th.itertuples()}
    fb = rows[(rows["kind"] == "fit") & (rows["optimizer"] == "flow_balanced")]
    for x in fb.itertuples():
        per_run[f"flow_balanced_std{x.init_scale:g}_seed{x.seed}"] = x.rate_error_max_flow
    errs = [e for e in per_run.values() if e is not None and np.isfinite(e)]
    if not errs:
        raise NotJudged("no flow records from balanced init (theorem_check off)")
    states = int(th["n_checked_states"].sum()) if len(th) else 0
    return {"max_relative_error": max(errs), "per_run": per_run, "states_checked": states}
