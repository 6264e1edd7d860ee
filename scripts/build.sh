#!/usr/bin/env bash
# Configures and builds sslight into ./build (or $SSLIGHT_BUILD_DIR). Extra arguments go to cmake.
# CUDA code is compiled when nvcc is found ($CUDA_HOME/bin/nvcc, /usr/local/cuda/bin/nvcc or on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${SSLIGHT_BUILD_DIR:-build}"
# ccache keys on relative paths below the checkout, so fresh clones (CI) reuse the cache of earlier builds.
export CCACHE_BASEDIR="$PWD"
if [[ -z "${CUDA_HOME:-}" && -x /usr/local/cuda/bin/nvcc ]]; then export CUDA_HOME=/usr/local/cuda; fi
if [[ -n "${CUDA_HOME:-}" ]]; then export PATH="$CUDA_HOME/bin:$PATH"; fi
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >"$build.configure.log" 2>&1 || {
    cat "$build.configure.log" >&2
    exit 1
}
grep -E "^-- sslight" "$build.configure.log" || true
cmake --build "$build" -j"$(nproc)"
