// Finite-difference gradient check in double on the CPU. For y = f(inputs) and a fixed random weighting
// w (same shape as y), the analytic gradient of L = sum(w * y) from backward(w) must match the central
// difference (L(x + h) - L(x - h)) / 2h for every element of every input that requires grad.
#pragma once
#include <functional>

#include "engine/autograd.h"
#include "tests/compare.h"

namespace sslight::test {

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

inline double weighted_sum(const Tensor& y, const std::vector<double>& w) {
    std::vector<double> v = y.to_vector<double>();
    double s = 0;
    for (size_t i = 0; i < v.size(); ++i) s += v[i] * w[i];
    return s;
}

// inputs: f64 CPU tensors; those with requires_grad are checked. Returns the number of mismatches.
inline size_t gradcheck(const TensorFn& f, std::vector<Tensor> inputs, const std::string& what,
                        uint64_t seed = 1234, double eps = kGradEps, Tol tol = tol_gradcheck()) {
    for (auto& t : inputs) {
        REQUIRE_MESSAGE(t.dtype() == DType::f64, what, ": gradcheck needs f64 inputs");
        t.zero_grad();
    }
    Tensor y = f(inputs);
    std::vector<double> w = random_vector<double>(static_cast<size_t>(y.numel()), seed, -1.0, 1.0);
    y.backward(from_vector(w, y.shape()));
    size_t bad = 0;
    for (size_t k = 0; k < inputs.size(); ++k) {
        if (!inputs[k].requires_grad()) continue;
        Tensor g = inputs[k].grad();
        REQUIRE_MESSAGE(g.defined(), what, ": input ", k, " received no gradient");
        std::vector<double> analytic = g.to_vector<double>();
        std::vector<double> numeric(analytic.size());
        double* x = inputs[k].data<double>();
        for (size_t i = 0; i < numeric.size(); ++i) {
            const double orig = x[i];
            NoGradGuard ng;
            x[i] = orig + eps;
            const double lp = weighted_sum(f(inputs), w);
            x[i] = orig - eps;
            const double lm = weighted_sum(f(inputs), w);
            x[i] = orig;
            numeric[i] = (lp - lm) / (2 * eps);
        }
        bad += count_mismatches(analytic, numeric, tol, what + " d/d input " + std::to_string(k));
    }
    CHECK_MESSAGE(bad == 0, what, ": analytic and numeric gradients differ");
    return bad;
}

}  // namespace sslight::test
