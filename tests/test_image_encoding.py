"""Tests for factorflow.data.images' encodings and controls: images as tensor indices
(binarized or k-level), one-vs-all labels, the random-label and random-image variants, and
``ImageData``'s checks. Everything on small synthetic arrays."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from factorflow.data.images import (
    ImageData,
    make_variant,
    one_vs_all,
    permute_labels,
    random_images,
    to_tensor_indices,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_binarization_rule_ties_go_up() -> None:
    x = np.array([[[0.0, 0.49999], [0.5, 1.0]], [[0.25, 0.75], [0.5000001, 0.1]]])
    idx = to_tensor_indices(x)
    assert idx.dtype == torch.long and idx.shape == (2, 4)
    assert idx.tolist() == [[0, 0, 1, 1], [0, 1, 1, 0]]


def test_k_level_rule() -> None:
    x = torch.tensor([[0.0, 0.2, 0.25, 0.49, 0.5, 0.74, 0.75, 0.99, 1.0]], dtype=torch.float64)
    assert to_tensor_indices(x, levels=4).tolist() == [[0, 0, 1, 1, 2, 2, 3, 3, 3]]
    assert to_tensor_indices(x, levels=2).tolist() == [[0, 0, 0, 0, 1, 1, 1, 1, 1]]
    with pytest.raises(ValueError, match="levels"):
        to_tensor_indices(x, levels=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_tensor_indices(x * 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_tensor_indices(torch.tensor([[0.1, float("nan")]]))


def test_one_vs_all() -> None:
    y = one_vs_all(np.array([6, 1, 6, 0]))
    assert y.dtype == torch.float64 and y.tolist() == [2.0, 0.0, 2.0, 0.0]
    y = one_vs_all(torch.tensor([3, 1]), positive_class=1, positive_value=1.0, negative_value=-1)
    assert y.tolist() == [-1.0, 1.0]
    with pytest.raises(ValueError, match="positive class 6 does not occur"):
        one_vs_all(torch.tensor([0, 1, 2]))


def _tiny_data(seed: int = 0) -> ImageData:
    g = _gen(seed)
    return ImageData(
        train_images=torch.rand(40, 3, 3, generator=g),
        train_labels=torch.arange(40) % 10,
        test_images=torch.rand(20, 3, 3, generator=g),
        test_labels=torch.arange(20) % 10,
        dataset="synthetic",
        source="test",
    )


def test_make_variant_original() -> None:
    data = _tiny_data()
    tr_idx, tr_y, te_idx, te_y = make_variant(data, "original", levels=3)
    assert torch.equal(tr_idx, to_tensor_indices(data.train_images, 3))
    assert torch.equal(te_y, one_vs_all(data.test_labels))
    assert tr_idx.shape == (40, 9) and te_idx.shape == (20, 9)
    assert tr_y.dtype == torch.float64


def test_make_variant_rand_label_is_permutation_per_split() -> None:
    data = _tiny_data()
    a = make_variant(data, "rand_label", generator=_gen(5))
    b = make_variant(data, "rand_label", generator=_gen(5))
    c = make_variant(data, "rand_label", generator=_gen(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[1], c[1])
    orig = make_variant(data, "original")
    assert torch.equal(a[0], orig[0]) and torch.equal(a[2], orig[2])  # images untouched
    for k in (1, 3):
        assert torch.equal(torch.sort(a[k]).values, torch.sort(orig[k]).values)
    assert not torch.equal(a[1], orig[1])


def test_make_variant_rand_image() -> None:
    data = _tiny_data()
    a = make_variant(data, "rand_image", levels=3, generator=_gen(1))
    b = make_variant(data, "rand_image", levels=3, generator=_gen(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[0].shape == (40, 9) and a[2].shape == (20, 9) and a[0].dtype == torch.long
    assert int(a[0].min()) == 0 and int(a[0].max()) == 2
    assert torch.equal(a[1], one_vs_all(data.train_labels))  # labels kept
    with pytest.raises(ValueError, match="Generator"):
        make_variant(data, "rand_image")
    with pytest.raises(ValueError, match="unknown variant"):
        make_variant(data, "shuffled", generator=_gen())


def test_controls_use_only_the_generator() -> None:
    torch.manual_seed(0)
    a = random_images(5, 7, 4, _gen(3))
    torch.manual_seed(1)
    b = random_images(5, 7, 4, _gen(3))
    assert torch.equal(a, b) and a.shape == (5, 7) and int(a.max()) <= 3
    labels = torch.arange(50)
    p = permute_labels(labels, _gen(2))
    assert torch.equal(torch.sort(p).values, labels) and not torch.equal(p, labels)
    assert torch.equal(p, permute_labels(labels, _gen(2)))


def test_image_data_validation() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            ImageData(
                torch.full((2, 2, 2), 2.0),
                torch.zeros(2),
                torch.zeros(1, 2, 2),
                torch.zeros(1),
                "x",
                "y",
            )
        with pytest.raises(ValueError, match="train_labels"):
            ImageData(
                torch.zeros(2, 2, 2), torch.zeros(3), torch.zeros(1, 2, 2), torch.zeros(1), "x", "y"
            )
