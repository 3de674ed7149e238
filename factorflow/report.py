"""The talk's report, drawn only from files: ``DIR/talk.json``, each ``DIR/<id>/summary.json``
and its figures. ``DIR/report.html`` is self-contained (figures as base64 data URIs, inline CSS,
no external links); ``DIR/report.md`` links the PNG files. Both show the same claims table
(:func:`claims_table`) and the same headline counts (:func:`totals`).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from factorflow.results import read_json

__all__ = [
    "claim_counts",
    "claims_table",
    "render_html",
    "render_markdown",
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


def _holds_label(h: Any) -> str:
    return {True: "holds", False: "fails"}.get(h, "not judged")


def load_summaries(out: Path, index: dict[str, Any]) -> dict[str, dict[str, Any]]:
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


# ---------------------------------------------------------------------------------------------
# HTML

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
        + (f" · time {entry['elapsed_s']:.1f} s" if entry.get("elapsed_s") is not None else "")
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
        out.append(_html_claims(summary.get("claims", [])))
        out.append("<h3>Settings</h3>")
        out.append(
            f"<p><strong>Seeds:</strong> {_e(_seeds(summary))}<br>"
            f"<strong>Data:</strong> {_e(_data_sources(summary))}<br>"
            f"<strong>Scale:</strong> {_e(summary.get('scale', ''))} · "
            f"<strong>time:</strong> {_fmt(summary.get('elapsed_s'))} s</p>"
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
                f"{e['elapsed_s']:.1f} s" if e.get("elapsed_s") is not None else "—",
            ]
        )
    return rows


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
total time {index.get("total_s", 0.0):.1f} s · python {_e(meta.get("python"))} ·
torch {_e(meta.get("torch"))} · started {_e(meta.get("created"))}</p>
{_html_table(["Experiment", "Title", "Status", "Claims held / failed / not judged", "Time"], overview)}
"""
    sections = [
        _html_section(i, index["experiments"][i], summaries.get(i), out / i) for i in index["order"]
    ]
    return head + "\n".join(sections) + "\n</body></html>\n"


# ---------------------------------------------------------------------------------------------
# Markdown


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
        f"seeds {index.get('seeds') or 'per scale'}, total time {index.get('total_s', 0.0):.1f} s, "
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
        if e.get("elapsed_s") is not None:
            info += f" · time {e['elapsed_s']:.1f} s"
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
            f"- Scale: {s.get('scale', '')}; time {_fmt(s.get('elapsed_s'))} s; "
            f"{len(s.get('rows', []))} rows",
            "",
        ]
        cfg = _flat(s.get("config") or {})
        if cfg:
            lines += _md_table(["Setting", "Value"], [[k, _fmt(v)] for k, v in cfg.items()])
    return "\n".join(lines) + "\n"


def write_report(out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``out_dir/report.html`` and ``out_dir/report.md`` from ``out_dir/talk.json`` and
    the experiments' result files; returns their paths."""
    out = Path(out_dir)
    path = out / "talk.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `factorflow reproduce talk` first")
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
