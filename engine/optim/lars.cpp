// LARS as in the DINO/SSLight code (SPEC.md §5): d = g + wd·p; for adapted groups d ← d·η‖p‖/‖d‖ when both
// norms are > 0; μ ← momentum·μ + d (μ starts at 0); p ← p − lr·μ. Norms per parameter tensor (f32, f64 on
// f64 CPU tensors), computed by the fused kernels in the same launch sequence as the update (no host sync on
// the GPU). No gradients recorded.
#include "engine/device.h"
#include "engine/optim/optimizer.h"

namespace sslight::optim {

LARS::LARS(std::vector<ParamGroup> groups, double momentum, double eta)
    : Optimizer(std::move(groups)), momentum_(momentum), eta_(eta) {
    SSL_CHECK_T(ConfigError, momentum >= 0, "LARS: momentum must be >= 0, got ", momentum);
    SSL_CHECK_T(ConfigError, eta > 0, "LARS: eta must be > 0, got ", eta);
}

void LARS::step() {
    const kernels::LarsHyper h{momentum_, eta_};
    last_sumsq_.clear();
    for (const std::vector<Work>& part : collect()) {
        const Tensor& p0 = part.front().param;
        if (p0.device().is_cpu()) {
            std::vector<double> sumsq(2 * part.size());
            if (p0.dtype() == DType::f64)
                kernels::lars_step_cpu(slots_of<double>(part), h, sumsq.data());
            else
                kernels::lars_step_cpu(slots_of<float>(part), h, sumsq.data());
            last_sumsq_.insert(last_sumsq_.end(), sumsq.begin(), sumsq.end());
            continue;
        }
#ifdef SSLIGHT_WITH_CUDA
        std::vector<int64_t> numel;
        for (const Work& w : part) numel.push_back(w.param.numel());
        const int64_t ws = static_cast<int64_t>(kernels::cuda::mta_workspace(numel));
        const int64_t need = ws + 2 * static_cast<int64_t>(part.size());
        if (!workspace_.defined() || workspace_.device() != p0.device() || workspace_.numel() < need)
            workspace_ = empty({need}, DType::f32, p0.device());
        float* base = workspace_.data<float>();
        kernels::cuda::lars_step(slots_of<float>(part), h, base, base + ws, runtime::stream(p0.device()));
        runtime::after_op(p0.device(), "lars_step");
#else
        SSL_FAIL("LARS: ", p0.str(), " is on a CUDA device but this build has no CUDA support");
#endif
    }
}

}  // namespace sslight::optim
