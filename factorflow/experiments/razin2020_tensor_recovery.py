"""Razin & Cohen (NeurIPS 2020), appendix: tensor completion by CP factorization from small init
recovers low-rank tensors, and its solutions have low tensor rank.

Method (as in the paper and the authors' code, read for its settings only): an ``8^3`` (order 3)
or ``8^4`` (order 4) target of CP rank 1 (and 3), factors i.i.d. N(0, 1), ``||W*||_F = 1``; one
fixed random order of its entries, of which the first ``n_obs`` are observed (nested sets). A CP
factorization with ``R = 64`` / ``512`` components (the product of all dims but the largest),
factors i.i.d. ``N(0, init^2)``, init in {1e-2, 1e-3}, fits the observations under ``mse`` with
group RMSProp (lr 1e-2, beta 0.99, eps 1e-6: the authors' code's eps) and their stop rule: the
train mse is checked every 100 steps and training stops once it was below 1e-6 at three
consecutive checks (:class:`factorflow.dynamics.Patience`). The 200-300 steps past the first
crossing drive the loss far lower (often ~1e-14), which is what gives the published errors of
~5e-6. Seeds differ only in the init. Measured per run: ``rel_fro_error = ||W - W*||_F /
||W*||_F`` over the full tensor (rows at the paper stop, ``stop_rule = "paper"``, and at the first
crossing, ``"mse<1e-06"``) and the estimated CP rank (smallest R whose CP-ALS fit reaches
mse < 1e-6), next to the memorizer (observed entries, zeros elsewhere) and masked CP-ALS at the
target's rank. Also: a ``16^3`` rank-3 target with 10% observed, CP-GD against masked CP-ALS.

Gradient flow (rows ``cp_flow``, settings ``flow``): the same inits (init 1e-3), integrated with
error control and stopped exactly at mse 1e-6, then continued to 1e-9 and 1e-12 (one row per
loss; each phase at most ``flow_max_evals`` evaluations, status ``max_evals`` where it ran out:
once the target is fitted RK45 is stability-limited, ~250 time units per step at 8^3). The
integrator is RK45 as before (``auto`` now switches to CVODE when the flow turns stiff). The
accepted step times per phase are saved in ``flow_steps.npz``. Every row names its ``optimizer``
(``gd`` and ``flow`` are settings of their own, so a grid may run with either).

Scales (2 shared CPU cores, one thread): ``quick`` (~1 minute): order 3, rank 1, 100/200/300
observations, both inits, 5 seeds, at most 3000 steps; flow only at 200 observations, at most
2000 evaluations per loss; two more target instances at 200 observations, init 1e-3 (the error
there varies over decades between instances: medians 2.9e-4, 1.0e-4, 2.1e-5); ranks only where
the claims read them (capped at 9: "more than 9" is what ">= 10" needs); the 16^3 comparison with
one seed. ``paper``: the paper's grid, order 3 by group RMSProp (its exact numbers are the
ones compared with the paper's, seconds per cell) and order 4 by the flow
(``order4_optimizer = "flow"``, ``flow.method = "auto"``: RK45, switched to CVODE once stiff):
group RMSProp there is hours, because at init 1e-3 the gradients (~init^3) are far below eps,
so it is GD with lr 1e4 and sits at zero for ~4.4e4 steps (43,511 to mse 1e-6 at 1000
observations) and the patience rule replays them. Measured by ``benchmarks/bench_tensor_recovery.py``
(one thread, output in ``benchmarks/results/bench_tensor_recovery.json``), one order-4 cell (rank
1, 1000 observations, inits 1e-2 and 1e-3 x 5 seeds): the flow (``auto``) 81 s; group RMSProp
473 s, extrapolated from 5.3 ms per step at B = 5 and the measured first crossing (535 steps at
init 1e-2, 43,511 at 1e-3; 1,435 and 87,411 with the patience replay): 5.8x. The flow's errors at
mse 1e-12 are ~1e-4 (median 9.8e-5 at init 1e-3, 1.05e-4 at 1e-2) where the paper read ~1e-6 for
group RMSProp: the order-4 claim then reads the flow's rows and says so. Rows name their
``optimizer`` (``group_rmsprop`` or ``flow:RK45`` / ``flow:RK45+cvode``). Every order run by
group RMSProp: ``--option order4_optimizer='"gd"'``. ``smoke``: 4^3, a few seconds.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from factorflow.config import OptimizerConfig
from factorflow.dynamics import Patience
from factorflow.experiment import Check, Claim, Context, Experiment, at_least, at_most, between
from factorflow.problems.tensor import nested_completion_target, observe_first, paper_setting
from factorflow.tensor_recovery import (
    COLUMNS,
    PAPER_STOP,
    add_ranks,
    als_comparison,
    init_effect,
    order4_recovered,
    recovered,
    recovery_cell,
    solution_rank,
)

SOURCE = "Razin & Cohen, NeurIPS 2020, appendix, tensor completion"


@dataclass(frozen=True)
class Settings:
    """Recovery grid: ``orders`` x ``target_ranks`` x ``n_obs3`` / ``n_obs4`` (per order),
    ``dim`` per mode, ``init_scales`` x ``seeds`` runs per cell by the optimizer the order names
    (``order3_optimizer`` / ``order4_optimizer``: ``"gd"`` or ``"flow"``, i.e. the settings
    ``gd`` or ``flow``; the paper preset runs order 4 with the flow, see the module doc). By
    ``gd`` (a discrete optimizer): under the patience rule (mse < ``stop_loss`` at ``n_checks``
    consecutive checks ``check_every`` steps apart; ``extra_checks`` more replayed), at most
    ``max_steps3`` / ``max_steps4`` steps; ``batch_inits``: ``together`` (one batch per cell),
    ``apart`` (one per init) or ``auto`` (together at order 3, apart above, where run lengths
    differ ~100x). By ``flow``: every init scale at every count to each of ``flow_losses`` (no
    discrete rows; the claims read the flow's rows at its lowest loss where they read the paper
    stop). In an order run by ``gd``, flow rows beside the discrete ones at ``flow_n_obs``
    (None: every count) x ``flow_inits`` (empty: no flow) to each of ``flow_losses``. Ranks for
    ``rank_for`` rows (``all``, ``claims``: the claims' cell, ``none``), searched up to
    ``rank_max``. The claims read ``claim_n_obs``, over ``claim_targets`` target instances.
    Comparison (``comparison``): ``comparison_dim``^3 rank ``comparison_rank``,
    ``comparison_frac`` observed, ``comparison_seeds`` (None: ``seeds``) inits at
    ``comparison_init``."""

    seeds: int = 5
    orders: tuple[int, ...] = (3, 4)
    order3_optimizer: str = "gd"
    order4_optimizer: str = "flow"
    target_ranks: tuple[int, ...] = (1, 3)
    n_obs3: tuple[int, ...] = paper_setting("razin2020-order3").n_observations
    n_obs4: tuple[int, ...] = paper_setting("razin2020-order4").n_observations
    dim: int = 8
    init_scales: tuple[float, ...] = (1e-2, 1e-3)
    loss: str = "mse"
    gd: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(name="group_rmsprop", lr=1e-2, beta=0.99, eps=1e-6)
    )
    stop_loss: float = 1e-6
    check_every: int = 100
    n_checks: int = 3
    extra_checks: int = 1
    max_steps3: int = 20_000
    max_steps4: int = 150_000
    batch_inits: str = "auto"
    flow: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(name="flow", method="RK45", rtol=1e-7, atol=1e-10)
    )
    flow_n_obs: tuple[int, ...] | None = None
    flow_inits: tuple[float, ...] = (1e-3,)
    flow_losses: tuple[float, ...] = (1e-6, 1e-9, 1e-12)
    flow_max_evals: int = 10_000
    rank_for: str = "all"
    rank_max: int = 20
    large_frac: float = 0.1
    claim_n_obs: int = 200
    claim_targets: int = 3
    comparison: bool = True
    comparison_dim: int = 16
    comparison_rank: int = 3
    comparison_frac: float = 0.1
    comparison_seeds: int | None = None
    comparison_init: float = 1e-3
    target_seed: int = 0

    def __post_init__(self) -> None:
        if not self.orders or not set(self.orders) <= {3, 4}:
            raise ValueError(f"orders must be 3 and/or 4 (n_obs3 / n_obs4), got {self.orders}")
        if self.dim < 1 or self.seeds < 1:
            raise ValueError(f"dim and seeds must be >= 1, got {self.dim}, {self.seeds}")
        for order in self.orders:
            bad = [m for m in self.n_obs(order) if not 1 <= m <= self.dim**order]
            if bad or not self.n_obs(order):
                raise ValueError(f"order {order}: n_obs {bad} outside 1..{self.dim**order}")
        if any(r < 1 for r in self.target_ranks):
            raise ValueError(f"target ranks must be >= 1, got {self.target_ranks}")
        if not all(x > 0 for x in (*self.init_scales, *self.flow_inits, self.comparison_init)):
            raise ValueError("init scales must be > 0")
        if self.gd.name == "flow" or self.flow.name != "flow":
            raise ValueError("gd must name a discrete optimizer and flow must be name = 'flow'")
        for o, name in ((3, self.order3_optimizer), (4, self.order4_optimizer)):
            if name not in ("gd", "flow"):
                raise ValueError(f"order{o}_optimizer must be 'gd' or 'flow', got {name!r}")
        if self.rank_for not in ("all", "claims", "none"):
            raise ValueError(f"rank_for must be all, claims or none, got {self.rank_for!r}")
        if self.batch_inits not in ("auto", "together", "apart"):
            raise ValueError(
                f"batch_inits must be auto, together or apart, got {self.batch_inits!r}"
            )
        if min(self.max_steps3, self.max_steps4, self.rank_max, self.flow_max_evals) < 1:
            raise ValueError("max_steps3, max_steps4, rank_max and flow_max_evals must be >= 1")
        if not 0 < self.comparison_frac <= 1 or self.claim_targets < 1:
            raise ValueError("comparison_frac must be in (0, 1] and claim_targets >= 1")
        Patience(self.stop_loss, self.check_every, self.n_checks, self.extra_checks)

    def n_obs(self, order: int) -> tuple[int, ...]:
        return self.n_obs3 if order == 3 else self.n_obs4

    def max_steps(self, order: int) -> int:
        return self.max_steps3 if order == 3 else self.max_steps4

    def optimizer(self, order: int) -> str:
        """``"gd"`` or ``"flow"``: which optimizer setting fits the grid's cells of ``order``."""
        return self.order3_optimizer if order == 3 else self.order4_optimizer


PAPER = Settings(flow=OptimizerConfig(name="flow", method="auto", rtol=1e-7, atol=1e-10))
QUICK = dataclasses.replace(
    PAPER,
    orders=(3,),
    flow=Settings().flow,
    target_ranks=(1,),
    n_obs3=(100, 200, 300),
    max_steps3=3_000,
    flow_n_obs=(200,),
    flow_max_evals=2_000,
    rank_for="claims",
    rank_max=9,
    comparison_seeds=1,
)
SMOKE = dataclasses.replace(
    QUICK,
    seeds=2,
    dim=4,
    n_obs3=(20, 30),
    flow_n_obs=(30,),
    flow_losses=(1e-6, 1e-9),
    flow_max_evals=300,
    max_steps3=2_000,
    check_every=25,
    rank_max=4,
    claim_n_obs=30,
    claim_targets=2,
    comparison_dim=4,
    comparison_rank=1,
    comparison_frac=0.5,
)


def _wants_rank(s: Settings):
    def wanted(row: dict[str, Any]) -> bool:
        if s.rank_for == "none" or row["setting"] == "recovery_extra_target":
            return False
        if row["method"] == "cp_gd" and row["stop_rule"] != PAPER_STOP:
            return False  # the first-crossing rows
        if row["method"] == "cp_flow" and row["stop_rule"] != f"mse<{min(s.flow_losses):g}":
            return False  # the flow's intermediate losses
        if s.rank_for == "all":
            return True
        claims_cell = (row["setting"], row["order"], row["target_rank"], row["n_obs"]) == (
            "recovery", 3, 1, s.claim_n_obs)  # fmt: skip
        init = row["init_scale"]
        return claims_cell and (
            row["method"] == "memorizer"
            or (row["method"] == "cp_gd" and math.isclose(init or 0.0, 1e-3))
        )

    return wanted


def _cell(
    s: Settings, title: str, setting: str, dims: tuple[int, ...], rank: int, t_seed: int,
    seed: int, n_obs: int, inits: tuple[float, ...], n_runs: int, flow_inits: tuple[float, ...],
    device: Any, log: Any,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """One (setting, order, rank, target, observation count) of the grid: its target from
    ``seed``, the first ``n_obs`` entries of its nested observation order, every init, and the
    rank estimates of its ``rank_for`` rows (in the cell, so they too spread over ``--workers``);
    logs ``title`` first. Returns the rows and the flow step-time arrays."""
    log(title)
    W, entry_order = nested_completion_target(dims, rank, seed=seed)
    together = s.batch_inits == "together" or (s.batch_inits == "auto" and len(dims) <= 3)
    rows, tensors, arrays = recovery_cell(
        setting, W, observe_first(W, entry_order, n_obs), target_rank=rank, target_seed=t_seed,
        inits=inits, n_runs=n_runs, gd=s.gd,
        patience=Patience(s.stop_loss, s.check_every, s.n_checks, s.extra_checks),
        max_steps=s.max_steps(len(dims)), flow=s.flow, flow_inits=flow_inits,
        flow_losses=s.flow_losses, flow_max_evals=s.flow_max_evals, loss=s.loss,
        batch_inits=together, base_seed=10_000 * (s.target_seed + 1), als_seed=s.target_seed,
        large_frac=s.large_frac, device=device, log=log,
    )  # fmt: skip
    t0 = time.perf_counter()
    add_ranks(rows, tensors, _wants_rank(s), s.rank_max)
    n = sum(r.get("estimated_rank") is not None for r in rows)
    log(f"  {title}: {n} rank estimates, {time.perf_counter() - t0:.1f} s")
    return rows, arrays


def run(s: Settings, ctx: Context) -> list[dict[str, Any]]:
    """The recovery grid, the claim's extra target instances and the CP-ALS comparison, each
    cell with its rank estimates; flow step times go to ``flow_steps.npz``."""
    rows, arrays = [], {}
    comparison_seeds = s.comparison_seeds or s.seeds
    cells: list[tuple[str, Any]] = []  # (key, compute): run by ctx.map_cells (``--workers``)

    def cell(title: str, setting: str, dims: tuple[int, ...], rank: int, t_seed: int, seed: int,
             n_obs: int, inits: tuple, n_runs: int, flow_inits: tuple = ()) -> None:  # fmt: skip
        key = f"{setting}-order{len(dims)}-dim{dims[0]}-rank{rank}-target{t_seed}-n{n_obs}"
        args = (title, setting, dims, rank, t_seed, seed, n_obs, inits, n_runs, flow_inits)
        cells.append((key, partial(_cell, s, *args, ctx.device, ctx.cell_log)))

    def split(order: int, inits: tuple[float, ...], flow: bool) -> tuple[tuple, tuple]:
        """(discrete inits, flow inits) of a cell of ``order``."""
        if s.optimizer(order) == "flow":
            return (), inits
        return inits, (s.flow_inits if flow else ())

    for order in s.orders:
        for rank in s.target_ranks:
            for m in s.n_obs(order):
                title = f"order {order}, rank {rank}, {m} observations ({s.optimizer(order)})"
                flow = s.flow_n_obs is None or m in s.flow_n_obs
                seed = 1000 * s.target_seed + 10 * order + rank
                gd_inits, flow_inits = split(order, s.init_scales, flow)
                cell(title, "recovery", (s.dim,) * order, rank, s.target_seed, seed, m, gd_inits,
                     s.seeds, flow_inits)  # fmt: skip
    if 3 in s.orders and 1 in s.target_ranks and 1e-3 in s.init_scales:
        gd_inits, flow_inits = split(3, (1e-3,), False)
        for t in range(s.target_seed + 1, s.target_seed + s.claim_targets):
            title = f"extra target instance {t}, {s.claim_n_obs} observations"
            cell(title, "recovery_extra_target", (s.dim,) * 3, 1, t, 1000 * t + 31, s.claim_n_obs,
                 gd_inits, s.seeds, flow_inits)  # fmt: skip
    if s.comparison:
        dims = (s.comparison_dim,) * 3
        m = max(1, round(s.comparison_frac * math.prod(dims)))
        title = f"CP-ALS comparison, {dims}, {m} observations"
        cell(title, "als_comparison", dims, s.comparison_rank, s.target_seed,
             1000 * s.target_seed + 777, m, (s.comparison_init,), comparison_seeds)  # fmt: skip
    for r, a in ctx.map_cells(cells):
        rows.extend(r), arrays.update(a)
    if arrays:
        ctx.save_arrays("flow_steps", **arrays)
    return rows


CLAIMS = (
    Claim(
        "rank1-order3-recovered",
        "Rank-1 8x8x8 target, {s.claim_n_obs} of 512 entries observed, init 1e-3: CP-GD (group "
        "RMSProp, the paper's stop rule) recovers it, median rel_fro_error <= 1e-4 over "
        "{s.claim_targets} target instances x {s.seeds} inits",
        paper="~5e-6 to 7e-6 (one target instance)",
        source=f"{SOURCE} figure (order 3, rank 1, init 1e-3, 200 observations), read off the "
        "figure",
        measure=lambda r: recovered(r.rows, r.settings.claim_n_obs, r.settings.stop_loss),
        checks=(at_most("median_rel_fro_error", 1e-4),),
        note="the error varies over decades between target instances and from seed to seed "
        "with the train mse reached at the paper stop; runs with n_large_components > 1 carry a "
        "second component that has not died out",
    ),
    Claim(
        "rank1-order3-solution-rank",
        "At {s.claim_n_obs} observations, init 1e-3, the CP-GD solution has estimated tensor "
        "rank 1 (median over seeds), the memorizer's is >= 10",
        paper={"cp_gd": 1, "memorizer": "12 to 17"},
        source=f"{SOURCE} figure (estimated rank vs observations), read off the figure",
        measure=lambda r: solution_rank(r.rows, r.settings.claim_n_obs),
        checks=(between("cp_gd_median_rank", 1, 1), at_least("memorizer_estimated_rank", 10)),
    ),
    Claim(
        "init-scale-effect",
        "At {s.claim_n_obs} observations the median error at init 1e-2 exceeds that at init "
        "1e-3 by >= 10x",
        paper={"init 1e-2": "~4e-4 to 8e-3", "init 1e-3": "~5e-6"},
        source=f"{SOURCE} figure (order 3, 200+ observations), read off the figure",
        measure=lambda r: init_effect(r.rows, r.settings.claim_n_obs),
        checks=(at_least("ratio", 10.0),),
    ),
    Claim(
        "beats-masked-cp-als",
        "{s.comparison_dim}^3 rank-{s.comparison_rank} target, {s.comparison_frac:.0%} "
        "observed: CP-GD from small init (median over seeds) has a lower rel_fro_error than "
        "masked CP-ALS at the true rank",
        paper={"masked_cp_als": 1.78},
        source="factorflow's own check (TensorLy 0.10 masked CP-ALS ended at 1.78 on one such "
        "instance); the paper compares with the memorizer only",
        measure=lambda r: als_comparison(r.rows),
        checks=(Check("gd_over_als", "<", 1.0),),
    ),
    Claim(
        "rank1-order4-recovered",
        "Rank-1 8x8x8x8 target, init 1e-3: median rel_fro_error <= 1e-4 at every observation "
        "count >= 1000 (of 4096)",
        paper="~1e-6 from 1000 observations",
        source=f"{SOURCE} figure (order 4, rank 1, init 1e-3), read off the figure",
        measure=lambda r: order4_recovered(r.rows),
        checks=(at_most("worst_median", 1e-4),),
        note="read from group RMSProp at the paper stop where the grid ran order 4 with it, "
        "else from the flow at its lowest loss (order4_optimizer = 'flow', the paper preset); "
        "the measurement names the optimizer and stop rule it read",
    ),
)

EXPERIMENT = Experiment(
    id="razin2020-tensor-recovery",
    title="Tensor completion: recovery error and tensor rank vs number of observations",
    paper="Razin & Cohen. Implicit Regularization in Deep Learning May Not Be Explainable by "
    "Norms. NeurIPS 2020 (arXiv:2005.06398), appendix: tensor completion experiments",
    settings=Settings,
    scales={"quick": QUICK, "paper": PAPER, "smoke": SMOKE},
    columns=COLUMNS,
    claims=CLAIMS,
    run=run,
    part="Tensor recovery and dynamics",
)
