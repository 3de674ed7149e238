"""The ``factorflow`` command: parse arguments, load the config, call an importable function."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _cmd_run(args: argparse.Namespace) -> int:
    from factorflow.config import load_config
    from factorflow.fit import fit

    overrides = list(args.set or [])
    if args.device:
        overrides.append(f'device="{args.device}"')
    if args.dtype:
        overrides.append(f'dtype="{args.dtype}"')
    if args.seeds:
        overrides.append(f"seeds=[{','.join(str(s) for s in args.seeds)}]")
    cfg = load_config(args.config, overrides)
    out = Path(args.out)
    targets = [out / f"seed_{s}" for s in cfg.seeds]
    clash = [str(t) for t in targets if t.exists()]
    if clash and not args.overwrite:
        raise FileExistsError(f"run folders already exist: {clash} (use --overwrite)")
    runs = fit(cfg, progress=not args.quiet)
    print(
        f"{'seed':>5} {'status':>10} {'final_loss':>11} {'steps':>9} {'time':>10} "
        f"{'recon_mse':>10} {'eff_rank':>8} {'nuclear':>9}"
    )
    for run, target in zip(runs, targets, strict=True):
        s = run.summary
        print(
            f"{s['seed']:>5} {s['status']:>10} {s['final_loss']:>11.3e} {s['steps']:>9} "
            f"{s['time']:>10.4g} {s.get('recon_mse', float('nan')):>10.3e} "
            f"{s['effective_rank']:>8.3f} {s['nuclear_norm']:>9.3f}"
        )
        run.write(target, overwrite=args.overwrite)
    print(f"wrote {len(runs)} run folder(s) under {out}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from factorflow.experiments import EXPERIMENTS

    for name, exp in EXPERIMENTS.items():
        print(f"{name:32s} {exp.TITLE}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from factorflow.experiments import reproduce

    summary = reproduce(
        args.id,
        Path(args.out),
        scale=args.scale,
        seeds=args.seeds,
        device=args.device,
        options={"dataset": args.dataset, "data_dir": args.data_dir},
    )
    claims = summary.get("claims", [])
    print(f"{args.id}: {len(summary.get('rows', []))} rows, {summary.get('elapsed_s', 0):.1f} s")
    for c in claims:
        mark = {True: "HOLDS", False: "FAILS", None: "n/a"}[c.get("holds")]
        print(f"  [{mark:5s}] {c['id']}: measured {c.get('measured')}")
    print(f"summary: {Path(args.out) / 'summary.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="factorflow",
        description="Implicit regularization of gradient descent on matrix and tensor factorizations.",
    )
    sub = p.add_subparsers(dest="command", required=True)

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
    r.set_defaults(func=_cmd_run)

    ls = sub.add_parser("list", help="list the registered experiments")
    ls.set_defaults(func=_cmd_list)

    rp = sub.add_parser("reproduce", help="reproduce a published result (see `factorflow list`)")
    rp.add_argument("id")
    rp.add_argument("--out", required=True, help="output folder (summary.json, figures)")
    rp.add_argument("--scale", choices=["quick", "paper"], default="quick")
    rp.add_argument("--seeds", type=int, default=None, help="number of seeds (default: per scale)")
    rp.add_argument("--device", default="cpu")
    rp.add_argument("--dataset", default=None, help="data set, for experiments that take one")
    rp.add_argument("--data-dir", default=None, help="where the data files are")
    rp.set_defaults(func=_cmd_reproduce)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, KeyError) as e:
        print(f"factorflow: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
