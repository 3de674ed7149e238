"""Registered experiments: one module per published result, discovered automatically.

Each module of this package that defines ``EXPERIMENT`` (a :class:`factorflow.experiment.
Experiment`) is registered under its id. Experiment modules import the library only: never each
other, never plotting (figures are registered in :mod:`factorflow.plotting` by id). Run one with
:func:`factorflow.runner.run_experiment` or ``factorflow reproduce ID``.
"""

from __future__ import annotations

import importlib
import pkgutil

from factorflow.experiment import Experiment

__all__ = ["ALIASES", "EXPERIMENTS"]


def _discover() -> dict[str, Experiment]:
    found: dict[str, Experiment] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        exp = getattr(importlib.import_module(f"{__name__}.{info.name}"), "EXPERIMENT", None)
        if exp is None:
            continue
        if not isinstance(exp, Experiment):
            raise TypeError(f"{info.name}.EXPERIMENT must be an Experiment, got {type(exp)}")
        if exp.id in found:
            raise RuntimeError(f"experiment id {exp.id!r} registered twice")
        found[exp.id] = exp
    return found


EXPERIMENTS: dict[str, Experiment] = _discover()
#: Short names (``irmae``) for registered ids.
ALIASES: dict[str, str] = {a: e.id for e in EXPERIMENTS.values() for a in e.aliases}
