#!/usr/bin/env bash
# Configures (once) the sanitizer build folder BUILD: clang-22, ASan+UBSan on
# every kvprec target, the libFuzzer targets of fuzz/. -O1 keeps the build
# and the instrumented tests fast enough for CI; -g1 gives reports lines.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${1:?usage: configure-sanitize.sh BUILD_DIR}"
LLVM_PREFIX=/usr/lib/llvm-22
if [ ! -f "$BUILD/build.ninja" ]; then
  cmake -G Ninja -S "$ROOT" -B "$BUILD" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 \
    -DCMAKE_C_FLAGS_RELEASE="-O1 -g1 -DNDEBUG" -DCMAKE_CXX_FLAGS_RELEASE="-O1 -g1 -DNDEBUG" \
    -DKVPREC_SANITIZE=ON -DKVPREC_FUZZERS=ON \
    -DLLVM_DIR="$LLVM_PREFIX/lib/cmake/llvm" \
    -DMLIR_DIR="$LLVM_PREFIX/lib/cmake/mlir" \
    -DLLVM_EXTERNAL_LIT="$LLVM_PREFIX/bin/lit" \
    -DCMAKE_INSTALL_PREFIX="$BUILD/install"
fi
