"""Small helpers shared by the experiment modules: claims, seeds per scale, configs per scale,
figure saving."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["claim", "n_seeds", "save_figure", "scaled_config"]

C = TypeVar("C")


def claim(
    claim_id: str,
    text: str,
    *,
    paper: Any,
    measured: Any,
    holds: bool | None,
    detail: str | None = None,
) -> dict[str, Any]:
    """One entry of ``summary["claims"]``: the paper's statement, the paper's number (or None),
    our measured number, and whether it held (None when it could not be judged, with ``detail``
    saying why)."""
    out = {
        "id": claim_id,
        "text": text,
        "paper": paper,
        "measured": measured,
        "holds": None if holds is None else bool(holds),
    }
    if detail:
        out["detail"] = detail
    return out


def n_seeds(seeds: int | None, scale: str, quick: int, paper: int) -> int:
    """The number of seeds: the user's, or the scale's default."""
    if seeds is not None:
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        return int(seeds)
    return quick if scale == "quick" else paper


def scaled_config(
    cls: type[C],
    scales: dict[str, dict[str, Any]],
    scale: str,
    options: dict[str, Any],
    exp_id: str,
    base: dict[str, Any] | None = None,
) -> C:
    """``cls`` (a settings dataclass) built from the scale's overrides (``scales[scale]``, or
    ``base`` when given) and then ``options``; an unknown scale or option key is a ValueError
    naming the known ones (a misspelt option never passes silently)."""
    if scale not in scales:
        raise ValueError(f"scale must be one of {sorted(scales)}, got {scale!r}")
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    bad = sorted(set(options) - known)
    if bad:
        raise ValueError(f"unknown options {bad} for {exp_id}; known: {sorted(known)}")
    return cls(**{**(scales[scale] if base is None else base), **options})


def save_figure(fig: Any, out_dir: Path, name: str) -> str:
    """Save a matplotlib figure as ``out_dir/name.png`` (150 dpi), close it, return the file name."""
    path = Path(out_dir) / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name
