#!/usr/bin/env bash
# Set-up, build, then run every test (lit tests and the GoogleTest unit
# tests, which lit runs too). Ends with one line: "N passed, M failed[, K skipped]".
#
#   scripts/check.sh             the release build in build/
#   scripts/check.sh --sanitize  clang-22 with AddressSanitizer and
#                                UndefinedBehaviorSanitizer in build-sanitize/
#                                (also builds the fuzz targets); any
#                                sanitizer report fails the run, even from a
#                                command a test expects to fail
#   scripts/check.sh --all       both, then every fuzz target for
#                                $KVPREC_FUZZ_SECONDS seconds (default 60)
#                                with scripts/fuzz.sh: what CI runs
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SANITIZE=0
case "${1:-}" in
  --sanitize) SANITIZE=1 ;;
  --all)
    # Each part ends with its own summary line; the last line adds them up
    # (each fuzz target counts as one test).
    total_pass=0 total_fail=0 total_skip=0
    add_summary() {
      local line; line="$(tail -1 "$1")"
      local p f k
      p=$(sed -n 's/^\([0-9]*\) passed.*/\1/p' <<<"$line")
      f=$(sed -n 's/.* \([0-9]*\) failed.*/\1/p' <<<"$line")
      k=$(sed -n 's/.* \([0-9]*\) skipped.*/\1/p' <<<"$line")
      [ -z "$p" ] && f=1
      total_pass=$((total_pass + ${p:-0})); total_fail=$((total_fail + ${f:-0}))
      total_skip=$((total_skip + ${k:-0}))
    }
    start=$(date +%s)
    bash "$0" 2>&1 | tee /tmp/kvprec-check-release.$$; add_summary /tmp/kvprec-check-release.$$
    bash "$0" --sanitize 2>&1 | tee /tmp/kvprec-check-sanitize.$$; add_summary /tmp/kvprec-check-sanitize.$$
    bash "$ROOT/scripts/fuzz.sh" "${KVPREC_FUZZ_SECONDS:-60}" 2>&1 | tee /tmp/kvprec-fuzz.$$
    fuzz_failed=$(grep -c "FAILED" /tmp/kvprec-fuzz.$$ || true)
    fuzz_ok=$(grep -cE "^[a-z]+ +[0-9]+ .* ok$" /tmp/kvprec-fuzz.$$ || true)
    [ "$fuzz_ok" -eq 0 ] && [ "$fuzz_failed" -eq 0 ] && fuzz_failed=1
    total_pass=$((total_pass + fuzz_ok)); total_fail=$((total_fail + fuzz_failed))
    rm -f /tmp/kvprec-check-release.$$ /tmp/kvprec-check-sanitize.$$ /tmp/kvprec-fuzz.$$
    echo "check --all: $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s"
    line="$total_pass passed, $total_fail failed"
    [ "$total_skip" -gt 0 ] && line="$line, $total_skip skipped"
    echo "$line"
    [ "$total_fail" -eq 0 ]
    exit $?
    ;;
  "") ;;
  *) echo "check: error: unknown option '$1' (expected --sanitize or --all)" >&2; exit 2 ;;
esac
if [ "$SANITIZE" = 1 ]; then
  BUILD="${KVPREC_SANITIZE_BUILD_DIR:-$ROOT/build-sanitize}"
else
  BUILD="${KVPREC_BUILD_DIR:-$ROOT/build}"
fi

bash "$ROOT/scripts/setup.sh" || { echo "0 passed, 1 failed"; exit 1; }
if [ "$SANITIZE" = 1 ]; then
  bash "$ROOT/scripts/configure-sanitize.sh" "$BUILD" ||
    { echo "check: configuring $BUILD failed" >&2; echo "0 passed, 1 failed"; exit 1; }
  TARGETS=(all mlir-doc kvprec-fuzzers)
else
  TARGETS=(all mlir-doc)
fi
if ! KVPREC_BUILD_DIR="$BUILD" bash "$ROOT/scripts/build.sh" "${TARGETS[@]}"; then
  echo "check: the build failed" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

LOG="$BUILD/check-kvprec.log"
if [ "$SANITIZE" = 1 ]; then
  # Reports go to files, so that one from a command under `not` is seen.
  REPORTS="$BUILD/sanitizer-reports"
  rm -rf "$REPORTS" && mkdir -p "$REPORTS"
  # allow_user_poisoning=0: LLVM's allocators poison recycled memory in
  # their inline (instrumented) code, which Debian's uninstrumented
  # libMLIR.so then reads legitimately (docs/testing.md).
  export ASAN_OPTIONS="log_path=$REPORTS/asan:detect_leaks=1:abort_on_error=0:allow_user_poisoning=0"
  export UBSAN_OPTIONS="log_path=$REPORTS/ubsan:print_stacktrace=1:halt_on_error=1"
fi
/usr/lib/llvm-22/bin/lit -v --time-tests "$BUILD/test" "$BUILD/test/Unit" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
if [ "$SANITIZE" = 1 ] && [ -n "$(ls -A "$REPORTS")" ]; then
  echo "check: sanitizer reports in $REPORTS:" >&2
  for report in "$REPORTS"/*; do
    echo "== $report" >&2
    head -40 "$report" >&2
  done
  echo "  Failed: $(ls "$REPORTS" | wc -l) (sanitizer reports)" >> "$LOG"
  status=1
fi

python3 - "$LOG" "$status" <<'PY'
import re, sys
log = open(sys.argv[1], encoding="utf-8", errors="replace").read()
counts = {}
for name, n in re.findall(r"^\s*(Passed|Failed|Unsupported|Expectedly Failed|Unresolved|Timed Out|Unexpectedly Passed|Excluded|Skipped)\s*:\s*(\d+)", log, re.M):
    counts[name] = counts.get(name, 0) + int(n)
passed = counts.get("Passed", 0) + counts.get("Expectedly Failed", 0)
failed = (counts.get("Failed", 0) + counts.get("Unresolved", 0) +
          counts.get("Timed Out", 0) + counts.get("Unexpectedly Passed", 0))
skipped = counts.get("Unsupported", 0) + counts.get("Skipped", 0)
if int(sys.argv[2]) != 0 and failed == 0:
    failed = 1  # lit itself failed (e.g. a config error)
line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
PY
exit "$status"
