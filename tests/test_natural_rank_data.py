"""Library functions of the natural-data tensor-rank experiment (factorflow.natural_rank):
data preparation (loading, subsets, fit groups) and the measures. The model, errors and fitting:
test_natural_rank.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import factorflow.natural_rank as nr
from factorflow.natural_rank import (
    FitBatch,
    batched_predict,
    build_variant,
    fit_lbfgs,
    init_paper_weights,
    label_variance,
    paper_error,
)

F64 = torch.float64


# --------------------------------------------------------------------------- data preparation


def _idx_set(folder, n_train: int, n_test: int) -> None:
    from factorflow.data.images import write_idx

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            folder / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), np.uint8)
        )
        write_idx(folder / f"{split}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))


def test_load_dataset_uses_a_given_data_dir_strictly(tmp_path, monkeypatch) -> None:
    from factorflow.data.images import ENV_VAR, DataNotFoundError

    with pytest.raises(ValueError, match=f"data_dir {tmp_path / 'missing'}: no such folder"):
        nr.load_dataset("mnist", str(tmp_path / "missing"))
    _idx_set(tmp_path / "env" / "mnist", 20, 10)  # a full set elsewhere must not stand in
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="no mnist IDX files in"):
        nr.load_dataset("mnist", str(tmp_path / "empty"), fallback=True)
    with pytest.raises(DataNotFoundError, match="no fashion-mnist IDX files.*no mnist IDX"):
        nr.load_dataset(None, str(tmp_path / "empty"))
    _idx_set(tmp_path / "data" / "mnist", 30, 10)
    data, name, note = nr.load_dataset(None, str(tmp_path / "data"))
    assert (name, data.source, data.n_train) == ("mnist", "idx:mnist", 30)
    assert "from data_dir" in note
    # without data_dir the usual search applies ($FACTORFLOW_DATA_DIR here)
    data, name, _ = nr.load_dataset("mnist")
    assert (name, data.n_train) == ("mnist", 20)


def test_subset_images_is_seeded_and_says_what_it_did(tiny_images) -> None:
    data = tiny_images()
    sub, note = nr.subset_images(data, 10, None, seed=4)
    again, _ = nr.subset_images(data, 10, None, seed=4)
    assert sub.n_train == 10 and sub.n_test == data.n_test
    torch.testing.assert_close(sub.train_images, again.train_images)
    g = torch.Generator().manual_seed(4)
    torch.testing.assert_close(
        sub.train_labels, data.train_labels[torch.randperm(data.n_train, generator=g)[:10]]
    )
    assert note == f"train: random 10 of {data.n_train} (subset_seed 4)"
    same, note = nr.subset_images(data, None, 10_000)
    assert same is data and note == "all images"


def test_fit_groups_share_the_design_matrix_and_draw_as_build_variant(tiny_images) -> None:
    data = tiny_images()
    groups = nr.fit_groups(data, nr.VARIANTS, [0, 1], positive_class=3)
    assert [g.name for g in groups] == ["images", "rand_image_seed0", "rand_image_seed1"]
    images = groups[0]
    assert images.columns == [("original", -1), ("rand_label", 0), ("rand_label", 1)]
    for t, (variant, seed) in enumerate(images.columns):
        gen = None if seed < 0 else nr.data_generator(seed)
        ref = build_variant(data, variant, generator=gen, positive_class=3)
        torch.testing.assert_close(images.train_y[:, t], ref.train_y)
        torch.testing.assert_close(images.test_y[:, t], ref.test_y)
        torch.testing.assert_close(images.train_x, ref.train_x)
    ref = build_variant(data, "rand_image", generator=nr.data_generator(1), positive_class=3)
    torch.testing.assert_close(groups[2].train_x, ref.train_x)
    assert [g.name for g in nr.fit_groups(data, ("rand_label",), [0], positive_class=3)] == [
        "images"
    ]


def test_fit_group_rows_match_a_fit_alone(tiny_images) -> None:
    data = tiny_images()
    (group,) = nr.fit_groups(data, ("original", "rand_label"), [0, 1], positive_class=3)
    cfg = {"lbfgs": nr.LBFGSConfig(steps=6), "adam": nr.AdamConfig(), "adam_log": nr.AdamConfig()}
    keys, batch, res = nr.fit_group(group, "lbfgs", (1, 2), [0, 1], dtype=F64, **cfg)
    # original (seeds 0, 1) then rand_label seed 0, seed 1; ranks 1, 2 each
    assert [(k["variant"], k["seed"], k["rank"]) for k in keys] == [
        ("original", 0, 1), ("original", 0, 2), ("original", 1, 1), ("original", 1, 2),
        ("rand_label", 0, 1), ("rand_label", 0, 2), ("rand_label", 1, 1), ("rand_label", 1, 2),
    ]  # fmt: skip
    info = {"dataset": "tiny", "source": "test", "n_train": data.n_train, "n_test": data.n_test,
            "positive_class": 3}  # fmt: skip
    rows, traces, weights = nr.group_rows(group, "lbfgs", keys, batch, res, info=info)
    assert set(rows[0]) == set(nr.COLUMNS)
    j = 5  # rand_label seed 0, rank 2, alone
    alone = FitBatch(ranks=(2,), targets=(batch.targets[j],))
    w0 = init_paper_weights(alone, group.train_x.shape[1], 2, [0])
    r1 = fit_lbfgs(group.train_x, group.train_y, alone, w0, max_steps=6, dtype=F64)
    assert rows[j]["train_objective"] == pytest.approx(float(r1.train_error[0]), rel=1e-9)
    want = paper_error(
        batched_predict(r1.weights, group.test_x, alone.comp_fit, 1)[:, 0],
        group.test_y[:, batch.targets[j]],
        clamp=True,
    )
    assert rows[j]["test_error"] == pytest.approx(float(want), rel=1e-9)
    assert rows[j]["label_variance"] == pytest.approx(label_variance(group.train_y[:, 1]))
    assert weights["lbfgs__rand_label__R2__seed0"].shape == (2, group.train_x.shape[1], 2)
    assert (
        traces["lbfgs__original__R1__seed1__train_error"].shape
        == traces["lbfgs__original__R1__seed1__step"].shape
    )
    with pytest.raises(ValueError, match="unknown optimizer"):
        nr.fit_group(group, "sgd", (1,), [0], **cfg)


def test_optimizer_configs_are_checked() -> None:
    with pytest.raises(ValueError, match="lbfgs steps"):
        nr.LBFGSConfig(steps=0)
    with pytest.raises(ValueError, match="adam needs"):
        nr.AdamConfig(batch=-1)


# --------------------------------------------------------------------------- measures


def _frame(errors: dict) -> pd.DataFrame:
    return pd.DataFrame(
        [{"variant": v, "rank": r, "seed": s, "optimizer": "lbfgs", "train_error": tr,
          "test_error": te, "label_variance": 0.1, "test_label_variance": 0.1}
         for (v, r, s), (tr, te) in errors.items()]
    )  # fmt: skip


def test_measures_by_hand() -> None:
    from factorflow.experiment import NotJudged
    from factorflow.natural_rank import measures as m

    rows = _frame({
        ("original", 1, 0): (0.02, 0.05), ("original", 1, 1): (0.04, 0.07),
        ("original", 3, 0): (0.01, 0.08), ("original", 3, 1): (0.01, float("nan")),
        ("rand_image", 1, 0): (0.09, 0.1), ("rand_image", 3, 0): (0.05, 0.12),
        ("rand_label", 1, 0): (0.12, 0.1), ("rand_label", 3, 0): (0.06, 0.15),
    })  # fmt: skip
    gap = m.rank1_train_gap(rows, "lbfgs")
    assert gap["original"] == pytest.approx(0.03) and gap[
        "ratio_original_to_lowest_control"
    ] == pytest.approx(0.03 / 0.09)
    near = m.random_rank1_vs_label_variance(rows, "lbfgs")
    assert near["rand_image_relative_gap"] == pytest.approx(-0.1)
    assert near["worst_abs_relative_gap"] == pytest.approx(0.2)
    orig = m.original_test_vs_label_variance(rows, "lbfgs")
    assert orig["test_error"] == {"R1": pytest.approx(0.06), "R3": pytest.approx(0.08)}
    assert orig["worst_to_label_variance"] == pytest.approx(0.8) and orig["n_nonfinite"] == 1
    rand = m.random_test_vs_label_variance(rows, "lbfgs")
    assert rand["rank"] == 3 and rand["lowest_to_label_variance"] == pytest.approx(1.2)
    drop = m.train_drop_with_rank(rows, "lbfgs")
    assert drop["ratio_largest_R_to_R1"] == pytest.approx(0.01 / 0.03)
    with pytest.raises(NotJudged, match="no adam fits"):
        m.rank1_train_gap(rows, "adam")
    only_orig = rows[rows["variant"] == "original"]
    for fn in (
        m.rank1_train_gap,
        m.random_rank1_vs_label_variance,
        m.random_test_vs_label_variance,
    ):
        with pytest.raises(NotJudged):
            fn(only_orig, "lbfgs")
    with pytest.raises(NotJudged):
        m.train_drop_with_rank(rows[rows["rank"] == 1], "lbfgs")
