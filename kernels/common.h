// Host-side conventions shared by every kernel header: the stream type, the bf16 storage type and the
// macro that declares a kernel family's GPU launchers once for each GPU target.
//
// A kernel family `foo` has three files: foo.h (params struct + declarations, pointer shapes documented),
// foo_cpu.cpp (CPU implementation and reference, templated on float/double) and foo.cu (CUDA kernels and
// launchers). foo.cu is compiled twice: by nvcc into namespace sslight::kernels::cuda (the real GPU build)
// and by the host compiler with the SIMT emulator into sslight::kernels::emu (see emu/emu.h). Both
// declarations come from one SSL_GPU_DECLARE(...) block, so a test can call the emulated launcher with
// host pointers and compare it with the CPU reference in the same binary.
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/dtype.h"

struct CUstream_st;  // the CUDA runtime's opaque stream; cudaStream_t is `CUstream_st*`

namespace sslight::kernels {
using Stream = CUstream_st*;
}  // namespace sslight::kernels

// Declares the launchers given as arguments in namespaces kernels::cuda and kernels::emu.
#define SSL_GPU_DECLARE(...)                 \
    namespace sslight::kernels::cuda {       \
    __VA_ARGS__                              \
    }                                        \
    namespace sslight::kernels::emu {        \
    __VA_ARGS__                              \
    }
