#!/usr/bin/env bash
# Set-up, build, then run every test (lit tests and the GoogleTest unit
# tests, which lit runs too). Ends with one line: "N passed, M failed[, K skipped]".
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${KVPREC_BUILD_DIR:-$ROOT/build}"

bash "$ROOT/scripts/setup.sh" || { echo "0 passed, 1 failed"; exit 1; }
if ! bash "$ROOT/scripts/build.sh" all mlir-doc; then
  echo "check: the build failed" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

LOG="$BUILD/check-kvprec.log"
/usr/lib/llvm-22/bin/lit -v --time-tests "$BUILD/test" "$BUILD/test/Unit" 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}

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
