"""Convex and classical baselines: nuclear-norm minimization, memorizer, CP-ALS, ALS tensor rank.

* :mod:`factorflow.baselines.nuclear_norm` -- minimum nuclear norm completion / sensing with SCS
  (Arora, Cohen, Hu & Luo 2019).
* :mod:`factorflow.baselines.tensor` -- memorizer, CP-ALS (TensorLy), the "smallest R whose ALS
  fit reaches mse < 1e-6" tensor rank, masked CP-ALS completion (Razin & Cohen 2020; Razin,
  Maman & Cohen 2021).
"""

from factorflow.baselines.nuclear_norm import (
    NuclearNormResult,
    SolverError,
    nuclear_norm_min,
    nuclear_norm_min_sensing,
)
from factorflow.baselines.tensor import (
    cp_als,
    cp_als_error,
    estimate_tensor_rank,
    masked_cp_als,
    memorizer,
)

__all__ = [
    "NuclearNormResult",
    "SolverError",
    "nuclear_norm_min",
    "nuclear_norm_min_sensing",
    "cp_als",
    "cp_als_error",
    "estimate_tensor_rank",
    "masked_cp_als",
    "memorizer",
]
