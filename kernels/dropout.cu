// CUDA dropout (one thread per Philox block of four elements, grid-stride) and drop path (blockIdx.y walks
// the samples, each thread draws its sample's decision once and scales a strided part of the row). f32
// arithmetic; masks equal the CPU's exactly.
#include "kernels/common.cuh"
#include "kernels/dropout.h"

namespace sslight::kernels::SSL_GPU_NS {
namespace {

template <class T>
__global__ void dropout_kernel(const T* x, T* y, int64_t n, uint64_t seed, uint64_t stream, uint32_t threshold,
                               float scale) {
    const int64_t nblocks = (n + 3) / 4;
    for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < nblocks;
         b += (int64_t)gridDim.x * blockDim.x) {
        const philox::U4 bits = philox::block(seed, stream, static_cast<uint64_t>(b));
        const int64_t end = b * 4 + 4 < n ? b * 4 + 4 : n;
        for (int64_t i = b * 4; i < end; ++i)
            y[i] = dropout_keep(bits, static_cast<uint64_t>(i), threshold) ? from_f32<T>(to_f32(x[i]) * scale)
                                                                          : from_f32<T>(0.f);
    }
}

template <class T>
__global__ void drop_path_kernel(const T* x, T* y, int64_t rows, int64_t cols, uint64_t seed, uint64_t stream,
                                 uint32_t threshold, float scale) {
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const uint64_t k = static_cast<uint64_t>(r);
        const float f = dropout_keep(philox::block(seed, stream, k >> 2), k, threshold) ? scale : 0.f;
        const T* xr = x + r * cols;
        T* yr = y + r * cols;
        for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < cols;
             c += (int64_t)gridDim.x * blockDim.x)
            yr[c] = from_f32<T>(f == 0.f ? 0.f : to_f32(xr[c]) * f);
    }
}

constexpr int kBlock = 256;

}  // namespace

template <class T>
void dropout(const DropoutParams& p, const T* x, T* y, Stream s) {
    if (p.n <= 0) return;
    launch("dropout_kernel", dropout_kernel<dev_t<T>>, grid_1d((p.n + 3) / 4, kBlock), kBlock, 0, s, dev_ptr(x),
           dev_ptr(y), p.n, p.seed, p.stream, p.threshold, static_cast<float>(p.scale));
}

template <class T>
void drop_path(const DropoutParams& p, const T* x, T* y, Stream s) {
    if (p.n <= 0 || p.row_size <= 0) return;
    const int64_t rows = p.n / p.row_size, cols = p.row_size;
    if (rows <= 0) return;
    const int64_t gx = (cols + kBlock - 1) / kBlock;
    const dim3 grid(static_cast<unsigned>(gx < 64 ? gx : 64), static_cast<unsigned>(rows < 65535 ? rows : 65535));
    launch("drop_path_kernel", drop_path_kernel<dev_t<T>>, grid, kBlock, 0, s, dev_ptr(x), dev_ptr(y), rows, cols,
           p.seed, p.stream, p.threshold, static_cast<float>(p.scale));
}

template void dropout<float>(const DropoutParams&, const float*, float*, Stream);
template void dropout<bf16>(const DropoutParams&, const bf16*, bf16*, Stream);
template void drop_path<float>(const DropoutParams&, const float*, float*, Stream);
template void drop_path<bf16>(const DropoutParams&, const bf16*, bf16*, Stream);

}  // namespace sslight::kernels::SSL_GPU_NS
