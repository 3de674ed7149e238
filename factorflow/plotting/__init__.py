"""Figures, drawn only from result files (summary rows, trajectories), never from training state.

matplotlib is forced onto the Agg backend here, so figures render on machines without a display.
Per-experiment figure functions live in the modules of this package.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["new_figure", "plt"]


def new_figure(n_panels: int = 1, width: float = 4.2, height: float = 3.4):
    """A row of ``n_panels`` axes in the house style; returns (fig, axes list)."""
    fig, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False)
    for ax in axes[0]:
        ax.grid(True, which="both", alpha=0.25)
    return fig, list(axes[0])
