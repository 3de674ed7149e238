"""The rewrite of the experiment layer kept the results: a fresh quick run of the natural-data
rank experiment gives the rows and claim outcomes saved from the last quick run before it
(``tests/data/natural_rank_quick_before.json``, written by commit 304ba80's code). About 30 s;
needs Fashion-MNIST (Debian's dataset-fashion-mnist, installed by scripts/setup.sh)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from factorflow.data.images import DataNotFoundError
from factorflow.runner import run_experiment

SAVED = json.loads((Path(__file__).parent / "data" / "natural_rank_quick_before.json").read_text())
TIMING = {"batch_wall_s"}  # wall-clock time, not a result


def test_quick_natural_rank_rows_and_claims_unchanged(tmp_path):
    try:
        new = run_experiment(
            "razin2021-natural-rank", tmp_path / "r", scale="quick", log=lambda m: None
        )
    except DataNotFoundError as e:  # pragma: no cover - setup.sh installs the data
        pytest.skip(f"Fashion-MNIST not available: {e}")
    old_rows, new_rows = SAVED["rows"], new["rows"]
    assert len(new_rows) == len(old_rows)
    key = ("variant", "rank", "optimizer", "seed")
    by_key = {tuple(r[k] for k in key): r for r in new_rows}
    for old in old_rows:
        row = by_key[tuple(old[k] for k in key)]
        assert set(old) <= set(row), sorted(set(old) - set(row))  # every old column is kept
        for col, want in old.items():
            if col in TIMING:
                continue
            got = row[col]
            if isinstance(want, float) and isinstance(got, float):
                assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), (col, got, want)
            else:
                assert got == want, (col, got, want)
    outcomes = {c["id"]: c["holds"] for c in new["claims"]}
    for c in SAVED["claims"]:
        assert outcomes[c["id"]] == c["holds"], c["id"]
