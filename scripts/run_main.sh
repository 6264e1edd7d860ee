#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs the default job: self-supervised pre-training of
# the demo config (DINO, ResNet18, embedded handwritten digits) on the CPU (or the GPU when one is usable),
# ending with the kNN report against the same backbone at random init. `sslight demo` stays available.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
exec ./build/apps/sslight pretrain --config configs/demo.toml "$@"
