// InfoNCE with a queue of negatives (MoCo, He et al. 2020): for query q_b, positive key k_b and queue rows n_j,
// logits [q_b·k_b, q_b·n_j] / T with label 0, L = mean_b (lse_b − q_b·k_b/T). The negative dot products q·n come
// from a GEMM (kernels/gemm.h) done by the op; these kernels scale them by 1/T as they read them and add the
// positive logit, the fused log-sum-exp / loss, and the backward's softmax. Gradient w.r.t. q only (keys and
// queue are constants):
//   dq_b = g/(B·T) · [(p_pos,b − 1)·k_b + Σ_j p_bj n_j],  p = softmax of the row's logits,
// of which the kernels write the first term (=) and turn the saved negative logits into g/(B·T)·p_bj in place,
// the operand of the second GEMM dq += P·queue.
#pragma once
#include "kernels/common.h"

namespace sslight::kernels {

struct InfoNceParams {
    int64_t B = 0;   // queries
    int64_t D = 0;   // embedding width
    int64_t Kq = 0;  // queue rows (negatives)
    double temp = 0.2;
};

// q, k: (B, D); logits: (B, Kq) the negative dot products q_b·n_j (not yet divided by T); lpos, lse: (B) saved
// for backward (positive logit and log-sum-exp, both in logit units);
// loss: () the mean over queries. Double accumulation.
template <class T>
void infonce_fwd_cpu(const InfoNceParams& p, const T* q, const T* k, const T* logits, T* lpos, T* lse, T* loss);
// k: (B, D); lpos, lse: (B); dloss: (); logits: (B, Kq) in: the dot products, out: g/(B·T)·softmax;
// dq: (B, D) written with the positive-key term.
template <class T>
void infonce_bwd_cpu(const InfoNceParams& p, const T* k, const T* lpos, const T* lse, const T* dloss, T* logits,
                     T* dq);

}  // namespace sslight::kernels

// GPU launchers (T = float or bf16 storage, f32 math): forward one block per query row (online max/sum over
// the Kq logits, the positive dot in the same block) then the mean; backward one element-wise pass. lpos, lse:
// f32 (B); row_loss: f32 workspace (B).
SSL_GPU_DECLARE(
    template <class T> void infonce_fwd(const InfoNceParams& p, const T* q, const T* k, const T* logits, float* lpos,
                                        float* lse, float* row_loss, T* loss, Stream s);
    template <class T> void infonce_bwd(const InfoNceParams& p, const T* k, const float* lpos, const float* lse,
                                        const T* dloss, T* logits, T* dq, Stream s);
)
