#!/usr/bin/env bash
# Installs, with apt-get, whatever sslight needs that is missing on a Debian 12 machine (run as root).
#   scripts/install_deps.sh          build + run dependencies
#   scripts/install_deps.sh --test   also the test dependencies (doctest, PyTorch for the parity tests)
# The CUDA toolkit is not installed here: when nvcc is absent the build is CPU-only (see README).
set -euo pipefail

want=(build-essential cmake ninja-build ccache pkg-config libopenblas-openmp-dev libomp-dev git
      libturbojpeg0-dev libjpeg62-turbo-dev libstb-dev libopenmpi-dev openmpi-bin
      gnuplot-nox)  # sslight plot and the plot at the end of pretrain (optional at run time)
if [[ "${1:-}" == "--test" ]]; then
    want+=(doctest-dev python3 python3-numpy python3-torch python3-torchvision)
    # the data loader's test images (tests/data/fetch_test_images.sh) and its PIL parity test
    want+=(libjpeg-turbo-progs libimage-exiftool-perl imagemagick python3-pil)
    # the libFuzzer targets (fuzz/, -DSSLIGHT_FUZZ=ON): clang and its fuzzer/sanitizer runtimes
    want+=(clang libclang-rt-14-dev)
fi

missing=()
for p in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "install_deps: everything needed is installed"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "install_deps: missing packages: ${missing[*]}; run this script as root (or: sudo apt-get install ${missing[*]})" >&2
    exit 1
fi
echo "install_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install_deps: done"
