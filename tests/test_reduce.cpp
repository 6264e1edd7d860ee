// Reductions: hand-computed sum/mean/max values, finite-difference gradients at odd sizes over every dim
// (negative dims, keepdim both ways) and of l2_norm / l2_normalize, the max tie rule, zero rows, error
// messages; the CUDA kernels emulated (f32, bf16; warp rows, block rows, split rows, column reductions with
// inner not a multiple of 32, split columns, ties across splits) against the CPU reference; every op forward
// and backward on the GPU against the CPU.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>

#include "engine/ops/reduce.h"
#include "kernels/reduce.h"
#include "tests/gradcheck.h"
#ifdef SSLIGHT_EMU_AVAILABLE
#include "emu/emu.h"
#endif

using namespace sslight;
using namespace sslight::test;
using kernels::ReduceParams;

namespace {

Tensor leaf64(const Shape& s, uint64_t seed) { return random_tensor(s, seed, DType::f64).requires_grad_(); }

struct DimCase {
    Shape shape;
    int64_t dim;
};
const std::vector<DimCase>& dim_cases() {
    static const std::vector<DimCase> cases = {{{7, 13}, 0},   {{7, 13}, 1},     {{7, 13}, -1},   {{3, 5, 9}, 0},
                                               {{3, 5, 9}, 1}, {{3, 5, 9}, 2},   {{3, 5, 9}, -1}, {{3, 5, 9}, -3},
                                               {{11}, 0},      {{2, 1, 3}, 1}};
    return cases;
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("sum, mean and max values by hand") {
        Tensor x = from_vector(std::vector<float>{1, -2, 3, 4, 5, -6}, {2, 3});
        CHECK(sum(x).shape() == Shape{});
        CHECK(sum(x).item() == 5.0);
        CHECK(sum(x, 0).to_vector<float>() == std::vector<float>{5, 3, -3});
        CHECK(sum(x, 1).to_vector<float>() == std::vector<float>{2, 3});
        CHECK(sum(x, -1, true).shape() == Shape{2, 1});
        CHECK(sum(x, 0, true).shape() == Shape{1, 3});
        CHECK(mean(x).item() == doctest::Approx(5.0 / 6.0));
        CHECK(mean(x, 0).to_vector<float>() == std::vector<float>{2.5f, 1.5f, -1.5f});
        CHECK(max(x).item() == 5.0);
        CHECK(max(x, 0).to_vector<float>() == std::vector<float>{4, 5, 3});
        CHECK(max(x, 1, true).to_vector<float>() == std::vector<float>{3, 5});
        CHECK(max(x, 1, true).shape() == Shape{2, 1});
        CHECK(std::isnan(mean(zeros({0, 3})).item()));
        CHECK(sum(zeros({0, 3}), 0).to_vector<float>() == std::vector<float>{0, 0, 0});
    }

    TEST_CASE("sum, mean and max gradients at odd sizes, every dim, keepdim both ways") {
        for (const DimCase& c : dim_cases()) {
            for (bool keep : {false, true}) {
                const std::string tag = shape_str(c.shape) + " dim " + std::to_string(c.dim) + (keep ? " keep" : "");
                const int64_t d = c.dim;
                gradcheck([&](const std::vector<Tensor>& v) { return sum(v[0], d, keep); }, {leaf64(c.shape, 1)},
                          "sum " + tag);
                gradcheck([&](const std::vector<Tensor>& v) { return mean(v[0], d, keep); }, {leaf64(c.shape, 2)},
                          "mean " + tag);
                gradcheck([&](const std::vector<Tensor>& v) { return max(v[0], d, keep); }, {leaf64(c.shape, 3)},
                          "max " + tag);
            }
        }
        for (const Shape& s : {Shape{7, 13}, Shape{3, 5, 9}, Shape{}}) {
            gradcheck([](const std::vector<Tensor>& v) { return sum(v[0]); }, {leaf64(s, 4)}, "sum all");
            gradcheck([](const std::vector<Tensor>& v) { return mean(v[0]); }, {leaf64(s, 5)}, "mean all");
            gradcheck([](const std::vector<Tensor>& v) { return max(v[0]); }, {leaf64(s, 6)}, "max all");
        }
    }

    TEST_CASE("max sends the gradient to the first maximal element") {
        Tensor x = from_vector(std::vector<double>{1, 3, 3, 2}, {4}).requires_grad_();
        max(x).backward();
        CHECK(x.grad().to_vector<double>() == std::vector<double>{0, 1, 0, 0});

        Tensor c = from_vector(std::vector<double>{3, 1, 3, 2, 0, 2}, {3, 2}).requires_grad_();
        Tensor m = max(c, 0);
        CHECK(m.to_vector<double>() == std::vector<double>{3, 2});
        m.backward(from_vector(std::vector<double>{5, 7}, {2}));
        CHECK(c.grad().to_vector<double>() == std::vector<double>{5, 0, 0, 7, 0, 0});

        Tensor r = full({2, 5}, -1.5, DType::f64).requires_grad_();
        max(r, 1).backward(ones({2}, DType::f64));
        CHECK(r.grad().to_vector<double>() == std::vector<double>{1, 0, 0, 0, 0, 1, 0, 0, 0, 0});

        // NaN counts as the maximum (as in torch.max): the value is NaN and the gradient goes to it.
        Tensor nan = from_vector(std::vector<double>{1, std::nan(""), 3, std::nan("")}, {4}).requires_grad_();
        Tensor mn = max(nan);
        CHECK(std::isnan(mn.item()));
        mn.backward();
        CHECK(nan.grad().to_vector<double>() == std::vector<double>{0, 1, 0, 0});
    }

    TEST_CASE("l2_norm and l2_normalize: values and gradients") {
        Tensor x = from_vector(std::vector<double>{3, 4, 0, 0, 1, 2}, {3, 2});
        CHECK(l2_norm(x).shape() == Shape{3});
        std::vector<double> n = l2_norm(x).to_vector<double>();
        CHECK(n[0] == doctest::Approx(5.0));
        CHECK(n[1] == 0.0);
        CHECK(n[2] == doctest::Approx(std::sqrt(5.0)));
        std::vector<double> y = l2_normalize(x).to_vector<double>();
        CHECK(y[0] == doctest::Approx(0.6));
        CHECK(y[1] == doctest::Approx(0.8));
        CHECK(y[2] == 0.0);
        CHECK(y[3] == 0.0);
        CHECK(l2_normalize(x, 10.0).to_vector<double>()[0] == doctest::Approx(0.3));  // max(5, 10) = 10

        for (const Shape& s : {Shape{7, 13}, Shape{3, 5, 9}, Shape{4, 256}, Shape{1}}) {
            gradcheck([](const std::vector<Tensor>& v) { return l2_norm(v[0]); }, {leaf64(s, 7)},
                      "l2_norm " + shape_str(s));
            gradcheck([](const std::vector<Tensor>& v) { return l2_normalize(v[0]); }, {leaf64(s, 8)},
                      "l2_normalize " + shape_str(s));
        }
        // Rows whose norm is below eps: y = x / eps, a linear map, checked by finite differences too.
        Tensor small = random_tensor({3, 5}, 9, DType::f64, -1e-3, 1e-3).requires_grad_();
        gradcheck([](const std::vector<Tensor>& v) { return l2_normalize(v[0], 0.5); }, {small}, "clamped rows");
    }

    TEST_CASE("zero rows: l2_normalize gives 0 with a finite gradient, l2_norm a zero gradient") {
        Tensor x = from_vector(std::vector<double>{0, 0, 0, 1, 2, 2}, {2, 3}).requires_grad_();
        Tensor y = l2_normalize(x);
        CHECK(y.to_vector<double>()[0] == 0.0);
        Tensor w = from_vector(std::vector<double>{0.5, -1, 2, 1, 1, 1}, {2, 3});
        y.backward(w);
        std::vector<double> g = x.grad().to_vector<double>();
        for (int i = 0; i < 3; ++i) {
            CHECK(std::isfinite(g[i]));
            CHECK(g[i] == doctest::Approx(w.to_vector<double>()[i] / 1e-12));  // torch: dy / eps where clamped
        }
        Tensor z = from_vector(std::vector<double>{0, 0, 0, 1, 2, 2}, {2, 3}).requires_grad_();
        l2_norm(z).backward(ones({2}, DType::f64));
        std::vector<double> gz = z.grad().to_vector<double>();
        CHECK(gz[0] == 0.0);
        CHECK(gz[1] == 0.0);
        CHECK(gz[3] == doctest::Approx(1.0 / 3.0));
    }

    TEST_CASE("realistic shapes: NHWC per-channel sums, token means, f32 against a double loop") {
        const int64_t rows = 4 * 7 * 7, C = 96;
        Tensor x = random_tensor({4, 7, 7, C}, 10);
        std::vector<float> v = x.to_vector<float>();
        std::vector<double> ref(C, 0.0);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < C; ++c) ref[c] += v[r * C + c];
        expect_close(sum(x.reshape({rows, C}), 0).to_vector<double>(), ref, tol_for(DType::f32), "NHWC sum");

        Tensor t = random_tensor({8, 197, 64}, 11).requires_grad_();
        Tensor m = mean(t, 1);
        CHECK(m.shape() == Shape{8, 64});
        std::vector<float> tv = t.to_vector<float>();
        double m0 = 0;
        for (int64_t k = 0; k < 197; ++k) m0 += tv[k * 64 + 5];
        CHECK(m.to_vector<float>()[5] == doctest::Approx(m0 / 197).epsilon(1e-5));
        sum(m).backward();
        for (float g : t.grad().to_vector<float>()) REQUIRE(g == doctest::Approx(1.0 / 197));
    }

