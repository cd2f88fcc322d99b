#!/usr/bin/env bash
# bench/bounds/run.sh - certified bounds against measured attention errors.
#
# Calibrates stories260K on examples/prompts-calib.txt, plans the cache with
# kvprec-assign-precision in several modes (certified at a grid of
# tolerances, uniform, KIVI, the seed rule), and runs `kvprec-calib
# eval-bounds` for each plan on the disjoint examples/prompts-eval.txt.
# Writes bench/bounds/results/ (one JSON per plan, index.tsv, commands.txt)
# and regenerates docs/results-bounds.md from them (report.py).
#
# A second part calibrates on short runs (SHORT_STEPS) and evaluates much
# longer ones (LONG_STEPS): the certificate refuses the longer cache unless
# a stated extrapolation rule covers it, and the cases past the calibrated
# length are reported apart.
#
# The same grid is planned with certificate=probabilistic confidence=1e-9
# (error-bounds.md §9), and evaluated under its own static and run-time
# bounds.
#
# Every plan is also checked by kvprec-verify-plan (which recomputes the
# certificate with the independent position-by-position certifier).
#
# Environment: KVPREC_BIN (default build/bin), KVPREC_MODELS (default
# ../shared/models/stories260K), CALIB_STEPS (default 512: the whole
# context, which the 512-position cache needs), EVAL_STEPS (default 200),
# SHORT_STEPS (default 64) and LONG_STEPS (default 480).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
BIN=${KVPREC_BIN:-build/bin}
MODELS=${KVPREC_MODELS:-../shared/models/stories260K}
CALIB_STEPS=${CALIB_STEPS:-512}
EVAL_STEPS=${EVAL_STEPS:-200}
SHORT_STEPS=${SHORT_STEPS:-64}
LONG_STEPS=${LONG_STEPS:-480}
CALIB_PROMPTS=examples/prompts-calib.txt
EVAL_PROMPTS=examples/prompts-eval.txt
RESULTS=bench/bounds/results
DOC=docs/results-bounds.md

for tool in kvprec-calib kvprec-opt; do
  if [ ! -x "$BIN/$tool" ]; then
    echo "run.sh: $BIN/$tool not found (build it, or set KVPREC_BIN)" >&2
    exit 1
  fi
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
rm -rf "$RESULTS"
mkdir -p "$RESULTS"
: > "$RESULTS/commands.txt"
printf 'name\tkind\ttolerance\toptions\tstatus\tseconds\tverified\n' > "$RESULTS/index.tsv"

# Runs a command and logs it, quoting arguments with spaces and writing the
# scratch folder as $WORK.
logged() {
  local arg line=
  for arg in "$@"; do
    case $arg in *[[:space:]]*) arg="\"$arg\"" ;; esac
    line+="${line:+ }$arg"
  done
  echo "${line//$WORK/\$WORK}" >> "$RESULTS/commands.txt"
  "$@"
}

MODEL_ARGS=(--checkpoint "$MODELS/stories260K.bin" --tokenizer "$MODELS/tok512.bin")

# Calibration (statistics and the decode-step IR) on the calibration
# prompts; the same statistics of the evaluation prompts are only used to
# explain violations (which envelope the evaluation left).
logged "$BIN/kvprec-calib" collect "${MODEL_ARGS[@]}" --prompts "$CALIB_PROMPTS" \
  --steps "$CALIB_STEPS" --out "$WORK/calib.safetensors" --ir "$WORK/decode.mlir" \
  > "$RESULTS/collect.txt"
logged "$BIN/kvprec-calib" inspect "$WORK/calib.safetensors" \
  | sed "s|$WORK|\$WORK|g" > "$RESULTS/calibration-inspect.txt"
logged "$BIN/kvprec-calib" collect "${MODEL_ARGS[@]}" --prompts "$EVAL_PROMPTS" \
  --steps "$EVAL_STEPS" --out "$WORK/eval.safetensors" > /dev/null
logged "$BIN/kvprec-opt" "$WORK/decode.mlir" \
  --kvprec-import-calibration="file=$WORK/calib.safetensors" -o "$WORK/calibrated.mlir"
# The short calibration, with the model's whole 512-position cache.
logged "$BIN/kvprec-calib" collect "${MODEL_ARGS[@]}" --prompts "$CALIB_PROMPTS" \
  --steps "$SHORT_STEPS" --out "$WORK/short.safetensors" --ir "$WORK/long.mlir" \
  --ir-capacity 512 > "$RESULTS/collect-short.txt"
logged "$BIN/kvprec-opt" "$WORK/long.mlir" \
  --kvprec-import-calibration="file=$WORK/short.safetensors" -o "$WORK/short-calibrated.mlir"

# What plan() plans and how long it evaluates (the long-run part changes
# them).
SOURCE="$WORK/calibrated.mlir"
STEPS="$EVAL_STEPS"

