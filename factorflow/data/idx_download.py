"""Where the IDX files of MNIST and Fashion-MNIST come from, and their checksummed download.

* :data:`DATASETS`, the four standard file names per dataset, :data:`ENV_VAR` and the default
  download folder (``$FACTORFLOW_DATA_DIR``, else ``~/.cache/factorflow``).
* :func:`download`: fetch the four gzipped files from the standard mirrors, each verified
  against its embedded md5 (of the published ``.gz`` or of its content) before it is renamed
  into place; :class:`DownloadError` / :class:`ChecksumError` otherwise.
* ``_cli``: ``python -m factorflow.data.images download DATASET [--dir DIR]`` (the entry point
  stays in :mod:`factorflow.data.images`, which re-exports everything here).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "DATASETS",
    "DEBIAN_PACKAGE",
    "ENV_VAR",
    "ChecksumError",
    "DownloadError",
    "download",
]

# --------------------------------------------------------------------------- constants

#: Environment variable naming a folder that holds the IDX files (directly or per dataset).
ENV_VAR = "FACTORFLOW_DATA_DIR"

#: The Debian package that ships Fashion-MNIST (see ``images.DEBIAN_FASHION_MNIST_DIR``).
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


class DownloadError(RuntimeError):
    """A file could not be fetched from any mirror."""


class ChecksumError(DownloadError):
    """A fetched file does not match its known checksum (the file is removed)."""


def _check_dataset(dataset: str) -> str:
    name = dataset.lower().replace("_", "-")
    if name not in DATASETS:
        raise ValueError(f"unknown IDX dataset {dataset!r}; expected one of {DATASETS}")
    return name


def _default_download_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "factorflow"


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
