#!/usr/bin/env bash
# What plans do to the model's output, on disjoint calibration and
# evaluation prompts: bytes vs fp16 against mean KL, top-1 and perplexity
# (kvprec-calib eval-quality) for certified plans over a tolerance sweep,
# the kl= mode over a sweep, certified plans at the bytes of each uniform
# baseline (budget=), plans at the bytes of every baseline chosen by the KL
# measured on the calibration prompts (kvprec-calib plan-budget), uniform
# f16/bf16/fp8/int8/int4, KIVI-2/4 and the seed rule, for stories260K and
# tinystories-656K. Writes
# bench/quality/results.jsonl and docs/results-quality.md (whose Commands
# section, report.py's COMMANDS, lists the command lines below: keep them
# in step).
#
#   bash bench/quality/run.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${KVPREC_BUILD_DIR:-$ROOT/build}"
MODELS="${KVPREC_MODELS_DIR:-$ROOT/../shared/models}"
bash "$ROOT/scripts/build.sh" kvprec-opt kvprec-calib >/dev/null
CALIB="$BUILD/bin/kvprec-calib"
OPT="$BUILD/bin/kvprec-opt"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
RESULTS="$ROOT/bench/quality/results.jsonl"
: > "$RESULTS"
CAL_PROMPTS="$ROOT/examples/prompts-calib.txt"
EVAL_PROMPTS="$ROOT/test/Calib/Inputs/prompts-heldout.txt"
STEPS=64

run_model() {
  local name="$1"; shift
  local model=("$@")
  local dir="$OUT/$name"
  mkdir -p "$dir"
  "$CALIB" collect "${model[@]}" --prompts "$CAL_PROMPTS" --steps "$STEPS" \
    --window 16 --block 16 --sensitivity-error 1e-2 \
    --out "$dir/stats.safetensors" --ir "$dir/cache.mlir" > /dev/null
  "$OPT" "$dir/cache.mlir" --kvprec-import-calibration="file=$dir/stats.safetensors" \
    -o "$dir/cal.mlir"
  # Each row says whether the plan is kvprec's ("kvprec": true: certified
  # and measured-budget plans) or a baseline's (uniform, KIVI, seed); the
  # report and the plot colour by it.
  plan() { # label, options, kvprec (true|false)
    local label="$1" options="$2" kvprec="$3"
    if ! "$OPT" "$dir/cal.mlir" --kvprec-assign-precision="$options quiet=true" \
         -o "$dir/$label.mlir" 2> "$dir/$label.err"; then
      printf '{"model": "%s", "plan": "%s", "options": "%s", "kvprec": %s, "error": %s}\n' \
        "$name" "$label" "$options" "$kvprec" \
        "$(python3 -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read().strip().splitlines()[0]))' "$dir/$label.err")" \
        >> "$RESULTS"
      return
    fi
    evaluate "$label" "$options" "$kvprec"
  }
  evaluate() { # label, options, kvprec: $dir/$label.mlir on the held-out prompts
    local label="$1" options="$2" kvprec="$3"
    "$CALIB" eval-quality "${model[@]}" --prompts "$EVAL_PROMPTS" --steps "$STEPS" \
      --ir "$dir/$label.mlir" > "$dir/$label.json"
    python3 - "$dir/$label.json" "$name" "$label" "$options" "$kvprec" >> "$RESULTS" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(json.dumps({"model": sys.argv[2], "plan": sys.argv[3], "options": sys.argv[4],
                  "kvprec": {"true": True, "false": False}[sys.argv[5]],
                  **{k: r[k] for k in ("bytes_vs_fp16", "plan_bytes", "mean_kl", "max_kl",
                                       "top1_agreement", "ppl_fp32", "ppl_plan", "tokens")}}))
PY
  }
  bytes_of() { # the plan bytes of a recorded plan of this model
    python3 -c "import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r['model'] == sys.argv[2] and r['plan'] == sys.argv[3] and 'plan_bytes' in r:
        print(int(r['plan_bytes']))" "$RESULTS" "$name" "$1"
  }
  for f in f16 bf16 f8E4M3FN i8 i4; do plan "uniform-$f" "mode=uniform format=$f" false; done
  # KIVI's window of 128 is longer than these caches: window 32 with its
  # 32-token key groups.
  plan kivi-2 "mode=kivi bits=2 window=32 block=32" false
  plan kivi-4 "mode=kivi bits=4 window=32 block=32" false
  plan seed "mode=seed" false
  for t in 3e-1 1e-1 3e-2 1e-2 3e-3; do plan "certified-tol-$t" "tolerance=$t" true; done
  for k in 1e-1 1e-2 1e-3 1e-4; do plan "certified-kl-$k" "kl=$k" true; done
  # At the bytes of each uniform baseline: the certified allocator's plan
  # for that budget.
  for f in f8E4M3FN i8 i4; do
    bytes=$(bytes_of "uniform-$f")
    [ -n "$bytes" ] && plan "certified-budget-$f" "budget=$bytes" true
  done
  # At the bytes of every baseline: the budget planned at several logit
  # error caps and both scale granularities, measured on the calibration
  # prompts; of the plans whose KL there cannot be told from the lowest, the
  # lowest certified bound kept (then measured on the held-out ones).
  for base in uniform-f16 uniform-bf16 uniform-f8E4M3FN uniform-i8 uniform-i4 \
              kivi-2 kivi-4 seed; do
    bytes=$(bytes_of "$base")
    [ -n "$bytes" ] || continue
    label="measured-budget-$base"
    "$CALIB" plan-budget "${model[@]}" --prompts "$CAL_PROMPTS" --steps "$STEPS" \
      --ir "$dir/cal.mlir" --budget "$bytes" --out "$dir/$label.mlir" > "$dir/$label.search.json"
    chose=$(python3 -c "import json,sys
print(json.load(open(sys.argv[1]))['chosen'].replace(' quiet=true', '').strip())" \
      "$dir/$label.search.json")
    evaluate "$label" "plan-budget --budget $bytes: $chose" true
  done
}

run_model stories260K --checkpoint "$MODELS/stories260K/stories260K.bin" \
  --tokenizer "$MODELS/stories260K/tok512.bin"
run_model tinystories-656K --model "$MODELS/tinystories-656K"
python3 "$ROOT/bench/quality/report.py" "$RESULTS" > "$ROOT/docs/results-quality.md"
# The pictures: the kl=1e-2 plan of each model with the plot of all plans.
for name in stories260K tinystories-656K; do
  "$OPT" "$OUT/$name/certified-kl-1e-2.mlir" \
    --kvprec-report="format=svg quality=$RESULTS output=$ROOT/docs/results-quality-$name.svg" \
    -o /dev/null
done
echo "quality: wrote docs/results-quality.md" >&2
