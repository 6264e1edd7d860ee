// dropout and drop_path: kept fraction, scaling, masks equal to `rand(key) < 1 - p`, backward = the same mask
// times upstream (exact, and finite differences in double), eval / p = 0 identity, p = 1 zeros, bad p and
// dtypes; the emulated kernels against the CPU; the GPU ops against the CPU forward and backward.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>

#include "engine/autograd.h"
#include "engine/ops/dropout.h"
#include "engine/random.h"
#include "kernels/dropout.h"
#include "tests/gradcheck.h"
#ifdef SSLIGHT_EMU_AVAILABLE
#include "emu/emu.h"
#endif

using namespace sslight;
using namespace sslight::test;

namespace {

// Shifts values away from zero so that "dropped" (== 0) is unambiguous.
Tensor nonzero_tensor(const Shape& shape, uint64_t seed, DType dt = DType::f32) {
    std::vector<double> v = random_vector<double>(static_cast<size_t>(shape_numel(shape)), seed, -1.0, 1.0);
    for (double& x : v) x += x < 0 ? -0.25 : 0.25;
    Tensor t = from_vector(v, shape);
    return dt == DType::f64 ? t : t.to(dt);
}

std::vector<float> to_f32_vector(const Tensor& t) { return t.to(Device::cpu()).to(DType::f32).to_vector<float>(); }

std::vector<bool> zero_pattern(const std::vector<float>& v) {
    std::vector<bool> z(v.size());
    for (size_t i = 0; i < v.size(); ++i) z[i] = v[i] == 0.f;
    return z;
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("dropout keeps about 1 - p, scales kept values, and its mask is rand(key) < 1 - p") {
        const int64_t n = 100003;
        Tensor x = nonzero_tensor({n}, 1);
        for (double p : {0.1, 0.5, 0.9}) {
            CAPTURE(p);
            const RngKey key{77, 3};
            std::vector<float> y = dropout(x, p, true, key).to_vector<float>();
            std::vector<float> xv = x.to_vector<float>(), u = rand({n}, key).to_vector<float>();
            const float scale = static_cast<float>(1.0 / (1.0 - p));
            size_t kept = 0;
            for (int64_t i = 0; i < n; ++i) {
                const bool keep = u[i] < 1.0 - p;
                kept += keep;
                REQUIRE(y[i] == (keep ? xv[i] * scale : 0.f));
            }
            CHECK(std::fabs(double(kept) / n - (1 - p)) < 5 * std::sqrt(p * (1 - p) / n));
        }
    }

    TEST_CASE("dropout backward is the same mask times upstream; finite differences agree") {
        Tensor x = nonzero_tensor({8, 197, 24}, 2, DType::f64).requires_grad_();
        Tensor y = dropout(x, 0.3, true, {5, 6});
        Tensor w = random_tensor(x.shape(), 3, DType::f64);
        y.backward(w);
        std::vector<double> g = x.grad().to_vector<double>(), yv = y.to_vector<double>(), wv = w.to_vector<double>();
        std::vector<double> xv = x.to_vector<double>();
        const double scale = 1.0 / (1.0 - 0.3);
        size_t kept = 0;
        for (size_t i = 0; i < g.size(); ++i) {
            kept += yv[i] != 0;
            REQUIRE(g[i] == (yv[i] == 0 ? 0.0 : wv[i] * scale));
            REQUIRE(yv[i] == (yv[i] == 0 ? 0.0 : xv[i] * scale));
        }
        CHECK(std::fabs(double(kept) / g.size() - 0.7) < 0.01);
        for (Shape s : {Shape{3, 5}, Shape{7, 13}, Shape{2, 3, 11}}) {
            Tensor a = nonzero_tensor(s, 4, DType::f64).requires_grad_();
            gradcheck([](const std::vector<Tensor>& in) { return dropout(in[0], 0.4, true, {9, 1}); }, {a},
                      "dropout " + shape_str(s));
        }
    }

    TEST_CASE("dropout: eval and p = 0 are the identity, p = 1 gives zeros and zero gradients") {
        Tensor x = nonzero_tensor({4, 33}, 5, DType::f64).requires_grad_();
        CHECK(dropout(x, 0.5, false, {1, 1}).same(x));
        CHECK(dropout(x, 0.0, true, {1, 1}).same(x));
        Tensor y = dropout(x, 1.0, true, {1, 1});
        for (double v : y.to_vector<double>()) REQUIRE(v == 0.0);
        y.backward(ones(y.shape(), DType::f64));
        for (double v : x.grad().to_vector<double>()) REQUIRE(v == 0.0);
    }

    TEST_CASE("dropout and drop_path reject p outside [0, 1] and non-float tensors") {
        Tensor x = nonzero_tensor({3, 4}, 6);
        for (double p : {-0.1, 1.5, std::nan("")}) {
            CHECK_THROWS_AS(dropout(x, p, true, {1, 1}), Error);
            CHECK_THROWS_AS(drop_path(x, p, true, {1, 1}), Error);
            CHECK_THROWS_AS(dropout(x, p, false, {1, 1}), Error);
        }
        try {
            dropout(x, 2.0, true, {1, 1});
            FAIL("expected an error");
        } catch (const Error& e) {
            CHECK(std::string(e.what()).find("dropout") != std::string::npos);
        }
        CHECK_THROWS_AS(dropout(zeros({4}, DType::i32), 0.5, true, {1, 1}), DTypeError);
        CHECK_THROWS_AS(drop_path(zeros({4}, DType::i64), 0.5, true, {1, 1}), DTypeError);
        CHECK_THROWS_AS(dropout(x.to(DType::bf16), 0.5, true, {1, 1}), DTypeError);
    }

    TEST_CASE("masks depend only on the key: same key same mask, other key other mask, any thread count") {
        const int64_t n = 70001;
        Tensor x = nonzero_tensor({n}, 7);
        const int saved = omp_get_max_threads();
        omp_set_num_threads(1);
        std::vector<float> a = dropout(x, 0.5, true, {3, 3}).to_vector<float>();
        Tensor rows = nonzero_tensor({4001, 17}, 8);
        std::vector<float> pa = drop_path(rows, 0.5, true, {3, 3}).to_vector<float>();
        omp_set_num_threads(2);
        CHECK(dropout(x, 0.5, true, {3, 3}).to_vector<float>() == a);
        CHECK(drop_path(rows, 0.5, true, {3, 3}).to_vector<float>() == pa);
        omp_set_num_threads(saved);
        std::vector<float> b = dropout(x, 0.5, true, {3, 4}).to_vector<float>();
        size_t same = 0;
        for (int64_t i = 0; i < n; ++i) same += (a[i] == 0) == (b[i] == 0);
        CHECK(std::fabs(double(same) / n - 0.5) < 0.02);
    }

    TEST_CASE("drop_path zeroes or scales whole samples; decisions are rand(key, [B]) < 1 - p") {
        const int64_t B = 4001, C = 3;
        Tensor x = nonzero_tensor({B, 5, C}, 9);
        const double p = 0.2;
        const RngKey key{12, 34};
        std::vector<float> y = drop_path(x, p, true, key).to_vector<float>(), xv = x.to_vector<float>();
        std::vector<float> u = rand({B}, key).to_vector<float>();
        const float scale = static_cast<float>(1.0 / (1.0 - p));
        size_t kept = 0;
        for (int64_t b = 0; b < B; ++b) {
            const bool keep = u[b] < 1.0 - p;
            kept += keep;
            for (int64_t j = 0; j < 5 * C; ++j) REQUIRE(y[b * 5 * C + j] == (keep ? xv[b * 5 * C + j] * scale : 0.f));
        }
        CHECK(std::fabs(double(kept) / B - (1 - p)) < 5 * std::sqrt(p * (1 - p) / B));

        Tensor v = nonzero_tensor({9}, 10);  // 1-D: each element is a sample
        std::vector<float> yv = drop_path(v, 0.5, true, key).to_vector<float>();
        std::vector<float> uv = rand({9}, key).to_vector<float>(), vv = v.to_vector<float>();
        for (int i = 0; i < 9; ++i) CHECK(yv[i] == (uv[i] < 0.5 ? vv[i] * 2.f : 0.f));
        CHECK(drop_path(x, 0.3, false, key).same(x));
        CHECK(drop_path(x, 0.0, true, key).same(x));
        for (float z : drop_path(x, 1.0, true, key).to_vector<float>()) REQUIRE(z == 0.f);
    }

    TEST_CASE("drop_path gradients: finite differences with kept and dropped samples") {
        const RngKey key{2, 71};
        std::vector<float> u = rand({6}, key).to_vector<float>();
        size_t kept = 0;
        for (float v : u) kept += v < 0.5f;
        REQUIRE(kept > 0);
        REQUIRE(kept < 6);  // the key mixes both cases
        Tensor a = nonzero_tensor({6, 3, 5}, 11, DType::f64).requires_grad_();
        gradcheck([&](const std::vector<Tensor>& in) { return drop_path(in[0], 0.5, true, key); }, {a},
                  "drop_path [6, 3, 5]");
        Tensor b = nonzero_tensor({7, 13}, 12, DType::f64).requires_grad_();
        gradcheck([&](const std::vector<Tensor>& in) { return drop_path(in[0], 0.25, true, key); }, {b},
                  "drop_path [7, 13]");
    }
}

#ifdef SSLIGHT_EMU_AVAILABLE
TEST_SUITE("emu") {
    TEST_CASE("emulated dropout and drop_path equal the CPU (f32 exactly, bf16 on rounded inputs)") {
        for (int64_t rows : {int64_t(1), int64_t(5), int64_t(37)}) {
            for (int64_t cols : {int64_t(1), int64_t(3), int64_t(131)}) {
                const int64_t n = rows * cols;
                std::vector<float> x = random_vector<float>(static_cast<size_t>(n), 13 + n);
                std::vector<bf16> xb(x.size());
                std::vector<float> xr(x.size());
                for (size_t i = 0; i < x.size(); ++i) {
                    xb[i] = bf16(x[i]);
                    xr[i] = static_cast<float>(xb[i]);
                }
                emu::Buffer<float> dx(x), dy(x.size());
                emu::Buffer<bf16> dxb(xb), dyb(xb.size());
                for (bool per_sample : {false, true}) {
                    const kernels::DropoutParams p =
                        kernels::make_dropout_params(0.35, 8, 9, n, per_sample ? cols : 1);
                    std::vector<float> ref(x.size()), refb(x.size());
                    auto cpu = per_sample ? kernels::drop_path_cpu<float> : kernels::dropout_cpu<float>;
                    cpu(p, x.data(), ref.data());
                    cpu(p, xr.data(), refb.data());
                    if (per_sample) {
                        kernels::emu::drop_path(p, dx.data(), dy.data(), nullptr);
                        kernels::emu::drop_path(p, dxb.data(), dyb.data(), nullptr);
                    } else {
                        kernels::emu::dropout(p, dx.data(), dy.data(), nullptr);
                        kernels::emu::dropout(p, dxb.data(), dyb.data(), nullptr);
                    }
                    CHECK(dy.to_vector() == ref);
                    std::vector<bf16> got = dyb.to_vector();
                    for (size_t i = 0; i < got.size(); ++i) REQUIRE(got[i].bits == bf16(refb[i]).bits);
                }
            }
        }
    }
}
#endif

TEST_SUITE("gpu") {
    TEST_CASE("dropout and drop_path on the GPU match the CPU forward and backward (f32, bf16)") {
        const Device g = Device::cuda(0);
        const RngKey key{21, 22};
        for (DType dt : {DType::f32, DType::bf16}) {
            const Tol tol = dt == DType::f32 ? tol_gpu_f32() : tol_gpu_bf16();
            for (Shape s : {Shape{8, 197, 384}, Shape{129, 7, 7, 33}, Shape{5, 3}}) {
                // The CPU reference runs in f32 on the same (rounded) values.
                Tensor xc = nonzero_tensor(s, 23).to(dt).to(DType::f32).requires_grad_();
                Tensor xg = xc.detach().to(g).to(dt).requires_grad_();
                Tensor w = nonzero_tensor(s, 24).to(dt).to(DType::f32);
                for (bool per_sample : {false, true}) {
                    CAPTURE(per_sample);
                    xc.zero_grad();
                    xg.zero_grad();
                    Tensor yc = per_sample ? drop_path(xc, 0.3, true, key) : dropout(xc, 0.3, true, key);
                    Tensor yg = per_sample ? drop_path(xg, 0.3, true, key) : dropout(xg, 0.3, true, key);
                    yc.backward(w);
                    yg.backward(w.to(dt).to(g));
                    CHECK(zero_pattern(to_f32_vector(yg)) == zero_pattern(to_f32_vector(yc)));
                    expect_close(to_f32_vector(yg), to_f32_vector(yc), tol, "forward " + shape_str(s));
                    expect_close(to_f32_vector(xg.grad()), to_f32_vector(xc.grad()), tol, "backward " + shape_str(s));
                }
            }
        }
        CHECK_THROWS_AS(dropout(ones({4}, DType::f64, g), 0.5, true, key), DTypeError);
    }
}
