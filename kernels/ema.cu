// CUDA fused EMA update (math in kernels/ema.h): up to kEmaMaxTensors (teacher, student) pairs per launch, their
// pointers and sizes carried by value in an EmaBatch; block b updates chunk b − block_start[t] of the tensor t
// with block_start[t] <= b < block_start[t + 1]. t = m·t + (1 − m)·s in f32, float4 where aligned.
#include <cstdint>
#include <cstring>

#include "kernels/common.cuh"
#include "kernels/ema.h"

namespace sslight::kernels::SSL_GPU_NS {
namespace {

constexpr int kBlock = 256;
constexpr int64_t kMaxPiece = int64_t(1) << 30;  // tensors are split in pieces this size (int32 sizes below)

struct EmaBatch {
    float* t[kEmaMaxTensors];
    const float* s[kEmaMaxTensors];
    int32_t numel[kEmaMaxTensors];
    int32_t block_start[kEmaMaxTensors + 1];
    uint8_t aligned[kEmaMaxTensors];
    int32_t n_tensors, n_blocks;
    float m, omm;
};
static_assert(sizeof(EmaBatch) <= 4096, "EmaBatch must fit the 4 KiB kernel-parameter space");

__global__ void __launch_bounds__(kBlock) ema_kernel(const __grid_constant__ EmaBatch b) {
    int lo = 0, hi = b.n_tensors - 1;  // the last tensor whose first block is <= blockIdx.x
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (b.block_start[mid] <= int32_t(blockIdx.x))
            lo = mid;
        else
            hi = mid - 1;
    }
    const int64_t begin = int64_t(blockIdx.x - b.block_start[lo]) * kEmaChunk;
    const int64_t end = begin + kEmaChunk < b.numel[lo] ? begin + kEmaChunk : b.numel[lo];
    float* t = b.t[lo];
    const float* s = b.s[lo];
    int64_t tail = begin;
    if (b.aligned[lo]) {
        tail = begin + ((end - begin) & ~int64_t(3));
        for (int64_t i = begin + 4 * int64_t(threadIdx.x); i < tail; i += 4 * int64_t(blockDim.x)) {
            float4 tv = *reinterpret_cast<const float4*>(t + i);
            const float4 sv = *reinterpret_cast<const float4*>(s + i);
            tv.x = tv.x * b.m + sv.x * b.omm;
            tv.y = tv.y * b.m + sv.y * b.omm;
            tv.z = tv.z * b.m + sv.z * b.omm;
            tv.w = tv.w * b.m + sv.w * b.omm;
            *reinterpret_cast<float4*>(t + i) = tv;
        }
    }
    for (int64_t i = tail + threadIdx.x; i < end; i += blockDim.x) t[i] = t[i] * b.m + s[i] * b.omm;
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace

void ema_update(const std::vector<EmaSlot<float>>& slots, double m, Stream s) {
    EmaBatch b;
    std::memset(&b, 0, sizeof(b));
    b.m = float(m), b.omm = float(1.0 - m);
    auto flush = [&] {
        if (b.n_blocks > 0) launch("ema_kernel", ema_kernel, dim3(unsigned(b.n_blocks)), dim3(kBlock), 0, s, b);
        b.n_tensors = b.n_blocks = 0;
    };
    for (const EmaSlot<float>& slot : slots) {
        for (int64_t off = 0; off < slot.numel; off += kMaxPiece) {
            const int64_t n = slot.numel - off < kMaxPiece ? slot.numel - off : kMaxPiece;
            const int32_t blocks = int32_t((n + kEmaChunk - 1) / kEmaChunk);
            if (b.n_tensors == kEmaMaxTensors || int64_t(b.n_blocks) + blocks > int64_t(INT32_MAX)) flush();
            const int t = b.n_tensors++;
            b.t[t] = slot.teacher + off, b.s[t] = slot.student + off, b.numel[t] = int32_t(n);
            b.aligned[t] = aligned16(b.t[t]) && aligned16(b.s[t]) ? 1 : 0;
            b.block_start[t] = b.n_blocks;
            b.n_blocks += blocks;
            b.block_start[t + 1] = b.n_blocks;
        }
    }
    flush();
}

}  // namespace sslight::kernels::SSL_GPU_NS
