#!/usr/bin/env bash
# The defr bench runs behind docs/benchmarks.md §2 (PyTorch eager fp32, ONNX Runtime fp32 and int8), one
# command per table: tiny-vit at 224 px and ViT-B/32 at 224 and 672 px, batch 1 and 8, 0 / 16 / 225 pairs
# per image, one thread and all cores. Backends take turns call by call, 50 ms apart (defr.bench.SETTLE_S).
# Usage: benchmarks/int8_bench.sh [DEFR]
# (DEFR: the defr command, default .venv/bin/defr); writes benchmarks/results/bench_int8_*.json.
set -euo pipefail
DEFR=${1:-.venv/bin/defr}
OUT=benchmarks/results
COMMON=(--pairs 0,16,225 --batch 1,8 --backends torch,onnxruntime,onnxruntime-int8)
for threads in 1 all; do
  T=(); [[ $threads == 1 ]] && T=(--threads 1)
  $DEFR bench --model tiny-vit --image-size 224 "${COMMON[@]}" "${T[@]}" --warmup 3 --repeats 10 \
    --json $OUT/bench_int8_tiny-vit_224_t$threads.json
  $DEFR bench --model ViT-B-32 --image-size 224 "${COMMON[@]}" "${T[@]}" --warmup 2 --repeats 7 \
    --json $OUT/bench_int8_ViT-B-32_224_t$threads.json
  $DEFR bench --model ViT-B-32 --image-size 672 "${COMMON[@]}" "${T[@]}" --warmup 1 --repeats 5 \
    --json $OUT/bench_int8_ViT-B-32_672_t$threads.json
done
