"""Thread limits shared by the CLI and the talk's worker processes."""

from __future__ import annotations

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
