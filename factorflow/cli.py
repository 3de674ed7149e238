"""The ``factorflow`` command: parse arguments, load the config, call an importable function."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _cmd_run(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    from factorflow.config import load_config
    from factorflow.fit import fit
    from factorflow.results import check_out_dir, replace_folders

    overrides = list(args.set or [])
    if args.device:
        overrides.append(f'device="{args.device}"')
    if args.dtype:
        overrides.append(f'dtype="{args.dtype}"')
    if args.seeds:
        overrides.append(f"seeds=[{','.join(str(s) for s in args.seeds)}]")
    cfg = load_config(args.config, overrides)
    out = Path(args.out)
    check_out_dir(out)  # before any work: a file on the path, or no permission to write
    targets = [out / f"seed_{s}" for s in cfg.seeds]
    clash = [str(t) for t in targets if t.exists()]
    if clash and not args.overwrite:
        raise FileExistsError(f"run folders already exist: {clash} (use --overwrite)")
    for t in targets:
        if t.exists() and not t.is_dir():
            raise ValueError(f"{t} exists and is not a run folder")
    tracker = None
    if args.track:  # a missing package is found before the fit, not after
        from factorflow.tracking import make_tracker

        tracker = make_tracker(args.track, out)
    runs = fit(cfg, progress=not args.quiet)
    print(
        f"{'seed':>5} {'status':>10} {'final_loss':>11} {'steps':>9} {'time':>10} "
        f"{'recon_mse':>10} {'eff_rank':>8} {'nuclear':>9}"
    )
    for run in runs:
        s = run.summary
        print(
            f"{s['seed']:>5} {s['status']:>10} {s['final_loss']:>11.3e} {s['steps']:>9} "
            f"{s['time']:>10.4g} {s.get('recon_mse', float('nan')):>10.3e} "
            f"{s['effective_rank']:>8.3f} {s['nuclear_norm']:>9.3f}"
        )
    # every seed is written to a staging folder first, then all are moved into place together
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".staging-"))
    try:
        for run, target in zip(runs, targets, strict=True):
            run.write(staging / target.name)
        replace_folders([(staging / t.name, t) for t in targets])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {len(runs)} run folder(s) under {out}")
    if tracker is not None:
        for target in targets:
            tracker.log_run(target, target.name)
        tracker.close()
        print(f"logged {len(targets)} run(s) to {args.track} under {out}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from factorflow.experiments import EXPERIMENTS

    for name, exp in EXPERIMENTS.items():
        also = f" (also: {', '.join(exp.aliases)})" if exp.aliases else ""
        print(f"{name:32s} {exp.title}{also}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from factorflow.runner import run_experiment

    options = _parse_options(args.option)
    for key in ("dataset", "data_dir"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.id == "talk":
        from factorflow.talk import reproduce_talk

        only = [i.strip() for i in args.only.split(",") if i.strip()] if args.only else None
        index = reproduce_talk(
            Path(args.out),
            scale=args.scale,
            seeds=args.seeds,
            device=args.device,
            only=only,
            options=options,
            jobs=_talk_jobs(args.jobs, args.device),
            workers=args.workers,
            resume=args.resume,
            overwrite=args.overwrite,
        )
        c = index["claims"]
        statuses = [e["status"] for e in index["experiments"].values()]
        print(
            f"talk: claims {c['held']} held, {c['failed']} failed, {c['not_judged']} not judged; "
            f"experiments {statuses.count('ok')} ran, {statuses.count('failed')} failed, "
            f"{statuses.count('not available')} not available; {index['total_s']:.0f} s"
        )
        return 1 if "failed" in statuses else 0
    if args.only:
        raise ValueError("--only is for `factorflow reproduce talk`")
    summary = run_experiment(
        args.id,
        Path(args.out),
        scale=args.scale,
        seeds=args.seeds,
        device=args.device,
        options=options,
        overwrite=args.overwrite,
        resume=args.resume,
        threads=None,  # as set for the process: FACTORFLOW_THREADS, default 1
        workers=args.workers,
    )
    print(f"{args.id}: {len(summary['rows'])} rows, {summary.get('elapsed_s', 0):.1f} s")
    for c in summary["claims"]:
        mark = {True: "HOLDS", False: "FAILS", None: "n/a"}[c.get("holds")]
        why = f" ({c['reason']})" if c.get("reason") else ""
        print(f"  [{mark:5s}] {c['id']}{why}")
    print(f"summary: {Path(args.out) / 'summary.json'}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from factorflow.config import set_by_path
    from factorflow.runs import write_runs_table
    from factorflow.sweep import run_sweep

    parameters: dict = {}
    for item in args.slurm or []:
        if "=" not in item:
            raise ValueError(f"--slurm expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        set_by_path(parameters, k.strip(), v.strip())
    options: dict = {"parameters": parameters} if parameters else {}
    if args.executor == "dask":
        options["connect_timeout_s"] = args.connect_timeout
    res = run_sweep(
        args.grid,
        args.out,
        executor=args.executor,
        workers=args.workers,
        scheduler=args.scheduler,
        executor_options=options,
        track=args.track,
        progress=not args.quiet,
    )
    df, csv = write_runs_table(args.out)
    for b in df.attrs.get("unreadable", []):
        print(f"  UNREADABLE {b['run']}: {b['error']}", file=sys.stderr)
    print(
        f"sweep: {res.n_runs} runs: {res.n_skipped} were done, {res.n_ran} ran now, "
        f"{sum(len(f.get('seeds', [])) for f in res.failures)} failed; {res.wall_s:.1f} s; "
        f"table of {len(df)} runs: {csv}"
    )
    for f in res.failures:
        print(f"  FAILED {f['name']} (seeds {f.get('seeds')}): {f['error']}", file=sys.stderr)
    if res.failures:
        print(f"  details: {Path(args.out) / 'failures'}", file=sys.stderr)
    return 1 if res.failures else 0


def _cmd_judge(args: argparse.Namespace) -> int:
    from factorflow.runner import rejudge

    for d in args.dirs:
        summary = rejudge(Path(d))
        changed = summary["rejudged"]["changed"]
        what = ", ".join(f"{c['id']} {c['was']} -> {c['now']}" for c in changed) or "none changed"
        print(f"{d}: {len(summary['claims'])} claims judged again; {what}")
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    import pandas as pd

    from factorflow.runs import brief_table, write_runs_table

    df, csv = write_runs_table(args.dir)
    bad = df.attrs.get("unreadable", [])
    if df.empty and not bad:
        raise FileNotFoundError(f"no run folders (config.json + summary.json) under {args.dir}")
    if not df.empty:
        shown = df if args.all else brief_table(df)
        with pd.option_context("display.max_columns", None, "display.width", 200):
            print(shown.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    where = csv if csv is not None else "not written (the folder is read-only)"
    print(f"{len(df)} runs, {len(df.columns)} columns: {where}")
    for b in bad:
        print(f"  UNREADABLE {b['run']}: {b['error']}", file=sys.stderr)
    return 0 if not bad else 1


def build_parser() -> argparse.ArgumentParser:
    """The ``factorflow`` command line: one subcommand per ``_cmd_*`` function."""
    p = argparse.ArgumentParser(
        prog="factorflow",
        description="Implicit regularization of gradient descent on matrix and tensor factorizations.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    from factorflow.complete import add_parser as add_complete_parser  # the `complete` command
    from factorflow.status import add_parser as add_status_parser  # the `status` command

    add_complete_parser(sub)
    add_status_parser(sub)

    r = sub.add_parser(
        "run", help="fit a deep matrix factorization from a TOML config and/or --set"
    )
    r.add_argument("--config", help="TOML config file (see factorflow.config)")
    r.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help='override a config field, e.g. --set model.depth=3 --set loss="mse"',
    )
    r.add_argument("--out", default="runs/run", help="output folder (one run folder per seed)")
    r.add_argument("--seeds", type=int, nargs="+", help="init seeds (one run each, batched)")
    r.add_argument("--device", help="cpu, cuda, cuda:N")
    r.add_argument("--dtype", choices=["float64", "float32"])
    r.add_argument("--overwrite", action="store_true", help="replace existing run folders")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument(
        "--track", choices=["tensorboard", "wandb"], help="also log the runs (needs the package)"
    )
    r.set_defaults(func=_cmd_run)

    ls = sub.add_parser("list", help="list the registered experiments")
    ls.set_defaults(func=_cmd_list)

    rp = sub.add_parser(
        "reproduce",
        help="reproduce a published result (see `factorflow list`), or `talk` for all of them",
    )
    rp.add_argument("id", help="an experiment id, or `talk`: every experiment and a report")
    rp.add_argument("--out", required=True, help="output folder (summary.json, figures)")
    rp.add_argument(
        "--scale",
        choices=["quick", "paper", "smoke"],
        default="quick",
        help="quick (minutes), paper (the papers' settings) or smoke (seconds, a check)",
    )
    rp.add_argument(
        "--overwrite", action="store_true", help="replace a finished result (atomically)"
    )
    rp.add_argument(
        "--resume",
        action="store_true",
        help="keep finished results with the same settings, run the rest",
    )
    rp.add_argument("--seeds", type=int, default=None, help="number of seeds (default: per scale)")
    rp.add_argument("--device", default="cpu")
    rp.add_argument("--dataset", default=None, help="data set, for experiments that take one")
    rp.add_argument("--data-dir", default=None, help="where the data files are")
    rp.add_argument("--only", metavar="ID,ID", help="talk: run only these experiments")
    rp.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="an experiment setting (TOML value), e.g. --option 'optimizers=[\"flow\"]' or "
        "--option flow.rtol=1e-8; unknown keys and wrong types are an error",
    )
    rp.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="talk: experiments run at once, one process each (default: the number of CPU "
        "cores, at most 8; 1 on a GPU)",
    )
    rp.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes for an experiment's independent cells (IRMAE's models), each with "
        "FACTORFLOW_THREADS threads; the talk gives each experiment this many (default 1)",
    )
    rp.set_defaults(func=_cmd_reproduce)

    sw = sub.add_parser("sweep", help="run a grid of configs ([base] + [grid] TOML), resumable")
    sw.add_argument("grid", help="grid TOML file (see factorflow.sweep)")
    sw.add_argument("--out", required=True, help="sweep folder (runs/, failures/, sweep.json)")
    sw.add_argument("--executor", choices=["local", "dask", "slurm"], default="local")
    sw.add_argument("--workers", type=int, default=1, help="local processes (1 = in this process)")
    sw.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786")
    sw.add_argument(
        "--connect-timeout", type=float, default=10.0, help="seconds to wait for the scheduler"
    )
    sw.add_argument(
        "--slurm",
        action="append",
        metavar="KEY=VALUE",
        help="submitit parameter, e.g. --slurm slurm_partition=gpu --slurm timeout_min=60",
    )
    sw.add_argument("--track", choices=["tensorboard", "wandb"], help="also log every run")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.set_defaults(func=_cmd_sweep)

    jd = sub.add_parser(
        "judge",
        help="judge the claims of finished `reproduce` results again with this code, from their "
        "stored rows (after a fix to a claim's measurement; then `reproduce talk --resume` "
        "refreshes a talk's report)",
    )
    jd.add_argument("dirs", nargs="+", metavar="DIR", help="a result folder (summary.json)")
    jd.set_defaults(func=_cmd_judge)

    rs = sub.add_parser("runs", help="table of the run folders under DIR (also DIR/runs.csv)")
    rs.add_argument("dir")
    rs.add_argument("--all", action="store_true", help="print every column")
    rs.set_defaults(func=_cmd_runs)
    return p


def _parse_options(items: list[str] | None) -> dict[str, Any]:
    """``--option KEY=VALUE`` pairs as a dict; VALUE is a TOML value (``3``, ``1e-3``,
    ``"flow"``, ``[0.05, 0.005]``, ``true``)."""
    import tomllib

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--option wants KEY=VALUE, got {item!r}")
        try:
            out[key] = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError as e:
            raise ValueError(
                f"--option {key}: {raw!r} is not a TOML value (strings need quotes: "
                f"'{key}=\"text\"'): {e}"
            ) from None
    return out


def _talk_jobs(jobs: int | None, device: str) -> int:
    """``--jobs`` for the talk: as given (>= 1), else one process per core (at most the 8
    experiments) on CPU, and 1 on a GPU (the experiments would share one device)."""
    import os

    if jobs is not None:
        if jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {jobs}")
        return jobs
    if device != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, 8))


def main(argv: list[str] | None = None) -> int:
    """Run a command; its exit status (0 ok, 1 some runs failed, 2 a one-line error, 130
    interrupted, 143 terminated by SIGTERM, handled as an interrupt: ``factorflow._signals``)."""
    from factorflow._signals import Terminated, sigterm_interrupts
    from factorflow._threads import set_threads_from_env

    args = build_parser().parse_args(argv)
    set_threads_from_env()
    try:
        with sigterm_interrupts():
            return args.func(args)
    except KeyboardInterrupt as e:
        out = getattr(args, "out", None)
        where = f"; what finished is in {out}" if out else ""
        how = "terminated" if isinstance(e, Terminated) else "interrupted"
        print(f"factorflow: {how}{where}", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except (
        ValueError,
        TypeError,
        OSError,  # FileNotFoundError, FileExistsError, PermissionError, no space left, ...
        RuntimeError,
        KeyError,
        ImportError,
    ) as e:
        print(f"factorflow: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
