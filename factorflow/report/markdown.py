"""The talk's report in Markdown (figures linked as ``<id>/<name>.png``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from factorflow.report import (
    _data_sources,
    _flat,
    _fmt,
    _headline,
    _overview_rows,
    _rejudged,
    _run_time,
    _seeds,
    _time,
    claims_table,
    totals,
)

__all__ = ["render_markdown"]


def _md(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |"]
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(_md(c) for c in r) + " |" for r in rows]
    return lines


def render_markdown(index: dict[str, Any], summaries: dict[str, dict[str, Any]]) -> str:
    """The report in Markdown (figures linked as ``<id>/<name>.png``)."""
    meta = index.get("meta", {})
    lines = [
        "# factorflow: reproducing the talk",
        "",
        _headline(totals(index, summaries)),
        "",
        f"factorflow {meta.get('factorflow')}, git commit `{meta.get('git_commit') or 'unknown'}`, "
        f"scale {index.get('scale')}, device {index.get('device')}, "
        f"seeds {index.get('seeds') or 'per scale'}, time of this sitting {index.get('total_s', 0.0):.1f} s, "
        f"python {meta.get('python')}, torch {meta.get('torch')}, started {meta.get('created')}.",
        "",
    ]
    lines += _md_table(
        ["Experiment", "Title", "Status", "Claims held / failed / not judged", "Time"],
        _overview_rows(index, summaries),
    )
    for exp_id in index["order"]:
        e = index["experiments"][exp_id]
        s = summaries.get(exp_id)
        status = e.get("status", "pending")
        lines += ["", f"## {e.get('title', exp_id)} ({status})", ""]
        info = f"*{e.get('part', '')}* · id `{exp_id}`"
        if e.get("paper"):
            info += f" · {e['paper']}"
        if t := _time(e):
            info += f" · time {t}"
        lines += [info, ""]
        if status in ("failed", "not available", "interrupted"):
            lines += [f"**{status.capitalize()}:** {e.get('error', '')}", ""]
            if e.get("traceback"):
                lines += ["```", e["traceback"], "```", ""]
        if s is None:
            continue
        for name in s.get("figures", []):
            lines += [f"![{name}]({exp_id}/{name})", ""]
        lines += ["### Claims", ""]
        if note := _rejudged(s):
            lines += [f"_{note}_", ""]
        claims = s.get("claims", [])
        if claims:
            header, rows = claims_table(claims)
            cells = [
                [
                    f"{r['claim']} [{r['id']}]" + (f" ({r['reason']})" if r["reason"] else ""),
                    f"{r['paper']} ({r['source']})" if r["source"] else r["paper"],
                    r["ours"],
                    r["tolerance"],
                    r["holds"],
                ]
                for r in rows
            ]
            lines += _md_table(header, cells)
        else:
            lines.append("No claims recorded.")
        lines += [
            "",
            "### Settings",
            "",
            f"- Seeds: {_seeds(s)}",
            f"- Data: {_data_sources(s)}",
            f"- Scale: {s.get('scale', '')}; time {_run_time(s)}; {len(s.get('rows', []))} rows",
            "",
        ]
        cfg = _flat(s.get("config") or {})
        if cfg:
            lines += _md_table(["Setting", "Value"], [[k, _fmt(v)] for k, v in cfg.items()])
    return "\n".join(lines) + "\n"
