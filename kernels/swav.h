// Sinkhorn-Knopp codes of SwAV (Caron et al. 2020, `distributed_sinkhorn`), on scores (B, K) = z·prototypesᵀ:
//   Q = exp(scores/ε)ᵀ (K × B_global); Q /= ΣQ; repeat `iters`: Q /= row sums (over samples, per prototype);
//   Q /= K; Q /= column sums (per sample); Q /= B_global; finally Q *= B_global; codes = Qᵀ (B, K).
// In data parallel the total and each per-prototype sum are all-reduced over ranks (the `reduce` hook).
// The swapped-prediction loss itself is the DINO kernel with given targets (kernels/dino_loss.h,
// softmax_targets = false). No gradients: codes are targets.
#pragma once
#include <functional>

#include "kernels/common.h"

namespace sslight::kernels {

struct SinkhornParams {
    int64_t B = 0, K = 0;     // scores (B, K): this rank's rows (queue rows included), K prototypes
    double eps = 0.05;
    int iters = 3;
    double global_rows = 0;   // SwAV's B = rows summed over ranks; 0: B
    // Subtract max(scores)/ε before exp. Exact (the first normalisation divides the factor out) but only valid
    // when the max is the same on every rank, i.e. for a single process.
    bool shift_max = false;
};

// Called with n = 1 once `total` holds this rank's ΣQ and with n = K once `proto_sums` holds this rank's
// per-prototype sums; must leave the sums over all ranks in place (do nothing for one process).
using SinkhornReduce = std::function<void(int64_t n)>;

// scores, q: (B, K); total: (1); proto_sums: (K). Literal SwAV steps on a materialised Q, double accumulation.
template <class T>
void sinkhorn_cpu(const SinkhornParams& p, const T* scores, T* q, T* total, T* proto_sums,
                  const SinkhornReduce& reduce);

}  // namespace sslight::kernels

// GPU launchers (T = float or bf16 scores and codes, f32 math). Q is never materialised between steps: it is
// kept as exp(scores/ε − shift)·α_k·β_b with per-prototype α (K) and per-sample β (B) scalings that the steps
// update (each pass recomputes the exp), and written once at the end. total, proto_sums: f32 device memory
// handed to `reduce`; workspace: f32, sinkhorn_workspace(p) elements.
SSL_GPU_DECLARE(
    size_t sinkhorn_workspace(const SinkhornParams& p);
    template <class T> void sinkhorn(const SinkhornParams& p, const T* scores, T* q, float* total,
                                     float* proto_sums, float* workspace, const SinkhornReduce& reduce, Stream s);
)
