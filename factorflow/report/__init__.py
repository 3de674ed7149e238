"""The talk's report, drawn only from files: ``DIR/talk.json``, each ``DIR/<id>/summary.json``
and its figures. ``DIR/report.html`` is self-contained (figures as base64 data URIs, inline CSS,
no external links); ``DIR/report.md`` links the PNG files. Both show the same claims table
(:func:`claims_table`) and the same headline counts (:func:`totals`); the renderers are
:mod:`factorflow.report.html` and :mod:`factorflow.report.markdown`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from factorflow.cells import sittings_time
from factorflow.results import read_json

__all__ = [
    "claim_counts",
    "claims_table",
    "totals",
    "write_report",
]

DATA_KEYS = ("data_source", "data_sources", "dataset", "datasets", "data", "data_dir")


def claim_counts(claims: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Numbers of claims that held, failed, and could not be judged (``holds`` None)."""
    held = sum(1 for c in claims if c.get("holds") is True)
    failed = sum(1 for c in claims if c.get("holds") is False)
    return {"held": held, "failed": failed, "not_judged": len(claims) - held - failed}


# ---------------------------------------------------------------------------------------------
# Formatting helpers


def _fmt(v: Any, max_items: int = 8) -> str:
    """A value for a table cell: 4 significant digits, short lists."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list | tuple):
        items = [_fmt(x, max_items) for x in v[:max_items]]
        more = f", … ({len(v)} in all)" if len(v) > max_items else ""
        return "[" + ", ".join(items) + more + "]"
    if isinstance(v, dict):
        items = [f"{k}: {_fmt(x, max_items)}" for k, x in list(v.items())[:max_items]]
        more = ", …" if len(v) > max_items else ""
        return "{" + ", ".join(items) + more + "}"
    return str(v)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _seeds(summary: dict[str, Any]) -> str:
    cfg = _flat(summary.get("config") or {})
    parts = [f"{k} = {_fmt(v)}" for k, v in cfg.items() if "seed" in k.rsplit(".", 1)[-1]]
    row_seeds = sorted(
        {r["seed"] for r in summary.get("rows", []) if isinstance(r.get("seed"), int)}
    )
    if row_seeds:
        parts.append(f"seeds in the rows: {_fmt(row_seeds, 20)}")
    return "; ".join(parts) or "not stated in the summary"


def _data_sources(summary: dict[str, Any]) -> str:
    cfg = _flat(summary.get("config") or {})
    parts = [_fmt(v) for k, v in cfg.items() if k.rsplit(".", 1)[-1] in DATA_KEYS and v is not None]
    return "; ".join(dict.fromkeys(parts)) or "not stated in the summary's config"


def _run_time(summary: dict[str, Any]) -> str:
    """A result's time, from its summary (:func:`sittings_time`)."""
    if summary.get("elapsed_s") is None:
        return "—"
    return sittings_time(summary["elapsed_s"], summary.get("cells"))


def _time(e: dict[str, Any]) -> str | None:
    """An index entry's time: this sitting's, or, for a result kept from an earlier sitting
    (``--resume``), that run's own; with the time over all sittings when the run kept or
    resumed cells of earlier ones (:func:`sittings_time`)."""
    if e.get("elapsed_s") is None:
        return None
    if e.get("kept") and e.get("result_elapsed_s") is not None:
        return f"{sittings_time(e['result_elapsed_s'], e.get('kept_cells'))} (kept from an earlier run)"
    return sittings_time(e["elapsed_s"], e.get("kept_cells"))


def _rejudged(summary: dict[str, Any]) -> str | None:
    """A line for a result whose claims were judged again (``factorflow judge``), or None."""
    r = summary.get("rejudged")
    if not r:
        return None
    changed = "; ".join(
        f"{c['id']}: {_holds_label(c['was'])} -> {_holds_label(c['now'])}" for c in r["changed"]
    )
    return (
        f"Claims judged again from the stored rows on {r.get('created', '?')} by git commit "
        f"{r.get('git_commit') or 'unknown'} (`factorflow judge`); "
        + (f"verdicts changed: {changed}" if changed else "no verdict changed")
    )


