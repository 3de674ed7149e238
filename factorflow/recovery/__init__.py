"""Low-rank matrix recovery by deep matrix factorization against nuclear-norm minimization: the
grid Arora, Cohen, Hu & Luo (NeurIPS 2019, Sec. 5 and appendix) run, as tidy rows, and the
quantities their comparison reads off them.

:func:`recovery_grid` trains every (seed, observation count, depth, optimizer, init scale) of a
:class:`RecoverySettings` on problems made by a given function (completion or sensing), solves
the convex baseline ``min ||X||_* s.t. |<A_i, X> - y_i| <= tol`` once per problem, and returns
one row per fitted model plus one ``ground_truth`` row per problem, with the metrics named as in
DESIGN.md (``recon_mse``, ``rel_fro_error``, ``nuclear_norm``, ``effective_rank``). The
measurement functions below (means over seeds and init scales, ratios between optimizers) are
what the experiments' claims check.

Seeds: seed s draws the problem and the initial factors (``init_dmf(seeds=[s])``), so the spread
over seeds is over problem draws and initializations together.
"""

from factorflow.recovery.grid import (
    COLUMNS,
    NNM_SOLVERS,
    RecoverySettings,
    recovery_grid,
    solve_nuclear_norm,
)
from factorflow.recovery.measures import (
    FLOW_AGREEMENT,
    all_recover,
    deep_vs_nnm,
    depth2_trend,
    flow_agreement,
    flow_vs_rmsprop,
    mean_of,
    nuclear_norm_and_rank,
    spearman,
)

__all__ = [
    "COLUMNS",
    "FLOW_AGREEMENT",
    "NNM_SOLVERS",
    "RecoverySettings",
    "all_recover",
    "deep_vs_nnm",
    "depth2_trend",
    "flow_agreement",
    "flow_vs_rmsprop",
    "mean_of",
    "nuclear_norm_and_rank",
    "recovery_grid",
    "solve_nuclear_norm",
    "spearman",
]
