"""Figures, drawn only from result files (summary rows, trajectories), never from training state.

matplotlib is forced onto the Agg backend here, so figures render on machines without a display.
Per-experiment figure functions live in the modules of this package.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["figure_functions", "new_figure", "plt", "save_figure"]


def new_figure(
    n_panels: int = 1, width: float = 4.2, height: float = 3.4
) -> tuple[Figure, list[Axes]]:
    """A row of ``n_panels`` axes in the house style; returns (fig, axes list)."""
    fig, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False)
    for ax in axes[0]:
        ax.grid(True, which="both", alpha=0.25)
    return fig, list(axes[0])


def save_figure(fig: Figure, out_dir: Path, name: str) -> str:
    """Save a matplotlib figure as ``out_dir/name.png`` (150 dpi), close it, return the file
    name."""
    path = Path(out_dir) / f"{name}.png"
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path.name


def figure_functions(exp_id: str) -> list[Callable[[Any], dict[str, Any]]]:
    """The figure functions registered for experiment ``exp_id``: each module of this package
    may define ``FIGURES = {experiment id: (draw, ...)}``, where ``draw(result)`` takes a
    :class:`~factorflow.experiment.Result` (read from the result folder) and returns
    ``{file name: matplotlib figure}``."""
    found: list[Callable[[Any], dict[str, Any]]] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        mod = importlib.import_module(f"{__name__}.{info.name}")
        found += list(getattr(mod, "FIGURES", {}).get(exp_id, ()))
    return found
