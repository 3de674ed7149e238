"""What the runner hands an experiment's ``run``: the result folder, the device, the scale, a
logger, and the cell API (:meth:`Context.cell`, :meth:`Context.map_cells`) through which an
interrupted run resumes and independent cells run on several processes (``--workers``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Context", "OnDone"]

OnDone = Callable[[str, Any], None]  # a cell's key and value, as it finishes


@dataclass
class Context:
    """What the runner hands an experiment's run: where to put arrays, the device, the scale,
    and a logger (progress lines go to stdout and ``log.txt``)."""

    out_dir: Path
    device: Any
    scale: str
    log: Callable[[str], None] = print
    saved: list[str] = field(default_factory=list)
    cells: Any = None  # a factorflow.cells.CellStore, or None: every cell is computed
    workers: int = 1  # processes for map_cells (``--workers``); 1: this process
    threads: int = 1  # torch/BLAS threads of each such worker

    def cell(self, key: str, compute: Callable[[], Any]) -> Any:
        """One unit of work (a grid cell, a seed, a model) named by ``key``, unique in the run:
        ``compute()``, or its value from an interrupted attempt with the same settings
        (``--resume``; :mod:`factorflow.cells`). ``compute`` must depend on the settings and
        the key only (its own seeds), so a kept cell equals a recomputed one. Always computed
        in this process; :meth:`map_cells` is the same for several cells, on ``workers``."""
        return self.map_cells([(key, compute)])[0]

    def map_cells(
        self, items: Sequence[tuple[str, Callable[[], Any]]], on_done: OnDone | None = None
    ) -> list[Any]:
        """The values of several cells ``[(key, compute), ...]``, in that order: like
        :meth:`cell` for each, but with ``workers`` > 1 the cells not yet stored run on that
        many processes (:func:`factorflow.cell_pool.map_cells`, ``on_done`` included;
        ``compute`` must pickle and log through :attr:`cell_log`: it may run elsewhere)."""
        from factorflow.cell_pool import map_cells

        kw = {"workers": self.workers, "store": self.cells, "threads": self.threads}
        return map_cells(items, log=self.log, on_done=on_done, **kw)

    @property
    def cell_log(self) -> Callable[[str], None]:
        """The log a cell of :meth:`map_cells` prints to: :attr:`log`, or ``print`` in a worker."""
        return self.log if self.workers == 1 else print

    def scratch(self, key: str) -> Path | None:
        """Where cell ``key`` may keep partial state while it runs (a training checkpoint), kept
        for ``--resume`` like finished cells; None when the run keeps no cells."""
        return None if self.cells is None else self.cells.scratch(key)

    def save_arrays(self, name: str, **arrays: Any) -> str:
        """Write ``name.npz`` (numpy arrays or tensors) into the result folder; returns the file
        name. Figures and claims read it back through :meth:`Result.arrays`."""
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"array file name must be alphanumeric, got {name!r}")
        data = {
            k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
            for k, v in arrays.items()
        }
        path = Path(self.out_dir) / f"{name}.npz"
        np.savez_compressed(path, **data)
        self.saved.append(path.name)
        return path.name
