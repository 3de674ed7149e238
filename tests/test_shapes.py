"""Shape data (numpy, seeded, 7 degrees of freedom) and MNIST-like images at 32x32."""

import numpy as np
import pytest
import torch

from factorflow.data.images import ImageData, write_idx
from factorflow.data.shapes import SHAPE_DOF, load_images32, make_shapes, to_32


def test_shapes_reproducible_shapes_and_range():
    a, pa = make_shapes(50, seed=3)
    b, pb = make_shapes(50, seed=3)
    c, _ = make_shapes(50, seed=4)
    assert a.shape == (50, 3, 32, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k])
    assert not np.array_equal(a, c)
    assert a.min() >= 0.0 and a.max() < 1.0


def test_shapes_parameters_ranges_and_all_seven_vary():
    _, p = make_shapes(2000, seed=0)
    assert p["center"].min() == 8 and p["center"].max() == 24
    assert set(np.unique(p["size"])) == set(range(3, 9))
    assert set(np.unique(p["kind"])) == {0, 1}
    assert (p["color"] >= 0).all() and (p["color"] < 1).all()
    columns = np.column_stack([p["color"], p["center"], p["size"], p["kind"]])
    assert columns.shape[1] == SHAPE_DOF
    assert (columns.std(axis=0) > 0).all()
    # independent draws: the 7 parameters are not linearly dependent
    assert np.linalg.matrix_rank(np.cov(columns, rowvar=False)) == SHAPE_DOF


def test_shapes_geometry_matches_parameters():
    x, p = make_shapes(200, seed=1)
    for i in range(200):
        cx, cy = p["center"][i]
        s = p["size"][i]
        lit = x[i].sum(axis=0) > 0
        # colour: every lit pixel has the shape's colour
        np.testing.assert_allclose(x[i][:, lit].T, np.broadcast_to(p["color"][i], (lit.sum(), 3)))
        assert lit[cy, cx]  # the centre (or top-left corner) is drawn
        if p["kind"][i] == 0:  # circle: area ~ pi s^2, symmetric around the centre
            assert abs(lit.sum() - np.pi * s**2) < 2 * np.pi * s + 2
            assert lit[cy, cx - s] and (cx - s == 0 or not lit[cy, cx - s - 1])
            assert lit[cy - s, cx] and lit[min(cy + s, 31), cx]
        else:  # square: rows cy..cy+s, columns cx..cx+s, clipped at 31
            rows = np.flatnonzero(lit.any(axis=1))
            cols = np.flatnonzero(lit.any(axis=0))
            assert (rows[0], rows[-1]) == (cy, min(cy + s, 31))
            assert (cols[0], cols[-1]) == (cx, min(cx + s, 31))


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_shapes_bad_n(n):
    with pytest.raises(ValueError, match="n must be"):
        make_shapes(n, seed=0)


def test_to_32_resize_and_pad():
    x = torch.rand(5, 28, 28)
    r = to_32(x, "resize")
    p = to_32(x, "pad")
    assert r.shape == p.shape == (5, 1, 32, 32)
    assert r.min() >= 0 and r.max() <= 1
    torch.testing.assert_close(p[:, 0, 2:30, 2:30], x)
    assert float(p[:, :, :2].abs().max()) == 0.0
    const = to_32(torch.full((2, 28, 28), 0.3), "resize")
    torch.testing.assert_close(const, torch.full_like(const, 0.3))
    with pytest.raises(ValueError, match=r"\(n, 28, 28\)"):
        to_32(torch.rand(5, 32, 32))
    with pytest.raises(ValueError, match="unknown mode"):
        to_32(x, "crop")


def _fake_idx(folder, n_train=30, n_test=10):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(
            folder / f"{prefix}-images-idx3-ubyte",
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        )
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))


def test_load_images32_from_user_idx(tmp_path):
    _fake_idx(tmp_path)
    d = load_images32("fashion-mnist", data_dir=tmp_path, n_train=20, n_test=5, seed=1)
    assert isinstance(d, ImageData)
    assert d.train_images.shape == (20, 32, 32) and d.test_images.shape == (5, 32, 32)
    assert d.train_labels.shape == (20,)
    assert 0 <= float(d.train_images.min()) and float(d.train_images.max()) <= 1
    assert "resize" in d.source
    again = load_images32("fashion_mnist", data_dir=tmp_path, n_train=20, n_test=5, seed=1)
    torch.testing.assert_close(again.train_images, d.train_images)
    full = load_images32("fashion-mnist", data_dir=tmp_path, mode="pad")
    assert full.n_train == 30 and full.n_test == 10


def test_load_images32_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'cifar10'"):
        load_images32("cifar10")
    with pytest.raises(ValueError, match="unknown mode"):
        load_images32("mnist", mode="crop")
    _fake_idx(tmp_path)
    with pytest.raises(ValueError, match="only 30 images"):
        load_images32("fashion-mnist", data_dir=tmp_path, n_train=31)
