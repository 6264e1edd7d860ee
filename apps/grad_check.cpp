// The gradient check of pre-training (nonfinite_gradients, declared in apps/pretrain.h): which gradients hold a NaN
// or an Inf. CPU: an exponent-bit test per element in one vectorised pass; GPU: one sum per gradient and one host
// copy for all of them, a non-finite sum confirmed element-wise. Nothing here records gradients.
#include <cmath>
#include <cstring>

#include "apps/pretrain.h"
#include "engine/autograd.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"

namespace sslight::apps {

namespace {

// True when no element of `n` f32 (U = uint32_t) or f64 (uint64_t) values has all exponent bits set (Inf, NaN):
// an OR over integer tests that the compiler vectorises, one pass at memory speed.
template <class U>
bool all_finite_bits(const void* data, int64_t n, U exponent) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    U bad = 0;
    for (int64_t i = 0; i < n; ++i) {
        U b;
        std::memcpy(&b, bytes + i * int64_t(sizeof(U)), sizeof(U));
        bad |= static_cast<U>((b & exponent) == exponent);
    }
    return bad == 0;
}

bool all_finite_host(const Tensor& t) {
    if (t.dtype() == DType::f32) return all_finite_bits<uint32_t>(t.raw_data(), t.numel(), 0x7f800000u);
    if (t.dtype() == DType::f64) return all_finite_bits<uint64_t>(t.raw_data(), t.numel(), 0x7ff0000000000000ull);
    return all_finite_host(t.to(DType::f64));
}

}  // namespace

std::vector<size_t> nonfinite_gradients(const std::vector<Tensor>& grads, bool by_sums) {
    NoGradGuard ng;
    std::vector<size_t> which, bad;
    for (size_t i = 0; i < grads.size(); ++i)
        if (grads[i].defined() && grads[i].numel() > 0) which.push_back(i);
    if (which.empty()) return bad;
    if (grads[which[0]].device().is_cpu() && !by_sums) {
        for (size_t i : which)
            if (!all_finite_host(grads[i])) bad.push_back(i);
        return bad;
    }
    // One sum per gradient (NaN and Inf propagate through a sum), one host copy for all of them.
    std::vector<Tensor> sums;
    for (size_t i : which) sums.push_back(sum(grads[i]).to(DType::f32).reshape({1}));
    const Tensor host = concat(sums, 0).to(Device::cpu());
    for (size_t k = 0; k < which.size(); ++k)
        if (!std::isfinite(host.data<float>()[k]) && !all_finite_host(grads[which[k]].to(Device::cpu())))
            bad.push_back(which[k]);
    return bad;
}

}  // namespace sslight::apps
