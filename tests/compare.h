// Shared test helpers: the per-dtype tolerance table, element-wise comparison that prints the first 10
// mismatches with their indices, and seeded random inputs that are never all zeros.
#pragma once
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "engine/tensor.h"

namespace sslight::test {

struct Tol {
    double atol, rtol;
};

// One table for the whole suite. "emu" is the emulated CUDA kernels against the CPU reference in f32
// (fast-math intrinsics and different summation orders); "gpu_*" the real GPU against the CPU reference.
inline Tol tol_for(DType t) {
    switch (t) {
        case DType::f64: return {1e-10, 1e-9};
        case DType::f32: return {1e-5, 1e-4};
        case DType::bf16: return {2e-2, 2e-2};
        default: return {0, 0};
    }
}
inline Tol tol_emu_f32() { return {2e-5, 2e-4}; }
inline Tol tol_gpu_f32() { return {1e-4, 1e-3}; }
inline Tol tol_gpu_bf16() { return {3e-2, 3e-2}; }
// Finite-difference gradient checks in double (central differences, step kGradEps).
constexpr double kGradEps = 1e-6;
inline Tol tol_gradcheck() { return {1e-6, 1e-5}; }

// Returns the number of mismatches; prints the first 10 with their indices.
template <class A, class B>
size_t count_mismatches(const std::vector<A>& got, const std::vector<B>& ref, Tol tol, const std::string& what) {
    if (got.size() != ref.size()) {
        std::printf("%s: size %zu vs reference %zu\n", what.c_str(), got.size(), ref.size());
        return got.size() > ref.size() ? got.size() : ref.size();
    }
    size_t bad = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        const double g = static_cast<double>(got[i]), r = static_cast<double>(ref[i]);
        const bool ok = (std::isnan(g) && std::isnan(r)) || std::fabs(g - r) <= tol.atol + tol.rtol * std::fabs(r);
        if (!ok) {
            if (bad < 10) std::printf("%s: mismatch at [%zu]: got %.9g, expected %.9g\n", what.c_str(), i, g, r);
            ++bad;
        }
    }
    if (bad) std::printf("%s: %zu of %zu elements differ (atol %g, rtol %g)\n", what.c_str(), bad, got.size(),
                         tol.atol, tol.rtol);
    return bad;
}

template <class A, class B>
void expect_close(const std::vector<A>& got, const std::vector<B>& ref, Tol tol, const std::string& what) {
    CHECK_MESSAGE(count_mismatches(got, ref, tol, what) == 0, what);
}

inline void expect_close(const Tensor& got, const Tensor& ref, Tol tol, const std::string& what) {
    REQUIRE_MESSAGE(got.shape() == ref.shape(), what, ": shape ", shape_str(got.shape()), " vs ",
                    shape_str(ref.shape()));
    expect_close(got.to_vector<double>(), ref.to_vector<double>(), tol, what);
}

// Uniform in [lo, hi) from a fixed seed; re-drawn if all values came out zero.
template <class T = float>
std::vector<T> random_vector(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> u(lo, hi);
    std::vector<T> v(n);
    bool nonzero = false;
    for (auto& x : v) {
        x = static_cast<T>(u(rng));
        nonzero |= x != T(0);
    }
    if (!nonzero && n > 0) v[0] = static_cast<T>(hi > 0 ? hi * 0.5 : lo * 0.5);
    return v;
}

// The message of the sslight::Error that f throws, or "(no error)" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

// Host-side conversions for emulated-kernel tests: float values to a storage type (float, bf16) and back.
template <class T>
std::vector<T> to_storage(const std::vector<float>& v) {
    std::vector<T> out;
    for (float f : v) out.push_back(T(f));
    return out;
}
template <class T>
std::vector<float> to_float(const std::vector<T>& v) {
    std::vector<float> out;
    for (const T& x : v) out.push_back(static_cast<float>(x));
    return out;
}
// Tolerance of an emulated kernel against the CPU reference for storage type T.
template <class T>
Tol emu_tol() {
    return std::is_same<T, bf16>::value ? tol_for(DType::bf16) : tol_emu_f32();
}

// A CPU tensor of the given dtype (f32 or f64) with uniform values in [lo, hi).
inline Tensor random_tensor(const Shape& shape, uint64_t seed, DType dtype = DType::f32, double lo = -1.0,
                            double hi = 1.0) {
    std::vector<double> v = random_vector<double>(static_cast<size_t>(shape_numel(shape)), seed, lo, hi);
    Tensor t = from_vector(v, shape);
    return dtype == DType::f64 ? t : t.to(dtype);
}

}  // namespace sslight::test
