"""The sign of det(W) along a recorded trajectory, and where float64 stops resolving it.

Razin & Cohen (2020): for depth N >= 2, gradient flow keeps the sign of det(W) of the end-to-end
matrix (exactly from balanced init). A simulation can test that only while the sign is resolved:
under balanced flow det(W) = prod_j det(W_j) can decay exponentially, and once the small
singular mode of the factors is below float64 rounding (relative eps ~ 2e-16 of O(1) entries)
the conserved balance W_{j+1}^T W_{j+1} = W_j W_j^T is only known to rounding and the small
mode evolves like an unbalanced one. The *floor measure* q = (sigma_2 / sigma_1)^(2/N) (for
balanced factors the squared small/large singular value ratio of each factor;
``metrics.matrix_metrics`` gives it) says how close that is: a run "reached the float64 floor"
at the first recorded state with q < ``floor`` (1e-12, ~4500 eps, in the experiments).

- :func:`sign_changes`: where the sign changes between consecutive recorded states;
- :func:`det_sign_analysis`: the changes, the first state at the floor, and whether the sign
  was kept until then;
- :func:`sign_kept_mask`: the states before the first change and before the floor.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["det_sign_analysis", "sign_changes", "sign_kept_mask"]


def _arrays(*xs: Any) -> list[np.ndarray]:
    out = [np.asarray(x, dtype=np.float64) for x in xs]
    if any(x.ndim != 1 or x.shape != out[0].shape for x in out) or out[0].size == 0:
        raise ValueError(f"need 1-d arrays of one non-zero length, got {[x.shape for x in out]}")
    return out


def sign_changes(det: Any, loss: Any, time: Any) -> list[dict[str, float]]:
    """Where the sign of ``det`` changes between consecutive recorded states (all (T,)): one
    dict per change with the loss and time of the state before and after it and ``det_after``.
    A zero counts as a sign of its own (a state with det exactly 0 is a change into and out of
    it)."""
    det, loss, time = _arrays(det, loss, time)
    s = np.sign(det)
    idx = np.nonzero(s[1:] != s[:-1])[0]
    return [
        {
            "loss_before": float(loss[i]),
            "loss_after": float(loss[i + 1]),
            "time_before": float(time[i]),
            "time_after": float(time[i + 1]),
            "det_after": float(det[i + 1]),
        }
        for i in idx
    ]


def det_sign_analysis(
    det: Any, floor_measure: Any, loss: Any, time: Any, floor: float
) -> dict[str, Any]:
    """The det-sign story of one recorded trajectory (all (T,)).

    Returns ``initial_det_sign``, ``final_det_sign``, ``flips`` (:func:`sign_changes`),
    ``n_flips``, ``first_flip_loss`` (the loss at the first state with the new sign; None: never
    flipped), ``floor_reached`` / ``floor_loss`` / ``floor_time`` (first state with
    ``floor_measure < floor``), ``sign_kept_until_floor`` (every state before the floor, or
    every state when it was not reached, has the initial sign), ``flipped_only_after_floor``
    (flipped, and the first flip is at or after the floor state), ``min_floor_measure``."""
    det, fm, loss, time = _arrays(det, floor_measure, loss, time)
    if not floor > 0:
        raise ValueError(f"floor must be > 0, got {floor}")
    flips = sign_changes(det, loss, time)
    below = np.nonzero(fm < floor)[0]
    i_floor = int(below[0]) if below.size else None
    s0 = np.sign(det[0])
    kept = bool(np.all(np.sign(det[: i_floor if i_floor is not None else len(det)]) == s0))
    i_flip = int(np.nonzero(np.sign(det) != s0)[0][0]) if flips else None
    m = float(np.min(fm))
    return {
        "initial_det_sign": int(s0),
        "final_det_sign": int(np.sign(det[-1])),
        "flips": flips,
        "n_flips": len(flips),
        "first_flip_loss": flips[0]["loss_after"] if flips else None,
        "floor_reached": i_floor is not None,
        "floor_loss": None if i_floor is None else float(loss[i_floor]),
        "floor_time": None if i_floor is None else float(time[i_floor]),
        "sign_kept_until_floor": kept,
        "flipped_only_after_floor": bool(
            i_flip is not None and i_floor is not None and i_flip >= i_floor
        ),
        "min_floor_measure": m if math.isfinite(m) else None,
    }


def sign_kept_mask(det: Any, floor_measure: Any, floor: float) -> np.ndarray:
    """Boolean (T,): the states before the first one whose det sign differs from the initial
    sign or whose floor measure is below ``floor``."""
    det, fm = _arrays(det, floor_measure)
    mask = np.ones(det.shape[0], dtype=bool)
    bad = np.nonzero((np.sign(det) != np.sign(det[0])) | (fm < floor))[0]
    if bad.size:
        mask[bad[0] :] = False
    return mask
