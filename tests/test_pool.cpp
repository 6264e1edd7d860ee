// max_pool2d and global_avg_pool: hand-computed values, first-maximum tie routing, a naive max pool written
// here, finite-difference gradients in double (tie-free inputs), error paths; the pool.cu kernels through the
// SIMT emulator against the CPU reference (f32, bf16; including the conv-bias use of the channel sums); and
// the ops on the GPU against the CPU.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>

#include "engine/autograd.h"
#include "engine/ops/pool.h"
#include "kernels/pool.h"
#include "tests/compare.h"
#include "tests/gradcheck.h"
#ifdef SSLIGHT_EMU_AVAILABLE
#include "emu/emu.h"
#endif

using namespace sslight;
using namespace sslight::test;

namespace {

// Distinct values (a shuffled ramp, spacing 1/n over [-1, 1)): windows never tie, so the max is
// differentiable everywhere a finite difference of step 1e-6 looks.
Tensor distinct_tensor(const Shape& shape, uint64_t seed, DType dtype = DType::f64) {
    const int64_t n = shape_numel(shape);
    std::vector<double> v(static_cast<size_t>(n));
    std::iota(v.begin(), v.end(), 0.0);
    std::shuffle(v.begin(), v.end(), std::mt19937_64(seed));
    for (double& x : v) x = 2.0 * x / static_cast<double>(n) - 1.0 + 0.5 / static_cast<double>(n);
    Tensor t = from_vector(v, shape);
    return dtype == DType::f64 ? t : t.to(dtype);
}

std::vector<double> naive_max_pool(const std::vector<double>& x, const Shape& s, int k, int st, int pad, int64_t Ho,
                                   int64_t Wo) {
    const int64_t N = s[0], H = s[1], W = s[2], C = s[3];
    std::vector<double> y(static_cast<size_t>(N * Ho * Wo * C), -INFINITY);
    for (int64_t n = 0; n < N; ++n)
        for (int64_t oh = 0; oh < Ho; ++oh)
            for (int64_t ow = 0; ow < Wo; ++ow)
                for (int64_t c = 0; c < C; ++c)
                    for (int64_t i = 0; i < k; ++i)
                        for (int64_t j = 0; j < k; ++j) {
                            const int64_t ih = oh * st - pad + i, iw = ow * st - pad + j;
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                            double& o = y[((n * Ho + oh) * Wo + ow) * C + c];
                            o = std::max(o, x[((n * H + ih) * W + iw) * C + c]);
                        }
    return y;
}

struct PoolCase {
    Shape x;
    int k, s, pad;
};
const PoolCase kPoolCases[] = {
    {{2, 7, 9, 5}, 3, 2, 1},  // the ResNet stem pool on odd sizes
    {{1, 6, 8, 3}, 2, 2, 0},
    {{2, 5, 5, 4}, 3, 1, 1},
    {{1, 9, 7, 2}, 5, 3, 2},
    {{3, 4, 6, 1}, 1, 2, 0},
};

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("max_pool2d forward values and first-maximum tie routing") {
        // One 4x4 channel: k3 s2 p1 windows cover rows/cols {-1..1} and {1..3}.
        std::vector<double> x = {1, 5, 2, 0,  //
                                 3, 4, 7, 7,  //
                                 9, 9, 1, 2,  //
                                 0, 6, 8, 3};
        Tensor t = from_vector(x, {1, 4, 4, 1}).requires_grad_();
        Tensor y = max_pool2d(t, 3, 2, 1);
        REQUIRE(y.shape() == Shape{1, 2, 2, 1});
        CHECK(y.to_vector<double>() == std::vector<double>{5, 7, 9, 9});
        y.backward(from_vector(std::vector<double>{1, 10, 100, 1000}, {1, 2, 2, 1}));
        // Window (1,0) rows 1..3, cols -1..1 holds the tie 9, 9 at (2,0) and (2,1): the first in scan order
        // wins. Window (1,1) rows 1..3, cols 1..3 has its 9 at (2,1); window (0,1) ties 7, 7 at (1,2), (1,3).
        std::vector<double> expect(16, 0.0);
        expect[1] = 1;      // 5 at (0,1)
        expect[6] = 10;     // first 7 at (1,2)
        expect[8] = 100;    // first 9 at (2,0)
        expect[9] = 1000;   // 9 at (2,1)
        CHECK(t.grad().to_vector<double>() == expect);
    }

