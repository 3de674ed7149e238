"""`factorflow complete`: the real CLI entry point on small CSVs, and its one-line errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from factorflow.cli import main
from factorflow.complete import read_ratings

FAST = ["--max-iter", "60", "--lr", "1e-2", "--depth", "2"]


def _ratings(path, header="user,item,value", n_users=8, n_items=6, seed=0):
    rng = np.random.default_rng(seed)
    rows = [
        (
            f"u{u}",
            f"m{i}",
            float(np.clip(3 + 0.5 * (u % 3) - 0.4 * (i % 2) + rng.normal(0, 0.1), 1, 5)),
        )
        for u in range(n_users)
        for i in range(n_items)
        if rng.random() < 0.7
    ]
    path.write_text(header + "\n" + "".join(f"{u},{i},{v:.2f}\n" for u, i, v in rows))
    return rows


def test_fit_predict_save_and_reuse(tmp_path, capsys):
    _ratings(tmp_path / "r.csv")
    (tmp_path / "pairs.csv").write_text("user,item\nu0,m1\nu3,m5\nstranger,m0\nu1,unknown\n")
    pred, model = tmp_path / "p.csv", tmp_path / "model"
    rc = main(["complete", str(tmp_path / "r.csv"), "--predict", str(tmp_path / "pairs.csv"),
               "--out", str(pred), "--save-model", str(model), *FAST])  # fmt: skip
    assert rc == 0
    out = capsys.readouterr().out
    assert "validation RMSE" in out
    first = pd.read_csv(pred, dtype={"user": str, "item": str})
    assert list(first.columns) == ["user", "item", "prediction"]
    assert first.user.tolist() == ["u0", "u3", "stranger", "u1"]  # the file's own ids
    assert np.isfinite(first.prediction).all()
    pred2 = tmp_path / "p2.csv"
    rc = main(["complete", "--model", str(model), "--predict", str(tmp_path / "pairs.csv"),
               "--out", str(pred2)])  # fmt: skip
    assert rc == 0
    np.testing.assert_allclose(pd.read_csv(pred2).prediction, first.prediction)


def test_test_fraction_and_movielens_formats(tmp_path, capsys):
    rows = _ratings(tmp_path / "x.csv")
    ml = tmp_path / "ratings.csv"
    ml.write_text(
        "userId,movieId,rating,timestamp\n"
        + "".join(f"{u[1:]},{i[1:]}0,{v:.1f},100\n" for u, i, v in rows)
    )
    udata = tmp_path / "u.data"
    udata.write_text("".join(f"{u[1:]}\t{i[1:]}\t{v:.1f}\t100\n" for u, i, v in rows))
    for path in (ml, udata):
        df = read_ratings(path)
        assert len(df) == len(rows) and df.user.iloc[0] == "0"
        out = tmp_path / f"{path.name}.pred.csv"
        assert (
            main(["complete", str(path), "--test-fraction", "0.2", "--out", str(out), *FAST]) == 0
        )
        assert "test RMSE" in capsys.readouterr().out
        got = pd.read_csv(out)
        assert list(got.columns) == ["user", "item", "rating", "prediction"]
        assert 0 < len(got) < len(rows)


@pytest.mark.parametrize(
    "text, msg",
    [
        ("", "empty file"),
        ("user,item,value\n", "no rows"),
        ("name,thing,value\na,b,1\n", "lacks a user, item or value column"),
        ("user,item,value\na,b,1\nc,d,nan\n", "line 3: 1 NaN, infinite"),
        ("user,item,value\na,b,1\nc,d,inf\n", "NaN, infinite"),
        ("user,item,value\na,b,1\nc,d,4\na,b,2\n", "rated more than once"),
        ("userId,movieId,rating\n1,2,3\n1,3,nan\n", "non-finite rating"),
        ('user,item,value\na,b,1\n"c,d,2\n', "not a CSV file"),
    ],
)
def test_bad_input_one_line_error(tmp_path, capsys, text, msg):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    rc = main(["complete", str(path), "--out", str(tmp_path / "o.csv"), "--test-fraction", "0.2"])
    err = capsys.readouterr().err
    assert rc == 2
    assert msg in err and err.startswith("factorflow: error:") and err.count("\n") == 1


@pytest.mark.parametrize("how, want", [("mean", 1.5), ("last", 2.0)])
def test_duplicates_mean_last(tmp_path, how, want):
    path = tmp_path / "d.csv"
    path.write_text("user,item,value\na,b,1\nc,d,4\na,b,2\n")
    df = read_ratings(path, duplicates=how)
    assert len(df) == 2 and df.loc[(df.user == "a") & (df.item == "b"), "value"].item() == want


def test_usage_errors(tmp_path, capsys):
    _ratings(tmp_path / "r.csv")
    assert main(["complete", str(tmp_path / "r.csv"), "--test-fraction", "0.2"]) == 2
    assert "--out" in capsys.readouterr().err
    assert (
        main(["complete", "--model", str(tmp_path / "nope"), "--predict", "x", "--out", "y"]) == 2
    )
    assert "no saved model" in capsys.readouterr().err
    assert main(["complete", str(tmp_path / "missing.csv")]) == 2


def test_pairs_file_errors_name_the_file(tmp_path):
    from factorflow.complete import read_pairs

    empty = tmp_path / "pairs.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"pairs.csv: empty file \(no header, no ratings\)"):
        read_pairs(empty)
    with pytest.raises(FileNotFoundError, match="no such pairs file"):
        read_pairs(tmp_path / "missing.csv")
