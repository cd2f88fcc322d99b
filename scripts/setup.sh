#!/usr/bin/env bash
# Installs every Debian package that kvprec's build and tests need.
# Runs as root without prompts, is idempotent, and runs `apt-get update`
# only when a package is missing.
set -euo pipefail

PACKAGES=(
  cmake ninja-build g++ python3
  llvm-22-dev llvm-22-tools libmlir-22-dev mlir-22-tools clang-22 lld-22
  libclang-rt-22-dev
  libgtest-dev
  # The OpenMP runtime that kvprec-to-llvm{threads=N} code calls. Not
  # libomp-22-dev: apt removes libomp 14 for it, and the two conflict
  # (../shared/docs/mlir22-lowering-facts.md).
  libomp5-14
  # rsvg-convert, which renders kvprec-report's SVG in the tests.
  librsvg2-bin
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages are installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "setup: missing packages (${missing[*]}) and not root; install them and re-run" >&2
    exit 1
  fi
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
