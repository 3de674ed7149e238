#!/usr/bin/env bash
# The GPU checks and paper-scale GPU timings of issue 13 (item 6) in one go, for a session that is
# lent a CUDA device. Never needed by CI. At most about 7 minutes (the parts' limits: 120 + 180 +
# 180 + 30 + 60 s); each part has its own time limit, so a slow part costs its limit and the rest
# still runs. On 2026-11-30 on an H200 the parts took 53, 100, 180 (cut), 5 and 16 s.
#
#   here, once:     bash benchmarks/gpu_wheels.sh      (tensorly, scikit-sundae, Fashion-MNIST
#                                                       into .whl/)
#   on the device:  bash benchmarks/gpu.sh             (device tool: carry [".whl"], timeout 480)
#   some parts:     PARTS="tests irmae" bash benchmarks/gpu.sh
#
# Writes into $OUT (the device tool's folder; out/gpu elsewhere) one log per part, PART.txt, that
# ends with its wall time and exit status (tests, tensor_dynamics, irmae_parallel,
# irmae_parallel_status, irmae_flops; irmae when named), the summary.json of each paper-scale
# part that finished, and bench_irmae_flops_cuda.json. The device image's python3 has torch;
# factorflow runs from the working tree (PYTHONPATH), with the carried wheels installed under
# /tmp/site. What the 2026-11-30 runs gave is in benchmarks/results/gpu/ (README there).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PYTHONPATH="$PWD"
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site:$PWD"
  [ -d .whl/data ] && export FACTORFLOW_DATA_DIR="$PWD/.whl/data"
fi
WORK=$(mktemp -d)

# PARTS="tests tensor_dynamics" bash benchmarks/gpu.sh runs only the parts named (default: all
# but irmae, the one-model timing, which the 2026-11-30 run measured)
PARTS=${PARTS:-tests tensor_dynamics irmae_parallel irmae_parallel_status irmae_flops}

part() {  # part NAME LIMIT_S COMMAND...: run, log with its wall time, never stop the script
  local name=$1 limit=$2
  shift 2
  [[ " $PARTS " == *" $name "* ]] || return 0
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s (limit $limit s)" | tee -a "$OUT/$name.txt"
}

{
  nvidia-smi
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
} >"$OUT/env.txt" 2>&1

# 1. every experiment at smoke scale on the device; the engine on the device equals the CPU
part tests 120 $PY -m pytest -m gpu -q -p no:cacheprovider -o addopts="" tests/test_gpu.py \
  tests/test_nn.py

# 2. paper-scale tensor dynamics (R = 1000 on a 10^4 tensor), one seed, on the device
part tensor_dynamics 180 $PY -m factorflow.cli reproduce razin2021-dynamics --scale paper \
  --seeds 1 --device cuda --out "$WORK/td"
[ -f "$WORK/td/summary.json" ] && cp "$WORK/td/summary.json" "$OUT/tensor_dynamics.summary.json"

# 3. paper-scale IRMAE, l = 8 alone (shapes, then Fashion-MNIST; 100 epochs each; not in the
#    default PARTS): the log has each epoch's loss, so a run cut at the limit still gives the time
#    per epoch of one model that has the device to itself
part irmae 120 $PY -m factorflow.cli reproduce irmae --scale paper --seeds 1 --device cuda \
  --option 'ls=[8]' --out "$WORK/irmae"
[ -f "$WORK/irmae/summary.json" ] && cp "$WORK/irmae/summary.json" "$OUT/irmae.summary.json"

# 3b. the whole paper IRMAE grid (8 models) at once, one spawned process per model sharing the
#    device (one model alone keeps an H200 ~1-3 % busy: bench_irmae_flops_cuda.json); cut at the
#    limit, `factorflow status` then gives each model's epochs and hours so far
part irmae_parallel 180 $PY -m factorflow.cli reproduce irmae --scale paper --seeds 1 \
  --device cuda --workers 8 --out "$WORK/irmae8"
part irmae_parallel_status 30 $PY -m factorflow.cli status "$WORK/irmae8"
[ -f "$WORK/irmae8/summary.json" ] && cp "$WORK/irmae8/summary.json" "$OUT/irmae8.summary.json"

# 4. IRMAE's paper run in operations against the GPU's float32 product rate: the hours the eight
#    models take on this device, one at a time (CPU figures: docs/irmae-notes.md)
part irmae_flops 60 $PY benchmarks/bench_irmae_flops.py --device cuda --cores 1 \
  --out "$OUT/bench_irmae_flops_cuda.json"

tail -n 3 "$OUT"/*.txt
