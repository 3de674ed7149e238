"""``factorflow complete``: fit a :class:`~factorflow.estimators.DeepMatrixCompleter` to a ratings
file and write predictions; the fitted model can be stored and reused.

Input formats: MovieLens ``u.data`` (tab separated, no header) and MovieLens ``ratings.csv``
(header ``userId,movieId,rating[,timestamp]``), both read by :mod:`factorflow.data.ratings`, or any
CSV with a header naming a user, an item and a value column (``user`` / ``userId`` / ``user_id``,
``item`` / ``movieId`` / ``item_id`` / ``itemId``, ``rating`` / ``value`` / ``score``). Ids are
kept as written in the file (strings), never renumbered in the output.

::

    factorflow complete ratings.csv --test-fraction 0.2 --out test_pred.csv --save-model model/
    factorflow complete --model model/ --predict pairs.csv --out pred.csv
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from factorflow.data.ratings import RatingsFormatError, _parse

if TYPE_CHECKING:  # scikit-learn (the estimators) is imported only when a model is fitted
    from factorflow.estimators import DeepMatrixCompleter

__all__ = ["add_parser", "fit_ratings", "read_pairs", "read_ratings", "run_complete"]

_USER = ("user", "userId", "user_id", "userid")
_ITEM = ("item", "movieId", "item_id", "itemId", "itemid", "movie")
_VALUE = ("rating", "value", "score")


def _column(names: list[str], choices: tuple[str, ...]) -> str | None:
    return next((n for n in names if n.strip() in choices), None)


def _read_csv(path: Path, need_value: bool) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except pd.errors.EmptyDataError:
        raise RatingsFormatError(f"{path}: empty file (no header, no ratings)") from None
    except pd.errors.ParserError as exc:
        raise RatingsFormatError(f"{path}: not a CSV file ({str(exc).strip()})") from None
    names = [str(c) for c in df.columns]
    cols = [_column(names, _USER), _column(names, _ITEM)]
    if need_value:
        cols.append(_column(names, _VALUE))
    if None in cols:
        raise RatingsFormatError(
            f"{path} line 1: header {','.join(names)!r} lacks a user, item"
            + (" or value" if need_value else "")
            + " column (expected e.g. user,item,value or MovieLens userId,movieId,rating)"
        )
    if df.shape[0] == 0:
        raise RatingsFormatError(f"{path}: no rows after the header")
    out = pd.DataFrame({"user": df[cols[0]].str.strip(), "item": df[cols[1]].str.strip()})
    if need_value:
        raw = df[cols[2]]
        vals = pd.to_numeric(raw, errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(~np.isfinite(vals))
        if bad.size:
            j = int(bad[0])
            raise RatingsFormatError(
                f"{path} line {j + 2}: {bad.size} NaN, infinite or non-numeric rating(s), "
                f"first {raw.iloc[j]!r}"
            )
        out["value"] = vals
    return out


def read_ratings(path: str | Path, duplicates: str = "error") -> pd.DataFrame:
    """Ratings as a DataFrame with columns ``user``, ``item`` (str, as in the file) and ``value``
    (float64, finite). Repeated (user, item) pairs: ``error`` (RatingsFormatError), ``mean``
    or ``last`` (in file order). Formats: see the module doc."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such ratings file: {path}")
    if path.stat().st_size == 0 or not path.read_text(errors="replace").strip():
        raise RatingsFormatError(f"{path}: empty file")
    with path.open(errors="replace") as fh:
        first = next(line for line in fh if line.strip())
    if path.name == "u.data" or path.suffix == ".data" or ("\t" in first and "," not in first):
        users, items, vals, _ = _parse(path, "u.data")
    elif {"userId", "movieId", "rating"} <= {c.strip() for c in first.split(",")}:
        users, items, vals, _ = _parse(path, "ratings.csv")
    else:
        df = _read_csv(path, need_value=True)
        return _resolve_duplicates(df, duplicates, path)
    df = pd.DataFrame({"user": users.astype(str), "item": items.astype(str), "value": vals})
    return _resolve_duplicates(df, duplicates, path)


def _resolve_duplicates(df: pd.DataFrame, how: str, path: Path) -> pd.DataFrame:
    if how not in ("error", "mean", "last"):
        raise ValueError(f"duplicates must be error, mean or last, got {how!r}")
    dup = df.duplicated(["user", "item"], keep=False)
    if not dup.any():
        return df.reset_index(drop=True)
    if how == "error":
        j = int(np.flatnonzero(dup.to_numpy())[0])
        n_pairs = int(df[dup].groupby(["user", "item"]).ngroups)
        raise RatingsFormatError(
            f"{path}: {n_pairs} (user, item) pairs are rated more than once, e.g. user "
            f"{df.user.iloc[j]} item {df.item.iloc[j]} (line {j + 2}); pass --duplicates mean "
            "or --duplicates last"
        )
    if how == "last":
        return df.drop_duplicates(["user", "item"], keep="last").reset_index(drop=True)
    return df.groupby(["user", "item"], sort=False, as_index=False)["value"].mean()


