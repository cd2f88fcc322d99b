#!/usr/bin/env bash
# CPU decode benchmark: generated attention (kvprec-to-llvm, JIT for this
# CPU) against a streaming read of the same arena bytes in the same process.
#
#   bash bench/cpu-decode.sh --quick   64K positions, GQA 1, 2 threads; last
#                                      line: {"f16": {"gbps": .., "ratio_to_stream": ..}, ...}
#   bash bench/cpu-decode.sh           4K/16K/64K x GQA 1, 4 x 1, 2 threads,
#                                      every format; writes
#                                      bench/cpu-decode/results.jsonl and
#                                      docs/benchmarks.md
#   bash bench/cpu-decode.sh --report  no timing: counts the loops' instructions
#                                      again and rewrites docs/benchmarks.md
#                                      from the recorded bench/cpu-decode/*.jsonl
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${KVPREC_BUILD_DIR:-$ROOT/build}"
bash "$ROOT/scripts/build.sh" kvprec-bench-cpu-decode kvprec-calib kvprec-opt >/dev/null
BENCH="$BUILD/bin/kvprec-bench-cpu-decode"
PLANS="$BUILD/bench-cpu-decode"
mkdir -p "$PLANS"

# `mixed` is a certified plan: what kvprec-assign-precision chooses for
# this shape (1 layer, 8 KV heads, head_dim 128, block 64, sink 4, window
# 256) at tolerance 0.1 from SYNTHETIC statistics (kvprec-calib synth,
# seed 1), the formats f16, f8E4M3FN, i8, i4 and i2 allowed. One plan per
# context length, since the certificate depends on it; the cache type goes
# to the benchmark with --plan mixed@N=FILE.
certified_plan() {
  local n=$1 stem="$PLANS/mixed-$1"
  "$BUILD/bin/kvprec-calib" synth --layers 1 --kv-heads 8 --q-heads 8 \
    --head-dim 128 --capacity "$n" --block 64 --sink 4 --window 256 --seed 1 \
    --out "$stem.safetensors" --ir "$stem.mlir" >/dev/null
  # Only the allocation: the plan is what is measured.
  { sed '/func.func @decode_step/,$d' "$stem.mlir"; echo "}"; } > "$stem-init.mlir"
  "$BUILD/bin/kvprec-opt" "$stem-init.mlir" \
    --kvprec-import-calibration="file=$stem.safetensors" \
    --kvprec-assign-precision="tolerance=0.1 formats=f16,f8E4M3FN,i8,i4,i2 quiet=true" \
    --mlir-print-local-scope |
    sed -n 's/^ *return %[^ ]* : \(!kvprec\.cache<.*>\)$/\1/p' | head -n 1 > "$stem.type"
  [ -s "$stem.type" ] || { echo "cpu-decode: error: no planned cache type for $n positions" >&2; exit 1; }
  echo "--plan mixed@$n=$stem.type"
}

if [ "${1:-}" = "--quick" ]; then
  out="$(mktemp)"
  "$BENCH" --positions 65536 --gqa 1 --threads 2 --reps 5 --certified no \
    $(certified_plan 65536) | tee "$out" >&2
  python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print(json.dumps({r["format"]: {"gbps": r["gbps"],
                                "ratio_to_stream": r["ratio_to_stream"]}
                  for r in rows}))
PY
  rm -f "$out"
  exit 0
fi
REPORT_ONLY=false
if [ "${1:-}" = "--report" ]; then
  REPORT_ONLY=true
  shift
