// softmax, log_softmax, cross_entropy, cross_entropy_soft: hand-computed values, rows summing to 1, large logits
// staying finite, finite-difference gradients at odd and real sizes (rows of 300), error paths; the CUDA
// kernels emulated (f32, bf16; warp rows, 256- and 1024-thread block rows, i32/i64 labels, an out-of-range
// label giving NaN) against the CPU reference; every op forward and backward on the GPU against the CPU.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>

#include "engine/ops/softmax.h"
#include "kernels/softmax.h"
#include "tests/gradcheck.h"
#ifdef SSLIGHT_EMU_AVAILABLE
#include "emu/emu.h"
#endif

using namespace sslight;
using namespace sslight::test;
using kernels::SoftmaxParams;

namespace {

Tensor leaf64(const Shape& s, uint64_t seed, double lo = -2.0, double hi = 2.0) {
    return random_tensor(s, seed, DType::f64, lo, hi).requires_grad_();
}

std::vector<int64_t> random_labels(int64_t n, int64_t C, uint64_t seed) {
    std::vector<double> u = random_vector<double>(static_cast<size_t>(n), seed, 0.0, 1.0);
    std::vector<int64_t> l;
    for (double v : u) l.push_back(static_cast<int64_t>(v * static_cast<double>(C)) % C);
    return l;
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("softmax and log_softmax values by hand, rows sum to 1") {
        Tensor x = from_vector(std::vector<double>{0, std::log(2.0), std::log(3.0)}, {1, 3});
        std::vector<double> y = softmax(x).to_vector<double>();
        CHECK(y[0] == doctest::Approx(1.0 / 6));
        CHECK(y[1] == doctest::Approx(2.0 / 6));
        CHECK(y[2] == doctest::Approx(3.0 / 6));
        CHECK(log_softmax(x).to_vector<double>()[2] == doctest::Approx(std::log(0.5)));
        for (const Shape& s : {Shape{7, 13}, Shape{4, 300}, Shape{3, 5, 9}, Shape{1}}) {
            Tensor p = softmax(random_tensor(s, 1, DType::f32, -5, 5));
            CHECK(p.shape() == s);
            std::vector<float> v = p.to_vector<float>();
            const int64_t C = s.back();
            for (size_t r = 0; r < v.size() / C; ++r) {
                double total = 0;
                for (int64_t c = 0; c < C; ++c) total += v[r * C + c];
                CHECK(total == doctest::Approx(1.0).epsilon(1e-6));
            }
        }
    }

    TEST_CASE("large logits stay finite") {
        Tensor x = from_vector(std::vector<float>{1000, 1001, 999, -1000, -1001, -999}, {2, 3});
        const double lse = 1001 + std::log(1 + std::exp(-1.0) + std::exp(-2.0));
        std::vector<float> ls = log_softmax(x).to_vector<float>();
        for (float v : ls) CHECK(std::isfinite(v));
        CHECK(ls[0] == doctest::Approx(1000 - lse).epsilon(1e-5));
        CHECK(ls[4] == doctest::Approx(999 - lse).epsilon(1e-5));  // -1001 - (-999 + log(...))
        for (float v : softmax(x).to_vector<float>()) CHECK(std::isfinite(v));
        Tensor loss = cross_entropy(x, from_vector(std::vector<int64_t>{0, 2}, {2}));
        CHECK(std::isfinite(loss.item()));
        CHECK(loss.item() == doctest::Approx(((lse - 1000) + (lse - 1001)) / 2).epsilon(1e-5));
    }

    TEST_CASE("softmax and log_softmax gradients at odd and real sizes") {
        for (const Shape& s : {Shape{7, 13}, Shape{3, 5, 9}, Shape{4, 300}, Shape{2, 1}}) {
            gradcheck([](const std::vector<Tensor>& v) { return softmax(v[0]); }, {leaf64(s, 2)},
                      "softmax " + shape_str(s));
            gradcheck([](const std::vector<Tensor>& v) { return log_softmax(v[0]); }, {leaf64(s, 3)},
                      "log_softmax " + shape_str(s));
        }
    }

    TEST_CASE("cross_entropy against hand-computed values, i64 and i32 labels") {
        Tensor logits = from_vector(std::vector<double>{1, 2, 3, 1, 1, 1}, {2, 3});
        const double row0 = std::log(1 + std::exp(-1.0) + std::exp(-2.0)), row1 = std::log(3.0);
        Tensor l64 = from_vector(std::vector<int64_t>{2, 0}, {2});
        Tensor l32 = from_vector(std::vector<int32_t>{2, 0}, {2});
        CHECK(cross_entropy(logits, l64).shape() == Shape{});
        CHECK(cross_entropy(logits, l64).item() == doctest::Approx((row0 + row1) / 2));
        CHECK(cross_entropy(logits, l32).item() == doctest::Approx((row0 + row1) / 2));
        CHECK(cross_entropy(logits.to(DType::f32), l32).item() == doctest::Approx((row0 + row1) / 2));
        // Gradient (softmax - onehot) / N.
        Tensor x = logits.detach().requires_grad_();
        cross_entropy(x, l64).backward();
        std::vector<double> g = x.grad().to_vector<double>();
        const double e = std::exp(1.0), z = 1 + e + e * e;
        CHECK(g[2] == doctest::Approx((e * e / z - 1) / 2));
        CHECK(g[0] == doctest::Approx((1 / z) / 2));
        CHECK(g[3] == doctest::Approx((1.0 / 3 - 1) / 2));
        CHECK(g[4] == doctest::Approx((1.0 / 3) / 2));
        // Soft targets equal to the one-hot labels give the same loss.
        Tensor onehot = from_vector(std::vector<double>{0, 0, 1, 1, 0, 0}, {2, 3});
        CHECK(cross_entropy_soft(logits, onehot).item() == doctest::Approx((row0 + row1) / 2));
    }

    TEST_CASE("cross-entropy gradients (hard labels; soft targets w.r.t. both inputs)") {
        for (const Shape& s : {Shape{7, 13}, Shape{5, 300}, Shape{1, 2}}) {
            Tensor labels = from_vector(random_labels(s[0], s[1], 4), {s[0]});
            gradcheck([&](const std::vector<Tensor>& v) { return cross_entropy(v[0], labels); }, {leaf64(s, 5)},
                      "cross_entropy " + shape_str(s));
            gradcheck([&](const std::vector<Tensor>& v) { return cross_entropy(v[0], labels.to(DType::i32)); },
                      {leaf64(s, 6)}, "cross_entropy i32 " + shape_str(s));
            // Targets that do not sum to 1 exercise the sum_c t factor.
            gradcheck([](const std::vector<Tensor>& v) { return cross_entropy_soft(v[0], v[1]); },
                      {leaf64(s, 7), leaf64(s, 8, 0.0, 1.0)}, "cross_entropy_soft " + shape_str(s));
        }
        Tensor t = random_tensor({7, 13}, 9, DType::f64, 0, 1);
        gradcheck([&](const std::vector<Tensor>& v) { return cross_entropy_soft(v[0], t); }, {leaf64({7, 13}, 10)},
                  "cross_entropy_soft logits only");
    }

    TEST_CASE("error paths name the shapes, dtypes and the bad label") {
        Tensor logits = random_tensor({4, 5}, 11);
        std::string m = error_of([&] { cross_entropy(logits, zeros({3}, DType::i64)); });
        CHECK(m.find("[3]") != std::string::npos);
        CHECK(m.find("[4, 5]") != std::string::npos);
        CHECK_THROWS_AS(cross_entropy(logits, zeros({4, 1}, DType::i64)), ShapeError);
        CHECK_THROWS_AS(cross_entropy(logits, zeros({4}, DType::f32)), DTypeError);
        CHECK_THROWS_AS(cross_entropy(random_tensor({2, 3, 4}, 12), zeros({2}, DType::i64)), ShapeError);
        m = error_of([&] { cross_entropy(logits, from_vector(std::vector<int64_t>{0, 1, 5, 2}, {4})); });
        CHECK(m.find("label 5 at row 2") != std::string::npos);
        CHECK(m.find("[4, 5]") != std::string::npos);
        CHECK_THROWS_AS(cross_entropy(logits, from_vector(std::vector<int32_t>{0, -1, 1, 2}, {4})), Error);
        CHECK_THROWS_AS(cross_entropy_soft(logits, random_tensor({4, 6}, 13)), ShapeError);
        CHECK_THROWS_AS(cross_entropy_soft(logits, random_tensor({4, 5}, 13, DType::f64)), DTypeError);
        CHECK_THROWS_AS(softmax(scalar_tensor(1.0)), ShapeError);
        CHECK_THROWS_AS(log_softmax(zeros({3}, DType::i32)), DTypeError);
    }
}

#ifdef SSLIGHT_EMU_AVAILABLE
namespace {

template <class T>
std::vector<T> emu_input(size_t n, uint64_t seed, double lo, double hi) {
    return to_storage<T>(random_vector<float>(n, seed, lo, hi));
}

// Forward and backward of softmax and log-softmax; `shift` moves every logit (1000: large logits).
template <class T>
void emu_softmax(const SoftmaxParams& p, uint64_t seed, double shift) {
    const size_t n = p.rows * p.C;
    std::vector<T> x = emu_input<T>(n, seed, shift - 4, shift + 4), g = emu_input<T>(n, seed + 1, -1, 1);
    std::vector<float> xf = to_float(x), gf = to_float(g), y(n), ly(n);
    kernels::softmax_fwd_cpu(p, xf.data(), y.data());
    kernels::log_softmax_fwd_cpu(p, xf.data(), ly.data());
    std::vector<T> ys = to_storage<T>(y), lys = to_storage<T>(ly);
    std::vector<float> yf = to_float(ys), lyf = to_float(lys), dx(n), ldx(n);
    kernels::softmax_bwd_cpu(p, yf.data(), gf.data(), dx.data());
    kernels::log_softmax_bwd_cpu(p, lyf.data(), gf.data(), ldx.data());

    emu::Buffer<T> bx(x), bg(g), by(ys), bly(lys), oy(n), oly(n), odx(n), oldx(n);
    kernels::emu::softmax_fwd(p, bx.data(), oy.data(), nullptr);
    kernels::emu::log_softmax_fwd(p, bx.data(), oly.data(), nullptr);
    kernels::emu::softmax_bwd(p, by.data(), bg.data(), odx.data(), nullptr);
    kernels::emu::log_softmax_bwd(p, bly.data(), bg.data(), oldx.data(), nullptr);
    const std::string tag = str(" [", p.rows, ", ", p.C, "] shift ", shift);
    // log_softmax = x - lse: both near `shift`, so f32 rounding of lse adds ~|shift| * 2^-24 absolute error.
    const Tol tol = emu_tol<T>(), ltol = {tol.atol + 1e-7 * std::fabs(shift), tol.rtol};
    expect_close(to_float(oy.to_vector()), y, tol, "softmax" + tag);
    expect_close(to_float(oly.to_vector()), ly, ltol, "log_softmax" + tag);
    expect_close(to_float(odx.to_vector()), dx, tol, "softmax backward" + tag);
    expect_close(to_float(oldx.to_vector()), ldx, tol, "log_softmax backward" + tag);
}

// Hard and soft cross entropy, forward (loss, lse) and backward with upstream gradient 0.75.
template <class T, class L>
void emu_cross_entropy(const SoftmaxParams& p, uint64_t seed) {
    const size_t n = p.rows * p.C;
    std::vector<T> x = emu_input<T>(n, seed, -3, 3), t = emu_input<T>(n, seed + 1, 0, 1), dl = {T(0.75f)};
    std::vector<L> labels;
    for (int64_t v : random_labels(p.rows, p.C, seed + 2)) labels.push_back(static_cast<L>(v));
    std::vector<float> xf = to_float(x), tf = to_float(t), dlf = to_float(dl), lse(p.rows), tsum(p.rows);
    std::vector<float> loss(1), sloss(1), dx(n), sdx(n), sdt(n);
    kernels::cross_entropy_fwd_cpu(p, xf.data(), labels.data(), loss.data(), lse.data());
    kernels::cross_entropy_bwd_cpu(p, xf.data(), labels.data(), lse.data(), dlf.data(), dx.data());
    kernels::cross_entropy_soft_fwd_cpu(p, xf.data(), tf.data(), sloss.data(), lse.data(), tsum.data());
    kernels::cross_entropy_soft_bwd_cpu(p, xf.data(), tf.data(), lse.data(), tsum.data(), dlf.data(), sdx.data(),
                                        sdt.data());

    emu::Buffer<T> bx(x), bt(t), bdl(dl), oloss(1), osloss(1), odx(n), osdx(n), osdt(n);
    emu::Buffer<L> blab(labels);
    emu::Buffer<float> olse(p.rows), otsum(p.rows), rows(p.rows), blse(lse), btsum(tsum);
    kernels::emu::cross_entropy_fwd(p, bx.data(), blab.data(), oloss.data(), olse.data(), rows.data(), nullptr);
    expect_close(olse.to_vector(), lse, tol_emu_f32(), "cross_entropy lse");
    kernels::emu::cross_entropy_bwd(p, bx.data(), blab.data(), blse.data(), bdl.data(), odx.data(), nullptr);
    kernels::emu::cross_entropy_soft_fwd(p, bx.data(), bt.data(), osloss.data(), olse.data(), otsum.data(),
                                         rows.data(), nullptr);
    kernels::emu::cross_entropy_soft_bwd(p, bx.data(), bt.data(), blse.data(), btsum.data(), bdl.data(),
                                         osdx.data(), osdt.data(), nullptr);
    const std::string tag = str(" [", p.rows, ", ", p.C, "]");
    expect_close(to_float(oloss.to_vector()), loss, emu_tol<T>(), "cross_entropy" + tag);
    expect_close(to_float(odx.to_vector()), dx, emu_tol<T>(), "cross_entropy backward" + tag);
    expect_close(to_float(osloss.to_vector()), sloss, emu_tol<T>(), "cross_entropy_soft" + tag);
    expect_close(otsum.to_vector(), tsum, tol_emu_f32(), "cross_entropy_soft tsum" + tag);
    expect_close(to_float(osdx.to_vector()), sdx, emu_tol<T>(), "cross_entropy_soft dlogits" + tag);
    expect_close(to_float(osdt.to_vector()), sdt, emu_tol<T>(), "cross_entropy_soft dtargets" + tag);
}

const std::vector<SoftmaxParams>& emu_shapes() {
    static const std::vector<SoftmaxParams> shapes = {{5, 37}, {3, 300}, {9, 1024}, {3, 2500}, {2, 9000}};
    return shapes;
}

}  // namespace

TEST_SUITE("emu") {
    TEST_CASE("softmax / log_softmax kernels emulated against the CPU (f32, bf16, large logits)") {
        uint64_t seed = 100;
        for (const SoftmaxParams& p : emu_shapes()) {
            emu_softmax<float>(p, seed++, 0.0);
            emu_softmax<bf16>(p, seed++, 0.0);
        }
        emu_softmax<float>({5, 37}, seed++, 1000.0);
        emu_softmax<float>({3, 2500}, seed++, -1000.0);
    }

    TEST_CASE("cross-entropy kernels emulated against the CPU (f32, bf16, i64 and i32 labels)") {
        uint64_t seed = 200;
        for (const SoftmaxParams& p : emu_shapes()) {
            emu_cross_entropy<float, int64_t>(p, seed);
            emu_cross_entropy<bf16, int32_t>(p, seed + 10);
            seed += 20;
        }
        emu_cross_entropy<float, int32_t>({1, 3}, seed);
    }

    TEST_CASE("an out-of-range label on the GPU path gives a NaN loss and NaN row gradient, no fault") {
        const SoftmaxParams p{3, 5};
        std::vector<float> x = random_vector<float>(15, 300), dl = {1.f};
        std::vector<int64_t> labels = {1, 7, -2};
        emu::Buffer<float> bx(x), loss(1), lse(3), rows(3), dx(15), bdl(dl);
        emu::Buffer<int64_t> bl(labels);
        kernels::emu::cross_entropy_fwd(p, bx.data(), bl.data(), loss.data(), lse.data(), rows.data(), nullptr);
        CHECK(std::isnan(loss.to_vector()[0]));
        kernels::emu::cross_entropy_bwd(p, bx.data(), bl.data(), lse.data(), bdl.data(), dx.data(), nullptr);
        std::vector<float> g = dx.to_vector();
        CHECK(std::isfinite(g[0]));
        CHECK(std::isnan(g[5]));
        CHECK(std::isnan(g[14]));
    }
}
#endif

TEST_SUITE("gpu") {
    // f on the GPU in `dt` against f on the CPU in f32 on the same (dt-rounded) inputs and upstream weights.
    void gpu_vs_cpu(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Shape>& shapes,
                    uint64_t seed, DType dt, const std::string& what) {
        const Device g = Device::cuda(0);
        const Tol tol = dt == DType::bf16 ? tol_gpu_bf16() : tol_gpu_f32();
        std::vector<Tensor> xc, xg;
        for (size_t i = 0; i < shapes.size(); ++i) {
            Tensor x = random_tensor(shapes[i], seed + i, DType::f32, i ? 0.0 : -3.0, 3.0).to(dt).to(DType::f32);
            xc.push_back(x.detach().requires_grad_());
            xg.push_back(x.to(dt).to(g).detach().requires_grad_());
        }
        Tensor yc = f(xc), yg = f(xg);
        Tensor w = random_tensor(yc.shape(), seed + 9).to(dt).to(DType::f32);
        yc.backward(w);
        yg.backward(w.to(dt).to(g));
        expect_close(yg.to(Device::cpu()).to(DType::f32), yc, tol, what + " forward");
        for (size_t i = 0; i < xc.size(); ++i)
            expect_close(xg[i].grad().to(Device::cpu()).to(DType::f32), xc[i].grad(), tol,
                         what + " backward " + std::to_string(i));
    }

    TEST_CASE("softmax, log_softmax, cross_entropy(_soft) on the GPU match the CPU (f32, bf16)") {
        for (DType dt : {DType::f32, DType::bf16}) {
            for (const Shape& s : {Shape{7, 13}, Shape{3, 5, 9}, Shape{64, 300}, Shape{37, 2500}, Shape{8, 65536}}) {
                const std::string tag = std::string(dtype_name(dt)) + " " + shape_str(s);
                gpu_vs_cpu([](const std::vector<Tensor>& v) { return softmax(v[0]); }, {s}, 1, dt, "softmax " + tag);
                gpu_vs_cpu([](const std::vector<Tensor>& v) { return log_softmax(v[0]); }, {s}, 2, dt,
                           "log_softmax " + tag);
                if (s.size() != 2) continue;
                Tensor labels = from_vector(random_labels(s[0], s[1], 3), {s[0]});
                for (DType lt : {DType::i64, DType::i32}) {
                    gpu_vs_cpu(
                        [&](const std::vector<Tensor>& v) {
                            return cross_entropy(v[0], labels.to(lt).to(v[0].device()));
                        },
                        {s}, 4, dt, "cross_entropy " + tag + " " + dtype_name(lt));
                }
                gpu_vs_cpu([](const std::vector<Tensor>& v) { return cross_entropy_soft(v[0], v[1]); }, {s, s}, 5, dt,
                           "cross_entropy_soft " + tag);
            }
        }
    }
}