    TEST_CASE("max_pool2d matches a naive max pool (f64, f32, odd sizes and a ResNet shape)") {
        uint64_t seed = 10;
        for (const PoolCase& c : kPoolCases) {
            Tensor x = random_tensor(c.x, ++seed, DType::f64);
            Tensor y = max_pool2d(x, c.k, c.s, c.pad);
            const int64_t Ho = y.size(1), Wo = y.size(2);
            CHECK(Ho == (c.x[1] + 2 * c.pad - c.k) / c.s + 1);
            CHECK(Wo == (c.x[2] + 2 * c.pad - c.k) / c.s + 1);
            std::vector<double> ref = naive_max_pool(x.to_vector<double>(), c.x, c.k, c.s, c.pad, Ho, Wo);
            expect_close(y.to_vector<double>(), ref, {0, 0}, "max_pool2d f64");
            expect_close(max_pool2d(x.to(DType::f32), c.k, c.s, c.pad).to_vector<double>(),
                         max_pool2d(x, c.k, c.s, c.pad).to(DType::f32).to_vector<double>(), {0, 0}, "max_pool2d f32");
        }
        const Shape rs{2, 32, 32, 64};
        Tensor x = random_tensor(rs, 99);
        Tensor y = max_pool2d(x);
        REQUIRE(y.shape() == Shape{2, 16, 16, 64});
        expect_close(y.to_vector<double>(), naive_max_pool(x.to_vector<double>(), rs, 3, 2, 1, 16, 16), {0, 0},
                     "max_pool2d resnet shape");
    }

    TEST_CASE("max_pool2d gradient matches finite differences (tie-free inputs)") {
        uint64_t seed = 40;
        for (const PoolCase& c : kPoolCases) {
            const int k = c.k, s = c.s, pad = c.pad;
            gradcheck([=](const std::vector<Tensor>& v) { return max_pool2d(v[0], k, s, pad); },
                      {distinct_tensor(c.x, ++seed).requires_grad_()}, "max_pool2d k" + std::to_string(k));
        }
    }

    TEST_CASE("global_avg_pool forward values and gradient") {
        Tensor x = from_vector(std::vector<double>{1, -2, 3, 4, 5, 6, -7, 8, 9, 10, 11, 12}, {1, 2, 3, 2});
        expect_close(global_avg_pool(x).to_vector<double>(), std::vector<double>{22.0 / 6, 38.0 / 6},
                     tol_for(DType::f64), "gap values");
        uint64_t seed = 70;
        for (const Shape& s : {Shape{2, 3, 5, 7}, Shape{3, 1, 1, 4}, Shape{1, 7, 7, 33}}) {
            Tensor r = random_tensor(s, ++seed, DType::f64);
            std::vector<double> v = r.to_vector<double>(), ref(static_cast<size_t>(s[0] * s[3]), 0.0);
            for (int64_t i = 0; i < r.numel(); ++i) ref[(i / (s[1] * s[2] * s[3])) * s[3] + i % s[3]] += v[i];
            for (double& m : ref) m /= static_cast<double>(s[1] * s[2]);
            expect_close(global_avg_pool(r).to_vector<double>(), ref, tol_for(DType::f64), "gap " + shape_str(s));
            expect_close(global_avg_pool(r.to(DType::f32)).to_vector<double>(), ref, tol_for(DType::f32),
                         "gap f32 " + shape_str(s));
            gradcheck([](const std::vector<Tensor>& in) { return global_avg_pool(in[0]); }, {r.requires_grad_()},
                      "global_avg_pool " + shape_str(s));
        }
    }

    TEST_CASE("pool errors") {
        Tensor x = random_tensor({1, 5, 5, 3}, 1);
        CHECK_THROWS_AS(max_pool2d(x.reshape({5, 5, 3})), ShapeError);
        CHECK_THROWS_AS(max_pool2d(x, 3, 2, 2), ShapeError);  // padding > kernel / 2
        CHECK_THROWS_AS(max_pool2d(x, 3, 0, 1), ShapeError);
        CHECK_THROWS_AS(max_pool2d(x, 7, 1, 0), ShapeError);  // empty output
        CHECK_THROWS_AS(max_pool2d(x.to(DType::i32)), DTypeError);
        CHECK_THROWS_AS(global_avg_pool(x.reshape({5, 15})), ShapeError);
        CHECK_THROWS_AS(global_avg_pool(x.to(DType::bf16)), DTypeError);
        try {
            global_avg_pool(x.reshape({1, 5, 15}));
            FAIL("expected ShapeError");
        } catch (const ShapeError& e) {
            CHECK(std::string(e.what()).find("[1, 5, 15]") != std::string::npos);
        }
    }
}

