"""Deep matrix factorizations on the 2x2 completion problems of Razin & Cohen (2020): the runs
(:mod:`~factorflow.completion2x2.runs`) and the measurements their claims are judged on
(:mod:`~factorflow.completion2x2.measures`)."""

from factorflow.completion2x2.measures import (
    bound_ratio,
    by_level,
    det_analyses,
    det_sign_summary,
    gd_flow_agreement,
    grows_above,
    level_change,
    norms_monotone,
    rank_one_approach,
    run_table,
    select_runs,
)
from factorflow.completion2x2.runs import (
    METRICS,
    NORMS,
    STATE_COLUMNS,
    check_grid,
    flow_2x2,
    flow_from_init,
    gd_2x2,
    init_2x2,
    record,
    split_runs,
    state_rows,
    trajectory_arrays,
    trajectory_metrics,
)

__all__ = [
    "METRICS",
    "NORMS",
    "STATE_COLUMNS",
    "bound_ratio",
    "by_level",
    "check_grid",
    "det_analyses",
    "det_sign_summary",
    "flow_2x2",
    "flow_from_init",
    "gd_2x2",
    "gd_flow_agreement",
    "grows_above",
    "init_2x2",
    "level_change",
    "norms_monotone",
    "rank_one_approach",
    "record",
    "run_table",
    "select_runs",
    "split_runs",
    "state_rows",
    "trajectory_arrays",
    "trajectory_metrics",
]
