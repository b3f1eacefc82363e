#!/usr/bin/env bash
# The GPU checks, as one script for a session that is lent a GPU machine for a few minutes
# (device time is scarce: everything here is bounded, prints as it goes, and writes its tables
# under $OUT, default ./gpu-out). Run from the repository root:
#
#     OUT=/some/dir bash benchmarks/gpu.sh
#
# What it checks, in order (each with its own time limit, so one hang does not eat the rest):
#   1. the tests that have a GPU path: packs against trials alone (bf16 and float32), OOM;
#   2. one trial's overhead on the GPU (benchmarks/overhead.py --device cuda);
#   3. packs' step speed on the GPU: MLP, CNN and ResNet, K = 4, 16 (benchmarks/pack_steps.py);
#   4. whole sweeps with packs: pack 1 against auto, default sweep on the GPU, one worker per
#      GPU, bf16 (benchmarks/packing.py --gpu), the issue's goal being >= 10x trials per hour.
# Record what it printed in docs/benchmarks.md with the machine and date.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
if [ ! -x "$PY" ]; then
    python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 -e '.[test]'
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
run() {  # run LIMIT NAME COMMAND...: bounded, its output kept in $OUT/NAME.txt
    local limit=$1 name=$2
    shift 2
    echo "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt" | tail -25
    echo "== $name: exit ${PIPESTATUS[0]}"
}
run 120 tests "$PY" -m pytest -q -x tests/test_pack.py tests/test_train.py
run 60 overhead "$PY" benchmarks/overhead.py --device cuda --repeats 3
run 90 pack_steps4 "$PY" benchmarks/pack_steps.py --device cuda --members 4 --repeats 3
run 90 pack_steps16 "$PY" benchmarks/pack_steps.py --device cuda --members 16 --repeats 3
run 240 packing "$PY" benchmarks/packing.py --gpu --sweeps default --packs 1 auto
