#!/usr/bin/env bash
# Set up, build, then run kvprec-opt on the shipped stories260K example and
# print what a user came for.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${KVPREC_BUILD_DIR:-$ROOT/build}"

bash "$ROOT/scripts/setup.sh" >&2
bash "$ROOT/scripts/build.sh" kvprec-opt >&2

OPT="$BUILD/bin/kvprec-opt"
EXAMPLE="$ROOT/examples/stories260K.mlir"

echo "== kvprec-opt examples/stories260K.mlir (verified and printed back)"
"$OPT" "$EXAMPLE"
