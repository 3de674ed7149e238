"""Reproduce the talk: run its experiments in order and write one report (HTML and Markdown).

:func:`reproduce_talk` runs every experiment of the talk (:data:`TALK`, in the talk's order)
into ``DIR/<id>/`` through :func:`factorflow.experiments.reproduce`; one that raises is recorded
as failed (``DIR/<id>/error.txt``, traceback) and the others still run; an id that is not
registered shows as "not available". The state of the whole run is ``DIR/talk.json``, updated
after each experiment, and the report is rewritten after each one too, so an interrupted run
still leaves a report of what finished.

:func:`write_report` draws the report only from files (``talk.json``, each
``DIR/<id>/summary.json`` and its figures): ``DIR/report.html`` is self-contained (figures as
base64 data URIs, inline CSS, no external links), ``DIR/report.md`` links the PNG files.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factorflow.results import run_metadata, write_json

__all__ = ["TALK", "TalkItem", "claim_counts", "reproduce_talk", "write_report"]


@dataclass(frozen=True)
class TalkItem:
    """One experiment of the talk: its registry id, the part of the talk it belongs to, and a
    title used when the experiment is not registered."""

    id: str
    part: str
    title: str


TALK: tuple[TalkItem, ...] = (
    TalkItem(
        "arora2019-completion",
        "Matrix completion vs nuclear norm",
        "Deep matrix factorization vs nuclear-norm minimization (Arora et al. 2019)",
    ),
    TalkItem(
        "arora2019-dynamics",
        "Singular value dynamics",
        "Singular value dynamics of deep matrix factorization (Arora et al. 2019)",
    ),
    TalkItem(
        "razin2020-2x2",
        "Determinant and norms",
        "Norms are not the implicit regularizer: the 2x2 completion (Razin & Cohen 2020)",
    ),
    TalkItem(
        "razin2020-perturbed",
        "Determinant and norms",
        "Perturbed 2x2 observations (Razin & Cohen 2020)",
    ),
    TalkItem(
        "razin2020-tensor-recovery",
        "Tensor recovery and dynamics",
        "Tensor completion recovery (Razin & Cohen 2020, appendix)",
    ),
    TalkItem(
        "razin2021-dynamics",
        "Tensor recovery and dynamics",
        "Tensor factorization dynamics (Razin, Maman & Cohen 2021)",
    ),
    TalkItem(
        "razin2021-natural-rank",
        "Tensor rank of natural data",
        "Tensor rank as a measure of complexity of natural data (Razin, Maman & Cohen 2021)",
    ),
)

TRACEBACK_LINES = 30
DATA_KEYS = ("data_source", "data_sources", "dataset", "datasets", "data", "data_dir")


# ---------------------------------------------------------------------------------------------
# Running


def _select(only: Sequence[str] | None, registered: dict[str, Any]) -> list[TalkItem]:
    if not only:
        return list(TALK)
    by_id = {t.id: t for t in TALK}
    unknown = [i for i in only if i not in by_id and i not in registered]
    if unknown:
        raise ValueError(
            f"--only names unknown experiments {unknown}; the talk's: {[t.id for t in TALK]}"
            + (f", registered: {sorted(registered)}" if registered else "")
        )
    picked = [t for t in TALK if t.id in only]
    extra = [i for i in dict.fromkeys(only) if i not in by_id]
    return picked + [TalkItem(i, "Other experiments", i) for i in extra]


def _excerpt(tb: str, n: int = TRACEBACK_LINES) -> str:
    lines = tb.rstrip().splitlines()
    return "\n".join(lines if len(lines) <= n else ["...", *lines[-n:]])


@contextlib.contextmanager
def _heartbeat(
    log: Callable[[str], None] | None, every_s: float, what: str, t0: float, t_start: float
) -> Iterator[None]:
    """Log ``what`` with the elapsed times every ``every_s`` seconds until the block ends."""
    if not log or every_s <= 0:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            now = time.perf_counter()
            log(f"{what}, {now - t0:.0f} s (total elapsed {now - t_start:.0f} s)")

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


#: Wall seconds of each experiment at quick scale, measured in a `--jobs 2` talk run on the
#: 2-core reference machine (README); only used to start the longest first when ``jobs > 1``.
QUICK_SECONDS: dict[str, float] = {
    "arora2019-completion": 134.0,
    "arora2019-dynamics": 219.0,
    "razin2020-2x2": 59.0,
    "razin2020-perturbed": 31.0,
    "razin2020-tensor-recovery": 26.0,
    "razin2021-dynamics": 128.0,
    "razin2021-natural-rank": 14.0,
}


#: How worker processes start (``jobs > 1``): "spawn" (a fresh interpreter: safe with torch's
#: thread pools and with CUDA).
MP_CONTEXT = "spawn"


def _run_experiment(
    exp_id: str,
    exp_dir: Path,
    scale: str,
    seeds: int | None,
    device: str,
    options: dict[str, Any] | None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run one experiment; return the index entry's update (status, elapsed_s, claims or the
    error and a traceback excerpt). A failure is written to ``exp_dir/error.txt``. With
    ``threads`` (a worker process) torch's thread count is set and the printed progress goes to
    ``exp_dir/log.txt``."""
    import sys

    from factorflow import experiments

    t0 = time.perf_counter()
    redirect: Any = contextlib.nullcontext()
    if threads is not None:
        from factorflow._threads import set_threads

        set_threads(threads)
        log_file = open(exp_dir / "log.txt", "w", buffering=1)  # noqa: SIM115
        redirect = contextlib.ExitStack()
        redirect.enter_context(log_file)
        redirect.enter_context(contextlib.redirect_stdout(log_file))
        redirect.enter_context(contextlib.redirect_stderr(log_file))
    with redirect:
        try:
            summary = experiments.reproduce(
                exp_id, exp_dir, scale=scale, seeds=seeds, device=device, options=options
            )
        except Exception as e:
            tb = traceback.format_exc()
            (exp_dir / "error.txt").write_text(tb)
            if threads is not None:
                print(tb, file=sys.stderr)
            return {
                "status": "failed",
                "elapsed_s": time.perf_counter() - t0,
                "error": f"{type(e).__name__}: {e}",
                "traceback": _excerpt(tb),
            }
    return {
        "status": "ok",
        "elapsed_s": time.perf_counter() - t0,
        "claims": claim_counts(summary.get("claims", [])),
    }


