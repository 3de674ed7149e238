"""The talk's report as one self-contained HTML page (figures as base64 data URIs, inline CSS,
no external links)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from factorflow.report import (
    _data_sources,
    _flat,
    _fmt,
    _overview_rows,
    _rejudged,
    _run_time,
    _seeds,
    _time,
    claims_table,
    totals,
)

__all__ = ["render_html"]


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1000px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .15em; margin-top: 2.2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
.badge { display: inline-block; padding: .05em .5em; border-radius: .8em; font-size: .85em;
         font-weight: 600; white-space: nowrap; }
.holds, .ok { background: #dff3e3; color: #17692b; }
.fails, .failed { background: #fbe0e0; color: #9b1c1c; }
.not-judged, .not-available, .interrupted, .pending, .running { background: #eee; color: #555; }
.detail { color: #666; font-size: .88em; }
.meta { color: #555; font-size: .9em; }
.part { color: #777; text-transform: uppercase; letter-spacing: .05em; font-size: .8em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #666; font-size: .85em; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .85em; }
details { margin: .6em 0; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _badge(label: str) -> str:
    return f'<span class="badge {label.replace(" ", "-")}">{_e(label)}</span>'


def _mime(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower()
    return {"svg": "image/svg+xml", "jpg": "image/jpeg", "jpeg": "image/jpeg"}.get(ext, "image/png")


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_claims(claims: Sequence[dict[str, Any]]) -> str:
    if not claims:
        return "<p>No claims recorded.</p>"
    header, rows = claims_table(claims)
    cells = [
        [
            f"{_e(r['claim'])} <span class='detail'>[{_e(r['id'])}]</span>"
            + (f"<div class='detail'>{_e(r['reason'])}</div>" if r["reason"] else ""),
            f"{_e(r['paper'])}<div class='detail'>{_e(r['source'])}</div>",
            _e(r["ours"]),
            f"<span class='detail'>{_e(r['tolerance'])}</span>",
            _badge(r["holds"]),
        ]
        for r in rows
    ]
    return _html_table(header, cells)


def _html_rows(rows: Sequence[dict[str, Any]], limit: int = 100) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    body = [[_e(_fmt(r.get(c), 4)) for c in cols] for r in rows[:limit]]
    more = f" (first {limit} of {len(rows)})" if len(rows) > limit else ""
    return (
        f"<details><summary>Rows: {len(rows)} fitted models{more}</summary>"
        f"{_html_table(cols, body)}</details>"
    )


def _html_section(
    exp_id: str, entry: dict[str, Any], summary: dict[str, Any] | None, exp_dir: Path
) -> str:
    status = entry.get("status", "pending")
    out = [
        f'<section id="{_e(exp_id)}">',
        f"<div class='part'>{_e(entry.get('part', ''))}</div>",
        f"<h2>{_e(entry.get('title', exp_id))} {_badge(status)}</h2>",
        f"<p class='meta'>id <code>{_e(exp_id)}</code>"
        + (f" · {_e(entry['paper'])}" if entry.get("paper") else "")
        + (f" · time {_e(t)}" if (t := _time(entry)) else "")
        + "</p>",
    ]
    if status in ("failed", "not available", "interrupted"):
        out.append(
            f"<p><strong>{_e(status.capitalize())}:</strong> {_e(entry.get('error', ''))}</p>"
        )
        if entry.get("traceback"):
            out.append(f"<pre>{_e(entry['traceback'])}</pre>")
    if summary is not None:
        for name in summary.get("figures", []):
            path = exp_dir / name
            if path.is_file():
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                out.append(
                    f"<figure><img alt='{_e(name)}' src='data:{_mime(name)};base64,{data}'>"
                    f"<figcaption>{_e(name)}</figcaption></figure>"
                )
            else:
                out.append(f"<p class='detail'>figure {_e(name)} is missing</p>")
        out.append("<h3>Claims</h3>")
        if note := _rejudged(summary):
            out.append(f"<p class='detail'>{_e(note)}</p>")
        out.append(_html_claims(summary.get("claims", [])))
        out.append("<h3>Settings</h3>")
        out.append(
            f"<p><strong>Seeds:</strong> {_e(_seeds(summary))}<br>"
            f"<strong>Data:</strong> {_e(_data_sources(summary))}<br>"
            f"<strong>Scale:</strong> {_e(summary.get('scale', ''))} · "
            f"<strong>time:</strong> {_e(_run_time(summary))}</p>"
        )
        cfg = _flat(summary.get("config") or {})
        if cfg:
            out.append(
                "<details open><summary>Config</summary>"
                + _html_table(["Setting", "Value"], [[_e(k), _e(_fmt(v))] for k, v in cfg.items()])
                + "</details>"
            )
        out.append(_html_rows(summary.get("rows", [])))
    out.append("</section>")
    return "\n".join(out)


def render_html(out: Path, index: dict[str, Any], summaries: dict[str, dict[str, Any]]) -> str:
    """The whole report as one self-contained HTML page."""
    t = totals(index, summaries)
    c, e = t["claims"], t["experiments"]
    meta = index.get("meta", {})
    overview = [
        [f"<a href='#{_e(r[0])}'>{_e(r[0])}</a>", _e(r[1]), _badge(r[2]), _e(r[3]), _e(r[4])]
        for r in _overview_rows(index, summaries)
    ]
    head = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>factorflow: reproducing the talk</title>
<style>{CSS}</style></head><body>
<h1>factorflow: reproducing the talk</h1>
<p><strong>Claims:</strong> {_badge("holds")} {c["held"]} held ·
{_badge("fails")} {c["failed"]} failed · {_badge("not judged")} {c["not_judged"]} not judged
(of {c["total"]}) &nbsp;|&nbsp; <strong>Experiments:</strong> {e["ok"]} ran,
{e["failed"]} failed, {e["not_available"]} not available</p>
<p class="meta">factorflow {_e(meta.get("factorflow"))} · git commit
<code>{_e(meta.get("git_commit") or "unknown")}</code> · scale {_e(index.get("scale"))} ·
device {_e(index.get("device"))} · seeds {_e(index.get("seeds") or "per scale")} ·
time of this sitting {index.get("total_s", 0.0):.1f} s · python {_e(meta.get("python"))} ·
torch {_e(meta.get("torch"))} · started {_e(meta.get("created"))}</p>
{_html_table(["Experiment", "Title", "Status", "Claims held / failed / not judged", "Time"], overview)}
"""
    sections = [
        _html_section(i, index["experiments"][i], summaries.get(i), out / i) for i in index["order"]
    ]
    return head + "\n".join(sections) + "\n</body></html>\n"
