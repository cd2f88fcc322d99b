#!/usr/bin/env bash
# Set up, build, then take the shipped stories260K decode-step IR through the
# whole analysis: calibrate the real checkpoint, import the statistics,
# assign a certified precision plan, verify it independently, and print the
# precision map, the memory and the certificate.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${KVPREC_BUILD_DIR:-$ROOT/build}"
MODELS="${KVPREC_MODELS_DIR:-$ROOT/../shared/models}"
TOLERANCE="${KVPREC_DEMO_TOLERANCE:-3e-2}"

bash "$ROOT/scripts/setup.sh" >&2
bash "$ROOT/scripts/build.sh" kvprec-opt kvprec-calib >&2

OPT="$BUILD/bin/kvprec-opt"
CALIB="$BUILD/bin/kvprec-calib"
OUT="$BUILD/demo"
mkdir -p "$OUT"

if [ ! -f "$MODELS/stories260K/stories260K.bin" ]; then
  echo "demo: $MODELS/stories260K/stories260K.bin not found (set KVPREC_MODELS_DIR)" >&2
  exit 1
fi

echo "== 1. calibrate stories260K on examples/prompts-calib.txt"
"$CALIB" collect --checkpoint "$MODELS/stories260K/stories260K.bin" \
  --tokenizer "$MODELS/stories260K/tok512.bin" \
  --prompts "$ROOT/examples/prompts-calib.txt" --steps 512 \
  --out "$OUT/stories260K.safetensors"

echo
echo "== 2. kvprec-opt examples/stories260K.mlir: import, assign (tolerance $TOLERANCE), verify, report"
"$OPT" "$ROOT/examples/stories260K.mlir" \
  --kvprec-import-calibration="file=$OUT/stories260K.safetensors name=stories260K" \
  --kvprec-assign-precision="tolerance=$TOLERANCE quiet=true" \
  --kvprec-verify-plan \
  --kvprec-report \
  --kvprec-report="format=json output=$OUT/report.json" \
  --kvprec-report="format=svg output=$OUT/report.svg" \
  -o "$OUT/stories260K.planned.mlir"

echo
echo "== 3. the planned cache type (from $OUT/stories260K.planned.mlir)"
grep -m1 '^#plan' "$OUT/stories260K.planned.mlir" | cut -c1-400
echo
echo "JSON report: $OUT/report.json   SVG heatmap: $OUT/report.svg"
