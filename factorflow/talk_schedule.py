"""The order in which ``reproduce talk --jobs N`` starts its experiments: longest first, by each
experiment's measured time at the scale being run."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["EXPECTED_SECONDS", "longest_first"]

#: Wall seconds of each experiment, per scale, only used to start the longest first when
#: ``jobs > 1`` (a scale without a table uses quick's). quick: a `--jobs 2` talk run on the 2-core
#: reference machine (README). paper: each experiment's own time in the `--jobs 2` paper-scale
#: sitting of the seven (README's paper-scale table); IRMAE's is its eight models at ~74-190 s
#: per epoch (docs/irmae-notes.md). The orders differ: natural rank is among the shortest at
#: quick scale and the longest but one at paper scale, so quick's order would start it last.
EXPECTED_SECONDS: dict[str, dict[str, float]] = {
    "quick": {
        "arora2019-completion": 63.0,
        "arora2019-dynamics": 107.0,
        "razin2020-2x2": 9.0,
        "razin2020-perturbed": 5.0,
        "razin2020-tensor-recovery": 11.0,
        "razin2021-dynamics": 48.0,
        "razin2021-natural-rank": 8.0,
        "jing2020-irmae": 204.0,
    },
    "paper": {
        "arora2019-completion": 1486.0,
        "arora2019-dynamics": 351.0,
        "razin2020-2x2": 355.0,
        "razin2020-perturbed": 49.0,
        "razin2020-tensor-recovery": 2856.0,
        "razin2021-dynamics": 661.0,
        "razin2021-natural-rank": 4229.0,
        "jing2020-irmae": 100_000.0,
    },
}


def longest_first(ids: Sequence[str], scale: str) -> list[str]:
    """``ids`` ordered by :data:`EXPECTED_SECONDS` of ``scale``, longest first (ties and unknown
    ids keep their order). With ``jobs`` workers this is the longest-processing-time rule: the
    makespan is within 4/3 of the best schedule's (Graham 1969)."""
    table = EXPECTED_SECONDS.get(scale, EXPECTED_SECONDS["quick"])
    return sorted(ids, key=lambda i: -table.get(i, 0.0))