#ifdef SSLIGHT_EMU_AVAILABLE
namespace {

// The emulated max pool (fwd + bwd) of T against the CPU reference on the same T-rounded values in f32.
template <class T>
void emu_max_pool(const Shape& s, int k, int st, int pad, uint64_t seed) {
    kernels::MaxPoolParams p;
    p.N = s[0], p.H = s[1], p.W = s[2], p.C = s[3], p.kernel = k, p.stride = st, p.pad = pad;
    p.Ho = (p.H + 2 * pad - k) / st + 1;
    p.Wo = (p.W + 2 * pad - k) / st + 1;
    const size_t nx = size_t(shape_numel(s)), ny = size_t(p.N * p.Ho * p.Wo * p.C);
    std::vector<T> x(nx), dy(ny);
    std::vector<float> xf(nx), dyf(ny);
    std::vector<float> rx = random_vector<float>(nx, seed), rdy = random_vector<float>(ny, seed + 1);
    for (size_t i = 0; i < nx; ++i) x[i] = T(rx[i]), xf[i] = static_cast<float>(x[i]);
    for (size_t i = 0; i < ny; ++i) dy[i] = T(rdy[i]), dyf[i] = static_cast<float>(dy[i]);

    std::vector<float> y_ref(ny), dx_ref(nx);
    std::vector<int32_t> idx_ref(ny);
    kernels::max_pool2d_fwd_cpu(p, xf.data(), y_ref.data(), idx_ref.data());
    kernels::max_pool2d_bwd_cpu(p, dyf.data(), idx_ref.data(), dx_ref.data());

    emu::Buffer<T> bx(x), by(ny), bdy(dy), bdx(nx);
    emu::Buffer<int32_t> bidx(ny);
    kernels::emu::max_pool2d_fwd(p, bx.data(), by.data(), bidx.data(), nullptr);
    kernels::emu::max_pool2d_bwd(p, bdy.data(), bidx.data(), bdx.data(), nullptr);
    const Tol tol = std::is_same<T, float>::value ? tol_emu_f32() : tol_for(DType::bf16);
    const std::string what = std::string("emu max_pool2d ") + dtype_name(dtype_of<T>::value) + " " + shape_str(s);
    CHECK_MESSAGE(bidx.to_vector() == idx_ref, what, " argmax");
    std::vector<float> y(ny), dx(nx);
    for (size_t i = 0; i < ny; ++i) y[i] = static_cast<float>(by[i]);
    for (size_t i = 0; i < nx; ++i) dx[i] = static_cast<float>(bdx[i]);
    expect_close(y, y_ref, tol, what + " forward");
    expect_close(dx, dx_ref, tol, what + " backward");
}

// The emulated channel sums (global_pool fwd, bwd with and without accumulate) against the CPU.
template <class T>
void emu_global_pool(int64_t N, int64_t HW, int64_t C, double scale, uint64_t seed) {
    kernels::GlobalPoolParams p;
    p.N = N, p.HW = HW, p.C = C, p.scale = scale;
    const size_t nx = size_t(N * HW * C), ny = size_t(N * C);
    std::vector<T> x(nx), dy(ny);
    std::vector<float> xf(nx), dyf(ny);
    std::vector<float> rx = random_vector<float>(nx, seed), rdy = random_vector<float>(ny, seed + 1);
    for (size_t i = 0; i < nx; ++i) x[i] = T(rx[i]), xf[i] = static_cast<float>(x[i]);
    for (size_t i = 0; i < ny; ++i) dy[i] = T(rdy[i]), dyf[i] = static_cast<float>(dy[i]);
    std::vector<float> y_ref(ny), dx_ref(nx), acc_ref = xf;
    kernels::global_pool_fwd_cpu(p, xf.data(), y_ref.data());
    kernels::global_pool_bwd_cpu(p, dyf.data(), dx_ref.data(), false);
    kernels::global_pool_bwd_cpu(p, dyf.data(), acc_ref.data(), true);

    emu::Buffer<T> bx(x), by(ny), bdy(dy), bdx(nx), bacc(x);
    kernels::emu::global_pool_fwd(p, bx.data(), by.data(), nullptr);
    kernels::emu::global_pool_bwd(p, bdy.data(), bdx.data(), false, nullptr);
    kernels::emu::global_pool_bwd(p, bdy.data(), bacc.data(), true, nullptr);
    const Tol tol = std::is_same<T, float>::value ? tol_emu_f32() : tol_for(DType::bf16);
    const std::string what = std::string("emu global_pool ") + dtype_name(dtype_of<T>::value) + " N" +
                             std::to_string(N) + " HW" + std::to_string(HW) + " C" + std::to_string(C);
    auto as_f32 = [](const emu::Buffer<T>& b) {
        std::vector<float> v(b.size());
        for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(b[i]);
        return v;
    };
    expect_close(as_f32(by), y_ref, tol, what + " forward");
    expect_close(as_f32(bdx), dx_ref, tol, what + " backward");
    expect_close(as_f32(bacc), acc_ref, tol, what + " backward accumulate");
}

}  // namespace

