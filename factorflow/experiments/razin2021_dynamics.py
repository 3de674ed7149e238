"""Razin, Maman & Cohen (ICML 2021), dynamics of learning: CP components leave zero one at a time.

Method (as in the paper): a 10x10x10x10 target of CP rank 5 (factors N(0, 1), scaled to
||W*||_F = 1), 2000 observed entries; a CP factorization with R = 1000 components, i.i.d.
N(0, std^2) factor entries, std in {0.05, 0.01, 0.005} (one N(0, 1) draw per seed, scaled by
each std, the same for every optimizer); loss ``mse``. The paper's optimizer is group RMSProp
with the 2021 code's constants (lr 1e-2, beta 0.99, eps 1e-6: with gradients far below eps it is
plain GD at lr/eps = 1e4). Stop: the first time the train mse is below 1e-8, then 1250 more
steps (the original code stopped once the loss had stayed below 1e-8 for 50 validations, 25
iterations apart); a second call of the optimizer, so its running state restarts there.

Optimizers, from the same init: ``group_rmsprop``; ``flow``: gradient flow by RK45 while its
steps are accuracy-limited, then GD just under 2 / lambda_max once they are stability-limited
(:func:`factorflow.dynamics.flow_then_gd`; rows give the switch; at paper scale
``late_phase="cvode"`` integrates that stiff phase by CVODE instead of GD); ``gd``: plain GD at
0.8 x 2 / lambda*, lambda* the top Hessian eigenvalue at the balanced CP factorization of the
target (:func:`factorflow.dynamics.hessian_top_eigenvalue`); ``flow_balanced``: ``flow`` from the
balanced version of the init. Theorem check (per seed and std): flow from the balanced init until
RK45 becomes stability-limited, comparing the measured dc_r/dt with -N c_r^(2-2/N) <grad l(W),
C_r/c_r> at every accepted step (:mod:`factorflow.tensor_theory`, Thm 1).

Measured per run: final and at-crossing ``rel_fro_error``, the number of components above 0.1 x
the largest at the end, the times at which each of the top five first reaches half its final
norm (:func:`factorflow.tensor_theory.leave_times`). Time axes: iterations for group RMSProp,
flow time for ``flow`` and ``gd`` (GD: the sum of the step sizes).

Re-running the original code did not reliably give the paper's figure, so every optimizer runs
on several seeds. Scales: ``paper`` as above, 3 seeds, three optimizers. ``quick`` (~2.5 minutes
on 2 cores, measured): the paper's target, observations, optimizer and stop rule, but R = 100
(10x cheaper steps), one seed, std 0.05 and 0.005, group RMSProp and flow-then-GD.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from factorflow.baselines.tensor import estimate_tensor_rank
from factorflow.config import OptimizerConfig
from factorflow.dynamics import (
    GD,
    FlowThenGD,
    GroupRMSProp,
    Schedule,
    Stop,
    flow_then_gd,
    hessian_top_eigenvalue,
    train_past_crossing,
)
from factorflow.experiment import Check, Claim, Context, Experiment, at_most, between, is_true
from factorflow.factorizations.cp import balance_components, cp_to_tensor, init_cp
from factorflow.objectives import CPObjective
from factorflow.problems.tensor import low_rank_tensor, tensor_completion
from factorflow.tensor_dynamics import (
    COLUMNS,
    component_probes,
    error_decreases,
    fewer_components,
    fit_row,
    one_at_a_time,
    rate_identity,
    theorem_row,
)

OPTIMIZERS = ("group_rmsprop", "flow", "gd", "flow_balanced")
SOURCE = "Razin, Maman & Cohen, Implicit Regularization in Tensor Factorization, ICML 2021"
FIGURE = f"{SOURCE}, figure of the dynamics of learning (top component norms over iterations)"
#: published final rel_fro_error per init std (the paper's text beside that figure)
PAPER_ERRORS = {"0.05": 8e-2, "0.01": 3e-2, "0.005": 7e-6}


@dataclass(frozen=True)
class Settings:
    """Problem (``dims``, ``target_rank``, ``n_obs``; seed s draws target and observations),
    model (``R`` components, init stds), optimizers and the stop rule (``stop_loss`` then
    ``patience_steps``), the flow-then-GD switch, and the measurement thresholds. ``gd.lr`` is
    replaced by ``gd_safety`` x 2 / lambda* when ``gd_lr_from_curvature``."""

    dims: tuple[int, ...] = (10, 10, 10, 10)
    target_rank: int = 5
    n_obs: int = 2000
    R: int = 1000
    init_scales: tuple[float, ...] = (0.05, 0.01, 0.005)
    optimizers: tuple[str, ...] = ("group_rmsprop", "flow", "gd")
    seeds: int = 3
    loss: str = "mse"
    stop_loss: float = 1e-8
    patience_steps: int = 1250
    rmsprop: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(name="group_rmsprop", lr=1e-2, eps=1e-6)
    )
    rmsprop_max_steps: int = 200_000
    record_every: int = 50
    gd: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(name="gd", lr=1.0))
    gd_lr_from_curvature: bool = True
    gd_max_steps: int = 300_000
    gd_record_every: int = 50
    flow: OptimizerConfig = field(default_factory=lambda: OptimizerConfig(method="RK45"))
    flow_chunk: int = 25
    switch_h_lambda: float = 1.0
    late_phase: str = "gd"
    gd_safety: float = 0.8
    gd_chunk: int = 250
    flow_max_steps: int = 300_000
    power_iters: int = 100
    power_tol: float = 1e-3
    theorem_check: bool = True
    max_wall_s: float | None = None
    top_k: int = 10
    large_frac: float = 0.1
    leave_frac: float = 0.5
    separation: float = 0.05
    max_large_at_small_init: int = 6
    rate_rel_floor: float = 1e-6
    estimate_rank: bool = False

    def __post_init__(self) -> None:
        if set(self.optimizers) - set(OPTIMIZERS):
            raise ValueError(f"unknown optimizers {self.optimizers}; choose from {OPTIMIZERS}")
        if min(self.target_rank, self.R, self.n_obs, self.top_k) < 1 or len(self.dims) < 2:
            raise ValueError("target_rank, R, n_obs, top_k must be >= 1 and dims of order >= 2")
        if not self.init_scales or min(self.init_scales) <= 0:
            raise ValueError(f"init scales must be > 0, got {self.init_scales}")
        if (self.rmsprop.name, self.gd.name, self.flow.name) != ("group_rmsprop", "gd", "flow"):
            raise ValueError("rmsprop, gd and flow must name group_rmsprop, gd and flow")
        if self.flow.method != "RK45":
            raise ValueError(f"flow-then-GD integrates with RK45, got {self.flow.method!r}")
        if self.late_phase not in ("gd", "cvode"):
            raise ValueError(f"late_phase must be 'gd' or 'cvode', got {self.late_phase!r}")
        if not 0 < self.gd_safety < 1:
            raise ValueError(f"gd_safety must be in (0, 1), got {self.gd_safety}")


#: Paper scale integrates the flow's stiff phase by CVODE instead of GD: to group RMSProp's final
#: error 2.5-4.1x sooner than group RMSProp and 2.4-3.1x sooner than flow-then-GD over three
#: idle runs of benchmarks/bench_cp.py, the same final error 6.9e-6. Quick and smoke keep GD.
PAPER = Settings(late_phase="cvode")
QUICK = dataclasses.replace(
    PAPER,
    late_phase="gd",
    R=100,
    seeds=1,
    init_scales=(0.05, 0.005),
    optimizers=("group_rmsprop", "flow"),
    rmsprop_max_steps=40_000,
    flow_max_steps=60_000,
)
SMOKE = dataclasses.replace(  # seconds: every code path, flow switching to GD included
    PAPER,
    late_phase="gd",
    dims=(4, 4, 4),
    target_rank=2,
    n_obs=40,
    R=8,
    seeds=1,
    init_scales=(0.1, 0.01),
    stop_loss=1e-6,
    patience_steps=50,
    rmsprop_max_steps=3000,
    gd_max_steps=3000,
    flow_max_steps=3000,
    record_every=10,
    gd_record_every=5,
    max_wall_s=10.0,
)


def _hybrid(s: Settings, seed: int, stop_at_switch: bool = False) -> FlowThenGD:
    return FlowThenGD(
        rtol=s.flow.rtol,
        atol=s.flow.atol,
        check_every=s.flow_chunk,
        switch_h_lambda=s.switch_h_lambda,
        safety=s.gd_safety,
        gd_chunk=s.gd_chunk,
        gd_record_every=s.gd_record_every,
        power_iters=s.power_iters,
        power_tol=s.power_tol,
        patience_steps=s.patience_steps,
        seed=10_007 + seed,
        stop_at_switch=stop_at_switch,
        late=s.late_phase,
    )


def _fit(s: Settings, opt: str, init, objective, seed: int, gd_lr: float):
    """One run of ``opt`` from ``init``: ``(TrainResult, method text, time axis)``."""
    stop = Stop(loss_below=s.stop_loss, max_wall_s=s.max_wall_s)
    if opt in ("group_rmsprop", "gd"):
        o = s.rmsprop if opt == "group_rmsprop" else s.gd
        optimizer = GroupRMSProp(o.lr, beta=o.beta, eps=o.eps) if opt != "gd" else GD(gd_lr)
        max_steps = s.rmsprop_max_steps if opt == "group_rmsprop" else s.gd_max_steps
        every = s.record_every if opt == "group_rmsprop" else s.gd_record_every
        stop = dataclasses.replace(stop, max_steps=max_steps)
        res = train_past_crossing(
            init,
            objective,
            optimizer,
            stop,
            s.patience_steps,
            Schedule(every=every),
            component_probes(s.top_k),
        )
        if opt == "gd":
            return res, f"gd(lr={gd_lr:.4g})", "flow time (GD: steps x lr)"
        return res, f"group_rmsprop(lr={o.lr:g}, beta={o.beta:g}, eps={o.eps:g})", "iterations"
    start = balance_components(init) if opt == "flow_balanced" else init
    stop = dataclasses.replace(stop, max_steps=s.flow_max_steps)
    res = flow_then_gd(
        start,
        objective,
        _hybrid(s, seed),
        stop,
        component_probes(s.top_k, objective, s.rate_rel_floor),
    )
    sw = res.info["switch_time"]
    method = res.method + (" from balanced init" if opt == "flow_balanced" else "") + " (RK45"
    late = f"GD at {s.gd_safety:g} x 2/lambda_max" if s.late_phase == "gd" else "CVODE"
    method += f"; {late} after t = {sw:.4g})" if sw else ")"
    return res, method, "flow time"


def _name(prefix: str, std: float, seed: int) -> str:
    return f"{prefix}_std{std:g}_seed{seed}".replace(".", "p")


def _fit_cell(
    s: Settings,
    opt: str,
    init: list[torch.Tensor],
    objective: CPObjective,
    seed: int,
    gd: tuple[float, float | None],
    W_star: torch.Tensor,
    base: dict[str, Any],
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """One optimizer from one init (``gd``: GD's (lr, lambda_star)): its row, the name of its
    trajectory arrays, and the arrays."""
    res, method, axis = _fit(s, opt, init, objective, seed, gd[0])
    row, arrays = fit_row(
        res,
        W_star,
        target_rank=s.target_rank,
        top_k=s.top_k,
        large_frac=s.large_frac,
        leave_frac=s.leave_frac,
    )
    if s.estimate_rank:
        W = cp_to_tensor(res.params)[0].cpu().numpy()
        row["estimated_rank"] = int(estimate_tensor_rank(W, tol=1e-6, max_rank=12))
    if opt == "gd":
        row.update(gd_lr=gd[0], lambda_star=gd[1])
    name = _name(f"traj_{opt}", base["init_scale"], seed)
    row = {**base, **row, "kind": "fit", "optimizer": opt, "trajectory": name}
    row.update(method=method, axis=axis)
    return row, name, arrays


def _theorem_cell(
    s: Settings, seed: int, init: list[torch.Tensor], objective: CPObjective, base: dict[str, Any]
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """Theorem 1's check from the balanced init, RK45 up to the switch (no GD): its row, the
    name of its arrays, and the arrays."""
    stop = Stop(loss_below=s.stop_loss, max_steps=s.flow_max_steps, max_wall_s=s.max_wall_s)
    probes = component_probes(s.top_k, objective, s.rate_rel_floor)
    hybrid = _hybrid(s, seed, stop_at_switch=True)
    res = flow_then_gd(balance_components(init), objective, hybrid, stop, probes)
    row, arrays = theorem_row(res)
    name = _name("theorem", base["init_scale"], seed)
    row = {**base, **row, "kind": "theorem_check", "trajectory": name}
    row.update(optimizer="flow_balanced", axis="flow time")
    row["method"] = "flow from balanced init, up to the switch (RK45)"
    return row, name, arrays


def run(s: Settings, ctx: Context) -> list[dict[str, Any]]:
    """Every optimizer from every init std, per seed, then the theorem check; one row each.
    Each fit and each check is a cell (``--workers`` runs them on several processes)."""
    cells: list[tuple[str, Any]] = []
    dev = ctx.device
    for seed in range(s.seeds):
        gen = torch.Generator().manual_seed(seed)
        W_star, U = low_rank_tensor(s.dims, s.target_rank, generator=gen, dtype=torch.float64)
        obs = tensor_completion(W_star, s.n_obs, gen).to(torch.float64, dev)
        W_star = W_star.to(dev)
        objective = CPObjective(obs, s.loss)
        gd_lr, lam_star = s.gd.lr, None
        if "gd" in s.optimizers and s.gd_lr_from_curvature:
            star = balance_components([u[None].to(dev) for u in U])
            g = torch.Generator().manual_seed(20_011 + seed)
            lam = hessian_top_eigenvalue(
                objective, star, iters=s.power_iters, tol=1e-6, generator=g
            )
            lam_star = abs(float(lam[0][0]))
            gd_lr = s.gd_safety * 2.0 / lam_star
        base = {"order": len(s.dims), "dims": list(s.dims), "target_rank": s.target_rank}
        base.update(n_obs=s.n_obs, R=s.R, seed=seed, loss=s.loss)
        for std in s.init_scales:
            g = torch.Generator().manual_seed(1_000 + seed)  # one draw per seed, times std
            init = init_cp(s.dims, s.R, std, generator=g, dtype=torch.float64, device=dev)
            base.update(init_scale=std)
            base["init_fro_norm"] = float(torch.linalg.vector_norm(cp_to_tensor(init)))
            for opt in s.optimizers:
                fit = (s, opt, init, objective, seed, (gd_lr, lam_star), W_star, dict(base))
                cells.append((f"fit-seed{seed}-std{std:g}-{opt}", partial(_fit_cell, *fit)))
            if s.theorem_check:
                check = partial(_theorem_cell, s, seed, init, objective, dict(base))
                cells.append((f"theorem-seed{seed}-std{std:g}", check))

    def done(key: str, value: tuple) -> None:  # a fit's error, or the check's rate error
        err = value[0].get("rel_fro_error", value[0].get("max_relative_error"))
        err = "n/a" if err is None else f"{err:.3g}"
        ctx.log(f"{key}: {value[0]['status']}, error {err}, {value[0]['wall_s']:.1f} s")

    rows = []
    for row, name, arrays in ctx.map_cells(cells, on_done=done):
        ctx.save_arrays(name, **arrays)
        rows.append(row)
    return rows


def _claims(opt: str) -> tuple[Claim, ...]:
    return (
        Claim(
            f"one_at_a_time[{opt}]",
            "At the smallest init the top {s.target_rank} components leave zero one at a time "
            "(each ends above {s.large_frac} x the largest; the times at which each first reaches "
            "{s.leave_frac} x its final norm are >= {s.separation} x the later time apart) and at "
            f"most {{s.max_large_at_small_init}} components are that large at the end; every seed ({opt})",
            paper={
                "leave_iterations": [4.2e3, 5.3e3, 7.0e3, 9.8e3, 11.3e3],
                "final_norms": [0.60, 0.59, 0.41, 0.31, 0.21],
                "n_large": 5,
            },
            source=f"{FIGURE}, std 0.005, read off the figure",
            measure=lambda r: one_at_a_time(
                r.rows,
                opt,
                target_rank=r.settings.target_rank,
                separation=r.settings.separation,
                max_large=r.settings.max_large_at_small_init,
            ),
            checks=(is_true("every_seed"),),
        ),
        Claim(
            f"error_decreases_with_init[{opt}]",
            f"The final rel_fro_error (median over seeds) decreases as the init std decreases ({opt})",
            paper=PAPER_ERRORS,
            source=f"{SOURCE}, the final errors given with the dynamics figure",
            measure=lambda r: error_decreases(r.rows, opt),
            checks=(is_true("decreasing"),),
        ),
        Claim(
            f"fewer_components_at_small_init[{opt}]",
            "Fewer components depart from zero as the init shrinks: the number above "
            "{s.large_frac} x the largest at the end (median over {s.seeds} seed(s)) is larger at "
            f"the largest init std than at the smallest, where it is 5 ({opt})",
            paper={
                "0.05": ">= 6 of the ten plotted (~0.55, 0.48, 0.24, 0.19, 0.175, 0.115)",
                "0.005": 5,
            },
            source=f"{FIGURE}, read off the figure; the text: as the init goes to zero fewer "
            "components depart from zero",
            measure=lambda r: fewer_components(r.rows, opt),
            checks=(Check("drop", ">", 0), between("count_small_init", 5, 5)),
        ),
    )


CLAIMS = (
    *_claims("group_rmsprop"),
    *_claims("flow"),
    *_claims("gd"),
    Claim(
        "component_rate_identity",
        "Along gradient flow (RK45, until stability-limited) from balanced init the measured "
        "dc_r/dt equals -N c_r^(2-2/N) <grad l(W), C_r/c_r>: largest relative error over every "
        "accepted step of every run <= 1e-6 (components with rate above {s.rate_rel_floor} x the largest)",
        paper="exact (0)",
        source=f"{SOURCE}, Theorem 1 (exact for balanced components)",
        measure=lambda r: rate_identity(r.rows),
        checks=(at_most("max_relative_error", 1e-6),),
    ),
)

EXPERIMENT = Experiment(
    id="razin2021-dynamics",
    title="Tensor factorization dynamics: component norms leave zero one at a time",
    paper=f"{SOURCE}, dynamics of learning (tensor completion, component norms over iterations)",
    settings=Settings,
    scales={"quick": QUICK, "paper": PAPER, "smoke": SMOKE},
    columns=COLUMNS,
    claims=CLAIMS,
    run=run,
    part="Tensor recovery and dynamics",
)
