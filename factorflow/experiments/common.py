"""Small helpers shared by the experiment modules: claims, seeds per scale, figure saving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["claim", "n_seeds", "save_figure"]


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


def save_figure(fig: Any, out_dir: Path, name: str) -> str:
    """Save a matplotlib figure as ``out_dir/name.png`` (150 dpi), close it, return the file name."""
    path = Path(out_dir) / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name