# plan NAME KIND TOLERANCE OPTIONS: plans the calibrated module and
# evaluates the plan; failures are recorded (NAME.error.txt), not fatal.
plan() {
  local name=$1 kind=$2 tolerance=$3 options=$4 status=ok
  local start end
  start=$(date +%s.%N)
  local verified=n/a
  if ! logged "$BIN/kvprec-opt" "$SOURCE" \
      --kvprec-assign-precision="$options quiet=true" -o "$WORK/$name.mlir" \
      2> "$WORK/$name.err"; then
    status=plan-failed
  else
    # The independent check (the seed rule's plans are expected to fail it:
    # their certificate exceeds their tolerance).
    if logged "$BIN/kvprec-opt" "$WORK/$name.mlir" --kvprec-verify-plan \
        -o /dev/null 2> "$WORK/$name.verify.txt"; then
      verified=yes
    else
      verified=no
      # The first error (sed reads all its input: no SIGPIPE under pipefail).
      sed -n "s|$WORK|\$WORK|g; /error:/{p;q}" "$WORK/$name.verify.txt" \
        > "$RESULTS/$name.verify.txt"
    fi
    local cases=()
    if [ "$kind" = seed ]; then
      cases=(--json-cases "$WORK/$name.cases.jsonl")
    fi
    if ! logged "$BIN/kvprec-calib" eval-bounds "${MODEL_ARGS[@]}" \
        --prompts "$EVAL_PROMPTS" --steps "$STEPS" --ir "$WORK/$name.mlir" \
        "${cases[@]}" > "$RESULTS/$name.json" 2> "$WORK/$name.err"; then
      status=eval-failed
      rm -f "$RESULTS/$name.json"
    fi
  fi
  end=$(date +%s.%N)
  if [ "$status" != ok ]; then
    sed "s|$WORK|\$WORK|g" "$WORK/$name.err" > "$RESULTS/$name.error.txt"
    echo "run.sh: $name ($options): $status" >&2
  fi
  # The seed rule: the fraction of cases whose measured error exceeds the
  # tolerance it was asked for.
  if [ "$status" = ok ] && [ "$kind" = seed ]; then
    python3 - "$WORK/$name.cases.jsonl" "$tolerance" > "$RESULTS/$name.cases-over.json" <<'PY'
import json, sys
total = over = 0
tolerance = float(sys.argv[2])
with open(sys.argv[1]) as f:
    for line in f:
        total += 1
        over += json.loads(line)["error"] > tolerance
print(json.dumps({"tolerance": tolerance, "cases": total, "over": over}))
PY
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$kind" "$tolerance" \
    "$options" "$status" "$(awk "BEGIN { printf \"%.2f\", $end - $start }")" \
    "$verified" >> "$RESULTS/index.tsv"
}

# Certified plans at the tolerances of the study, then a grid for the
# equal-error comparison.
for t in 1e-2 1e-3 1e-4; do
  plan "certified-$t" certified "$t" "mode=certified tolerance=$t"
done
for t in 2e-4 5e-4 2e-3 5e-3 2e-2 5e-2 1e-1 2e-1 5e-1 1 2 5 10 100; do
  plan "certified-$t" sweep "$t" "mode=certified tolerance=$t"
done
# The probabilistic certificate (error-bounds.md §9) on the same grid.
for t in 1e-3 2e-3 5e-3 1e-2 2e-2 5e-2 1e-1 2e-1 5e-1 1 2 5 10 100; do
  plan "probabilistic-$t" probabilistic "$t" \
    "mode=certified tolerance=$t certificate=probabilistic confidence=1e-9"
done
# Baselines.
for f in f16 i8 i4 f8E4M3FN; do
  plan "uniform-$f" baseline - "mode=uniform format=$f"
done
for b in 4 2; do
  plan "kivi-$b" baseline - "mode=kivi bits=$b"
done
for t in 1e-2 1e-3 1e-4; do
  plan "seed-$t" seed "$t" "mode=seed tolerance=$t"
done
# The baselines' formats under the probabilistic certificate: what it
# would have to allow for each to be planned.
for f in f16 i8 i4 f8E4M3FN; do
  plan "uniform-$f-probabilistic" baseline-probabilistic - \
    "mode=uniform format=$f certificate=probabilistic confidence=1e-9"
done
for b in 4 2; do
  plan "kivi-$b-probabilistic" baseline-probabilistic - \
    "mode=kivi bits=$b certificate=probabilistic confidence=1e-9"
done

# Past the calibrated length: short calibration, 512-position cache, long
# evaluation runs. Without a rule the plan is refused; with the worst-case
# rule it is certified, and eval-bounds reports the cases past the
# calibrated length apart.
SOURCE="$WORK/short-calibrated.mlir"
STEPS="$LONG_STEPS"
plan "long-no-rule" long 1e-1 "mode=certified tolerance=1e-1"
for m in 1 2; do
  plan "long-worst-case-$m" long 1e-1 \
    "mode=certified tolerance=1e-1 extrapolate=worst-case margin=$m"
done
plan "long-probabilistic-worst-case-1" long 1e-1 \
  "mode=certified tolerance=1e-1 extrapolate=worst-case margin=1 certificate=probabilistic confidence=1e-9"
plan "long-uniform-f16-worst-case-1" long-baseline - \
  "mode=uniform format=f16 extrapolate=worst-case margin=1"

python3 bench/bounds/report.py --results "$RESULTS" \
  --invocation "KVPREC_BIN=$BIN KVPREC_MODELS=$MODELS CALIB_STEPS=$CALIB_STEPS EVAL_STEPS=$EVAL_STEPS SHORT_STEPS=$SHORT_STEPS LONG_STEPS=$LONG_STEPS bench/bounds/run.sh" \
  --calib "$WORK/calib.safetensors" --eval "$WORK/eval.safetensors" \
  --short "$WORK/short.safetensors" \
  --bin "$BIN" --calib-steps "$CALIB_STEPS" --eval-steps "$EVAL_STEPS" \
  --short-steps "$SHORT_STEPS" --long-steps "$LONG_STEPS" \
  --output "$DOC"
echo "wrote $RESULTS/ and $DOC"
