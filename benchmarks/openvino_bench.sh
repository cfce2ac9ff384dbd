#!/usr/bin/env bash
# The defr bench runs behind docs/benchmarks.md § OpenVINO: ONNX Runtime fp32 / int8 and OpenVINO fp32 / int8
# (and bf16 where the CPU has bf16 instructions: pass "bf16" as the second argument) on the same exported
# files, side by side (backends take turns call by call, 50 ms apart: defr.bench.SETTLE_S), tiny-vit and
# ViT-B/32 at 224 px (ViT-B/32 at 672 px with a third argument "672"), batch 1 and 8, 0 / 16 / 225 pairs per
# image, one thread and all cores.
# Usage: benchmarks/openvino_bench.sh [DEFR] [bf16] [672]
# (DEFR: the defr command, default .venv/bin/defr); writes benchmarks/results/bench_openvino_*.json.
set -euo pipefail
DEFR=${1:-.venv/bin/defr}
OUT=benchmarks/results
BACKENDS=onnxruntime,onnxruntime-int8,openvino,openvino-int8
[[ ${2:-} == bf16 ]] && BACKENDS=$BACKENDS,openvino-bf16
COMMON=(--pairs 0,16,225 --batch 1,8 --backends $BACKENDS)
for threads in 1 all; do
  T=(); [[ $threads == 1 ]] && T=(--threads 1)
  $DEFR bench --model tiny-vit --image-size 224 "${COMMON[@]}" "${T[@]}" --warmup 3 --repeats 10 \
    --json $OUT/bench_openvino_tiny-vit_224_t$threads.json
  $DEFR bench --model ViT-B-32 --image-size 224 "${COMMON[@]}" "${T[@]}" --warmup 2 --repeats 7 \
    --json $OUT/bench_openvino_ViT-B-32_224_t$threads.json
  if [[ ${3:-} == 672 ]]; then
    $DEFR bench --model ViT-B-32 --image-size 672 "${COMMON[@]}" "${T[@]}" --warmup 1 --repeats 5 \
      --json $OUT/bench_openvino_ViT-B-32_672_t$threads.json
  fi
done
