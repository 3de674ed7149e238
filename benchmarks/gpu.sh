#!/usr/bin/env bash
# The GPU checks and paper-scale GPU timings of issue 13 (item 6) in one go, for a session that is
# lent a CUDA device. Never needed by CI. The default parts take at most about 8 minutes (their
# limits: 120 + 150 + 180 + 30 s); each part has its own time limit, so a slow part costs its
# limit and the rest still runs. On 2026-11-30 on an H200 the parts then run (tests,
# tensor_dynamics, irmae_parallel, irmae_parallel_status, irmae_flops) took 53, 100, 180 (cut),
# 5 and 16 s; the default parts since are the ones that run no longer measured: the IRMAE step
# from a CUDA graph (test, benchmark, and the eight models with it).
#
#   here, once:     bash benchmarks/gpu_wheels.sh      (tensorly, scikit-sundae, Fashion-MNIST
#                                                       into .whl/)
#   on the device:  bash benchmarks/gpu.sh             (device tool: carry [".whl"], timeout 540)
#   some parts:     PARTS="tests irmae" bash benchmarks/gpu.sh
#
# Writes into $OUT (the device tool's folder; out/gpu elsewhere) one log per part, PART.txt, that
# ends with its wall time and exit status, the summary.json of each paper-scale part that
# finished, and the benchmarks' JSON (bench_irmae_step_cuda.json, bench_irmae_flops_cuda.json).
# The device image's python3 has torch; factorflow runs from the working tree (PYTHONPATH), with
# the carried wheels installed under /tmp/site. What the 2026-11-30 runs gave is in
# benchmarks/results/gpu/ (README there).
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

# PARTS="tests tensor_dynamics" bash benchmarks/gpu.sh runs only the parts named. The default:
# what the 2026-11-30 runs did not measure (the CUDA-graph step); the others (tensor_dynamics,
# irmae, irmae_parallel[_status], irmae_flops, and talk_seven, the other experiments at paper
# scale) by name
PARTS=${PARTS:-tests irmae_step irmae_graphs irmae_graphs_status}

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

# 3a. IRMAE's step three ways in one process (loss read every step, as the loop did before the
#    step module; summed on the device, as it does now; replayed from a CUDA graph), for each
#    model of the paper grid: the per-step ratios that decide whether graphs become the default
part irmae_step 150 $PY benchmarks/bench_irmae_step.py --device cuda --steps 200 --rounds 3 \
  --out "$OUT/bench_irmae_step_cuda.json"

# 3b. the whole paper IRMAE grid (8 models) at once, one spawned process per model sharing the
#    device (one model alone keeps an H200 ~1-3 % busy: bench_irmae_flops_cuda.json); cut at the
#    limit, `factorflow status` then gives each model's epochs and hours so far
part irmae_parallel 180 $PY -m factorflow.cli reproduce irmae --scale paper --seeds 1 \
  --device cuda --workers 8 --out "$WORK/irmae8"
part irmae_parallel_status 30 $PY -m factorflow.cli status "$WORK/irmae8"
[ -f "$WORK/irmae8/summary.json" ] && cp "$WORK/irmae8/summary.json" "$OUT/irmae8.summary.json"

# 3c. as 3b, each model's step replayed from a CUDA graph (FACTORFLOW_CUDA_GRAPHS=1): the epochs
#    reached within the limit against 3b's (2026-11-30: shapes 11, Fashion-MNIST 9 after 182 s,
#    with the loop that read the loss every step; 3a tells the two changes apart)
part irmae_graphs 180 env FACTORFLOW_CUDA_GRAPHS=1 $PY -m factorflow.cli reproduce irmae \
  --scale paper --seeds 1 --device cuda --workers 8 --out "$WORK/irmae8g"
part irmae_graphs_status 30 $PY -m factorflow.cli status "$WORK/irmae8g"

# 3d. the seven experiments of the three papers at paper scale on the device, all at once (not
#    in the default PARTS; the CPU takes 1.4 h on 2 cores): cut at the limit, the talk's log says
#    which finished and when; the 30-minute GPU target of the whole talk needs them
part talk_seven 300 $PY -m factorflow.cli reproduce talk --scale paper --device cuda --jobs 7 \
  --only arora2019-completion,arora2019-dynamics,razin2020-2x2,razin2020-perturbed,razin2020-tensor-recovery,razin2021-dynamics,razin2021-natural-rank \
  --out "$WORK/talk"
[ -f "$WORK/talk/report.md" ] && cp "$WORK/talk/report.md" "$OUT/talk_seven_report.md"

# 4. IRMAE's paper run in operations against the GPU's float32 product rate: the hours the eight
#    models take on this device, one at a time (CPU figures: docs/irmae-notes.md)
part irmae_flops 60 $PY benchmarks/bench_irmae_flops.py --device cuda --cores 1 \
  --out "$OUT/bench_irmae_flops_cuda.json"

tail -n 3 "$OUT"/*.txt
