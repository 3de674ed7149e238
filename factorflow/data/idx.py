"""The IDX file format of LeCun et al.'s MNIST page, raw or gzipped.

``magic = 0x00 0x00 <dtype code> <ndim>``, big-endian ``uint32`` dimensions, row-major data:
:func:`read_idx` / :func:`write_idx`. Re-exported by :mod:`factorflow.data.images` and
:mod:`factorflow.data`.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ["read_idx", "write_idx"]

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
