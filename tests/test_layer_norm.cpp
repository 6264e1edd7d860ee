// layer_norm: hand-computed values, stability with a large common offset, finite-difference gradients w.r.t.
// x, weight and bias at odd sizes and ViT widths (192), with and without each affine part, the needs-grad mask,
// error messages; the CUDA kernels emulated (f32, bf16; warp rows, block rows, split dweight/dbias with C not
// a multiple of 32, accumulation into existing gradients) against the CPU reference; the op forward and
// backward on the GPU against the CPU.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>

#include "engine/ops/layer_norm.h"
#include "kernels/layer_norm.h"
#include "tests/gradcheck.h"
#ifdef SSLIGHT_EMU_AVAILABLE
#include "emu/emu.h"
#endif

using namespace sslight;
using namespace sslight::test;
using kernels::LayerNormParams;

namespace {

Tensor leaf64(const Shape& s, uint64_t seed, double lo = -1.0, double hi = 1.0) {
    return random_tensor(s, seed, DType::f64, lo, hi).requires_grad_();
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("layer_norm values by hand, with and without the affine parts") {
        Tensor x = from_vector(std::vector<double>{1, 2, 3, 4, -1, -1, 1, 1}, {2, 4});
        const double r0 = 1 / std::sqrt(1.25 + 1e-6), r1 = 1 / std::sqrt(1.0 + 1e-6);
        std::vector<double> y = layer_norm(x, Tensor(), Tensor()).to_vector<double>();
        CHECK(y[0] == doctest::Approx(-1.5 * r0));
        CHECK(y[3] == doctest::Approx(1.5 * r0));
        CHECK(y[4] == doctest::Approx(-r1));
        Tensor w = from_vector(std::vector<double>{1, 2, 3, 4}, {4});
        Tensor b = from_vector(std::vector<double>{0.5, 0, 0, -1}, {4});
        std::vector<double> ya = layer_norm(x, w, b).to_vector<double>();
        CHECK(ya[0] == doctest::Approx(-1.5 * r0 + 0.5));
        CHECK(ya[1] == doctest::Approx(-0.5 * r0 * 2));
        CHECK(ya[7] == doctest::Approx(4 * r1 - 1));
        CHECK(layer_norm(x, Tensor(), b).to_vector<double>()[3] == doctest::Approx(1.5 * r0 - 1));
        CHECK(layer_norm(x, w, Tensor(), 0.25).to_vector<double>()[3] == doctest::Approx(4 * 1.5 / std::sqrt(1.5)));
    }

    TEST_CASE("a large common offset does not hurt the variance (two passes)") {
        std::vector<double> v = random_vector<double>(3 * 192, 1, -1, 1);
        for (double& e : v) e += 1e4;
        Tensor x = from_vector(v, {3, 192}).to(DType::f32);
        std::vector<float> y = layer_norm(x, Tensor(), Tensor()).to_vector<float>();
        double m = 0, s = 0;
        for (int c = 0; c < 192; ++c) m += y[c];
        for (int c = 0; c < 192; ++c) s += (y[c] - m / 192) * (y[c] - m / 192);
        CHECK(std::fabs(m / 192) < 1e-4);
        CHECK(s / 192 == doctest::Approx(1.0).epsilon(1e-3));
    }

    TEST_CASE("gradients w.r.t. x, weight and bias at odd sizes and ViT widths") {
        for (const Shape& s : {Shape{7, 13}, Shape{3, 5, 9}, Shape{4, 192}, Shape{3, 1}}) {
            const Shape c{s.back()};
            const std::string tag = shape_str(s);
            gradcheck([](const std::vector<Tensor>& v) { return layer_norm(v[0], v[1], v[2]); },
                      {leaf64(s, 2), leaf64(c, 3, 0.5, 1.5), leaf64(c, 4)}, "layer_norm affine " + tag);
            gradcheck([](const std::vector<Tensor>& v) { return layer_norm(v[0], Tensor(), Tensor()); },
                      {leaf64(s, 5)}, "layer_norm plain " + tag);
            gradcheck([](const std::vector<Tensor>& v) { return layer_norm(v[0], v[1], Tensor(), 1e-3); },
                      {leaf64(s, 6), leaf64(c, 7)}, "layer_norm weight only " + tag);
            gradcheck([](const std::vector<Tensor>& v) { return layer_norm(v[0], Tensor(), v[1]); },
                      {leaf64(s, 8), leaf64(c, 9)}, "layer_norm bias only " + tag);
        }
    }

    TEST_CASE("the needs-grad mask: only the inputs that require grad receive one") {
        Tensor x = random_tensor({5, 7}, 10, DType::f64), w = leaf64({7}, 11), b = random_tensor({7}, 12, DType::f64);
        layer_norm(x, w, b).backward(ones({5, 7}, DType::f64));
        CHECK(w.grad().defined());
        CHECK(!x.grad().defined());
        CHECK(!b.grad().defined());
        // dbias = sum over rows of dy; with dy = 1 it is the row count.
        Tensor b2 = leaf64({7}, 13);
        layer_norm(x, Tensor(), b2).backward(ones({5, 7}, DType::f64));
        for (double g : b2.grad().to_vector<double>()) CHECK(g == doctest::Approx(5.0));
    }

    TEST_CASE("error paths name the shapes and dtypes") {
        Tensor x = random_tensor({4, 6}, 14);
        std::string m = error_of([&] { layer_norm(x, random_tensor({5}, 15), Tensor()); });
        CHECK(m.find("weight") != std::string::npos);
        CHECK(m.find("[5]") != std::string::npos);
        CHECK(m.find("[4, 6]") != std::string::npos);
        CHECK_THROWS_AS(layer_norm(x, Tensor(), random_tensor({6, 1}, 16)), ShapeError);
        CHECK_THROWS_AS(layer_norm(x, random_tensor({6}, 17, DType::f64), Tensor()), DTypeError);
        CHECK_THROWS_AS(layer_norm(scalar_tensor(1.0), Tensor(), Tensor()), ShapeError);
        CHECK_THROWS_AS(layer_norm(zeros({2, 3}, DType::i32), Tensor(), Tensor()), DTypeError);
        CHECK_THROWS_AS(layer_norm(x, Tensor(), Tensor(), -1.0), Error);
    }
}

#ifdef SSLIGHT_EMU_AVAILABLE
namespace {

template <class T>
std::vector<T> emu_input(size_t n, uint64_t seed, double lo, double hi) {
    return to_storage<T>(random_vector<float>(n, seed, lo, hi));
}

// Forward and backward, affine or not, dweight/dbias accumulated onto existing values. `offset` shifts x.
template <class T>
void emu_layer_norm(const LayerNormParams& p, bool affine, uint64_t seed, double offset = 0.0) {
    const size_t n = p.rows * p.C, C = p.C;
    const Tol tol = std::is_same<T, bf16>::value ? tol_for(DType::bf16) : tol_emu_f32();
    std::vector<T> x = emu_input<T>(n, seed, offset - 1, offset + 1), dy = emu_input<T>(n, seed + 1, -1, 1);
    std::vector<T> w = emu_input<T>(C, seed + 2, 0.5, 1.5), b = emu_input<T>(C, seed + 3, -1, 1);
    std::vector<T> dw0 = emu_input<T>(C, seed + 4, -1, 1), db0 = emu_input<T>(C, seed + 5, -1, 1);
    std::vector<float> xf = to_float(x), dyf = to_float(dy), wf = to_float(w), bf = to_float(b);
    std::vector<float> y(n), mean(p.rows), rstd(p.rows), dx(n), dw = to_float(dw0), db = to_float(db0);
    const float* wp = affine ? wf.data() : nullptr;
    kernels::layer_norm_fwd_cpu(p, xf.data(), wp, affine ? bf.data() : nullptr, y.data(), mean.data(), rstd.data());
    kernels::layer_norm_bwd_cpu(p, xf.data(), wp, mean.data(), rstd.data(), dyf.data(), dx.data(), dw.data(),
                                db.data());

    emu::Buffer<T> bx(x), bw(w), bb(b), bdy(dy), oy(n), odx(n), odw(dw0), odb(db0);
    emu::Buffer<float> omean(p.rows), orstd(p.rows), work(kernels::layer_norm_bwd_workspace(p));
    T* bwp = affine ? bw.data() : nullptr;
    kernels::emu::layer_norm_fwd(p, bx.data(), bwp, affine ? bb.data() : nullptr, oy.data(), omean.data(),
                                 orstd.data(), nullptr);
    kernels::emu::layer_norm_bwd(p, bx.data(), bwp, omean.data(), orstd.data(), bdy.data(), odx.data(), odw.data(),
                                 odb.data(), work.data(), nullptr);
    const std::string tag = str(" [", p.rows, ", ", p.C, "]", affine ? " affine" : "", " offset ", offset);
    expect_close(to_float(oy.to_vector()), y, tol, "layer_norm" + tag);
    expect_close(omean.to_vector(), mean, tol_emu_f32(), "layer_norm mean" + tag);
    expect_close(orstd.to_vector(), rstd, {tol_emu_f32().atol, 1e-3}, "layer_norm rstd" + tag);
    expect_close(to_float(odx.to_vector()), dx, tol, "layer_norm dx" + tag);
    expect_close(to_float(odw.to_vector()), dw, tol, "layer_norm dweight" + tag);
    expect_close(to_float(odb.to_vector()), db, tol, "layer_norm dbias" + tag);
}

}  // namespace

TEST_SUITE("emu") {
    TEST_CASE("layer_norm kernels emulated against the CPU (f32, bf16; warp rows, block rows, split dparams)") {
        CHECK(kernels::layer_norm_bwd_splits({300, 45, 1e-6}) > 1);
        const std::vector<LayerNormParams> shapes = {{5, 37, 1e-6},  {7, 192, 1e-6},  {3, 384, 1e-5},
                                                     {300, 45, 1e-6}, {64, 13, 1e-6}, {3, 2500, 1e-6},
                                                     {2, 9000, 1e-6}};
        uint64_t seed = 100;
        for (const LayerNormParams& p : shapes) {
            emu_layer_norm<float>(p, true, seed++);
            emu_layer_norm<bf16>(p, true, seed++);
        }
        emu_layer_norm<float>({7, 192, 1e-6}, false, seed++);
        emu_layer_norm<float>({300, 45, 1e-6}, false, seed++);
        emu_layer_norm<float>({6, 96, 1e-6}, true, seed++, 100.0);
    }

    TEST_CASE("layer_norm backward kernels honour null gradients") {
        const LayerNormParams p{9, 40, 1e-6};
        std::vector<float> x = random_vector<float>(360, 400), dy = random_vector<float>(360, 401);
        std::vector<float> mean(9), rstd(9), y(360), db(40, 0.f);
        kernels::layer_norm_fwd_cpu<float>(p, x.data(), nullptr, nullptr, y.data(), mean.data(), rstd.data());
        kernels::layer_norm_bwd_cpu<float>(p, x.data(), nullptr, mean.data(), rstd.data(), dy.data(), nullptr,
                                           nullptr, db.data());
        emu::Buffer<float> bx(x), bdy(dy), bm(mean), br(rstd), odb(std::vector<float>(40, 0.f));
        emu::Buffer<float> work(kernels::layer_norm_bwd_workspace(p));
        kernels::emu::layer_norm_bwd<float>(p, bx.data(), nullptr, bm.data(), br.data(), bdy.data(), nullptr, nullptr,
                                            odb.data(), work.data(), nullptr);
        expect_close(odb.to_vector(), db, tol_emu_f32(), "dbias only");
    }
}
#endif

TEST_SUITE("gpu") {
    TEST_CASE("layer_norm on the GPU matches the CPU, forward and backward (f32, bf16)") {
        const Device g = Device::cuda(0);
        for (DType dt : {DType::f32, DType::bf16}) {
            const Tol tol = dt == DType::bf16 ? tol_gpu_bf16() : tol_gpu_f32();
            for (const Shape& s :
                 {Shape{7, 13}, Shape{8, 197, 192}, Shape{4, 50, 384}, Shape{3, 2500}, Shape{600, 45}}) {
                const Shape c{s.back()};
                const std::string tag = std::string(dtype_name(dt)) + " " + shape_str(s);
                auto rounded = [&](const Shape& sh, uint64_t seed, double lo, double hi) {
                    return random_tensor(sh, seed, DType::f32, lo, hi).to(dt).to(DType::f32);
                };
                Tensor x = rounded(s, 1, -2, 2), w = rounded(c, 2, 0.5, 1.5), b = rounded(c, 3, -1, 1);
                std::vector<Tensor> cpu = {x.detach().requires_grad_(), w.detach().requires_grad_(),
                                           b.detach().requires_grad_()};
                std::vector<Tensor> gpu;
                for (const Tensor& t : cpu) gpu.push_back(t.detach().to(dt).to(g).requires_grad_());
                Tensor yc = layer_norm(cpu[0], cpu[1], cpu[2]), yg = layer_norm(gpu[0], gpu[1], gpu[2]);
                Tensor dy = rounded(s, 4, -1, 1);
                yc.backward(dy);
                yg.backward(dy.to(dt).to(g));
                expect_close(yg.to(Device::cpu()).to(DType::f32), yc, tol, "layer_norm " + tag);
                const char* names[] = {"dx", "dweight", "dbias"};
                for (int i = 0; i < 3; ++i) {
                    // dweight/dbias sum over all rows: compare relative to the largest magnitude.
                    Tensor ref = cpu[i].grad();
                    double scale = 1;
                    for (double v : ref.to_vector<double>()) scale = std::fmax(scale, std::fabs(v));
                    expect_close(gpu[i].grad().to(Device::cpu()).to(DType::f32), ref, {tol.atol * scale, tol.rtol},
                                 std::string("layer_norm ") + names[i] + " " + tag);
                }
            }
        }
    }
}
