"""``python -m factorflow.data.images download DATASET [--dir DIR]`` against a local server.

The server listens on 127.0.0.1 only; the files are small synthetic IDX sets whose digests are
passed with ``--checksum`` (real MNIST digests cannot match synthetic files).
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from factorflow.data.images import _cli, load_images, write_idx

_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """(url, folder) of a local HTTP server on 127.0.0.1 serving a synthetic IDX set."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    folder = tmp_path / "served"
    folder.mkdir()
    rng = np.random.default_rng(0)
    write_idx(folder / _NAMES["train_images"], rng.integers(0, 256, (20, 28, 28), dtype=np.uint8))
    write_idx(folder / _NAMES["train_labels"], np.arange(20, dtype=np.uint8) % 10)
    write_idx(folder / _NAMES["test_images"], rng.integers(0, 256, (10, 28, 28), dtype=np.uint8))
    write_idx(folder / _NAMES["test_labels"], np.arange(10, dtype=np.uint8))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", folder
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _checksum_args(folder: Path) -> list[str]:
    args = []
    for p in sorted(folder.glob("*.gz")):
        args += ["--checksum", f"{p.name}={hashlib.md5(p.read_bytes()).hexdigest()}"]
    return args


def test_module_entry_point_downloads(served: tuple[str, Path], tmp_path: Path) -> None:
    url, folder = served
    dest = tmp_path / "dest"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["no_proxy"] = "127.0.0.1,localhost"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "factorflow.data.images",
            "download",
            "mnist",
            "--dir",
            str(dest),
            "--base-url",
            url,
            "--timeout",
            "10",
            *_checksum_args(folder),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(dest / "mnist")
    assert sorted(p.name for p in (dest / "mnist").iterdir()) == sorted(_NAMES.values())
    data = load_images("mnist", dest, fallback=False)
    assert (data.n_train, data.n_test) == (20, 10)


def test_default_dir_is_env_var(
    served: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    url, folder = served
    monkeypatch.setenv("FACTORFLOW_DATA_DIR", str(tmp_path / "envdir"))
    rc = _cli(["download", "fashion-mnist", "--base-url", url, *_checksum_args(folder)])
    assert rc == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "envdir" / "fashion-mnist")
    assert load_images("fashion-mnist").source.startswith("idx:")


def test_missing_file_exits_1_naming_it(served: tuple[str, Path], tmp_path: Path, capsys) -> None:
    url, folder = served
    args = _checksum_args(folder)
    (folder / _NAMES["test_labels"]).unlink()
    rc = _cli(["download", "mnist", "--dir", str(tmp_path / "d"), "--base-url", url, *args])
    err = capsys.readouterr().err
    assert rc == 1
    assert "t10k-labels-idx1-ubyte.gz" in err and "404" in err


def test_checksum_mismatch_exits_1(served: tuple[str, Path], tmp_path: Path, capsys) -> None:
    url, folder = served
    args = _checksum_args(folder)
    i = args.index(next(a for a in args if a.startswith("train-labels")))
    args[i] = "train-labels-idx1-ubyte.gz=" + "0" * 32
    rc = _cli(["download", "mnist", "--dir", str(tmp_path / "d"), "--base-url", url, *args])
    err = capsys.readouterr().err
    assert rc == 1 and "train-labels-idx1-ubyte.gz" in err and "checksum" in err


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        _cli(["download", "cifar10", "--dir", str(tmp_path)])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        _cli(["download", "mnist", "--dir", str(tmp_path), "--checksum", "no-equals-sign"])
    assert info.value.code == 2
