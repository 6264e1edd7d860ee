// Key handling (Generator, derive) and the dispatch of the in-place initialisers to the random fill
// kernels (kernels/random.h). No gradients: initialisers write leaves in place.
#include "engine/random.h"

#include <cmath>

#include "kernels/basic.h"
#include "kernels/random.h"

namespace sslight {

uint64_t splitmix64(uint64_t x) {
    uint64_t z = x + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

RngKey Generator::next(uint64_t stream_tag) {
    RngKey k{stream_tag == 0 ? seed_ : splitmix64(splitmix64(seed_) ^ stream_tag), counter_};
    ++counter_;
    return k;
}

RngKey derive(uint64_t seed, std::initializer_list<uint64_t> ids) {
    uint64_t h = splitmix64(seed);
    for (uint64_t id : ids) h = splitmix64(h ^ splitmix64(id));
    return {seed, h};
}

namespace {

enum class Dist { uniform, normal, trunc_normal };

void check_target(const char* op, const Tensor& t) {
    check_defined(op, t, "the tensor to fill");
    SSL_CHECK_T(AutogradError, t.is_leaf(), op, ": in-place initialisation of a tensor produced by an op (",
                t.str(), "); initialise the leaf or detach()");
}

template <class T>
void fill_cpu(Dist d, const kernels::RandomParams& p, T* out) {
    switch (d) {
        case Dist::uniform: return kernels::uniform_fill_cpu(p, out);
        case Dist::normal: return kernels::normal_fill_cpu(p, out);
        case Dist::trunc_normal: return kernels::trunc_normal_fill_cpu(p, out);
    }
}

#ifdef SSLIGHT_WITH_CUDA
template <class T>
void fill_cuda(Dist d, const kernels::RandomParams& p, T* out, kernels::Stream s) {
    switch (d) {
        case Dist::uniform: return kernels::cuda::uniform_fill(p, out, s);
        case Dist::normal: return kernels::cuda::normal_fill(p, out, s);
        case Dist::trunc_normal: return kernels::cuda::trunc_normal_fill(p, out, s);
    }
}
#endif

void fill_random(const char* op, Tensor& t, Dist d, kernels::RandomParams p, RngKey key) {
    check_target(op, t);
    p.seed = key.seed;
    p.stream = key.stream;
    p.offset = 0;
    p.n = t.numel();
    if (t.device().is_cpu()) {
        switch (t.dtype()) {
            case DType::f32: return fill_cpu(d, p, t.data<float>());
            case DType::f64: return fill_cpu(d, p, t.data<double>());
            case DType::bf16: return fill_cpu(d, p, t.data<bf16>());
            default: break;
        }
        SSL_CHECK_DTYPE(false, op, ": expected f32, f64 or bf16 on the CPU, got ", t.str());
    }
#ifdef SSLIGHT_WITH_CUDA
    kernels::Stream s = runtime::stream(t.device());
    switch (t.dtype()) {
        case DType::f32: fill_cuda(d, p, t.data<float>(), s); break;
        case DType::bf16: fill_cuda(d, p, t.data<bf16>(), s); break;
        default: SSL_CHECK_DTYPE(false, op, ": expected f32 or bf16 on the GPU, got ", t.str());
    }
    runtime::after_op(t.device(), op);
#else
    SSL_CHECK_DEVICE(false, op, ": this build has no CUDA support, got ", t.str());
#endif
}

}  // namespace

void uniform_(Tensor& t, double lo, double hi, RngKey key) {
    SSL_CHECK(std::isfinite(lo) && std::isfinite(hi) && lo <= hi, "uniform_: need finite lo <= hi, got [", lo,
              ", ", hi, ")");
    kernels::RandomParams p;
    p.lo = lo;
    p.hi = hi;
    fill_random("uniform_", t, Dist::uniform, p, key);
}

void normal_(Tensor& t, double mean, double std, RngKey key) {
    SSL_CHECK(std::isfinite(mean) && std::isfinite(std) && std >= 0,
              "normal_: need a finite mean and std >= 0, got mean ", mean, ", std ", std);
    kernels::RandomParams p;
    p.mean = mean;
    p.std = std;
    fill_random("normal_", t, Dist::normal, p, key);
}

void trunc_normal_(Tensor& t, double mean, double std, double a, double b, RngKey key) {
    SSL_CHECK(std::isfinite(mean) && std::isfinite(std) && std >= 0,
              "trunc_normal_: need a finite mean and std >= 0, got mean ", mean, ", std ", std);
    SSL_CHECK(!std::isnan(a) && !std::isnan(b) && a < b, "trunc_normal_: need bounds a < b, got [", a, ", ", b, "]");
    kernels::RandomParams p;
    p.mean = mean;
    p.std = std;
    p.lower = a;
    p.upper = b;
    fill_random("trunc_normal_", t, Dist::trunc_normal, p, key);
}

void constant_(Tensor& t, double v) {
    check_target("constant_", t);
    const int64_t n = t.numel();
    if (t.device().is_cpu()) {
        switch (t.dtype()) {
            case DType::f32: return kernels::fill_cpu(t.data<float>(), n, v);
            case DType::f64: return kernels::fill_cpu(t.data<double>(), n, v);
            case DType::bf16: return kernels::fill_cpu(t.data<bf16>(), n, v);
            case DType::i32: return kernels::fill_cpu(t.data<int32_t>(), n, v);
            case DType::i64: return kernels::fill_cpu(t.data<int64_t>(), n, v);
            case DType::u8: return kernels::fill_cpu(t.data<uint8_t>(), n, v);
        }
        SSL_FAIL("constant_: unknown dtype of ", t.str());
    }
#ifdef SSLIGHT_WITH_CUDA
    kernels::Stream s = runtime::stream(t.device());
    switch (t.dtype()) {
        case DType::f32: kernels::cuda::fill(t.data<float>(), n, v, s); break;
        case DType::f64: kernels::cuda::fill(t.data<double>(), n, v, s); break;
        case DType::bf16: kernels::cuda::fill(t.data<bf16>(), n, v, s); break;
        case DType::i32: kernels::cuda::fill(t.data<int32_t>(), n, v, s); break;
        case DType::i64: kernels::cuda::fill(t.data<int64_t>(), n, v, s); break;
        case DType::u8: kernels::cuda::fill(t.data<uint8_t>(), n, v, s); break;
    }
    runtime::after_op(t.device(), "constant_");
#else
    SSL_CHECK_DEVICE(false, "constant_: this build has no CUDA support, got ", t.str());
#endif
}

void kaiming_normal_(Tensor& t, int64_t fan, RngKey key, double gain) {
    SSL_CHECK(fan > 0, "kaiming_normal_: fan must be positive, got ", fan, " for ", t.str());
    normal_(t, 0.0, gain / std::sqrt(static_cast<double>(fan)), key);
}

Tensor rand(const Shape& shape, RngKey key, DType dtype, Device device) {
    Tensor t = empty(shape, dtype, device);
    uniform_(t, 0.0, 1.0, key);
    return t;
}

Tensor randn(const Shape& shape, RngKey key, DType dtype, Device device) {
    Tensor t = empty(shape, dtype, device);
    normal_(t, 0.0, 1.0, key);
    return t;
}

}  // namespace sslight
