// Multi-crop soft cross-entropy of DINO (Caron et al. 2021) and SwAV's swapped prediction (Caron et al. 2020):
//   L = Σ_{i < G} Σ_{v != i} w_iv · (1/B) Σ_b −Σ_k P^i_bk · log softmax(s_vb / τ_s)_k,
// with V student views (G global crops first), w_iv = w_gg for v < G, w_gl otherwise, and targets P^i either
// softmax((t_ib − c) / τ_t) (DINO, teacher logits t and centre c) or given codes q_ib (SwAV). Gradient:
//   dL/ds_vb = (1/(B·τ_s)) · (Σ_{i≠v} w_iv Σ_k P^i_bk · softmax(s_vb/τ_s) − Σ_{i≠v} w_iv P^i_b) · dloss,
// written (=); targets and centre get no gradient. One pass over the logits per direction, no per-pair tensors.
#pragma once
#include "kernels/common.h"

namespace sslight::kernels {

// GPU limits (register arrays and static shared memory are sized by them).
constexpr int kDinoMaxGlobal = 4;
constexpr int kDinoMaxViews = 32;

struct DinoLossParams {
    int64_t B = 0, K = 0;  // samples per view, logits per row
    int views = 0;         // V: student rows (V·B, K), view-major: view v of sample b is row v·B + b
    int n_global = 0;      // G: target rows (G·B, K) belong to views 0..G-1 (the global crops)
    bool softmax_targets = true;  // DINO: P^i = softmax((t_i − c)/τ_t); SwAV: P^i = the given codes
    double student_temp = 0.1, teacher_temp = 0.04;
    double w_gg = 0, w_gl = 0;    // weight of one global-global / global-local pair
};

// Weight of pair (target i, view v): 0 for v == i.
inline double dino_pair_weight(const DinoLossParams& p, int i, int v) {
    return i == v ? 0.0 : v < p.n_global ? p.w_gg : p.w_gl;
}
// λ_gg · mean over the G(G-1) gg pairs + λ_gl · mean over the G(V-G) gl pairs (a kind without pairs weighs 0).
inline void dino_set_lambdas(DinoLossParams& p, double lambda_gg, double lambda_gl) {
    const double n_gg = double(p.n_global) * (p.n_global - 1), n_gl = double(p.n_global) * (p.views - p.n_global);
    p.w_gg = n_gg > 0 ? lambda_gg / n_gg : 0.0;
    p.w_gl = n_gl > 0 ? lambda_gl / n_gl : 0.0;
}

// student: (V·B, K); target: (G·B, K) teacher logits or codes; center: (K), DINO only (nullptr: zero centre).
// loss: (); lse_s: (V·B) log-sum-exp of s/τ_s per row; tstat: (G·B) per target row, DINO: log-sum-exp of
// (t − c)/τ_t, SwAV: Σ_k q (both saved for backward); teacher_mean: (K) or nullptr, the column mean of the G·B
// target rows (DINO's centre update). Double accumulation, rows in a fixed order (deterministic).
template <class T>
void dino_loss_fwd_cpu(const DinoLossParams& p, const T* student, const T* target, const T* center, T* loss,
                       T* lse_s, T* tstat, T* teacher_mean);
// dloss: () upstream gradient; dstudent: (V·B, K) written.
template <class T>
void dino_loss_bwd_cpu(const DinoLossParams& p, const T* student, const T* target, const T* center, const T* lse_s,
                       const T* tstat, const T* dloss, T* dstudent);

}  // namespace sslight::kernels

// GPU launchers (T = float or bf16 logits, f32 math; center, lse_s, tstat, teacher_mean f32). Forward: a stats
// kernel over (K-chunk, group of samples) blocks — each warp reads a 256-wide segment of every target and
// student row of a sample once, keeping online (max, Σexp, Σ P·x) states merged across warps and then across
// chunks by a finalize kernel — plus the loss mean and the teacher column mean. Backward: one thread per
// 4 columns of a sample recomputes the targets once and writes the gradient of every view. workspace: f32, the size
// dino_loss_workspace returns.
SSL_GPU_DECLARE(
    size_t dino_loss_workspace(const DinoLossParams& p);
    template <class T> void dino_loss_fwd(const DinoLossParams& p, const T* student, const T* target,
                                          const float* center, T* loss, float* lse_s, float* tstat,
                                          float* teacher_mean, float* workspace, Stream s);
    template <class T> void dino_loss_bwd(const DinoLossParams& p, const T* student, const T* target,
                                          const float* center, const float* lse_s, const float* tstat,
                                          const T* dloss, T* dstudent, Stream s);
)
