#!/usr/bin/env bash
# The NVIDIA GPU checks and benchmark (docs/gpu.md). kvprec builds where
# Debian's LLVM/MLIR 22 is; the GPU machines of this workplace have CUDA but
# not MLIR, so the work is split in three:
#
#   bash bench/gpu-decode.sh bundle [--quick] [--work DIR]
#       (a machine with the kvprec build and ptxas) compiles every case of
#       bench/gpu-decode/cases.py ahead of time, for the GPU with
#       kvprec-to-nvvm{chip=sm_90 format=bin} (cubins for the H100 and H200)
#       and for the CPU with kvprec-to-llvm, both with the run-time
#       certificate (P_attend_certified), links
#       them into bench/gpu-decode/gpu-check.cpp with the runtime of runtime/,
#       and packs .gpu/gpu-bundle.tar.xz (git-ignored; the device tool
#       carries `.gpu`). A few minutes. It then runs the bundle's self-test
#       (its checks with the CPU code in the GPU code's place). --quick: three
#       check cases and no benchmark, in DIR (test/Bench/gpu-bundle.test).
#   bash bench/gpu-decode.sh run
#       (the GPU machine) unpacks the bundle and runs `gpu-check check`
#       (correctness on the device) and `gpu-check bench` (the benchmark),
#       writing gpu-check.jsonl and gpu-bench.jsonl to $OUT (or .gpu/).
#       Under 8 minutes on an H100.
#   bash bench/gpu-decode.sh report DIR
#       (here) writes the GPU section of docs/benchmarks.md from DIR's
#       gpu-bench.jsonl and gpu-check.jsonl.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${KVPREC_BUILD_DIR:-$ROOT/build}"
GPU_DIR="$ROOT/.gpu"
mode="${1:-}"

bundle() {
  local quick="" work="$BUILD/gpu-bundle" packed="$GPU_DIR"
  while [ $# -gt 0 ]; do
    case "$1" in
    --quick) quick=--quick; shift ;;
    --work) work="$2"; packed="$2"; shift 2 ;;
    *) echo "gpu-decode: error: unknown option '$1'" >&2; exit 2 ;;
    esac
  done
  if [ -z "${KVPREC_NO_BUILD:-}" ]; then
    bash "$ROOT/scripts/build.sh" kvprec-opt kvprec-calib kvprec_cuda_runtime \
      KVPrecCertify KVPrecAnalysis KVPrecFormat >/dev/null
  fi
  [ -f "$BUILD/lib/libkvprec_cuda_runtime.so" ] || {
    echo "gpu-decode: error: the CUDA runtime was not built (no cuda.h)" >&2; exit 1; }
  rm -rf "$work" && mkdir -p "$work/cases" "$work/bundle"
  # The certified mixed plan of bench/cpu-decode.sh at each length.
  PLANS="$work/plans"
  mkdir -p "$PLANS"
  eval "$(sed -n '/^certified_plan() {/,/^}/p' "$ROOT/bench/cpu-decode.sh")"
  local mixed=()
  if [ -z "$quick" ]; then
    for n in 4096 16384 65536 131072; do
      certified_plan "$n" >/dev/null
      mixed+=(--mixed "$n=$PLANS/mixed-$n.type")
    done
  fi
  local count
  count="$(python3 "$ROOT/bench/gpu-decode/cases.py" "$work/cases" $quick "${mixed[@]}")"
  echo "gpu-decode: compiling $count cases" >&2
  L=/usr/lib/llvm-22/bin
  export OPT="$BUILD/bin/kvprec-opt" L work
  compile_case() {
    local i=$1 c="$work/cases/case_$1"
    # Cubins (ptxas here): nothing to JIT-compile when the program starts.
    "$OPT" "$c.mlir" \
      --kvprec-to-nvvm="chip=sm_90 format=bin symbol-prefix=gpu${i}_ runtime-certificate=true" |
      "$L/mlir-translate" --mlir-to-llvmir |
      "$L/llc" -O2 -filetype=obj -relocation-model=pic -o "$c.gpu.o"
    "$OPT" "$c.mlir" \
      --kvprec-to-llvm="symbol-prefix=cpu${i}_ runtime-certificate=true" |
      "$L/mlir-translate" --mlir-to-llvmir |
      "$L/llc" -O3 -mcpu=x86-64-v3 -filetype=obj -relocation-model=pic -o "$c.cpu.o"
  }
  export -f compile_case
  seq 0 $((count - 1)) | xargs -P "$(nproc)" -I{} bash -c 'compile_case {}'
  c++ -std=c++17 -O2 -march=x86-64-v2 -o "$work/bundle/gpu-check" \
    -I"$ROOT/include" -I"$BUILD/include" -isystem /usr/lib/llvm-22/include \
    -I"$work/cases" \
    "$ROOT/bench/gpu-decode/gpu-check.cpp" "$work"/cases/*.o \
    "$BUILD/lib/libKVPrecCertify.a" "$BUILD/lib/libKVPrecAnalysis.a" \
    "$BUILD/lib/libKVPrecFormat.a" \
    -L"$BUILD/lib" -lkvprec_cuda_runtime -Wl,-rpath,'$ORIGIN' \
    -static-libstdc++ -static-libgcc -ldl -lpthread -lm
  cp "$BUILD/lib/libkvprec_cuda_runtime.so" "$work/bundle/"
  cp "$work/cases/cases.txt" "$work/bundle/"
  mkdir -p "$packed"
  tar -C "$work" -cJf "$packed/gpu-bundle.tar.xz" bundle
  ls -la "$packed/gpu-bundle.tar.xz" >&2
  # The bundle's own checks where no device is: it starts and says so, and
  # its checks pass with the CPU code in the GPU code's place.
  "$work/bundle/gpu-check" status || [ $? -eq 3 ]
  "$work/bundle/gpu-check" selftest > "$work/selftest.jsonl"
  echo "gpu-decode: self-test: $(grep -c '"ok": true' "$work/selftest.jsonl") cases passed" >&2
}

run() {
  local bundle="${1:-$GPU_DIR/gpu-bundle.tar.xz}" out="${OUT:-$GPU_DIR}"
  local dir=/tmp/kvprec-gpu-bundle
  rm -rf "$dir" && mkdir -p "$dir" "$out"
  tar -C "$dir" -xJf "$bundle"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
    | tee "$out/gpu-device.txt" || true
  "$dir/bundle/gpu-check" status
  local status=0
  "$dir/bundle/gpu-check" check | tee "$out/gpu-check.jsonl" || status=$?
  "$dir/bundle/gpu-check" bench 20 | tee "$out/gpu-bench.jsonl"
  return $status
}

case "$mode" in
bundle) shift; bundle "$@" ;;
run) shift; run "$@" ;;
report)
  shift
  dir="${1:?usage: gpu-decode.sh report DIR}"
  python3 "$ROOT/bench/gpu-decode/report.py" "$dir" "$ROOT/docs/benchmarks.md" ;;
*)
  echo "usage: bash bench/gpu-decode.sh bundle [--quick] [--work DIR] | run [BUNDLE] | report DIR" >&2
  exit 2 ;;
esac
