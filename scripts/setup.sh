#!/usr/bin/env bash
# All set-up on a fresh machine, idempotent: a virtual environment in .venv with torch 2.13.0
# installed FIRST (so no other torch build is pulled in), factorflow with its extras (data sets,
# cluster executors, dev tools, the stiff integrator, the benchmarks' comparisons), and the
# Fashion-MNIST data (Debian's package where apt is available and we are root; otherwise the
# checksummed downloader, which needs internet and is skipped quietly without it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
  "$VPY" -m pip install -q --upgrade pip
  "$VPY" -m pip install -q "torch==2.13.0"
fi
"$VPY" -m pip install -q -e ".[data,cluster,dev,stiff,bench]"
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
      >/dev/null 2>&1 || echo "setup: could not install Debian's dataset-fashion-mnist (continuing)"
  else
    "$VPY" -m factorflow.data.images download fashion-mnist >/dev/null 2>&1 \
      || echo "setup: Fashion-MNIST not downloaded (no internet?); tests that need it will skip"
  fi
fi
echo "setup: ok ($("$VPY" -c 'import torch, factorflow; print("torch", torch.__version__, "factorflow", factorflow.__version__)'))"
