#!/usr/bin/env bash
# Run here (Debian 12) before a GPU check: copies into .devcarry/ (git-ignored, carried to the GPU machine)
# what the build needs there and the GPU image lacks: doctest's header, TurboJPEG/libjpeg/stb_image, the
# cblas headers and OpenBLAS
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
# The data loader's decoders: TurboJPEG + libjpeg (headers and libraries) and stb_image (header only).
cp /usr/include/turbojpeg.h /usr/include/jpeglib.h /usr/include/jerror.h /usr/include/jmorecfg.h "$out/include/"
cp /usr/include/x86_64-linux-gnu/jconfig.h "$out/include/"
mkdir -p "$out/include/stb" && cp /usr/include/stb/stb_image.h "$out/include/stb/"
cp "$(readlink -f /usr/lib/x86_64-linux-gnu/libturbojpeg.so.0)" "$out/lib/libturbojpeg.so.0"
cp "$(readlink -f /usr/lib/x86_64-linux-gnu/libjpeg.so.62)" "$out/lib/libjpeg.so.62"
ln -sf libturbojpeg.so.0 "$out/lib/libturbojpeg.so"
ln -sf libjpeg.so.62 "$out/lib/libjpeg.so"
for dep in libgfortran.so.5 libquadmath.so.0; do
    cp "$(readlink -f /lib/x86_64-linux-gnu/$dep)" "$out/lib/$dep"
done
du -sh "$out"