def read_pairs(path: str | Path) -> pd.DataFrame:
    """(user, item) pairs to predict: a CSV with a header naming a user and an item column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such pairs file: {path}")
    return _read_csv(path, need_value=False)


def _index(ids: np.ndarray, wanted: pd.Series) -> np.ndarray:
    """Positions of ``wanted`` in the sorted ``ids``; unknown ids get ``len(ids)`` (unseen)."""
    pos = np.searchsorted(ids, wanted.to_numpy(str))
    pos = np.minimum(pos, len(ids) - 1)
    return np.where(ids[pos] == wanted.to_numpy(str), pos, len(ids)).astype(np.int64)


def fit_ratings(
    ratings: pd.DataFrame, **settings: object
) -> tuple[DeepMatrixCompleter, np.ndarray, np.ndarray]:
    """Fit a :class:`DeepMatrixCompleter` (``settings`` are its parameters) to ``ratings`` (as
    from :func:`read_ratings`); returns it with the sorted user and item ids (rows / columns)."""
    from factorflow.estimators import DeepMatrixCompleter

    users = np.unique(ratings["user"].to_numpy(str))
    items = np.unique(ratings["item"].to_numpy(str))
    X = np.stack([_index(users, ratings["user"]), _index(items, ratings["item"])], axis=1)
    est = DeepMatrixCompleter(shape=(len(users), len(items)), **settings)  # type: ignore[arg-type]
    return est.fit(X, ratings["value"].to_numpy(np.float64)), users, items


def predict_pairs(
    est: DeepMatrixCompleter, users: np.ndarray, items: np.ndarray, pairs: pd.DataFrame
) -> np.ndarray:
    """Predictions for the (user, item) pairs of ``pairs``; ids never seen get the bias-only
    prediction (mean + the known side's bias)."""
    X = np.stack([_index(users, pairs["user"]), _index(items, pairs["item"])], axis=1)
    return est.predict(X)


def _save(folder: Path, est: DeepMatrixCompleter, users: np.ndarray, items: np.ndarray) -> None:
    est.save(folder)
    ids = {"users": users.tolist(), "items": items.tolist()}
    (folder / "ids.json").write_text(json.dumps(ids))


def _load(folder: Path) -> tuple[DeepMatrixCompleter, np.ndarray, np.ndarray]:
    if not (folder / "model.json").is_file() or not (folder / "ids.json").is_file():
        raise FileNotFoundError(f"{folder} holds no saved model (model.json, ids.json)")
    from factorflow.estimators import DeepMatrixCompleter

    ids = json.loads((folder / "ids.json").read_text())
    return (
        DeepMatrixCompleter.load(folder),
        np.asarray(ids["users"], dtype=str),
        np.asarray(ids["items"], dtype=str),
    )


def run_complete(args: argparse.Namespace) -> int:
    """The ``complete`` command (see :func:`add_parser`)."""
    if (args.ratings is None) == (args.model is None):
        raise ValueError("give either a RATINGS file to fit or --model DIR to reuse, not both")
    if args.out is None and (args.predict or args.test_fraction):
        raise ValueError("--out PRED.csv is needed with --predict or --test-fraction")
    if args.test_fraction and not 0 < args.test_fraction < 1:
        raise ValueError(f"--test-fraction must lie in (0, 1), got {args.test_fraction}")
    if args.model is not None:
        if args.test_fraction:
            raise ValueError("--test-fraction needs a RATINGS file to split, not --model")
        est, users, items = _load(Path(args.model))
    else:
        ratings = read_ratings(args.ratings, args.duplicates)
        test = None
        if args.test_fraction:
            rs = np.random.default_rng(args.seed)
            is_test = rs.random(len(ratings)) < args.test_fraction
            ratings, test = ratings[~is_test], ratings[is_test]
        settings = dict(
            depth=args.depth, width=args.width, init_scale=args.init_scale, lr=args.lr,
            max_iter=args.max_iter, max_time=args.max_time, random_state=args.seed,
            progress=args.progress,
        )  # fmt: skip
        est, users, items = fit_ratings(ratings, **settings)
        print(
            f"fitted {len(ratings)} ratings ({len(users)} users x {len(items)} items), depth "
            f"{args.depth}: validation RMSE {est.validation_rmse_:.4f} (best step "
            f"{est.best_iter_} of {est.n_iter_})"
        )
        if args.save_model:
            _save(Path(args.save_model), est, users, items)
            print(f"model saved to {args.save_model}")
        if test is not None:
            pred = predict_pairs(est, users, items, test)
            rmse = float(np.sqrt(np.mean((pred - test["value"].to_numpy()) ** 2)))
            print(f"test RMSE {rmse:.4f} on {len(test)} held-out ratings")
            out = test.rename(columns={"value": "rating"}).assign(prediction=pred)
            out.to_csv(args.out, index=False)
            print(f"predictions written to {args.out}")
    if args.predict:
        pairs = read_pairs(args.predict)
        out = pairs[["user", "item"]].assign(prediction=predict_pairs(est, users, items, pairs))
        out.to_csv(args.out, index=False)
        print(f"{len(out)} predictions written to {args.out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``complete`` on the CLI's subparsers; errors surface as ``ValueError`` /
    ``OSError``, which the CLI prints on one line with exit status 2."""
    p = subparsers.add_parser(
        "complete",
        help="fit a deep matrix factorization to a ratings file and predict missing ratings",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument(
        "ratings", nargs="?", help="u.data, MovieLens ratings.csv or user,item,value CSV"
    )
    p.add_argument("--out", help="predictions CSV (user,item,[rating,]prediction)")
    p.add_argument("--predict", help="CSV of user,item pairs to predict")
    p.add_argument("--test-fraction", type=float, default=0.0, help="hold out this fraction")
    p.add_argument("--save-model", help="folder to store the fitted model in")
    p.add_argument("--model", help="folder of a saved model to reuse (instead of RATINGS)")
    p.add_argument("--duplicates", choices=("error", "mean", "last"), default="error")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument(
        "--width", type=int, default=64, help="hidden width (default 64, as the benchmark)"
    )
    p.add_argument("--init-scale", type=float, default=1e-3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-iter", type=int, default=2000)
    p.add_argument("--max-time", type=float, default=None, help="seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.set_defaults(func=run_complete)
    return p
