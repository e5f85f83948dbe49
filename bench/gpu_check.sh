#!/usr/bin/env bash
# The GPU checks and benchmarks in one prepared run, for a lent GPU machine (device tool) or any
# CUDA box: `bash bench/gpu_check.sh [OUTDIR]`. On an offline image whose python3 already has
# torch with CUDA, wheels of the few missing packages may wait in .whl/ (see bench/RESULTS.md).
# Each step has its own time limit and writes its log to OUTDIR, so a slow step costs only itself.
# STEPS="a b" runs only those steps, in the order given (names below).
set -u
out=${1:-${OUT:-gpu-out}}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="$PWD:/tmp/site"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/tmp/numba-cache DIMALIGN_OFFLINE=1
export DIMALIGN_HOME=$(mktemp -d)
declare -A commands limits
step() {  # step NAME SECONDS COMMAND...: register a step
  local name=$1; limits[$name]=$2; shift 2
  commands[$name]=$(printf '%q ' "$@"); order+=("$name")
}
run_step() {
  local name=$1 limit=${limits[$1]}
  echo "=== $name (limit ${limit}s) $(date +%T)"
  local t0=$SECONDS
  eval "timeout $limit ${commands[$name]}" > "$out/$name.log" 2>&1; local rc=$?
  tail -n 40 "$out/$name.log"
  echo "=== $name rc=$rc in $((SECONDS - t0)) s"
}
{ nvidia-smi -L; python3 -c 'import torch, torchvision, sklearn, numba, umap; print("torch", torch.__version__, "tv", torchvision.__version__, "sklearn", sklearn.__version__, "numba", numba.__version__, "umap", umap.__version__, torch.cuda.get_device_name(0))'; } 2>&1 | tee "$out/env.log"
if command -v make >/dev/null; then
  step test-gpu 100 env PYTEST_ADDOPTS="-p no:cacheprovider -q" make test-gpu GPU_PY=python3
else
  step test-gpu 100 python3 -m pytest tests_gpu -p no:cacheprovider -q
fi
step unlearn_step 80 python3 -m bench unlearn_step --runs 2 --epochs 2
step features 45 python3 -m bench features --runs 5
step gpu_train 90 python3 -m bench gpu_train --runs 3 --epochs 1
step unlearn_cost 130 python3 -m bench unlearn_cost --preset cifar10-class \
  --methods retrain,muda --runs 3 --retrain-runs 1 --baseline-epochs 3
step gpu_train_compile 100 python3 -m bench gpu_train --runs 1 --epochs 1 --compile
for name in ${STEPS:-${order[@]}}; do run_step "$name"; done
