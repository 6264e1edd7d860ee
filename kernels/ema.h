// Exponential moving average of parameters (the DINO teacher, the MoCo key encoder), in place:
//   teacher ← m·teacher + (1 − m)·student   over every (teacher, student) pair of a parameter list.
// Multi-tensor apply: every tensor is cut into chunks of kEmaChunk elements and one GPU block (one CPU work
// item) handles one chunk, so a whole list costs one launch per kEmaMaxTensors tensors. No autograd.
#pragma once
#include <vector>

#include "kernels/common.h"

namespace sslight::kernels {

constexpr int64_t kEmaChunk = 8192;
// Tensors per GPU launch: their pointers and sizes travel by value in the launch arguments (< 4 KiB).
constexpr int kEmaMaxTensors = 160;

template <class T>
struct EmaSlot {
    T* teacher = nullptr;        // (numel) updated in place
    const T* student = nullptr;  // (numel)
    int64_t numel = 0;
};

// T = float, double; OpenMP over all (tensor, chunk) items; f64 arithmetic.
template <class T>
void ema_update_cpu(const std::vector<EmaSlot<T>>& slots, double m);

}  // namespace sslight::kernels

// GPU launcher (f32): tensors packed kEmaMaxTensors per launch (larger ones split in pieces below 2^30
// elements); block b finds its (tensor, chunk) by a binary search of the per-tensor first blocks carried in
// the arguments; float4 accesses where both pointers of a tensor are 16-byte aligned.
SSL_GPU_DECLARE(
    void ema_update(const std::vector<EmaSlot<float>>& slots, double m, Stream s);
)
