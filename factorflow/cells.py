"""Finished cells of an unfinished run, kept on disk so a paper-scale run can span sittings.

A *cell* is one unit of an experiment's work with a key of its own (one grid cell, one seed,
one model), a deterministic function of the settings and that key: its random draws come from
its own seeds, never from a stream that earlier cells advanced. :meth:`CellStore.get` computes a
cell, or returns the value a previous attempt stored under the same key, and stores every new
value at once (pickle, written to a temporary name and renamed, so a kill never leaves half a
file). The runner (:func:`factorflow.runner.run_experiment`) opens one store per result folder
beside it (``.<name>.cells``), stamped with the experiment, scale and settings, and records in
the summary how many cells were kept and the seconds they had taken (``cells``; cells of the
first format, stored without their time, are counted in ``kept_untimed``), and the seconds
earlier attempts spent on the cells this one resumed from their scratch state
(``resumed_seconds``). ``resume`` reuses a store with the same stamp and refuses one with
another (with ``overwrite`` it discards it: the talk reruns changed experiments); a fresh run
discards the store, and a finished run removes it.
Pickle runs code from the file it reads: the store is a private cache, read only from a folder
the same user wrote.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pickle
import re
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from factorflow.results import jsonable, read_json, write_json

__all__ = ["CellStore", "cells_progress", "count_cells", "read_cell", "sittings_time"]

T = TypeVar("T")
_STAMP = "stamp.json"
_FORMAT = "factorflow-cell-1"  # stored as (_FORMAT, value, compute seconds)


def read_cell(path: Path) -> tuple[Any, float | None]:
    """A stored cell's ``(value, compute seconds)`` (None for the first format, stored bare)."""
    with Path(path).open("rb") as f:
        stored = pickle.load(f)  # noqa: S301 - our own cache, see the module doc
    if isinstance(stored, tuple) and len(stored) == 3 and stored[0] == _FORMAT:
        return stored[1], stored[2]
    return stored, None


def _cells(folder: Path) -> tuple[list[str], list[Path]]:
    """Keys of the finished cells, and the scratch files of the cells not finished."""
    done = [p.stem for p in Path(folder).glob("*.pkl")]
    running = [
        p
        for p in sorted(Path(folder).glob("*.partial"))
        if not any(p.stem == k or p.stem.startswith(f"{k}-") for k in done)
    ]
    return done, running


def sittings_time(own: float, cells: dict[str, Any] | None) -> str:
    """``own`` seconds (a run's last sitting), and when the run kept or resumed cells of
    earlier sittings (the summary's ``cells``, :meth:`CellStore.summary`) the time over all of
    them: ``own`` plus the kept cells' ``kept_seconds`` and the resumed cells' earlier
    ``resumed_seconds`` ("at least" when some kept cells were stored without their time)."""
    cells = cells or {}
    earlier = float(cells.get("kept_seconds") or 0.0) + float(cells.get("resumed_seconds") or 0.0)
    if earlier <= 0.0 and not cells.get("kept_untimed"):
        return f"{own:.1f} s"
    least = "at least " if cells.get("kept_untimed") else ""
    return f"{own:.1f} s in the last sitting, {least}{own + earlier:.1f} s over all sittings"


def _partial_seconds(folder: Path, key: str) -> float:
    """The seconds that earlier attempts at cell ``key`` spent, as its scratch files' side files
    say (``elapsed_s``, :meth:`CellStore.scratch`); 0.0 when none says."""
    total = 0.0
    for side in [
        *Path(folder).glob(f"{glob.escape(key)}.partial.json"),
        *Path(folder).glob(f"{glob.escape(key)}-*.partial.json"),
    ]:
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            total += float(read_json(side)["elapsed_s"])
    return total


def count_cells(folder: Path) -> tuple[int, int]:
    """(finished, in progress) cells of a store folder: ``<key>.pkl`` files, and scratch files
    (``<key>.partial`` or ``<key>-<name>.partial``, :meth:`CellStore.scratch`) of cells not
    finished; a finished cell's scratch file is kept with the store but is not in progress."""
    done, running = _cells(folder)
    return len(done), len(running)


def cells_progress(folder: Path) -> dict[str, dict[str, Any]]:
    """What the cells in progress of a store folder say of their progress: ``{scratch name:
    {"done", "total", "unit", "elapsed_s"}}`` from ``<scratch file>.json`` beside each scratch
    file that has one (:meth:`CellStore.scratch`); an unreadable one is left out."""
    out = {}
    for p in _cells(folder)[1]:
        side = p.with_name(f"{p.name}.json")
        with contextlib.suppress(OSError, ValueError):
            out[p.stem] = read_json(side)
    return out


