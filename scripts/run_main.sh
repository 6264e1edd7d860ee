#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the default job on the CPU (or the GPU when
# one is usable). Until the pre-training app lands this is the engine's own end-to-end training demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
exec ./build/apps/sslight demo "$@"