def _run_parallel(
    todo: list[tuple[int, TalkItem]],
    jobs: int,
    args: tuple[Any, ...],
    started: Callable[[int, TalkItem], Path],
    finished: Callable[[int, TalkItem, dict[str, Any]], None],
    index: dict[str, Any],
    save: Callable[[], None],
    log: Callable[[str], None] | None,
    heartbeat_s: float,
    t_start: float,
) -> None:
    """Run ``todo`` on ``jobs`` spawned worker processes, longest first."""
    import concurrent.futures as cf
    import multiprocessing

    import torch

    threads = torch.get_num_threads()
    order = sorted(todo, key=lambda kt: -QUICK_SECONDS.get(kt[1].id, 0.0))
    running: dict[cf.Future[dict[str, Any]], tuple[int, TalkItem, float]] = {}
    pending = list(order)
    ctx = multiprocessing.get_context(MP_CONTEXT)
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        try:
            while pending or running:
                while pending and len(running) < jobs:
                    k, t = pending.pop(0)
                    exp_dir = started(k, t)
                    fut = pool.submit(_run_experiment, t.id, exp_dir, *args, threads)
                    running[fut] = (k, t, time.perf_counter())
                done, _ = cf.wait(
                    running,
                    timeout=heartbeat_s if heartbeat_s > 0 else None,
                    return_when=cf.FIRST_COMPLETED,
                )
                if not done and log:
                    now = time.perf_counter()
                    what = ", ".join(f"{t.id} {now - t0:.0f} s" for k, t, t0 in running.values())
                    log(f"still running: {what} (total elapsed {now - t_start:.0f} s)")
                for fut in done:
                    k, t, t0 = running.pop(fut)
                    try:
                        outcome = fut.result()
                    except Exception as e:  # the worker process itself died
                        outcome = {
                            "status": "failed",
                            "elapsed_s": time.perf_counter() - t0,
                            "error": f"worker process failed: {type(e).__name__}: {e}",
                            "traceback": "",
                        }
                    finished(k, t, outcome)
        except KeyboardInterrupt:
            for fut, (_k, t, t0) in running.items():
                fut.cancel()
                index["experiments"][t.id].update(
                    status="interrupted", elapsed_s=time.perf_counter() - t0
                )
            save()
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def claim_counts(claims: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Numbers of claims that held, failed, and could not be judged (``holds`` None)."""
    held = sum(1 for c in claims if c.get("holds") is True)
    failed = sum(1 for c in claims if c.get("holds") is False)
    return {"held": held, "failed": failed, "not_judged": len(claims) - held - failed}


def reproduce_talk(
    out_dir: str | Path,
    *,
    scale: str = "quick",
    seeds: int | None = None,
    device: str = "cpu",
    only: Sequence[str] | None = None,
    options: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = print,
    heartbeat_s: float = 60.0,
    jobs: int = 1,
) -> dict[str, Any]:
    """Run the talk's experiments (or ``only`` those ids, in the talk's order) into
    ``out_dir/<id>/``, then write ``out_dir/report.html`` and ``out_dir/report.md``.

    ``scale``, ``seeds``, ``device`` and ``options`` go to every experiment. Progress goes to
    ``log``: a line when each experiment starts and ends, and every ``heartbeat_s`` seconds
    while one runs (0: never). ``jobs`` > 1 runs that many experiments at once, each in its own
    process (spawned, with this process's number of torch threads; its printed progress goes to
    ``out_dir/<id>/log.txt``), longest first by :data:`QUICK_SECONDS`; the results are the same
    as with ``jobs=1`` (every experiment seeds its own generators). Returns the index
    written to ``out_dir/talk.json``: ``{"scale", "device", "seeds", "meta", "order",
    "experiments": {id: {"status": ok|failed|not available|interrupted, "elapsed_s", ...}},
    "total_s", "claims": {"held", "failed", "not_judged"}}``."""
    from factorflow import experiments
    from factorflow.fit import resolve_device

    if scale not in ("quick", "paper"):
        raise ValueError(f"scale must be quick or paper, got {scale!r}")
    if seeds is not None and seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    resolve_device(device)  # a missing GPU is one clear error, not one per experiment
    registered = experiments.EXPERIMENTS
    items = _select(only, registered)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {
        "scale": scale,
        "device": device,
        "seeds": seeds,
        "only": list(only) if only else None,
        "meta": run_metadata(),
        "order": [t.id for t in items],
        "experiments": {},
        "total_s": 0.0,
    }
    for t in items:
        mod = registered.get(t.id)
        index["experiments"][t.id] = {
            "part": t.part,
            "title": getattr(mod, "TITLE", t.title),
            "paper": getattr(mod, "PAPER", None),
            "status": "pending" if mod is not None else "not available",
        }
        if mod is None:
            index["experiments"][t.id]["error"] = (
                f"experiment {t.id!r} is not registered in this version of factorflow"
            )
    t_start = time.perf_counter()

    def save() -> None:
        index["total_s"] = time.perf_counter() - t_start
        write_json(out / "talk.json", index)
        write_report(out)

    save()
    n = len(items)

    def available(k: int, t: TalkItem) -> bool:
        if index["experiments"][t.id]["status"] != "not available":
            return True
        if log:
            log(f"[{k}/{n}] {t.id}: not available (not registered), skipped")
        return False

    def started(k: int, t: TalkItem) -> Path:
        entry = index["experiments"][t.id]
        exp_dir = out / t.id
        exp_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("summary.json", "error.txt", "log.txt"):
            (exp_dir / stale).unlink(missing_ok=True)
        if log:
            log(
                f"[{k}/{n}] {t.id}: {entry['title']} ... running "
                f"(total elapsed {time.perf_counter() - t_start:.0f} s)"
            )
        entry["status"] = "running"
        return exp_dir

    def finished(k: int, t: TalkItem, outcome: dict[str, Any]) -> None:
        entry = index["experiments"][t.id]
        entry.update(outcome)
        if log and entry["status"] == "failed":
            log(f"[{k}/{n}] {t.id}: FAILED after {entry['elapsed_s']:.1f} s: {entry['error']}")
        elif log:
            counts = entry["claims"]
            log(
                f"[{k}/{n}] {t.id}: done in {entry['elapsed_s']:.1f} s; claims "
                f"{counts['held']} held, {counts['failed']} failed, "
                f"{counts['not_judged']} not judged"
            )
        save()

    n_available = sum(index["experiments"][t.id]["status"] != "not available" for t in items)
    jobs = max(1, min(int(jobs), n_available))
    args = (scale, seeds, device, options)
    if jobs == 1:
        for k, t in enumerate(items, 1):
            if not available(k, t):
                continue
            exp_dir = started(k, t)
            t0 = time.perf_counter()
            try:
                with _heartbeat(log, heartbeat_s, f"[{k}/{n}] {t.id}: still running", t0, t_start):
                    outcome = _run_experiment(t.id, exp_dir, *args)
            except KeyboardInterrupt:
                index["experiments"][t.id].update(
                    status="interrupted", elapsed_s=time.perf_counter() - t0
                )
                save()
                raise
            finished(k, t, outcome)
    else:
        todo = [(k, t) for k, t in enumerate(items, 1) if available(k, t)]
        _run_parallel(todo, jobs, args, started, finished, index, save, log, heartbeat_s, t_start)
    index["claims"] = claim_counts(
        [c for s in _load_summaries(out, index).values() for c in s.get("claims", [])]
    )
    save()
    if log:
        log(
            f"report: {out / 'report.html'} and {out / 'report.md'} "
            f"(total {index['total_s']:.0f} s)"
        )
    return index


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


def _load_summaries(out: Path, index: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for exp_id in index.get("order", []):
        entry = index["experiments"].get(exp_id, {})
        path = out / exp_id / "summary.json"
        if entry.get("status") == "ok" and path.is_file():
            found[exp_id] = json.loads(path.read_text())
    return found


def _totals(index: dict[str, Any], summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    claims = [c for s in summaries.values() for c in s.get("claims", [])]
    statuses = [e.get("status") for e in index["experiments"].values()]
    return {
        **claim_counts(claims),
        "claims": len(claims),
        "ok": statuses.count("ok"),
        "failed": statuses.count("failed"),
        "not_available": statuses.count("not available"),
        "other": len(statuses)
        - statuses.count("ok")
        - statuses.count("failed")
        - statuses.count("not available"),
    }


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
    rows = []
    for c in claims:
        text = f"{_e(c.get('text', ''))} <span class='detail'>[{_e(c.get('id', ''))}]</span>"
        if c.get("detail"):
            text += f"<div class='detail'>{_e(c['detail'])}</div>"
        rows.append(
            [
                text,
                _e(_fmt(c.get("paper"))),
                _e(_fmt(c.get("measured"))),
                _badge(_holds_label(c.get("holds"))),
            ]
        )
    return _html_table(["Claim", "Paper", "Ours", "Holds?"], rows)


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
    t = _totals(index, summaries)
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
<p><strong>Claims:</strong> {_badge("holds")} {t["held"]} held ·
{_badge("fails")} {t["failed"]} failed · {_badge("not judged")} {t["not_judged"]} not judged
(of {t["claims"]}) &nbsp;|&nbsp; <strong>Experiments:</strong> {t["ok"]} ran,
{t["failed"]} failed, {t["not_available"]} not available</p>
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
    t = _totals(index, summaries)
    meta = index.get("meta", {})
    lines = [
        "# factorflow: reproducing the talk",
        "",
        f"**Claims:** {t['held']} held, {t['failed']} failed, {t['not_judged']} not judged "
        f"(of {t['claims']}). **Experiments:** {t['ok']} ran, {t['failed']} failed, "
        f"{t['not_available']} not available.",
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
            rows = []
            for c in claims:
                text = f"{c.get('text', '')} [{c.get('id', '')}]"
                if c.get("detail"):
                    text += f" ({c['detail']})"
                rows.append(
                    [
                        text,
                        _fmt(c.get("paper")),
                        _fmt(c.get("measured")),
                        _holds_label(c.get("holds")),
                    ]
                )
            lines += _md_table(["Claim", "Paper", "Ours", "Holds?"], rows)
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
    index = json.loads(path.read_text())
    summaries = _load_summaries(out, index)
    html_path, md_path = out / "report.html", out / "report.md"
    for p, text in (
        (html_path, render_html(out, index, summaries)),
        (md_path, render_markdown(index, summaries)),
    ):
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(p)
    return html_path, md_path