def _holds_label(h: Any) -> str:
    return {True: "holds", False: "fails"}.get(h, "not judged")


def load_summaries(out: Path, index: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``summary.json`` of every experiment the talk's ``index`` lists as finished ("ok")
    whose file is there, by experiment id, in the talk's order."""
    found = {}
    for exp_id in index.get("order", []):
        entry = index["experiments"].get(exp_id, {})
        path = out / exp_id / "summary.json"
        if entry.get("status") == "ok" and path.is_file():
            found[exp_id] = read_json(path)
    return found


def totals(index: dict[str, Any], summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The headline: ``claims`` (held / failed / not_judged / total, summed over the
    experiments' claims) and ``experiments`` (ok / failed / not_available / other statuses),
    kept apart so that one count can never overwrite the other."""
    claims = [c for s in summaries.values() for c in s.get("claims", [])]
    statuses = [e.get("status") for e in index["experiments"].values()]
    known = ("ok", "failed", "not available")
    return {
        "claims": {**claim_counts(claims), "total": len(claims)},
        "experiments": {
            "ok": statuses.count("ok"),
            "failed": statuses.count("failed"),
            "not_available": statuses.count("not available"),
            "other": sum(1 for x in statuses if x not in known),
        },
    }


def _headline(t: dict[str, Any]) -> str:
    c, e = t["claims"], t["experiments"]
    return (
        f"Claims: {c['held']} held, {c['failed']} failed, {c['not_judged']} not judged "
        f"(of {c['total']}). Experiments: {e['ok']} ran, {e['failed']} failed, "
        f"{e['not_available']} not available."
    )


def claims_table(claims: Sequence[dict[str, Any]]) -> tuple[list[str], list[dict[str, str]]]:
    """The claims as one table for both renderers: header and rows of plain-text cells
    (``claim``, ``id``, ``paper``, ``source``, ``ours``, ``tolerance``, ``holds``, ``reason``)."""
    header = ["Claim", "Paper (source)", "Ours", "Judged by", "Holds?"]
    rows = []
    for c in claims:
        rows.append(
            {
                "claim": str(c.get("text", "")),
                "id": str(c.get("id", "")),
                "paper": _fmt(c.get("paper")),
                "source": str(c.get("source") or ""),
                "ours": _fmt(c.get("measured")),
                "tolerance": str(c.get("tolerance") or ""),
                "holds": _holds_label(c.get("holds")),
                "reason": str(c.get("reason") or c.get("detail") or ""),
            }
        )
    return header, rows


def _overview_rows(index: dict[str, Any], summaries: dict[str, dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for exp_id in index["order"]:
        e = index["experiments"][exp_id]
        c = claim_counts(summaries[exp_id].get("claims", [])) if exp_id in summaries else None
        rows.append(
            [
                exp_id,
                e.get("title", exp_id),
                e.get("status", ""),
                f"{c['held']} / {c['failed']} / {c['not_judged']}" if c else "—",
                _time(e) or "—",
            ]
        )
    return rows


def write_report(out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``out_dir/report.html`` and ``out_dir/report.md`` from ``out_dir/talk.json`` and
    the experiments' result files; returns their paths."""
    out = Path(out_dir)
    path = out / "talk.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `factorflow reproduce talk` first")
    from factorflow.report.html import render_html
    from factorflow.report.markdown import render_markdown

    index = read_json(path)
    summaries = load_summaries(out, index)
    html_path, md_path = out / "report.html", out / "report.md"
    for p, text in (
        (html_path, render_html(out, index, summaries)),
        (md_path, render_markdown(index, summaries)),
    ):
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(p)
    return html_path, md_path
