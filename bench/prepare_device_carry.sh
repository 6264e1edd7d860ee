#!/usr/bin/env bash
# Run here (Debian 12) before a GPU check: copies into .devcarry/ (git-ignored, carried to the GPU machine)
# what the build needs there and the GPU image lacks: doctest's header, the cblas headers and OpenBLAS
# (its OpenMP build) with its runtime dependencies. cuDNN and NCCL are not carried: there they come
# from PyTorch's wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
out=.devcarry
rm -rf "$out" && mkdir -p "$out/include" "$out/lib"
cp -r /usr/include/doctest "$out/include/"
# The OpenMP build of OpenBLAS, as the build here prefers (cmake/Dependencies.cmake says why).
blas_inc=/usr/include/x86_64-linux-gnu/openblas-openmp
blas_lib=$(readlink -f /usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0)
cp "$blas_inc"/cblas.h "$blas_inc"/openblas_config.h "$out/include/"
cp "$blas_lib" "$out/lib/libopenblas.so.0"
ln -sf libopenblas.so.0 "$out/lib/libopenblas.so"
for dep in libgfortran.so.5 libquadmath.so.0; do
    cp "$(readlink -f /lib/x86_64-linux-gnu/$dep)" "$out/lib/$dep"
done
du -sh "$out"
