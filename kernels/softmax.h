// Row-wise softmax and log-softmax over the last dim (max-subtracted: y = exp(x - m) / sum exp(x - m)) and the
// fused cross-entropy losses, mean over rows N: hard labels L = mean_r (lse_r - x[r, label_r]) and soft
// targets L = -mean_r sum_c t[r, c] log_softmax(x)[r, c]. Gradients: softmax dx = y (dy - sum dy y);
// log_softmax dx = dy - exp(y) sum dy; hard CE dx = (softmax - onehot) g / N; soft CE dx = (softmax sum t - t)
// g / N, dt = -log_softmax g / N, where g is the upstream scalar gradient. Backward kernels write (=).
// Labels outside [0, C) make that row's loss and gradient NaN (the GPU trusts its labels; the engine checks
// CPU labels and throws before calling the kernel).
#pragma once
#include "kernels/common.h"

namespace sslight::kernels {

struct SoftmaxParams {
    int64_t rows = 0, C = 0;  // (rows, C), reduction over C
};

// x, y, dy, dx: (rows, C)
template <class T>
void softmax_fwd_cpu(const SoftmaxParams& p, const T* x, T* y);
template <class T>
void softmax_bwd_cpu(const SoftmaxParams& p, const T* y, const T* dy, T* dx);
template <class T>
void log_softmax_fwd_cpu(const SoftmaxParams& p, const T* x, T* y);
template <class T>
void log_softmax_bwd_cpu(const SoftmaxParams& p, const T* y, const T* dy, T* dx);

// Hard-label cross entropy. logits: (N, C), labels: (N) (L = int32_t or int64_t), loss: () the mean,
// lse: (N) log-sum-exp of each row (saved for backward), dloss: () upstream gradient, dlogits: (N, C).
template <class T, class L>
void cross_entropy_fwd_cpu(const SoftmaxParams& p, const T* logits, const L* labels, T* loss, T* lse);
template <class T, class L>
void cross_entropy_bwd_cpu(const SoftmaxParams& p, const T* logits, const L* labels, const T* lse, const T* dloss,
                           T* dlogits);

// Soft-target cross entropy. logits, targets: (N, C), loss: (), lse and tsum (sum_c t): (N) saved for backward.
// dlogits, dtargets: (N, C), either may be null (not needed).
template <class T>
void cross_entropy_soft_fwd_cpu(const SoftmaxParams& p, const T* logits, const T* targets, T* loss, T* lse, T* tsum);
template <class T>
void cross_entropy_soft_bwd_cpu(const SoftmaxParams& p, const T* logits, const T* targets, const T* lse,
                                const T* tsum, const T* dloss, T* dlogits, T* dtargets);

}  // namespace sslight::kernels

// GPU launchers (T = float or bf16, f32 math). One warp per row for C <= 1024, one block per row above
// (rows up to 65536 and more). lse, tsum: f32 (N). row_loss: f32 workspace of N elements.
SSL_GPU_DECLARE(
    template <class T> void softmax_fwd(const SoftmaxParams& p, const T* x, T* y, Stream s);
    template <class T> void softmax_bwd(const SoftmaxParams& p, const T* y, const T* dy, T* dx, Stream s);
    template <class T> void log_softmax_fwd(const SoftmaxParams& p, const T* x, T* y, Stream s);
    template <class T> void log_softmax_bwd(const SoftmaxParams& p, const T* y, const T* dy, T* dx, Stream s);
    template <class T, class L> void cross_entropy_fwd(const SoftmaxParams& p, const T* logits, const L* labels,
                                                       T* loss, float* lse, float* row_loss, Stream s);
    template <class T, class L> void cross_entropy_bwd(const SoftmaxParams& p, const T* logits, const L* labels,
                                                       const float* lse, const T* dloss, T* dlogits, Stream s);
    template <class T> void cross_entropy_soft_fwd(const SoftmaxParams& p, const T* logits, const T* targets,
                                                   T* loss, float* lse, float* tsum, float* row_loss, Stream s);
    template <class T> void cross_entropy_soft_bwd(const SoftmaxParams& p, const T* logits, const T* targets,
                                                   const float* lse, const float* tsum, const T* dloss,
                                                   T* dlogits, T* dtargets, Stream s);
)
