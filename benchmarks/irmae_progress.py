"""Progress of an interrupted or running IRMAE run: every model of the run (from the cell
store's stamp), finished or not; for models in progress the epochs finished and the wall seconds
per epoch (from the history their checkpoint holds); and an estimate of the time left.

    python benchmarks/irmae_progress.py out/paper [--workers 2]   # reads out/paper/.jing2020-irmae.cells
        [--plot counts.png]   # each model's count above 1e-2 against epoch

The estimate: each unfinished model's remaining epochs times the median seconds per epoch of
the models of its data set measured so far, scheduled as the experiment runs them (``--workers``
at once, image models first when more than one; a finished model hands its worker to the next).
Medians measured with other models beside them carry that load. The paper-scale times in the
README and ``docs/irmae-notes.md`` come from this.
"""

from __future__ import annotations

import argparse
import heapq
import json
import statistics
from pathlib import Path

import torch

from factorflow.cells import read_cell
from factorflow.experiments.jing2020_irmae import IRMAESettings, model_cells
from factorflow.typed import build_dataclass


def models_of(config: dict, workers: int = 1) -> list[tuple[str, str, int]]:
    """(cell key, data set, epochs) of every model of the run with settings ``config`` (the
    stamp's), in the order the experiment starts them with ``workers``
    (:func:`~factorflow.experiments.jing2020_irmae.model_cells`)."""
    s = build_dataclass(IRMAESettings, config)
    return [
        (key, d, s.shapes_epochs if d == "shapes" else s.images_epochs)
        for key, d, _, _ in model_cells(s, workers)
    ]


def finished(path: Path) -> str:
    """A finished model's measured numbers from its cell file (``(arrays, row)``, stored as
    ``(format, value, seconds)`` or bare), or "" when the file holds something else. The row's
    ``train_s`` is the training of every sitting."""
    value, _ = read_cell(path)
    try:
        row = value[1]
        probes = ", ".join(f"{n}: {a:.3f}" for n, a in row["probe_acc"].items())
        return (
            f" ({row['epochs']:g} epochs, {row['train_s']:.0f} s of training): test mse "
            f"{row['test_mse']:.3g}, count above 1e-2 {row['count_above_1e-2']}, erank "
            f"{row['erank']:.2f}, probe accuracy by labels {{{probes}}}"
        )
    except (TypeError, KeyError, IndexError):
        return ""


def counts_by_epoch(store: Path, key: str) -> list[tuple[float, int]]:
    """(epoch, count of normalized singular values above 1e-2) of model ``key`` so far: from
    its finished cell (the row's ``count_by_epoch`` at the arrays' ``epochs``), else from its
    training checkpoint's history; [] before its first epoch."""
    if (store / f"{key}.pkl").is_file():
        (arrays, row), _ = read_cell(store / f"{key}.pkl")
        return list(zip(arrays["epochs"].tolist(), row["count_by_epoch"], strict=True))
    f = store / f"{key}-training.partial"
    if not f.is_file():
        return []
    history = torch.load(f, map_location="cpu", weights_only=False)["history"]["epochs"]
    return [(r["epoch"], r["count_above_1e-2"]) for r in history if "count_above_1e-2" in r]


def plot_counts(store: Path, config: dict, path: Path) -> None:
    """One panel per data set: each model's count above 1e-2 against epoch, one line per l
    (dotted: still training), the paper's 7 for shapes marked; saved as ``path`` (PNG)."""
    from factorflow.plotting import new_figure, plt
    from factorflow.plotting.irmae import count_axes

    s = build_dataclass(IRMAESettings, config)
    datasets = ["shapes", s.images]
    fig, axes = new_figure(len(datasets), width=4.6)
    for ax, ds in zip(axes, datasets, strict=True):
        for key, d, l, _ in model_cells(s):
            points = counts_by_epoch(store, key) if d == ds else []
            if points:
                done = (store / f"{key}.pkl").is_file()
                x, y = zip(*points, strict=True)
                label = f"l = {l}" + ("" if done else " (training)")
                ax.plot(x, y, ls="-" if done else ":", color=f"C{s.ls.index(l)}", label=label)
        count_axes(ax, ds)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def time_left(todo: list[float], workers: int) -> float:
    """Wall seconds until every job is done: ``todo`` (seconds each) in the order they start,
    each of ``workers`` taking the next job when free."""
    free = [0.0] * workers
    end = 0.0
    for seconds in todo:
        start = heapq.heappop(free)
        end = max(end, start + seconds)
        heapq.heappush(free, start + seconds)
    return end


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the talk's output folder (or the result's parent)")
    ap.add_argument("--name", default="jing2020-irmae", help="the result folder's name")
    ap.add_argument("--workers", type=int, default=2, help="models trained at once (estimate)")
    ap.add_argument("--plot", type=Path, help="also draw each model's count against epoch (PNG)")
    args = ap.parse_args()
    store = args.out / f".{args.name}.cells"
    if not (store / "stamp.json").is_file():
        raise SystemExit(f"no IRMAE cell store (stamp.json) in {store}")
    config = json.loads((store / "stamp.json").read_text())["config"]
    done: dict[str, int] = {}
    medians: dict[str, list[float]] = {}
    models = models_of(config, args.workers)
    for key, data, _ in models:
        f = store / f"{key}-training.partial"
        if (store / f"{key}.pkl").is_file() or not f.is_file():
            continue
        state = torch.load(f, map_location="cpu", weights_only=False)
        epochs = state["history"]["epochs"]
        times = [r["time_s"] for r in epochs]
        per = [b - a for a, b in zip(times[:-1], times[1:], strict=True)]
        last = epochs[-1]
        done[key] = int(state["epoch"])
        if per:
            medians.setdefault(data, []).append(statistics.median(per))
        print(
            f"{key}: {state['epoch']} epochs in {state['elapsed_s']:.0f} s; per epoch median "
            f"{statistics.median(per) if per else float('nan'):.1f} s"
            f" (min {min(per, default=float('nan')):.1f}, max {max(per, default=float('nan')):.1f});"
            f" last: train loss {last['train_loss']:.3g}, count above 1e-2 "
            f"{last.get('count_above_1e-2')}, erank {last.get('erank', float('nan')):.2f}"
        )
    todo, unknown = [], []
    for key, data, epochs in models:
        if (store / f"{key}.pkl").is_file():
            print(f"{key}: finished{finished(store / f'{key}.pkl')}")
            continue
        if key not in done:
            print(f"{key}: not started ({epochs} epochs)")
        if data not in medians:
            unknown.append(key)
            continue
        per_epoch = statistics.median(medians[data])
        todo.append((epochs - done.get(key, 0)) * per_epoch)
    if unknown:
        print(f"no estimate: no model of {', '.join(unknown)}'s data set has run an epoch yet")
    elif todo:
        seconds = time_left(todo, args.workers)
        print(
            f"estimated time left: {seconds / 3600:.1f} h ({seconds:,.0f} s) with "
            f"{args.workers} worker(s)"
        )
    if args.plot is not None:
        plot_counts(store, config, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
