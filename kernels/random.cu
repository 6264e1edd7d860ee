// CUDA random fills: one thread per Philox block (four values) in a grid-stride loop, the value functors
// of kernels/random.h in explicitly rounded float arithmetic, so results equal the CPU's bit for bit.
#include "kernels/common.cuh"
#include "kernels/random.h"

namespace sslight::kernels::SSL_GPU_NS {
namespace {

template <class T, class F>
__global__ void fill_kernel(T* out, uint64_t seed, uint64_t stream, uint64_t offset, int64_t n, F f) {
    const uint64_t end = offset + static_cast<uint64_t>(n);
    const uint64_t first = offset >> 2;
    const int64_t nblocks = static_cast<int64_t>(((end - 1) >> 2) - first + 1);
    for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < nblocks;
         b += (int64_t)gridDim.x * blockDim.x) {
        const uint64_t blk = first + static_cast<uint64_t>(b);
        float v[4];
        f(philox::block(seed, stream, blk), v);
        for (int lane = 0; lane < 4; ++lane) {
            const uint64_t g = blk * 4 + static_cast<uint64_t>(lane);
            if (g >= offset && g < end) out[g - offset] = from_f32<T>(v[lane]);
        }
    }
}

constexpr int kBlock = 256;

template <class T, class F>
void launch_fill(const char* name, const RandomParams& p, T* out, const F& f, Stream s) {
    if (p.n <= 0) return;
    const int64_t nblocks = (p.n + 7) / 4;  // upper bound on the Philox blocks the range touches
    launch(name, fill_kernel<dev_t<T>, F>, grid_1d(nblocks, kBlock), kBlock, 0, s, dev_ptr(out), p.seed, p.stream,
           p.offset, p.n, f);
}

}  // namespace

template <class T>
void uniform_fill(const RandomParams& p, T* out, Stream s) {
    launch_fill("uniform_fill_kernel", p, out, uniform_coeffs(p), s);
}
template <class T>
void normal_fill(const RandomParams& p, T* out, Stream s) {
    launch_fill("normal_fill_kernel", p, out, normal_coeffs(p), s);
}
template <class T>
void trunc_normal_fill(const RandomParams& p, T* out, Stream s) {
    launch_fill("trunc_normal_fill_kernel", p, out, trunc_normal_coeffs(p), s);
}

template void uniform_fill<float>(const RandomParams&, float*, Stream);
template void uniform_fill<bf16>(const RandomParams&, bf16*, Stream);
template void normal_fill<float>(const RandomParams&, float*, Stream);
template void normal_fill<bf16>(const RandomParams&, bf16*, Stream);
template void trunc_normal_fill<float>(const RandomParams&, float*, Stream);
template void trunc_normal_fill<bf16>(const RandomParams&, bf16*, Stream);

}  // namespace sslight::kernels::SSL_GPU_NS
