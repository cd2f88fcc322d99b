#!/usr/bin/env bash
# Runs every libFuzzer target for SECONDS seconds each (default 60) from the
# sanitizer build (scripts/check.sh --sanitize makes it; this script builds
# it when missing). Corpora grow in BUILD/fuzz-corpus/<target> (seeded from
# test/, examples/ and fuzz/make-seeds.py); crashes land in
# BUILD/fuzz-artifacts/. Ends with a table: target, executions, exec/s,
# corpus entries and bytes, result; and exits non-zero if any target failed.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   TARGET: ir safetensors checkpoint
#                                           tokenizer hf-tokenizer certificate
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${KVPREC_SANITIZE_BUILD_DIR:-$ROOT/build-sanitize}"
SECONDS_EACH="${1:-60}"
shift || true
case "$SECONDS_EACH" in
  ''|*[!0-9]*) echo "fuzz: error: SECONDS must be a positive integer, got '$SECONDS_EACH'" >&2; exit 2 ;;
esac
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(ir safetensors checkpoint tokenizer hf-tokenizer certificate)
MODELS="${KVPREC_MODELS_DIR:-$ROOT/../shared/models}"

bash "$ROOT/scripts/setup.sh" >/dev/null || exit 1
bash "$ROOT/scripts/configure-sanitize.sh" "$BUILD" >/dev/null || exit 1
KVPREC_BUILD_DIR="$BUILD" bash "$ROOT/scripts/build.sh" kvprec-fuzzers || exit 1

# Per run, so that two runs on different targets can share the build.
SEEDS="$BUILD/fuzz-seeds.$$"
trap 'rm -rf "$SEEDS"' EXIT
python3 "$ROOT/fuzz/make-seeds.py" "$SEEDS" "$ROOT" "$MODELS" || exit 1
mkdir -p "$BUILD/fuzz-artifacts"
# Leaks are not a finding for a one-shot parser here (libFuzzer's leak
# detection also slows every run); ASan and UBSan reports are. As in
# check.sh, LLVM's inline allocator code poisons memory that the
# uninstrumented libMLIR.so writes legitimately (docs/testing.md).
export ASAN_OPTIONS="detect_leaks=0:allow_user_poisoning=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

SUMMARY="$BUILD/fuzz-summary.txt"
printf '%-12s %10s %8s %8s %10s  %s\n' target runs exec/s corpus bytes result > "$SUMMARY"
failed=0
for name in "${TARGETS[@]}"; do
  binary="$BUILD/fuzz/kvprec-$name-fuzzer"
  if [ ! -x "$binary" ]; then
    echo "fuzz: error: no fuzz target '$name' ($binary)" >&2
    failed=1
    continue
  fi
  corpus="$BUILD/fuzz-corpus/$name"
  mkdir -p "$corpus"
  log="$BUILD/fuzz-$name.log"
  # The checkpoint seeds include a 1 MB model and the hf-tokenizer ones an
  # 86 KB tokenizer.json; the others stay small.
  maxlen=65536
  [ "$name" = checkpoint ] && maxlen=1100000
  [ "$name" = hf-tokenizer ] && maxlen=131072
  echo "fuzz: $name for ${SECONDS_EACH}s"
  "$binary" -max_total_time="$SECONDS_EACH" -timeout=30 -rss_limit_mb=4096 \
    -max_len="$maxlen" -print_final_stats=1 \
    -artifact_prefix="$BUILD/fuzz-artifacts/$name-" \
    "$corpus" "$SEEDS/$name" > "$log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  entries=$(ls "$corpus" | wc -l)
  bytes=$(du -sb "$corpus" | cut -f1)
  result=ok
  if [ $rc -ne 0 ]; then
    result="FAILED (rc $rc, see $log)"
    failed=1
    grep -m5 -E "ERROR|SUMMARY|runtime error|abort|deadly|Test unit written" "$log" >&2
  fi
  printf '%-12s %10s %8s %8s %10s  %s\n' "$name" "${runs:-?}" "${rate:-?}" \
    "$entries" "$bytes" "$result" >> "$SUMMARY"
done
cat "$SUMMARY"
exit $failed