    TEST_CASE("error paths name the op and the shapes") {
        Tensor x = random_tensor({2, 3}, 12);
        CHECK_THROWS_AS(sum(x, 2), ShapeError);
        CHECK(error_of([&] { sum(x, -3); }).find("[2, 3]") != std::string::npos);
        CHECK(error_of([&] { mean(x, 5); }).find("mean") != std::string::npos);
        CHECK_THROWS_AS(sum(zeros({3}, DType::i64)), DTypeError);
        CHECK_THROWS_AS(max(zeros({2, 0}), 1), ShapeError);
        CHECK(error_of([&] { max(zeros({2, 0}), 1); }).find("[2, 0]") != std::string::npos);
        CHECK_THROWS_AS(max(zeros({0})), ShapeError);
        CHECK_THROWS_AS(l2_norm(scalar_tensor(2.0)), ShapeError);
        CHECK_THROWS_AS(l2_normalize(x, 0.0), Error);
        CHECK_THROWS_AS(sum(x.to(DType::bf16)), DTypeError);
        CHECK_THROWS_AS(sum(Tensor()), Error);
    }
}

#ifdef SSLIGHT_EMU_AVAILABLE
namespace {

// Host values in [lo, hi) rounded to T's precision, as T and as float.
template <class T>
std::vector<T> emu_input(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0, double quantum = 0.0) {
    std::vector<float> v = random_vector<float>(n, seed, lo, hi);
    if (quantum > 0)
        for (float& x : v) x = static_cast<float>(std::round(x / quantum) * quantum);
    return to_storage<T>(v);
}

// Cases: warp rows, block rows, split rows, a split full reduction, columns (inner 13, 45, 70: not multiples
// of 32), split columns, n = 1.
const std::vector<ReduceParams>& emu_cases() {
    static const std::vector<ReduceParams> cases = {{5, 37, 1},    {3, 2500, 1}, {2, 20000, 1}, {1, 30011, 1},
                                                    {3, 7, 13},    {1, 1000, 45}, {2, 50, 70},  {4, 1, 33}};
    return cases;
}
std::string tag_of(const char* op, const ReduceParams& p) {
    return str(op, " [", p.outer, ", ", p.n, ", ", p.inner, "] splits ", kernels::reduce_plan(p).splits);
}

template <class T>
void emu_sum(const ReduceParams& p, uint64_t seed) {
    const size_t nin = p.outer * p.n * p.inner, nout = p.outer * p.inner, ws = kernels::reduce_workspace(p);
    const double scale = 1.0 / static_cast<double>(p.n);
    std::vector<T> x = emu_input<T>(nin, seed, -0.5, 1.5), g = emu_input<T>(nout, seed + 1);
    std::vector<float> xf = to_float(x), gf = to_float(g), ref(nout), ref_dx(nin);
    kernels::sum_dim_fwd_cpu(p, xf.data(), ref.data(), scale);
    kernels::sum_dim_bwd_cpu(p, gf.data(), ref_dx.data(), scale);
    emu::Buffer<T> dx(x), dy(nout), dg(g), ddx(nin);
    emu::Buffer<float> work(ws > 0 ? ws : 1);
    kernels::emu::sum_dim_fwd(p, dx.data(), dy.data(), scale, ws > 0 ? work.data() : nullptr, nullptr);
    kernels::emu::sum_dim_bwd(p, dg.data(), ddx.data(), scale, nullptr);
    expect_close(to_float(dy.to_vector()), ref, emu_tol<T>(), tag_of("mean", p));
    expect_close(to_float(ddx.to_vector()), ref_dx, emu_tol<T>(), tag_of("mean backward", p));
}

// Values on a coarse grid, so that ties (also across splits) are common: indices must match exactly.
template <class T>
void emu_max(const ReduceParams& p, uint64_t seed) {
    const size_t nin = p.outer * p.n * p.inner, nout = p.outer * p.inner, ws = kernels::reduce_workspace(p);
    std::vector<T> x = emu_input<T>(nin, seed, -1.0, 1.0, 0.25), g = emu_input<T>(nout, seed + 1);
    std::vector<float> xf = to_float(x), gf = to_float(g), ref(nout), ref_dx(nin);
    std::vector<int32_t> ref_idx(nout);
    kernels::max_dim_fwd_cpu(p, xf.data(), ref.data(), ref_idx.data());
    kernels::max_dim_bwd_cpu(p, gf.data(), ref_idx.data(), ref_dx.data());
    emu::Buffer<T> dx(x), dy(nout), dg(g), ddx(nin);
    emu::Buffer<int32_t> didx(nout), widx(ws > 0 ? ws : 1), dref_idx(ref_idx);
    emu::Buffer<float> work(ws > 0 ? ws : 1);
    kernels::emu::max_dim_fwd(p, dx.data(), dy.data(), didx.data(), work.data(), widx.data(), nullptr);
    kernels::emu::max_dim_bwd(p, dg.data(), dref_idx.data(), ddx.data(), nullptr);
    expect_close(to_float(dy.to_vector()), ref, {0, 0}, tag_of("max", p));
    CHECK_MESSAGE(didx.to_vector() == ref_idx, tag_of("max index", p));
    expect_close(to_float(ddx.to_vector()), ref_dx, {0, 0}, tag_of("max backward", p));
}

// NaN beats every number and the first NaN wins, in rows and columns, split or not.
void emu_max_nan(const ReduceParams& p) {
    const size_t nin = p.outer * p.n * p.inner, nout = p.outer * p.inner, ws = kernels::reduce_workspace(p);
    std::vector<float> x = random_vector<float>(nin, 7);
    for (size_t e = 3; e < nin; e += 7919) x[e] = std::nanf("");
    std::vector<float> ref(nout);
    std::vector<int32_t> ref_idx(nout);
    kernels::max_dim_fwd_cpu(p, x.data(), ref.data(), ref_idx.data());
    emu::Buffer<float> dx(x), dy(nout), work(ws > 0 ? ws : 1);
    emu::Buffer<int32_t> didx(nout), widx(ws > 0 ? ws : 1);
    kernels::emu::max_dim_fwd(p, dx.data(), dy.data(), didx.data(), work.data(), widx.data(), nullptr);
    expect_close(dy.to_vector(), ref, {0, 0}, tag_of("max with NaN", p));
    CHECK_MESSAGE(didx.to_vector() == ref_idx, tag_of("max index with NaN", p));
}

// L2 kernels on rows of D (warp, 256-thread block, 1024-thread block); row 1 is all zeros.
template <class T>
void emu_l2(int64_t rows, int64_t D, uint64_t seed) {
    const size_t n = rows * D;
    const double eps = 1e-12;
    std::vector<float> xv = random_vector<float>(n, seed);
    for (int64_t d = 0; d < D; ++d) xv[D + d] = 0.f;
    std::vector<T> x = to_storage<T>(xv), g = emu_input<T>(n, seed + 1), gr = emu_input<T>(rows, seed + 2);
    std::vector<float> xf = to_float(x), gf = to_float(g), grf = to_float(gr);
    std::vector<float> norm(rows), y(n), norm2(rows), ref_dx(n), ref_dxn(n);
    kernels::l2_norm_fwd_cpu(rows, D, xf.data(), norm.data());
    kernels::l2_normalize_fwd_cpu(rows, D, eps, xf.data(), y.data(), norm2.data());
    std::vector<T> ys = to_storage<T>(y);
    std::vector<float> yf = to_float(ys);
    kernels::l2_norm_bwd_cpu(rows, D, xf.data(), norm.data(), grf.data(), ref_dx.data());
    kernels::l2_normalize_bwd_cpu(rows, D, eps, yf.data(), norm.data(), gf.data(), ref_dxn.data());

    emu::Buffer<T> dx(x), dnorm_out(rows), dy(n), dys(ys), dg(g), dgr(gr), ddx(n), ddxn(n);
    emu::Buffer<float> dnorm(rows), dnorm2(rows), dnorm_ref(norm);
    kernels::emu::l2_norm_fwd(rows, D, dx.data(), dnorm_out.data(), dnorm.data(), nullptr);
    kernels::emu::l2_normalize_fwd(rows, D, eps, dx.data(), dy.data(), dnorm2.data(), nullptr);
    kernels::emu::l2_norm_bwd(rows, D, dx.data(), dnorm_ref.data(), dgr.data(), ddx.data(), nullptr);
    kernels::emu::l2_normalize_bwd(rows, D, eps, dys.data(), dnorm_ref.data(), dg.data(), ddxn.data(), nullptr);
    const std::string tag = str(" rows ", rows, " D ", D);
    expect_close(to_float(dnorm_out.to_vector()), norm, emu_tol<T>(), "l2_norm" + tag);
    expect_close(dnorm.to_vector(), norm, tol_emu_f32(), "l2_norm saved norm" + tag);
    expect_close(to_float(dy.to_vector()), y, emu_tol<T>(), "l2_normalize" + tag);
    expect_close(dnorm2.to_vector(), norm, tol_emu_f32(), "l2_normalize saved norm" + tag);
    expect_close(to_float(ddx.to_vector()), ref_dx, emu_tol<T>(), "l2_norm backward" + tag);
    // The zero row's gradient is dy / eps (1e12 scale): compared relative only.
    expect_close(to_float(ddxn.to_vector()), ref_dxn, {emu_tol<T>().atol, 1e-3 + emu_tol<T>().rtol},
                 "l2_normalize backward" + tag);
}

}  // namespace

