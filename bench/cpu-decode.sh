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
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${KVPREC_BUILD_DIR:-$ROOT/build}"
bash "$ROOT/scripts/build.sh" kvprec-bench-cpu-decode >/dev/null
BENCH="$BUILD/bin/kvprec-bench-cpu-decode"

if [ "${1:-}" = "--quick" ]; then
  out="$(mktemp)"
  "$BENCH" --positions 65536 --gqa 1 --threads 2 --reps 5 | tee "$out" >&2
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
[ $# -eq 0 ] || { echo "cpu-decode: error: unknown option '$1' (expected --quick)" >&2; exit 2; }

# Static instruction counts of the innermost loops of the generated code,
# per format (llc -O3 -mcpu=native: what the JIT compiles for this CPU).
INSTRUCTIONS="$ROOT/bench/cpu-decode/instructions.jsonl"
: > "$INSTRUCTIONS"
L=/usr/lib/llvm-22/bin
# What the JIT compiles for this CPU (CompiledCache turns x86-avx512 on
# where the host has AVX-512F).
AVX512=false
grep -qw avx512f /proc/cpuinfo && AVX512=true
for format in f16 bf16 f8E4M3FN i8 i4 i2; do
  type="$("$BENCH" --print-type "$format" 4096)"
  echo "func.func private @uses($type)" |
    "$BUILD/bin/kvprec-opt" --kvprec-to-llvm="x86-avx512=$AVX512" |
    "$L/mlir-translate" --mlir-to-llvmir | "$L/opt" -O3 |
    "$L/llc" -O3 -mcpu=native -o "$BUILD/cpu-decode-$format.s"
  printf '{"format": "%s", "loops": %s}\n' "$format" \
    "$(python3 "$ROOT/bench/cpu-decode/loop-instructions.py" "$BUILD/cpu-decode-$format.s" \
         _d128_f32_load _d128_f32_logits _d128_f32_accumulate \
         tile_logits tile_softmax tile_accumulate)" >> "$INSTRUCTIONS"
done

RESULTS="$ROOT/bench/cpu-decode/results.jsonl"
"$BENCH" --positions 4096,16384,65536 --gqa 1,4 --threads 1,2 --reps 9 | tee "$RESULTS"
# Prefetching on and off, in one process.
PREFETCH="$ROOT/bench/cpu-decode/prefetch.jsonl"
"$BENCH" --positions 65536 --gqa 1 --threads 1 --formats f16,i8,i4 \
  --prefetch-distance 0,8192 --reps 9 | tee "$PREFETCH"
# The arithmetic alone: 512 positions (2 MiB of f16 K and V) stay in L2/L3.
COMPUTE="$ROOT/bench/cpu-decode/compute.jsonl"
"$BENCH" --positions 512 --gqa 1,4 --threads 1 --reps 9 | tee "$COMPUTE"
python3 "$ROOT/bench/cpu-decode/report.py" "$RESULTS" "$INSTRUCTIONS" \
  "$(lscpu | sed -n 's/^Model name: *//p') (LLVM host CPU $(/usr/lib/llvm-22/bin/llc --version | sed -n 's/^ *Host CPU: *//p'))" \
  "$PREFETCH" "$COMPUTE" \
  > "$ROOT/docs/benchmarks.md"
echo "cpu-decode: wrote docs/benchmarks.md" >&2
