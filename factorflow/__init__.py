"""factorflow: implicit regularization of gradient descent on matrix and tensor factorizations.

The public names are listed in ``__all__``; everything else is private. Submodules:
``metrics`` (measured quantities), ``theory`` / ``tensor_theory`` (predicted rates and checks),
``nn`` (``DeepLinear``), ``estimators`` (scikit-learn completers), ``runner`` (run an experiment).
"""

__version__ = "0.1.0"

from factorflow.config import RunConfig, load_config  # noqa: E402
from factorflow.dynamics import (  # noqa: E402
    GD,
    Adam,
    Flow,
    GroupRMSProp,
    Schedule,
    Stop,
    TrainResult,
    train,
)
from factorflow.factorizations.cp import (  # noqa: E402
    component_norms,
    cp_predict,
    cp_to_tensor,
    init_cp,
)
from factorflow.factorizations.dmf import end_to_end, init_dmf  # noqa: E402
from factorflow.nn import DeepLinear  # noqa: E402
from factorflow.objectives import CPObjective, DMFObjective  # noqa: E402
from factorflow.problems.completion import Completion, sample_indices  # noqa: E402
from factorflow.problems.matrix import (  # noqa: E402
    MatrixCompletion,
    MatrixSensing,
    gaussian_sensing,
    low_rank_matrix,
    razin_2x2,
    razin_2x2_perturbed,
    synthetic_completion,
)
from factorflow.problems.tensor import low_rank_tensor, tensor_completion  # noqa: E402
from factorflow.results import load_run  # noqa: E402

__all__ = [
    "GD",
    "Adam",
    "CPObjective",
    "Completion",
    "DMFObjective",
    "DeepLinear",
    "Flow",
    "GroupRMSProp",
    "MatrixCompletion",
    "MatrixSensing",
    "RunConfig",
    "Schedule",
    "Stop",
    "TrainResult",
    "__version__",
    "component_norms",
    "cp_predict",
    "cp_to_tensor",
    "end_to_end",
    "gaussian_sensing",
    "init_cp",
    "init_dmf",
    "load_config",
    "load_run",
    "low_rank_matrix",
    "low_rank_tensor",
    "razin_2x2",
    "razin_2x2_perturbed",
    "sample_indices",
    "synthetic_completion",
    "tensor_completion",
    "train",
]