TEST_SUITE("emu") {
    TEST_CASE("sum/mean kernels emulated against the CPU (f32, bf16)") {
        CHECK(kernels::reduce_plan({2, 20000, 1}).splits > 1);
        CHECK(kernels::reduce_plan({1, 1000, 45}).splits > 1);
        uint64_t seed = 100;
        for (const ReduceParams& p : emu_cases()) {
            emu_sum<float>(p, seed++);
            emu_sum<bf16>(p, seed++);
        }
    }

    TEST_CASE("max kernels emulated against the CPU: values, first-index ties, backward (f32, bf16)") {
        uint64_t seed = 200;
        for (const ReduceParams& p : emu_cases()) {
            emu_max<float>(p, seed++);
            emu_max<bf16>(p, seed++);
        }
        emu_max_nan({2, 30000, 1});
        emu_max_nan({1, 40000, 3});
    }

    TEST_CASE("split reductions are bitwise identical under different block and thread schedules") {
        for (const ReduceParams& p : {ReduceParams{2, 20000, 1}, ReduceParams{1, 1000, 45}}) {
            const size_t nin = p.outer * p.n * p.inner, nout = p.outer * p.inner;
            emu::Buffer<float> x(random_vector<float>(nin, 50)), y(nout), work(kernels::reduce_workspace(p));
            std::vector<std::vector<float>> runs;
            const uint64_t base = emu::base_seed();
            for (uint64_t seed : {base + 1, base + 2, base + 3}) {
                emu::set_seed(seed);
                kernels::emu::sum_dim_fwd<float>(p, x.data(), y.data(), 1.0, work.data(), nullptr);
                runs.push_back(y.to_vector());
            }
            emu::set_seed(base);
            CHECK(std::memcmp(runs[0].data(), runs[1].data(), nout * sizeof(float)) == 0);
            CHECK(std::memcmp(runs[0].data(), runs[2].data(), nout * sizeof(float)) == 0);
        }
    }

    TEST_CASE("l2_norm / l2_normalize kernels emulated against the CPU (f32, bf16)") {
        emu_l2<float>(5, 37, 300);
        emu_l2<bf16>(5, 37, 301);
        emu_l2<float>(3, 2500, 302);
        emu_l2<bf16>(3, 2500, 303);
        emu_l2<float>(2, 9000, 304);
    }
}
#endif

