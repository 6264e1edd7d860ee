#!/usr/bin/env bash
# Installs what is missing (test dependencies included), builds, and runs the whole test suite with ctest.
# gpu-labelled tests are reported as skipped where no GPU is usable.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh --test
bash scripts/build.sh
ctest --test-dir "${SSLIGHT_BUILD_DIR:-build}" --output-on-failure -j"$(nproc)" --timeout 900 "$@"
