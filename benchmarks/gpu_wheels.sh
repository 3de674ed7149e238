#!/usr/bin/env bash
# Run HERE (with network to PyPI), once, before benchmarks/gpu.sh goes to a device machine: the
# device image (Python 3.12 with torch, scipy, pandas, matplotlib, scikit-learn, pytest, ...)
# lacks these of factorflow's dependencies, and nothing can be fetched there. The wheels land in
# .whl/ (ignored by git through .git/info/exclude); the device call carries it: carry [".whl"].
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir -p .whl
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform manylinux_2_24_x86_64 --platform manylinux_2_34_x86_64)
PIP=(python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12
     --implementation cp "${PLAT[@]}" -d .whl)
# tensorly (imported by the CP-ALS baseline) and scikit-sundae (SUNDIALS CVODE: the paper-scale
# tensor dynamics' flow uses it; 20 MB). cvxpy is imported only when its solver is asked for (the
# experiments use ADMM), so it stays here: the working tree that travels is limited to 64 MiB.
# Fashion-MNIST (IRMAE, natural rank) goes along as its four IDX files, found there through
# $FACTORFLOW_DATA_DIR=.whl/data. In all about 57 MiB.
"${PIP[@]}" tensorly 'scikit-sundae>=1.2'
mkdir -p .whl/data/fashion-mnist
cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .whl/data/fashion-mnist/
du -sh .whl && ls -R .whl