TEST_SUITE("emu") {
    TEST_CASE("max_pool2d kernels emulated vs CPU (f32, bf16)") {
        emu_max_pool<float>({2, 9, 11, 37}, 3, 2, 1, 1);
        emu_max_pool<float>({1, 6, 5, 3}, 2, 2, 0, 2);
        emu_max_pool<float>({1, 5, 7, 4}, 3, 1, 1, 3);
        emu_max_pool<bf16>({2, 9, 11, 37}, 3, 2, 1, 4);
        emu_max_pool<bf16>({1, 8, 8, 64}, 3, 2, 1, 5);
    }

    TEST_CASE("global pool kernels emulated vs CPU (average pool and the conv-bias channel sum)") {
        emu_global_pool<float>(3, 7 * 7, 45, 1.0 / 49, 10);
        emu_global_pool<float>(2, 1, 3, 1.0, 11);
        emu_global_pool<float>(1, 1000, 37, 1.0, 12);  // bias gradient view: (1, N·Ho·Wo, Cout)
        emu_global_pool<bf16>(3, 5 * 3, 70, 1.0 / 15, 13);
        emu_global_pool<bf16>(1, 333, 33, 1.0, 14);
    }
}
#endif

namespace {

// The op on cuda:0 in `dt` vs the CPU in f32 on the same dt-rounded values, forward and backward.
template <class Fn>
void pool_gpu_vs_cpu(const Shape& s, DType dt, uint64_t seed, Fn op, const std::string& what) {
    const Device g = Device::cuda(0);
    Tensor x = random_tensor(s, seed).to(dt).to(DType::f32);
    Tensor xc = x.clone().requires_grad_();
    Tensor y = op(xc);
    Tensor dy = random_tensor(y.shape(), seed + 1).to(dt).to(DType::f32);
    y.backward(dy);
    Tensor xg = x.to(dt).to(g).requires_grad_();
    Tensor yg = op(xg);
    CHECK(yg.dtype() == dt);
    yg.backward(dy.to(dt).to(g));
    const Tol tol = dt == DType::bf16 ? tol_gpu_bf16() : tol_gpu_f32();
    const std::string w = what + " " + shape_str(s) + (dt == DType::bf16 ? " bf16" : " f32");
    expect_close(yg.to(Device::cpu()), y, tol, w + " forward");
    expect_close(xg.grad().to(Device::cpu()), xc.grad(), tol, w + " backward");
}

}  // namespace

TEST_SUITE("gpu") {
    TEST_CASE("max_pool2d and global_avg_pool on the GPU match the CPU (f32, bf16)") {
        auto mp = [](const Tensor& t) { return max_pool2d(t, 3, 2, 1); };
        auto mp2 = [](const Tensor& t) { return max_pool2d(t, 2, 2, 0); };
        auto gap = [](const Tensor& t) { return global_avg_pool(t); };
        uint64_t seed = 300;
        for (DType dt : {DType::f32, DType::bf16}) {
            pool_gpu_vs_cpu({8, 112, 112, 64}, dt, seed += 2, mp, "max_pool2d");
            pool_gpu_vs_cpu({3, 17, 13, 37}, dt, seed += 2, mp, "max_pool2d");
            pool_gpu_vs_cpu({2, 9, 10, 5}, dt, seed += 2, mp2, "max_pool2d k2");
            pool_gpu_vs_cpu({16, 7, 7, 2048}, dt, seed += 2, gap, "global_avg_pool");
            pool_gpu_vs_cpu({3, 5, 3, 37}, dt, seed += 2, gap, "global_avg_pool");
        }
    }
}
