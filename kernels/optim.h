// Optimizer updates over many parameter tensors at once (multi-tensor apply), in place, f32 master weights:
//   SGD   (PyTorch, dampening 0): d = g + wd·p; buf = first ? d : μ·buf + d; d = nesterov ? d + μ·buf : buf; p -= lr·d
//   LARS  (DINO): d = g + wd·p; d *= adapt && ‖p‖ > 0 && ‖d‖ > 0 ? η‖p‖/‖d‖ : 1; μb = μ·μb + d; p -= lr·μb
//   AdamW (PyTorch): p *= 1 - lr·wd; m = β1m + (1-β1)g; v = β2v + (1-β2)g²; p -= lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps)
// plus per-tensor sums of squares and gradient clipping by norm. No autograd: gradients are read, parameters
// and state buffers are overwritten in place. Reductions are deterministic (fixed chunks summed in fixed order).
#pragma once
#include <vector>

#include "kernels/common.h"

namespace sslight::kernels {

// Every tensor is cut into chunks of kMtaChunk elements; one GPU block (one CPU work item) per chunk.
constexpr int64_t kMtaChunk = 16384;
// Tensors per GPU launch: the launch arguments carry their pointers, sizes and scalars by value.
constexpr int kMtaMaxTensors = 48;

inline int64_t mta_chunks(int64_t numel) { return (numel + kMtaChunk - 1) / kMtaChunk; }

// One parameter tensor as the update kernels see it; every pointer covers `numel` contiguous elements.
template <class T>
struct OptimSlot {
    T* param = nullptr;       // (numel) updated in place
    const T* grad = nullptr;  // (numel)
    T* buf1 = nullptr;        // (numel) SGD momentum_buffer / LARS mu / AdamW exp_avg; nullptr: SGD without momentum
    T* buf2 = nullptr;        // (numel) AdamW exp_avg_sq; nullptr otherwise
    int64_t numel = 0;
    double lr = 0, weight_decay = 0;
    bool lars_adapt = true;  // LARS: apply the trust ratio
    int64_t step = 1;        // this parameter's step count including this step (SGD: 1 = first; AdamW: t)
};

struct SgdHyper {
    double momentum = 0;
    bool nesterov = false;
};
struct LarsHyper {
    double momentum = 0.9, eta = 0.001;
};
struct AdamWHyper {
    double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
};

// Gradient clipping from per-tensor sums of squares s_t:
//   global:     n = sqrt(Σ_t s_t), every tensor scaled by c = max_norm / (n + 1e-6) when c < 1 (torch clip_grad_norm_)
//   per_tensor: n_t = sqrt(s_t), tensor t scaled by c_t = max_norm / (n_t + 1e-6) when c_t < 1 (DINO clip_gradients)
enum class ClipMode : uint8_t { global, per_tensor };

// CPU implementation and reference (T = float, double), OpenMP over (tensor, chunk) work items.
template <class T>
void sgd_step_cpu(const std::vector<OptimSlot<T>>& slots, const SgdHyper& h);
// sumsq: (2 · slots.size()) or nullptr; receives [Σp², Σd²] per tensor (d = g + wd·p, before the trust ratio).
template <class T>
void lars_step_cpu(const std::vector<OptimSlot<T>>& slots, const LarsHyper& h, double* sumsq);
template <class T>
void adamw_step_cpu(const std::vector<OptimSlot<T>>& slots, const AdamWHyper& h);
// out: (x.size()), out[t] = Σ_i x_t[i]² accumulated in double; x_t: (numel[t]).
template <class T>
void sumsq_cpu(const std::vector<const T*>& x, const std::vector<int64_t>& numel, double* out);
// x_t: (numel[t]) scaled in place; sumsq: (x.size()) from sumsq_cpu.
template <class T>
void clip_scale_cpu(const std::vector<T*>& x, const std::vector<int64_t>& numel, const double* sumsq, ClipMode mode,
                    double max_norm);

}  // namespace sslight::kernels

// GPU launchers (f32 only): tensors are packed kMtaMaxTensors at a time into one launch whose blocks map to
// (tensor, chunk) through a table carried in the arguments. Reductions: per-chunk partial sums written to
// a workspace, then a second kernel sums each tensor's chunks in order (no atomics, bit-reproducible).
SSL_GPU_DECLARE(
    void sgd_step(const std::vector<OptimSlot<float>>& slots, const SgdHyper& h, Stream s);
    // Floats of workspace lars_step and multi_tensor_sumsq need: 2 per chunk of the listed tensors.
    size_t mta_workspace(const std::vector<int64_t>& numel);
    // workspace: (mta_workspace) overwritten; sumsq: (2 · slots.size()) written with [Σp², Σd²] per tensor,
    // then read by the update kernel (no host synchronisation).
    void lars_step(const std::vector<OptimSlot<float>>& slots, const LarsHyper& h, float* workspace, float* sumsq,
                   Stream s);
    void adamw_step(const std::vector<OptimSlot<float>>& slots, const AdamWHyper& h, Stream s);
    // out: (x.size()) written with Σ x_t², f32; workspace: (mta_workspace) overwritten.
    void multi_tensor_sumsq(const std::vector<const float*>& x, const std::vector<int64_t>& numel, float* workspace,
                            float* out, Stream s);
    // sumsq: (x.size()) on the device, from multi_tensor_sumsq; the coefficients are computed on the device.
    void clip_scale(const std::vector<float*>& x, const std::vector<int64_t>& numel, const float* sumsq,
                    ClipMode mode, double max_norm, Stream s);
)
