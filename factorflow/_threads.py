"""Thread limits shared by the CLI and the talk's worker processes."""

from __future__ import annotations

import os

import torch


def set_threads(n: int) -> None:
    """Use ``n`` threads for torch's intra-op work AND for numpy/scipy's BLAS and LAPACK
    (OpenBLAS, MKL; through ``threadpoolctl``), for the rest of the process.

    Both matter: with two experiment processes on two cores, an ADMM nuclear-norm solve (numpy
    SVDs and matrix-vector products) took 119 s against 30 s alone while OpenBLAS used its
    default of one thread per core in each process (measured)."""
    n = max(1, int(n))
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a declared dependency
        return
    threadpool_limits(limits=n)


def set_threads_from_env() -> None:
    """The command line's threads: ``FACTORFLOW_THREADS``, default 1. The talk's problems are
    small (2x2 to 100x100 matrices, 10^4 tensors), and sweeps and the talk get their
    parallelism from processes (an ADMM solve took 119 s instead of 30 s with two BLAS threads
    in each of two processes on two cores: :func:`set_threads`)."""
    set_threads(int(os.environ.get("FACTORFLOW_THREADS", "1")))