class CellStore:
    """A folder of finished cells: ``<key>.pkl`` each, and ``stamp.json`` naming the run they
    belong to (``stamp``: a JSON-able mapping, e.g. experiment, scale and settings)."""

    def __init__(self, folder: Path, stamp: Mapping[str, Any]) -> None:
        self.folder = Path(folder)
        self.stamp = jsonable(dict(stamp))
        self.kept = 0  # cells returned from the store in this attempt
        self.computed = 0  # cells computed (and stored) in this attempt
        self.kept_seconds = 0.0  # wall seconds the kept cells took when they were computed
        self.kept_untimed = 0  # kept cells stored without their compute time (first format)
        self.resumed_seconds = 0.0  # earlier attempts' time in cells this attempt finished
        self._earlier: dict[str, float] = {}  # key -> earlier attempts' seconds, until put
        self._seen: set[str] = set()

    @classmethod
    def open(
        cls,
        folder: Path,
        stamp: Mapping[str, Any],
        *,
        resume: bool,
        overwrite: bool = False,
        log: Callable[[str], None] = print,
    ) -> CellStore:
        """The store for a run with ``stamp``. An existing folder is reused with ``resume`` when
        its stamp is the same, refused (ValueError) with ``resume`` when it is not (discarded
        instead with ``overwrite``), and discarded without ``resume``."""
        store = cls(folder, stamp)
        if store.folder.exists():
            old = store.folder / _STAMP
            done, running = count_cells(store.folder)
            n = done + running
            same = old.is_file() and read_json(old) == store.stamp
            if resume and same:
                partial = f" and {n - done} in progress" if n > done else ""
                log(f"resuming: {done} finished cells{partial} in {store.folder}")
                return store
            if resume and n and not overwrite:
                raise ValueError(
                    f"{store.folder} holds {n} cells of a run with other settings; "
                    "rerun with the same settings and --resume, or without --resume to discard them"
                )
            if n:
                why = "with other settings" if resume else "(--resume keeps them)"
                log(f"discarding {n} cells of an interrupted run {why}")
            shutil.rmtree(store.folder)
        store.folder.mkdir(parents=True)
        write_json(store.folder / _STAMP, store.stamp)
        return store

    def _path(self, key: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9_.=+-]+", key) or key.startswith("."):
            raise ValueError(f"cell key must be letters, digits and _.=+- only, got {key!r}")
        return self.folder / f"{key}.pkl"

    def get(self, key: str, compute: Callable[[], T]) -> T:
        """The value of cell ``key``: from the store when a previous attempt finished it, else
        ``compute()``, stored before it is returned. A key used twice in one run is an error
        (two cells would share one file)."""
        found, value = self.load(key)
        if found:
            return value
        t0 = time.perf_counter()
        value = compute()
        self.put(key, value, time.perf_counter() - t0)
        return value

    def load(self, key: str) -> tuple[bool, Any]:
        """``(True, value)`` when a previous attempt stored cell ``key``, else ``(False, None)``;
        marks ``key`` as used in this run (a second use is a ValueError)."""
        path = self._path(key)
        if key in self._seen:
            raise ValueError(f"cell key {key!r} used twice in one run")
        self._seen.add(key)
        if not path.is_file():
            self._earlier[key] = _partial_seconds(self.folder, key)
            return False, None
        value, seconds = read_cell(path)
        self.kept += 1
        if seconds is not None:
            self.kept_seconds += seconds
        else:
            self.kept_untimed += 1  # a bare value (the first format): its time is unknown
        return True, value

    def put(self, key: str, value: Any, seconds: float) -> None:
        """Store the value of cell ``key``, computed in ``seconds`` in this attempt (atomically:
        a temporary file renamed). A cell resumed from its scratch state is stored with the
        seconds its earlier attempts said they had spent as well (:meth:`scratch`), so its
        time is the whole of it when a later sitting keeps it."""
        path = self._path(key)
        earlier = self._earlier.pop(key, 0.0)
        self.resumed_seconds += earlier
        seconds += earlier
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as f:
            pickle.dump((_FORMAT, value, seconds), f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        self.computed += 1

    def summary(self) -> dict[str, Any]:
        """What this attempt kept and computed, for the run's summary."""
        out = {"kept": self.kept, "computed": self.computed, "kept_seconds": self.kept_seconds}
        if self.kept_untimed:  # kept_seconds then leaves these cells' time out
            out["kept_untimed"] = self.kept_untimed
        if self.resumed_seconds:
            out["resumed_seconds"] = self.resumed_seconds
        return out

    def scratch(self, key: str) -> Path:
        """A file for the partial state of a cell while it runs (a training checkpoint, say):
        kept with the store across attempts, removed with it. ``key``: the cell's key, or the
        cell's key, ``-`` and a name (so :func:`count_cells` knows whose state it is). The cell
        may say how far it is in ``<that file>.json`` (``{"done", "total", "unit",
        "elapsed_s"}``), which ``factorflow status`` shows (:func:`cells_progress`); its
        ``elapsed_s`` (the cell's seconds over every attempt so far) is added to the cell's
        time when an attempt resumes it (:meth:`put`)."""
        return self._path(key).with_suffix(".partial")

    def remove(self) -> None:
        """Delete the store (the run finished: its result holds everything)."""
        shutil.rmtree(self.folder, ignore_errors=True)
