"""Scikit-learn estimators: contract, reproducibility, planted low-rank recovery, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks

from factorflow.estimators import (
    SKLEARN_CHECKS_SKIPPED,
    CPTensorCompleter,
    DeepMatrixCompleter,
)

FAST = dict(dtype="float64", lr=1e-2, max_iter=400, n_iter_no_change=50)


def _planted(rows=20, cols=25, rank=2, frac=0.5, seed=0):
    """Low-rank matrix plus biases, and a mask of observed entries."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(rows, rank)) @ rng.normal(size=(rank, cols)) + 3.0
    A += rng.normal(size=(rows, 1)) * 0.5 + rng.normal(size=(1, cols)) * 0.5
    return A, rng.random(A.shape) < frac


def _xy(A, mask):
    X = np.argwhere(mask)
    return X, A[mask]


def _expected_failures(est):
    return SKLEARN_CHECKS_SKIPPED


@parametrize_with_checks(
    [DeepMatrixCompleter(max_iter=5), CPTensorCompleter(max_iter=5)],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_checks(estimator, check):
    check(estimator)


def test_params_roundtrip_and_clone():
    est = DeepMatrixCompleter(depth=2, width=7, random_state=3)
    assert est.get_params()["width"] == 7
    c = clone(est)
    assert c.get_params() == est.get_params() and c is not est
    est.set_params(depth=4)
    assert est.depth == 4 and not hasattr(est, "factors_")


def test_fit_attributes_and_history():
    A, mask = _planted()
    X, y = _xy(A, mask)
    est = DeepMatrixCompleter(depth=3, random_state=0, **FAST).fit(X, y)
    assert est.n_features_in_ == 2 and est.shape_ == A.shape
    assert [f.shape for f in est.factors_] == [(20, 25), (20, 20), (20, 20)]
    h = est.history_
    assert len(h["step"]) == len(h["train_rmse"]) == len(h["val_rmse"]) > 0
    assert est.validation_rmse_ == pytest.approx(min(h["val_rmse"]))
    assert est.best_iter_ == h["step"][int(np.argmin(h["val_rmse"]))]
    assert np.isfinite(est.predict(X)).all()


def test_planted_low_rank_recovered_with_depth():
    A, mask = _planted(rows=30, cols=30, frac=0.6)
    settings = FAST | {"max_iter": 800, "early_stopping": False, "init_scale": 1e-2}
    est = DeepMatrixCompleter(depth=3, random_state=0, **settings).fit_matrix(
        np.where(mask, A, np.nan)
    )
    err = np.sqrt(np.mean((est.full_matrix() - A)[~mask] ** 2))
    mean_only = np.sqrt(np.mean((A[mask].mean() - A)[~mask] ** 2))
    assert err < 0.2 * mean_only


def test_biases_start_at_penalized_minimizer():
    """With no steps of training left (depth 1, init ~ 0), predictions are the ridge baseline:
    b, c minimize sum (y - mu - b_u - c_i)^2 + reg (|b|^2 + |c|^2) (checked by its gradient)."""
    A, mask = _planted()
    X, y = _xy(A, mask)
    reg = 5.0
    est = DeepMatrixCompleter(
        depth=1, bias_reg=reg, bias_sweeps=500, lr=1e-12, max_iter=1, early_stopping=False,
        init_scale=1e-12, dtype="float64",
    ).fit(X, y)  # fmt: skip
    r = y - est.intercept_ - est.row_bias_[X[:, 0]] - est.col_bias_[X[:, 1]]
    gb = -np.bincount(X[:, 0], weights=r, minlength=20) + reg * est.row_bias_
    gc = -np.bincount(X[:, 1], weights=r, minlength=25) + reg * est.col_bias_
    assert np.abs(gb).max() < 1e-8 and np.abs(gc).max() < 1e-8


def test_reproducible_with_random_state():
    A, mask = _planted()
    X, y = _xy(A, mask)
    p1 = DeepMatrixCompleter(depth=2, random_state=7, **FAST).fit(X, y).predict(X)
    p2 = DeepMatrixCompleter(depth=2, random_state=7, **FAST).fit(X, y).predict(X)
    p3 = DeepMatrixCompleter(depth=2, random_state=8, **FAST).fit(X, y).predict(X)
    np.testing.assert_array_equal(p1, p2)
    assert not np.array_equal(p1, p3)


def test_nan_matrix_round_trip():
    A, mask = _planted()
    M = np.where(mask, A, np.nan)
    est = DeepMatrixCompleter(depth=2, random_state=0, **FAST).fit_matrix(M)
    F = est.complete(M)
    assert F.shape == M.shape and np.isfinite(F).all()
    np.testing.assert_array_equal(F[mask], M[mask])  # observed entries kept
    np.testing.assert_allclose(F[~mask], est.full_matrix()[~mask])
    np.testing.assert_allclose(est.predict(np.argwhere(~mask)), F[~mask], rtol=1e-10)
    assert est.shape is None  # fit_matrix does not change the settings


def test_unseen_ids_get_bias_only_prediction():
    A, mask = _planted()
    X, y = _xy(A, mask)
    est = DeepMatrixCompleter(depth=2, random_state=0, **FAST).fit(X, y)
    p = est.predict(np.array([[100, 3], [4, 100], [100, 100]]))
    mu, b, c = est.intercept_, est.row_bias_, est.col_bias_
    np.testing.assert_allclose(p, [mu + c[3], mu + b[4], mu])


def test_saved_model_predicts_the_same(tmp_path):
    A, mask = _planted()
    X, y = _xy(A, mask)
    est = DeepMatrixCompleter(depth=3, random_state=0, **FAST).fit(X, y)
    est.save(tmp_path / "m")
    back = DeepMatrixCompleter.load(tmp_path / "m")
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    assert back.get_params() == est.get_params()


def test_grid_search_over_depth_pipeline_and_cross_val():
    A, mask = _planted(rows=15, cols=15, frac=0.6)
    X, y = _xy(A, mask)
    base = DeepMatrixCompleter(shape=A.shape, random_state=0, **FAST | {"max_iter": 150})
    cv = KFold(3, shuffle=True, random_state=0)
    gs = GridSearchCV(base, {"depth": [1, 3]}, cv=cv, scoring="neg_root_mean_squared_error")
    gs.fit(X, y)
    assert gs.best_params_["depth"] in (1, 3) and len(gs.cv_results_["mean_test_score"]) == 2
    pipe = Pipeline([("ids", FunctionTransformer(lambda Z: np.asarray(Z))), ("dmf", base)])
    scores = cross_val_score(pipe, X, y, cv=cv, scoring="neg_root_mean_squared_error")
    assert scores.shape == (3,) and np.all(np.isfinite(scores))


def test_cp_tensor_completer_and_tensorly():
    import tensorly as tl

    rng = np.random.default_rng(0)
    T = np.einsum("ir,jr,kr->ijk", *[rng.normal(size=(6, 1)) * 1.5 for _ in range(3)]) + 1.0
    X = np.argwhere(np.ones(T.shape, dtype=bool))
    keep = rng.random(len(X)) < 0.5
    est = CPTensorCompleter(
        rank=3, init_scale=0.1, dtype="float64", random_state=0, max_iter=1500,
        early_stopping=False,
    ).fit(X[keep], T[tuple(X[keep].T)])  # fmt: skip
    assert est.n_features_in_ == 3 and est.shape_ == (6, 6, 6)
    full = tl.cp_to_tensor(est.to_tensorly())
    np.testing.assert_allclose(full.ravel(), est.predict(X), atol=1e-10)
    err = np.sqrt(np.mean((est.predict(X[~keep]) - T[tuple(X[~keep].T)]) ** 2))
    assert err < 0.5 * np.std(T)
    assert est.predict(np.array([[9, 0, 0]]))[0] == pytest.approx(est.intercept_)


@pytest.mark.parametrize(
    "X, msg",
    [
        (np.zeros((4, 3), dtype=int), "shape"),
        (np.zeros(4, dtype=int), "shape"),
        (np.array([[0, 1], [-1, 2], [1, 1], [2, 0]]), "negative"),
        (np.array([[0, 1.5], [1, 2], [1, 1], [2, 0]]), "integer"),
    ],
)
def test_bad_X(X, msg):
    with pytest.raises(ValueError, match=msg):
        DeepMatrixCompleter(max_iter=2).fit(X, np.ones(len(X)))


def test_shape_smaller_than_indices():
    X = np.array([[0, 0], [5, 1], [1, 1]])
    with pytest.raises(ValueError, match="smaller than the indices"):
        DeepMatrixCompleter(shape=(3, 3), max_iter=2).fit(X, np.ones(3))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_y(bad):
    X = np.array([[0, 0], [1, 1], [2, 1]])
    with pytest.raises(ValueError, match="NaN or infinite"):
        DeepMatrixCompleter(max_iter=2).fit(X, np.array([1.0, bad, 2.0]))


def test_duplicates_error_mean_last():
    X = np.array([[0, 0], [1, 1], [0, 0], [2, 1]])
    y = np.array([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="more than once"):
        DeepMatrixCompleter(max_iter=2).fit(X, y)
    kw = dict(depth=1, max_iter=1, early_stopping=False, bias_reg=0.0, bias_sweeps=0, lr=1e-12)
    for how, want in (("mean", 2.0), ("last", 3.0)):
        est = DeepMatrixCompleter(duplicates=how, dtype="float64", biases=False, **kw)
        est.set_params(init_scale=1e-12).fit(X, y)
        assert est.predict(np.array([[0, 0]]))[0] == pytest.approx(0.0, abs=1e-6)
        from factorflow.estimators._base import _dedupe

        Xd, yd = _dedupe(X, y, how)
        assert len(Xd) == 3 and yd[(Xd == [0, 0]).all(1)][0] == want


def test_fit_matrix_rejects_inf_and_non_2d():
    with pytest.raises(ValueError, match="infinite"):
        DeepMatrixCompleter().fit_matrix(np.array([[1.0, np.inf], [np.nan, 2.0]]))
    with pytest.raises(ValueError, match="2-D"):
        DeepMatrixCompleter().fit_matrix(np.ones(3))


def test_progress_bar_and_max_time(capsys):
    A, mask = _planted()
    X, y = _xy(A, mask)
    est = DeepMatrixCompleter(depth=2, progress=True, max_time=0.0, **FAST).fit(X, y)
    assert est.n_iter_ == 1 and len(est.history_["step"]) == 1  # one step, then the time limit
    assert "DeepMatrixCompleter" in capsys.readouterr().err
