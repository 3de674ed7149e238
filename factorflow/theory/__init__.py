"""What the theory predicts, and the checks between prediction and measurement.

- Singular values under gradient flow from balanced init (Arora, Cohen, Hu, Luo 2019, Thm. 3):
  d sigma_r/dt = -N (sigma_r^2)^(1 - 1/N) <grad l(W), u_r v_r^T>.
- End-to-end dynamics (Arora, Cohen, Hazan 2018, Thm. 1), balanced init:
  dW/dt = -sum_{j=1..N} (W W^T)^((j-1)/N) grad l(W) (W^T W)^((N-j)/N).
- Determinant (Razin & Cohen 2020): for N >= 2 gradient flow keeps the sign of det(W); on the
  2x2 problem [[?, 1], [1, 0]] with l = half_sse and det > 0, |w11| >= (1 - sqrt(2l))^2 / sqrt(2l).

Checks on recorded trajectories: :func:`theorem_errors` (Thm. 3 along a flow),
:func:`one_at_a_time` and :func:`trajectory_agreement` (singular values learned one after
another; GD against the flow), and the curvature :func:`hessian_top_eigenvalue` (GD is stable
iff lr < 2 / lambda_max).
"""

from factorflow.theory.singular_values import (
    crossing_times,
    end_to_end_flow_field,
    hessian_top_eigenvalue,
    max_relative_error,
    one_at_a_time,
    singular_value_probes,
    singular_value_rates,
    theorem_errors,
    trajectory_agreement,
)
from factorflow.theory.two_by_two import (
    min_nuclear_completion,
    perturbed_norm_constant,
    perturbed_norm_lower_bound,
    perturbed_w11_lower_bound,
    w11_lower_bound,
)

__all__ = [
    "crossing_times",
    "end_to_end_flow_field",
    "hessian_top_eigenvalue",
    "max_relative_error",
    "min_nuclear_completion",
    "one_at_a_time",
    "perturbed_norm_constant",
    "perturbed_norm_lower_bound",
    "perturbed_w11_lower_bound",
    "singular_value_probes",
    "singular_value_rates",
    "theorem_errors",
    "trajectory_agreement",
    "w11_lower_bound",
]