fi
[ $# -eq 0 ] || { echo "cpu-decode: error: unknown option '$1' (expected --quick or --report)" >&2; exit 2; }

# Static instruction counts of the innermost loops of the generated code,
# per format (llc -O3 -mcpu=native: what the JIT compiles for this CPU).
INSTRUCTIONS="$ROOT/bench/cpu-decode/instructions.jsonl"
: > "$INSTRUCTIONS"
L=/usr/lib/llvm-22/bin
# What the JIT compiles for this CPU (CompiledCache turns x86-avx512 on
# where the host has AVX-512F).
AVX512=false
grep -qw avx512f /proc/cpuinfo && AVX512=true
# The generated kernels have internal linkage, so opt -O3 inlines them into
# their callers and deletes them; made external here (only here), each keeps
# an out-of-line copy whose loops are the kernel's, for counting.
for format in f16 bf16 f8E4M3FN i8 i4 i2; do
  type="$("$BENCH" --print-type "$format" 4096)"
  echo "func.func private @uses($type)" |
    "$BUILD/bin/kvprec-opt" --kvprec-to-llvm="x86-avx512=$AVX512" |
    "$L/mlir-translate" --mlir-to-llvmir |
    sed -E 's/^define internal /define /' | "$L/opt" -O3 |
    "$L/llc" -O3 -mcpu=native -o "$BUILD/cpu-decode-$format.s"
  printf '{"format": "%s", "loops": %s}\n' "$format" \
    "$(python3 "$ROOT/bench/cpu-decode/loop-instructions.py" "$BUILD/cpu-decode-$format.s" \
         _d128_f32_load _d128_f32_logits _d128_f32_accumulate \
         tile_logits tile_softmax tile_accumulate)" >> "$INSTRUCTIONS"
done

MACHINE="$(lscpu | sed -n 's/^Model name: *//p') (LLVM host CPU $("$L/llc" --version | sed -n 's/^ *Host CPU: *//p'))"
# The machine the measurements were taken on: --report counts instructions
# for this CPU, so it only re-renders measurements taken on the same kind.
MACHINE_FILE="$ROOT/bench/cpu-decode/machine.txt"
RESULTS="$ROOT/bench/cpu-decode/results.jsonl"
PREFETCH="$ROOT/bench/cpu-decode/prefetch.jsonl"
COMPUTE="$ROOT/bench/cpu-decode/compute.jsonl"
FMA="$ROOT/bench/cpu-decode/fma-peak.json"
if $REPORT_ONLY; then
  recorded="$(cat "$MACHINE_FILE" 2>/dev/null || true)"
  if [ "$recorded" != "$MACHINE" ]; then
    echo "cpu-decode: error: --report counts instructions on $MACHINE, but the recorded measurements are from ${recorded:-an unknown machine}; run the whole benchmark here" >&2
    exit 1
  fi
  certified_plan 65536 >/dev/null
else
  echo "$MACHINE" > "$MACHINE_FILE"
  PLAN_ARGS="$(certified_plan 512) $(certified_plan 4096) $(certified_plan 16384) $(certified_plan 65536)"
  # shellcheck disable=SC2086  # PLAN_ARGS holds whole options
  "$BENCH" --positions 4096,16384,65536 --gqa 1,4 --threads 1,2 --reps 9 $PLAN_ARGS | tee "$RESULTS"
  # Prefetching on and off, in one process.
  "$BENCH" --positions 65536 --gqa 1 --threads 1 --formats f16,i8,i4 \
    --prefetch-distance 0,8192 --reps 9 | tee "$PREFETCH"
  # The arithmetic alone: 512 positions (2 MiB of f16 K and V) stay in L2/L3.
  # shellcheck disable=SC2086
  "$BENCH" --positions 512 --gqa 1,4 --threads 1 --reps 9 $PLAN_ARGS | tee "$COMPUTE"
  # This core's peak rate of 512-bit fused multiply-adds: the floor under the
  # f32 arithmetic of the kernels.
  "$BENCH" --fma-peak | tee "$FMA"
fi
python3 "$ROOT/bench/cpu-decode/report.py" "$RESULTS" "$INSTRUCTIONS" "$MACHINE" \
  "$PREFETCH" "$COMPUTE" --fma "$FMA" --mixed-plan "$PLANS/mixed-65536.type" \
  --keep "$ROOT/docs/benchmarks.md" > "$PLANS/benchmarks.md"
mv "$PLANS/benchmarks.md" "$ROOT/docs/benchmarks.md"
echo "cpu-decode: wrote docs/benchmarks.md" >&2
