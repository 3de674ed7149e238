"""Compare two stored results of one experiment (``summary.json`` of ``factorflow reproduce``):
after a change to the library, did the rows and the claims move, and by how much?

Rows are matched by their ``--key`` columns (the run's identity; the default fits the matrix
experiments' rows, and a key that does not single out each row is refused); wall-clock columns
(``--ignore``) are left out. For every other column holding numbers the largest relative
difference |a - b| / max(|a|, |b|) over matched rows is printed, and the rows that differ by more
than ``--rtol`` in any column are listed. Claims are compared by their outcome (held, failed, not
judged).

    python benchmarks/compare_results.py OLD_DIR NEW_DIR [--rtol 1e-6] [--key ...]
        [--only COL=VALUE ...] [--json OUT]

Exit status 0 whether or not they differ; 2 on unreadable input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

TIMING = ("batch_wall_s", "train_s", "wall_s", "elapsed_s")
KEY = ("method", "optimizer", "n_obs", "seed", "depth", "init", "init_scale")


def _load(d: Path) -> dict:
    path = d / "summary.json" if d.is_dir() else d
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        sys.exit(f"compare_results: cannot read {path}: {e}")


def _index(rows: list[dict], key: Sequence[str], name: str) -> dict[tuple, dict]:
    out = {tuple(json.dumps(r.get(k)) for k in key): r for r in rows}
    if len(out) != len(rows):
        sys.exit(f"compare_results: --key {' '.join(key)} does not single out the {name} rows")
    return out


def _numbers(v) -> list[float]:
    """A cell's numbers: a number, or a (nested) list of them; [] for anything else."""
    if isinstance(v, bool) or v is None:
        return []
    if isinstance(v, int | float):
        return [float(v)]
    if isinstance(v, list):
        return [x for item in v for x in _numbers(item)]
    return []


def _rel(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    den = max(abs(a), abs(b))
    return math.inf if not math.isfinite(den) else abs(a - b) / den


def _outcome(claim: dict) -> str:
    holds = claim.get("holds")
    return "not judged" if holds is None else ("held" if holds else "failed")


def compare(
    old: dict,
    new: dict,
    key: Sequence[str],
    ignore: set[str],
    rtol: float,
    only: dict[str, str] | None = None,
) -> dict:
    """Matched rows, the largest relative difference per numeric column (and the row where it
    is, with both values when they are single numbers), the rows differing by more than ``rtol``
    and the claims' outcomes. ``only``: compare just the rows whose columns print as given
    (e.g. ``{"optimizer": "flow"}``); the claims are compared whole."""

    def keep(rows: list[dict]) -> list[dict]:
        return [r for r in rows if all(str(r.get(c)) == v for c, v in (only or {}).items())]

    old_rows, new_rows = keep(old["rows"]), keep(new["rows"])
    old_by, new_by = _index(old_rows, key, "old"), _index(new_rows, key, "new")
    columns = {c for r in old_rows + new_rows for c, v in r.items() if _numbers(v)}
    columns -= set(key) | ignore
    matched = [k for k in old_by if k in new_by]
    worst: dict[str, float] = {}
    where: dict[str, dict] = {}
    differing = []
    for k in matched:
        a, b = old_by[k], new_by[k]
        row_worst = 0.0
        for col in columns:
            xa, xb = _numbers(a.get(col)), _numbers(b.get(col))
            if len(xa) != len(xb):
                d = math.inf
            else:
                d = max((_rel(x, y) for x, y in zip(xa, xb, strict=True)), default=0.0)
            if d > worst.get(col, 0.0) or col not in worst:
                worst[col] = d
                scalar = len(xa) == len(xb) == 1
                where[col] = {
                    "row": {c: a.get(c) for c in key},
                    **({"old": xa[0], "new": xb[0]} if scalar else {}),
                }
            row_worst = max(row_worst, d)
        if row_worst > rtol:
            differing.append({"row": {c: a.get(c) for c in key}, "max_rel_diff": row_worst})
    claims_old = {c["id"]: _outcome(c) for c in old.get("claims", [])}
    claims_new = {c["id"]: _outcome(c) for c in new.get("claims", [])}
    return {
        "only": only or {},
        "rows_old": len(old_rows),
        "rows_new": len(new_rows),
        "rows_matched": len(matched),
        "rows_differing": len(differing),
        "rtol": rtol,
        "max_rel_diff_by_column": dict(sorted(worst.items())),
        "largest_difference_at": dict(sorted(where.items())),
        "differing": sorted(differing, key=lambda d: -d["max_rel_diff"]),
        "claims": {i: [claims_old.get(i), claims_new.get(i)] for i in claims_old | claims_new},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--key", nargs="+", default=list(KEY), help="the columns naming a run")
    ap.add_argument("--ignore", nargs="*", default=list(TIMING))
    ap.add_argument(
        "--only", nargs="*", default=[], metavar="COL=VALUE", help="compare only these rows"
    )
    ap.add_argument("--json", type=Path, help="also write the comparison here")
    args = ap.parse_args()
    bad = [o for o in args.only if "=" not in o]
    if bad:
        ap.error(f"--only takes COL=VALUE, got {bad}")
    only = dict(o.split("=", 1) for o in args.only)
    old, new = _load(args.old), _load(args.new)
    out = compare(old, new, args.key, set(args.ignore), args.rtol, only)
    print(
        f"rows: {out['rows_old']} old, {out['rows_new']} new, {out['rows_matched']} matched, "
        f"{out['rows_differing']} differ by more than {args.rtol:g} relative"
    )
    for col, d in out["max_rel_diff_by_column"].items():
        at = out["largest_difference_at"].get(col, {})
        vals = f" ({at['old']:.6g} -> {at['new']:.6g})" if "old" in at and d > 0 else ""
        ident = ", ".join(f"{k}={v}" for k, v in at.get("row", {}).items()) if d > 0 else ""
        print(
            f"  {col}: largest relative difference {d:.2e}{vals}"
            + (f" at {ident}" if ident else "")
        )
    for d in out["differing"][:10]:
        ident = ", ".join(f"{k}={v}" for k, v in d["row"].items())
        print(f"  differs by {d['max_rel_diff']:.2e}: {ident}")
    for cid, (a, b) in out["claims"].items():
        print(f"claim {cid}: {a} -> {b}" + ("" if a == b else "  (changed)"))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
