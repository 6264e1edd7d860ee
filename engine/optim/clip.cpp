// Gradient-norm clipping (global, PyTorch; per parameter, DINO) through the multi-tensor kernels of
// kernels/optim.h: per-tensor sums of squares, then an in-place scale whose coefficients are computed where
// the sums are (on the GPU without a host round trip). Grads are modified in place; nothing is recorded.
#include "engine/optim/clip.h"

#include <cmath>

#include "engine/device.h"
#include "kernels/optim.h"

namespace sslight::optim {
namespace {

// Grads of the parameters that have one, validated to share one device and one dtype (f32, or f64 on the CPU).
std::vector<Tensor> grads_of(const char* fn, const std::vector<Tensor*>& params) {
    std::vector<Tensor> out;
    for (size_t i = 0; i < params.size(); ++i) {
        SSL_CHECK(params[i] != nullptr, fn, ": parameter ", i, " is a null pointer");
        if (!params[i]->defined() || !params[i]->grad().defined()) continue;
        Tensor g = params[i]->grad();
        SSL_CHECK_DTYPE(g.dtype() == DType::f32 || (g.dtype() == DType::f64 && g.device().is_cpu()), fn,
                        ": grad of parameter ", i, " is ", g.str(), "; expected f32 (or f64 on the CPU)");
        if (!out.empty()) {
            SSL_CHECK_DEVICE(g.device() == out[0].device(), fn, ": grads on different devices: ", out[0].str(),
                             " and ", g.str(), " (parameter ", i, ")");
            SSL_CHECK_DTYPE(g.dtype() == out[0].dtype(), fn, ": grads of different dtypes: ", out[0].str(), " and ",
                            g.str(), " (parameter ", i, ")");
        }
        out.push_back(g);
    }
    return out;
}

template <class T>
std::vector<double> clip_cpu(const std::vector<Tensor>& grads, kernels::ClipMode mode, double max_norm) {
    std::vector<const T*> cx;
    std::vector<T*> x;
    std::vector<int64_t> n;
    for (const Tensor& g : grads) x.push_back(g.data<T>()), cx.push_back(g.data<T>()), n.push_back(g.numel());
    std::vector<double> sumsq(grads.size());
    kernels::sumsq_cpu(cx, n, sumsq.data());
    kernels::clip_scale_cpu(x, n, sumsq.data(), mode, max_norm);
    return sumsq;
}

// Per-tensor sums of squares of the grads (before scaling); the grads are scaled in place.
std::vector<double> clip(const std::vector<Tensor>& grads, kernels::ClipMode mode, double max_norm) {
    if (grads.empty()) return {};
    const Device dev = grads[0].device();
    if (dev.is_cpu())
        return grads[0].dtype() == DType::f64 ? clip_cpu<double>(grads, mode, max_norm)
                                              : clip_cpu<float>(grads, mode, max_norm);
#ifdef SSLIGHT_WITH_CUDA
    std::vector<const float*> cx;
    std::vector<float*> x;
    std::vector<int64_t> n;
    for (const Tensor& g : grads) x.push_back(g.data<float>()), cx.push_back(g.data<float>()), n.push_back(g.numel());
    const int64_t ws = static_cast<int64_t>(kernels::cuda::mta_workspace(n));
    Tensor work = empty({ws + static_cast<int64_t>(grads.size())}, DType::f32, dev);
    float* sums = work.data<float>() + ws;
    const kernels::Stream s = runtime::stream(dev);
    kernels::cuda::multi_tensor_sumsq(cx, n, work.data<float>(), sums, s);
    kernels::cuda::clip_scale(x, n, sums, mode, max_norm, s);
    runtime::after_op(dev, "clip_grad");
    std::vector<float> host(grads.size());
    runtime::copy(host.data(), Device::cpu(), sums, dev, host.size() * sizeof(float));
    return std::vector<double>(host.begin(), host.end());
#else
    SSL_FAIL("clip: grads on ", dev.str(), " but this build has no CUDA support");
#endif
}

}  // namespace

double clip_grad_norm(const std::vector<Tensor*>& params, double max_norm) {
    SSL_CHECK_T(ConfigError, max_norm > 0 && std::isfinite(max_norm), "clip_grad_norm: max_norm must be > 0, got ",
                max_norm);
    double total = 0;
    for (double s : clip(grads_of("clip_grad_norm", params), kernels::ClipMode::global, max_norm)) total += s;
    return std::sqrt(total);
}

std::vector<double> clip_grad_per_param(const std::vector<Tensor*>& params, double clip_value) {
    SSL_CHECK_T(ConfigError, clip_value > 0 && std::isfinite(clip_value),
                "clip_grad_per_param: clip must be > 0, got ", clip_value);
    const std::vector<Tensor> grads = grads_of("clip_grad_per_param", params);
    std::vector<double> norms = clip(grads, kernels::ClipMode::per_tensor, clip_value);
    for (double& v : norms) v = std::sqrt(v);
    return norms;
}

}  // namespace sslight::optim
