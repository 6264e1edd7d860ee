// CPU implementation (and reference) of the element-wise kernels: unary y = f(x) and dx = dy * f'(.), binary
// out = a op b[i % c] with da, db written (=). A broadcast db is summed in fixed row chunks whose partial sums
// are added in chunk order, so the result does not depend on the thread count.
#include <cmath>
#include <vector>

#include "engine/check.h"
#include "kernels/elementwise.h"

namespace sslight::kernels {
namespace {

constexpr int64_t kParallel = 1 << 15;  // elements below which a loop stays serial
constexpr int64_t kChunkRows = 256;     // rows per partial sum of a broadcast db

template <class T, class F>
void map1(int64_t n, const T* x, T* y, F f) {
#pragma omp parallel for if (n > kParallel)
    for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

template <class T, class F>
void map2(int64_t n, const T* s, const T* dy, T* dx, F f) {
#pragma omp parallel for if (n > kParallel)
    for (int64_t i = 0; i < n; ++i) dx[i] = f(s[i], dy[i]);
}

template <class T>
T sigmoid_of(T v) {
    if (v >= T(0)) return T(1) / (T(1) + std::exp(-v));
    const T e = std::exp(v);
    return e / (T(1) + e);
}

template <class T>
T gelu_grad(T v) {
    const T cdf = T(0.5) * (T(1) + std::erf(v * T(M_SQRT1_2)));
    const T pdf = std::exp(T(-0.5) * v * v) * T(0.5 * M_2_SQRTPI * M_SQRT1_2);
    return cdf + v * pdf;
}

// Calls body(i, j) for every element i of a with j the index into b.
template <class Body>
void for_each_bcast(int64_t n, int64_t c, Body body) {
    if (c == n) {
#pragma omp parallel for if (n > kParallel)
        for (int64_t i = 0; i < n; ++i) body(i, i);
    } else if (c == 1) {
#pragma omp parallel for if (n > kParallel)
        for (int64_t i = 0; i < n; ++i) body(i, int64_t(0));
    } else {
        const int64_t rows = n / c;
#pragma omp parallel for if (n > kParallel)
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < c; ++j) body(r * c + j, j);
    }
}

// db[j] = sum over rows r of grad_b(a[r c + j], b[j], dy[r c + j]), accumulated in double.
template <class T, class GradB>
void reduce_db(const BinaryParams& p, const T* a, const T* b, const T* dy, T* db, GradB grad_b) {
    const int64_t c = p.c, rows = c > 0 ? p.n / c : 0;
    const int64_t chunks = (rows + kChunkRows - 1) / kChunkRows;
    std::vector<double> partial(static_cast<size_t>(chunks * c), 0.0);
#pragma omp parallel for if (p.n > kParallel)
    for (int64_t k = 0; k < chunks; ++k) {
        double* acc = partial.data() + k * c;
        const int64_t r1 = (k + 1) * kChunkRows < rows ? (k + 1) * kChunkRows : rows;
        for (int64_t r = k * kChunkRows; r < r1; ++r)
            for (int64_t j = 0; j < c; ++j) {
                const int64_t i = r * c + j;
                acc[j] += static_cast<double>(grad_b(a ? a[i] : T(0), b ? b[j] : T(0), dy[i]));
            }
    }
    for (int64_t j = 0; j < c; ++j) {
        double s = 0.0;
        for (int64_t k = 0; k < chunks; ++k) s += partial[static_cast<size_t>(k * c + j)];
        db[j] = static_cast<T>(s);
    }
}

template <class T, class GradA, class GradB>
void binary_bwd_impl(const BinaryParams& p, const T* a, const T* b, const T* dy, T* da, T* db, GradA grad_a,
                     GradB grad_b) {
    if (da) for_each_bcast(p.n, p.c, [&](int64_t i, int64_t j) { da[i] = grad_a(b ? b[j] : T(0), dy[i]); });
    if (!db) return;
    if (binary_broadcast(p)) {
        reduce_db(p, a, b, dy, db, grad_b);
        return;
    }
#pragma omp parallel for if (p.n > kParallel)
    for (int64_t i = 0; i < p.n; ++i) db[i] = grad_b(a ? a[i] : T(0), b ? b[i] : T(0), dy[i]);
}

}  // namespace

template <class T>
void unary_fwd_cpu(const UnaryParams& p, const T* x, T* y) {
    const T s0 = static_cast<T>(p.s0), s1 = static_cast<T>(p.s1);
    const int64_t n = p.n;
    switch (p.op) {
        case UnaryOp::affine: return map1(n, x, y, [=](T v) { return s0 * v + s1; });
        case UnaryOp::rdiv: return map1(n, x, y, [=](T v) { return s0 / v; });
        case UnaryOp::exp: return map1(n, x, y, [](T v) { return std::exp(v); });
        case UnaryOp::log: return map1(n, x, y, [](T v) { return std::log(v); });
        case UnaryOp::sqrt: return map1(n, x, y, [](T v) { return std::sqrt(v); });
        case UnaryOp::pow: return map1(n, x, y, [=](T v) { return std::pow(v, s0); });
        case UnaryOp::abs: return map1(n, x, y, [](T v) { return std::fabs(v); });
        case UnaryOp::clamp: return map1(n, x, y, [=](T v) { return v < s0 ? s0 : (v > s1 ? s1 : v); });
        case UnaryOp::relu: return map1(n, x, y, [](T v) { return v > T(0) ? v : T(0); });
        case UnaryOp::relu6: return map1(n, x, y, [](T v) { return v < T(0) ? T(0) : (v > T(6) ? T(6) : v); });
        case UnaryOp::gelu:
            return map1(n, x, y, [](T v) { return T(0.5) * v * (T(1) + std::erf(v * T(M_SQRT1_2))); });
        case UnaryOp::sigmoid: return map1(n, x, y, [](T v) { return sigmoid_of(v); });
        case UnaryOp::tanh: return map1(n, x, y, [](T v) { return std::tanh(v); });
    }
    SSL_FAIL("unary_fwd_cpu: unknown op ", static_cast<int>(p.op));
}

template <class T>
void unary_bwd_cpu(const UnaryParams& p, const T* saved, const T* dy, T* dx) {
    const T s0 = static_cast<T>(p.s0), s1 = static_cast<T>(p.s1);
    const int64_t n = p.n;
    const T* s = saved;
    switch (p.op) {
        case UnaryOp::affine: return map1(n, dy, dx, [=](T g) { return s0 * g; });
        case UnaryOp::rdiv: return map2(n, s, dy, dx, [=](T v, T g) { return -s0 * g / (v * v); });
        case UnaryOp::exp: return map2(n, s, dy, dx, [](T y, T g) { return g * y; });
        case UnaryOp::log: return map2(n, s, dy, dx, [](T v, T g) { return g / v; });
        case UnaryOp::sqrt: return map2(n, s, dy, dx, [](T y, T g) { return T(0.5) * g / y; });
        case UnaryOp::pow:
            return map2(n, s, dy, dx, [=](T v, T g) { return s0 == T(0) ? T(0) : g * s0 * std::pow(v, s0 - T(1)); });
        case UnaryOp::abs:
            return map2(n, s, dy, dx, [](T v, T g) { return v > T(0) ? g : (v < T(0) ? -g : T(0)); });
        case UnaryOp::clamp: return map2(n, s, dy, dx, [=](T v, T g) { return v >= s0 && v <= s1 ? g : T(0); });
        case UnaryOp::relu: return map2(n, s, dy, dx, [](T v, T g) { return v > T(0) ? g : T(0); });
        case UnaryOp::relu6: return map2(n, s, dy, dx, [](T v, T g) { return v > T(0) && v < T(6) ? g : T(0); });
        case UnaryOp::gelu: return map2(n, s, dy, dx, [](T v, T g) { return g * gelu_grad(v); });
        case UnaryOp::sigmoid: return map2(n, s, dy, dx, [](T y, T g) { return g * y * (T(1) - y); });
        case UnaryOp::tanh: return map2(n, s, dy, dx, [](T y, T g) { return g * (T(1) - y * y); });
    }
    SSL_FAIL("unary_bwd_cpu: unknown op ", static_cast<int>(p.op));
}

template <class T>
void binary_fwd_cpu(const BinaryParams& p, const T* a, const T* b, T* out) {
    const T alpha = static_cast<T>(p.alpha);
    switch (p.op) {
        case BinaryOp::add:
            return for_each_bcast(p.n, p.c, [&](int64_t i, int64_t j) { out[i] = a[i] + alpha * b[j]; });
        case BinaryOp::mul: return for_each_bcast(p.n, p.c, [&](int64_t i, int64_t j) { out[i] = a[i] * b[j]; });
        case BinaryOp::div: return for_each_bcast(p.n, p.c, [&](int64_t i, int64_t j) { out[i] = a[i] / b[j]; });
    }
    SSL_FAIL("binary_fwd_cpu: unknown op ", static_cast<int>(p.op));
}

template <class T>
void binary_bwd_cpu(const BinaryParams& p, const T* a, const T* b, const T* dy, T* da, T* db) {
    const T alpha = static_cast<T>(p.alpha);
    switch (p.op) {
        case BinaryOp::add:
            return binary_bwd_impl(
                p, a, b, dy, da, db, [](T, T g) { return g; }, [=](T, T, T g) { return alpha * g; });
        case BinaryOp::mul:
            return binary_bwd_impl(
                p, a, b, dy, da, db, [](T bv, T g) { return g * bv; }, [](T av, T, T g) { return g * av; });
        case BinaryOp::div:
            return binary_bwd_impl(
                p, a, b, dy, da, db, [](T bv, T g) { return g / bv; },
                [](T av, T bv, T g) { return -g * av / (bv * bv); });
    }
    SSL_FAIL("binary_bwd_cpu: unknown op ", static_cast<int>(p.op));
}

template void unary_fwd_cpu<float>(const UnaryParams&, const float*, float*);
template void unary_fwd_cpu<double>(const UnaryParams&, const double*, double*);
template void unary_bwd_cpu<float>(const UnaryParams&, const float*, const float*, float*);
template void unary_bwd_cpu<double>(const UnaryParams&, const double*, const double*, double*);
template void binary_fwd_cpu<float>(const BinaryParams&, const float*, const float*, float*);
template void binary_fwd_cpu<double>(const BinaryParams&, const double*, const double*, double*);
template void binary_bwd_cpu<float>(const BinaryParams&, const float*, const float*, const float*, float*, float*);
template void binary_bwd_cpu<double>(const BinaryParams&, const double*, const double*, const double*, double*,
                                     double*);

}  // namespace sslight::kernels