TEST_SUITE("gpu") {
    // f(x) on the GPU in `dt` against f on the CPU in f32 on the same (dt-rounded) input and upstream weights.
    void gpu_vs_cpu(const std::function<Tensor(const Tensor&)>& f, const Shape& shape, uint64_t seed, DType dt,
                    const std::string& what, double lo = -1.0, double hi = 1.0) {
        const Device g = Device::cuda(0);
        const Tol tol = dt == DType::bf16 ? tol_gpu_bf16() : tol_gpu_f32();
        Tensor x = random_tensor(shape, seed, DType::f32, lo, hi).to(dt).to(DType::f32);
        Tensor xc = x.detach().requires_grad_();
        Tensor yc = f(xc);
        Tensor w = random_tensor(yc.shape(), seed + 1).to(dt).to(DType::f32);
        yc.backward(w);
        Tensor xg = x.to(dt).to(g).detach().requires_grad_();
        Tensor yg = f(xg);
        REQUIRE(yg.device() == g);
        yg.backward(w.to(dt).to(g));
        expect_close(yg.to(Device::cpu()).to(DType::f32), yc, tol, what + " forward");
        expect_close(xg.grad().to(Device::cpu()).to(DType::f32), xc.grad(), tol, what + " backward");
    }

    TEST_CASE("sum, mean, max, l2_norm, l2_normalize on the GPU match the CPU (f32, bf16)") {
        for (DType dt : {DType::f32, DType::bf16}) {
            const std::string t = dtype_name(dt);
            for (const DimCase& c : dim_cases()) {
                const int64_t d = c.dim;
                const std::string tag = t + " " + shape_str(c.shape) + " dim " + std::to_string(d);
                gpu_vs_cpu([&](const Tensor& x) { return sum(x, d, true); }, c.shape, 20, dt, "sum " + tag);
                gpu_vs_cpu([&](const Tensor& x) { return mean(x, d); }, c.shape, 21, dt, "mean " + tag);
                gpu_vs_cpu([&](const Tensor& x) { return max(x, d); }, c.shape, 22, dt, "max " + tag);
            }
            // Long rows (split), NHWC columns (split), full reductions, ViT/DINO-sized L2 rows.
            gpu_vs_cpu([](const Tensor& x) { return sum(x, 1); }, {3, 100003}, 23, dt, "sum long rows " + t, 0, 1);
            gpu_vs_cpu([](const Tensor& x) { return mean(x, 0); }, {64 * 56 * 56, 24}, 24, dt, "NHWC mean " + t);
            gpu_vs_cpu([](const Tensor& x) { return sum(x); }, {1000, 777}, 25, dt, "sum all " + t, 0, 1);
            gpu_vs_cpu([](const Tensor& x) { return max(x); }, {1000, 777}, 26, dt, "max all " + t);
            gpu_vs_cpu([](const Tensor& x) { return max(x, 0); }, {5000, 40}, 27, dt, "max cols " + t);
            for (const Shape& s : {Shape{7, 13}, Shape{256, 256}, Shape{3, 5000}, Shape{2, 20000}}) {
                gpu_vs_cpu([](const Tensor& x) { return l2_norm(x); }, s, 28, dt, "l2_norm " + t + shape_str(s));
                gpu_vs_cpu([](const Tensor& x) { return l2_normalize(x); }, s, 29, dt, "l2_normalize " + t);
            }
        }
    }
}
