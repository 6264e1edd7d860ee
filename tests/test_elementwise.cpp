// Element-wise ops: finite-difference gradients of every op (same-shape, scalar and last-dim broadcasts at odd
// sizes), hand-computed forward values, PyTorch's kink conventions, error paths, operators, add_/mul_, a
// thread-count-independent broadcast reduction; the CUDA kernels emulated (f32, bf16, aligned and misaligned)
// against the CPU reference; every op forward and backward on the GPU against the CPU.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <functional>

#include "engine/ops/elementwise.h"
#include "kernels/elementwise.h"
#include "tests/gradcheck.h"
#ifdef SSLIGHT_EMU_AVAILABLE
#include "emu/emu.h"
#endif

using namespace sslight;
using namespace sslight::test;
using kernels::BinaryOp;
using kernels::BinaryParams;
using kernels::UnaryOp;
using kernels::UnaryParams;

namespace {

constexpr double kGap = 0.05;  // distance kept between random inputs and the kinks of an op

// Uniform in [lo, hi), each value moved at least kGap away from every kink.
std::vector<double> values(size_t n, uint64_t seed, double lo, double hi, const std::vector<double>& kinks = {}) {
    std::vector<double> v = random_vector<double>(n, seed, lo, hi);
    for (double& x : v)
        for (double k : kinks)
            if (std::fabs(x - k) < kGap) x = x >= k ? k + kGap : k - kGap;
    return v;
}

Tensor input(const Shape& s, uint64_t seed, double lo, double hi, const std::vector<double>& kinks = {},
             DType dt = DType::f64) {
    return from_vector(values(static_cast<size_t>(shape_numel(s)), seed, lo, hi, kinks), s).to(dt);
}

// Magnitudes in [0.5, 1.5) with alternating signs: a divisor far from zero.
Tensor divisor(const Shape& s, uint64_t seed, DType dt = DType::f64) {
    std::vector<double> v = random_vector<double>(static_cast<size_t>(shape_numel(s)), seed, 0.5, 1.5);
    for (size_t i = 1; i < v.size(); i += 2) v[i] = -v[i];
    return from_vector(v, s).to(dt);
}

struct UnaryCase {
    const char* name;
    std::function<Tensor(const Tensor&)> fn;
    UnaryParams params;  // the kernel call the op makes (n filled in by the test)
    double lo, hi;
    std::vector<double> kinks;
};

const std::vector<UnaryCase>& unary_cases() {
    static const std::vector<UnaryCase> cases = {
        {"neg", [](const Tensor& x) { return neg(x); }, {0, UnaryOp::affine, -1, 0}, -2, 2, {}},
        {"add_scalar", [](const Tensor& x) { return add(x, 0.75); }, {0, UnaryOp::affine, 1, 0.75}, -2, 2, {}},
        {"sub_scalar", [](const Tensor& x) { return sub(x, 1.25); }, {0, UnaryOp::affine, 1, -1.25}, -2, 2, {}},
        {"mul_scalar", [](const Tensor& x) { return mul(x, -2.5); }, {0, UnaryOp::affine, -2.5, 0}, -2, 2, {}},
        {"div_scalar", [](const Tensor& x) { return div(x, 4.0); }, {0, UnaryOp::affine, 0.25, 0}, -2, 2, {}},
        {"rsub", [](const Tensor& x) { return rsub(1.5, x); }, {0, UnaryOp::affine, -1, 1.5}, -2, 2, {}},
        {"rdiv", [](const Tensor& x) { return rdiv(2.0, x); }, {0, UnaryOp::rdiv, 2, 0}, 0.4, 2, {}},
        {"exp", [](const Tensor& x) { return exp(x); }, {0, UnaryOp::exp, 0, 0}, -2, 2, {}},
        {"log", [](const Tensor& x) { return log(x); }, {0, UnaryOp::log, 0, 0}, 0.2, 3, {}},
        {"sqrt", [](const Tensor& x) { return sqrt(x); }, {0, UnaryOp::sqrt, 0, 0}, 0.2, 3, {}},
        {"pow3", [](const Tensor& x) { return pow(x, 3.0); }, {0, UnaryOp::pow, 3, 0}, -2, 2, {}},
        {"pow2", [](const Tensor& x) { return pow(x, 2.0); }, {0, UnaryOp::pow, 2, 0}, -2, 2, {}},
        {"pow0.5", [](const Tensor& x) { return pow(x, 0.5); }, {0, UnaryOp::pow, 0.5, 0}, 0.2, 3, {}},
        {"pow-1.5", [](const Tensor& x) { return pow(x, -1.5); }, {0, UnaryOp::pow, -1.5, 0}, 0.3, 3, {}},
        {"abs", [](const Tensor& x) { return abs(x); }, {0, UnaryOp::abs, 0, 0}, -2, 2, {0}},
        {"clamp", [](const Tensor& x) { return clamp(x, -0.3, 0.4); }, {0, UnaryOp::clamp, -0.3, 0.4}, -1, 1,
         {-0.3, 0.4}},
        {"relu", [](const Tensor& x) { return relu(x); }, {0, UnaryOp::relu, 0, 0}, -2, 2, {0}},
        {"relu6", [](const Tensor& x) { return relu6(x); }, {0, UnaryOp::relu6, 0, 0}, -2, 8, {0, 6}},
        {"gelu", [](const Tensor& x) { return gelu(x); }, {0, UnaryOp::gelu, 0, 0}, -3, 3, {}},
        {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, {0, UnaryOp::sigmoid, 0, 0}, -4, 4, {}},
        {"tanh", [](const Tensor& x) { return tanh(x); }, {0, UnaryOp::tanh, 0, 0}, -3, 3, {}},
    };
    return cases;
}

struct BinaryCase {
    const char* name;
    Tensor (*fn)(const Tensor&, const Tensor&);
    BinaryOp op;
    double alpha;
};

const std::vector<BinaryCase>& binary_cases() {
    static const std::vector<BinaryCase> cases = {
        {"add", [](const Tensor& a, const Tensor& b) { return add(a, b); }, BinaryOp::add, 1.0},
        {"sub", [](const Tensor& a, const Tensor& b) { return sub(a, b); }, BinaryOp::add, -1.0},
        {"mul", [](const Tensor& a, const Tensor& b) { return mul(a, b); }, BinaryOp::mul, 1.0},
        {"div", [](const Tensor& a, const Tensor& b) { return div(a, b); }, BinaryOp::div, 1.0},
    };
    return cases;
}

// (a's shape, b's shape): same shape, one element (several spellings), a vector over the last dim.
const std::vector<std::pair<Shape, Shape>>& broadcast_cases() {
    static const std::vector<std::pair<Shape, Shape>> cases = {
        {{7, 13}, {7, 13}}, {{7, 13}, {1}}, {{7, 13}, {}},       {{7, 13}, {13}},
        {{3, 5, 9}, {9}},   {{3, 5, 9}, {3, 5, 9}}, {{3, 5, 9}, {1, 1}}, {{11}, {1}},
    };
    return cases;
}

std::string label(const char* op, const Shape& a, const Shape& b) { return str(op, shape_str(a), "x", shape_str(b)); }
void check_values(const Tensor& t, const std::vector<double>& expect, double tol, const std::string& what) {
    expect_close(t.to_vector<double>(), expect, Tol{tol, tol}, what);
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("binary ops: gradients for same-shape, one-element and last-dim broadcasts") {
        uint64_t seed = 100;
        for (const BinaryCase& bc : binary_cases())
            for (const auto& [sa, sb] : broadcast_cases()) {
                Tensor a = input(sa, ++seed, -1, 1).requires_grad_();
                Tensor b = divisor(sb, ++seed).requires_grad_();
                auto f = [&](const std::vector<Tensor>& in) { return bc.fn(in[0], in[1]); };
                gradcheck(f, {a, b}, label(bc.name, sa, sb));
            }
    }

    TEST_CASE("binary ops: one input requiring grad saves and returns only what is needed") {
        for (const BinaryCase& bc : binary_cases()) {
            Tensor a = input({5, 6}, 1, -1, 1), b = divisor({6}, 2);
            auto f = [&](const std::vector<Tensor>& in) { return bc.fn(in[0], in[1]); };
            gradcheck(f, {a.detach().requires_grad_(), b.detach()}, str(bc.name, " only a"));
            gradcheck(f, {a.detach(), b.detach().requires_grad_()}, str(bc.name, " only b"));
        }
    }

    TEST_CASE("binary forward broadcasts b over rows and everywhere") {
        Tensor a = from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3});
        Tensor v = from_vector(std::vector<double>{10, 20, 30}, {3});
        Tensor s = scalar_tensor(2.0, DType::f64);
        check_values(add(a, v), {11, 22, 33, 14, 25, 36}, 0, "a + row");
        check_values(sub(a, v), {-9, -18, -27, -6, -15, -24}, 0, "a - row");
        check_values(mul(a, v), {10, 40, 90, 40, 100, 180}, 0, "a * row");
        check_values(div(a, s), {0.5, 1, 1.5, 2, 2.5, 3}, 0, "a / scalar");
        check_values(mul(a, a), {1, 4, 9, 16, 25, 36}, 0, "a * a");
    }

    TEST_CASE("scalar arithmetic and operators") {
        Tensor x = input({3, 5}, 7, 0.5, 2.0);
        Tensor y = input({3, 5}, 8, -1, 1);
        std::vector<double> xv = x.to_vector<double>(), yv = y.to_vector<double>();
        auto expect = [&](const Tensor& t, const std::function<double(double, double)>& f, const char* what) {
            std::vector<double> ref(xv.size());
            for (size_t i = 0; i < xv.size(); ++i) ref[i] = f(xv[i], yv[i]);
            expect_close(t.to_vector<double>(), ref, tol_for(DType::f64), what);
        };
        expect(x + y, [](double a, double b) { return a + b; }, "x + y");
        expect(x - y, [](double a, double b) { return a - b; }, "x - y");
        expect(x * y, [](double a, double b) { return a * b; }, "x * y");
        expect(y / x, [](double a, double b) { return b / a; }, "y / x");
        expect(x + 2.0, [](double a, double) { return a + 2; }, "x + 2");
        expect(x - 2.0, [](double a, double) { return a - 2; }, "x - 2");
        expect(x * 3.0, [](double a, double) { return a * 3; }, "x * 3");
        expect(x / 4.0, [](double a, double) { return a / 4; }, "x / 4");
        expect(2.0 + x, [](double a, double) { return 2 + a; }, "2 + x");
        expect(2.0 - x, [](double a, double) { return 2 - a; }, "2 - x");
        expect(3.0 * x, [](double a, double) { return 3 * a; }, "3 * x");
        expect(2.0 / x, [](double a, double) { return 2 / a; }, "2 / x");
        expect(-x, [](double a, double) { return -a; }, "-x");
        expect(1 - x * y / 2, [](double a, double b) { return 1 - a * b / 2; }, "1 - x * y / 2");
    }

    TEST_CASE("unary ops: gradients away from kinks") {
        uint64_t seed = 300;
        for (const UnaryCase& uc : unary_cases())
            for (const Shape& s : {Shape{7, 13}, Shape{3, 5, 9}}) {
                Tensor x = input(s, ++seed, uc.lo, uc.hi, uc.kinks).requires_grad_();
                gradcheck([&](const std::vector<Tensor>& in) { return uc.fn(in[0]); }, {x},
                          str(uc.name, " ", shape_str(s)));
            }
        Tensor x = input({4, 3}, 9, -2, 2).requires_grad_();
        pow(x, 0.0).backward(ones({4, 3}, DType::f64));
        for (double g : x.grad().to_vector<double>()) CHECK(g == 0.0);
    }

    TEST_CASE("forward values against hand-computed numbers, f64 and f32") {
        for (DType dt : {DType::f64, DType::f32}) {
            const double tol = dt == DType::f64 ? 1e-15 : 1e-6;
            auto t = [&](std::vector<double> v) { return from_vector(v, {static_cast<int64_t>(v.size())}).to(dt); };
            check_values(gelu(t({1, -0.5, 0, 2.5, -3})),
                         {0.8413447460685429, -0.15426876936299344, 0, 2.4844758366855597, -0.00404969409489031},
                         tol, "gelu");
            check_values(sigmoid(t({0, 2, -1, -100, 100})), {0.5, 0.8807970779778823, 0.2689414213699951,
                                                              std::exp(-100.0), 1}, tol, "sigmoid");
            check_values(tanh(t({0.5, -2})), {0.46211715726000974, -0.9640275800758169}, tol, "tanh");
            check_values(relu6(t({-1, 3, 7, 6, 0, 5.5})), {0, 3, 6, 6, 0, 5.5}, 0, "relu6");
            check_values(relu(t({-1, 3, 0})), {0, 3, 0}, 0, "relu");
            check_values(clamp(t({-1, 0.25, 2}), -0.5, 1), {-0.5, 0.25, 1}, 0, "clamp");
            check_values(abs(t({-1.5, 2})), {1.5, 2}, 0, "abs");
            check_values(pow(t({-2, 3}), 3), {-8, 27}, tol * 27, "pow 3");
            check_values(pow(t({4, 0.25}), 0.5), {2, 0.5}, tol, "pow 0.5");
            check_values(sqrt(t({9, 2})), {3, M_SQRT2}, tol, "sqrt");
            check_values(exp(t({0, 1})), {1, M_E}, tol * 3, "exp");
            check_values(log(t({1, M_E})), {0, 1}, tol, "log");
        }
    }

    TEST_CASE("gradients at kinks follow PyTorch") {
        auto grad_at = [](const std::function<Tensor(const Tensor&)>& f, std::vector<double> v) {
            Tensor x = from_vector(v, {static_cast<int64_t>(v.size())}).requires_grad_();
            f(x).backward(ones(x.shape(), DType::f64));
            return x.grad().to_vector<double>();
        };
        CHECK(grad_at([](const Tensor& x) { return relu(x); }, {0, 1}) == std::vector<double>{0, 1});
        CHECK(grad_at([](const Tensor& x) { return relu6(x); }, {0, 6, 3}) == std::vector<double>{0, 0, 1});
        CHECK(grad_at([](const Tensor& x) { return clamp(x, -1, 1); }, {-1, 1, 2}) ==
              std::vector<double>{1, 1, 0});
        CHECK(grad_at([](const Tensor& x) { return abs(x); }, {0, -2}) == std::vector<double>{0, -1});
    }

    TEST_CASE("a composite graph: tanh(x w + bias) / sqrt(exp(x) + 1) * sigmoid(s)") {
        Tensor x = input({6, 10}, 21, -1, 1).requires_grad_();
        Tensor w = divisor({10}, 22).requires_grad_();
        Tensor bias = input({10}, 23, -1, 1).requires_grad_();
        Tensor s = input({1}, 24, -1, 1).requires_grad_();
        auto f = [](const std::vector<Tensor>& in) {
            return tanh(in[0] * in[1] + in[2]) / sqrt(exp(in[0]) + 1.0) * sigmoid(in[3]) - gelu(in[0]) * 0.5;
        };
        gradcheck(f, {x, w, bias, s}, "composite");
    }

    TEST_CASE("errors name the op and both shapes, dtypes or devices") {
        Tensor a = random_tensor({7, 13}, 1);
        for (const Shape& bad : {Shape{7}, Shape{13, 1}, Shape{7, 1}, Shape{2, 13}}) {
            try {
                add(a, random_tensor(bad, 2));
                FAIL("expected ShapeError for ", shape_str(bad));
            } catch (const ShapeError& e) {
                const std::string msg = e.what();
                CHECK(msg.find("add") != std::string::npos);
                CHECK(msg.find("[7, 13]") != std::string::npos);
                CHECK(msg.find(shape_str(bad)) != std::string::npos);
            }
        }
        CHECK_THROWS_AS(mul(random_tensor({13}, 3), a), ShapeError);
        CHECK_THROWS_AS(mul(a, random_tensor({7, 13}, 3, DType::f64)), DTypeError);
        CHECK_THROWS_AS(relu(zeros({3}, DType::i32)), DTypeError);
        CHECK_THROWS_AS(exp(zeros({3}, DType::bf16)), DTypeError);
        CHECK_THROWS_AS(add(a, Tensor()), Error);
        CHECK_THROWS_AS(clamp(a, 1, -1), Error);
        Tensor c = a.clone();
        CHECK_THROWS_AS(add_(c, random_tensor({13}, 4)), ShapeError);
        CHECK_THROWS_AS(add_(c, random_tensor({7, 13}, 4, DType::f64)), DTypeError);
    }

    TEST_CASE("add_ and mul_ update in place and record nothing") {
        Tensor p = input({4, 5}, 31, -1, 1, {}, DType::f32).requires_grad_();
        Tensor q = input({4, 5}, 32, -1, 1, {}, DType::f32);
        std::vector<float> pv = p.to_vector<float>(), qv = q.to_vector<float>();
        void* before = p.raw_data();
        add_(p, q, -0.5);
        mul_(p, 3.0);
        add_(p, q);
        CHECK(p.raw_data() == before);
        CHECK(p.is_leaf());
        CHECK(p.requires_grad());
        std::vector<float> ref(pv.size());
        for (size_t i = 0; i < pv.size(); ++i) ref[i] = (pv[i] - 0.5f * qv[i]) * 3.0f + qv[i];
        expect_close(p.to_vector<float>(), ref, tol_for(DType::f32), "add_/mul_");

        Tensor y = p * 2.0;  // a recorded result: in-place would silently break its graph
        CHECK_THROWS_AS(mul_(y, 2.0), AutogradError);
        NoGradGuard ng;
        CHECK_NOTHROW(mul_(y, 2.0));
    }

    TEST_CASE("broadcast gradient: zero rows give zeros, the sum does not depend on the thread count") {
        Tensor a = zeros({0, 5}, DType::f64).requires_grad_();
        Tensor b = input({5}, 41, -1, 1).requires_grad_();
        add(a, b).backward(zeros({0, 5}, DType::f64));
        CHECK(b.grad().shape() == Shape{5});
        for (double g : b.grad().to_vector<double>()) CHECK(g == 0.0);

        // 36003 elements: above the CPU kernels' parallel threshold, 47 row chunks.
        Tensor x = input({12001, 3}, 42, -1, 1, {}, DType::f32), s = input({3}, 43, -1, 1, {}, DType::f32);
        Tensor w = input({12001, 3}, 44, -1, 1, {}, DType::f32);
        std::vector<std::vector<float>> grads;
        for (int threads : {1, 2}) {
            omp_set_num_threads(threads);
            Tensor sl = s.detach().requires_grad_();
            mul(x, sl).backward(w);
            grads.push_back(sl.grad().to_vector<float>());
        }
        CHECK(grads[0] == grads[1]);
    }

    TEST_CASE("f32 agrees with f64 on a real NHWC shape") {
        const Shape act{2, 14, 14, 32};
        for (const UnaryCase& uc : unary_cases()) {
            Tensor x64 = input(act, 51, uc.lo, uc.hi, uc.kinks).requires_grad_();
            Tensor x32 = x64.detach().to(DType::f32).requires_grad_();
            Tensor w = input(act, 52, -1, 1);
            Tensor y64 = uc.fn(x64), y32 = uc.fn(x32);
            y64.backward(w);
            y32.backward(w.to(DType::f32));
            expect_close(y32, y64, tol_for(DType::f32), str(uc.name, " f32 forward"));
            expect_close(x32.grad(), x64.grad(), tol_for(DType::f32), str(uc.name, " f32 backward"));
        }
        for (const BinaryCase& bc : binary_cases()) {
            Tensor a64 = input(act, 53, -1, 1).requires_grad_(), b64 = divisor({32}, 54).requires_grad_();
            Tensor a32 = a64.detach().to(DType::f32).requires_grad_();
            Tensor b32 = b64.detach().to(DType::f32).requires_grad_();
            Tensor w = input(act, 55, -1, 1);
            bc.fn(a64, b64).backward(w);
            bc.fn(a32, b32).backward(w.to(DType::f32));
            expect_close(a32.grad(), a64.grad(), tol_for(DType::f32), str(bc.name, " f32 da"));
            expect_close(b32.grad(), b64.grad(), Tol{1e-4, 1e-4}, str(bc.name, " f32 db (392-row sum)"));
        }
    }
}

#ifdef SSLIGHT_EMU_AVAILABLE
namespace {

template <class T>
std::vector<T> stored(const std::vector<float>& v) {
    return std::vector<T>(v.begin(), v.end());
}
template <class T>
std::vector<float> as_float(const std::vector<T>& v) {
    return std::vector<float>(v.begin(), v.end());
}
// NaN: what an output buffer holds before a kernel writes it.
std::vector<float> unwritten(int64_t n) { return std::vector<float>(static_cast<size_t>(n), NAN); }
// Host values as the device stores them (bf16-rounded for bf16).
template <class T>
std::vector<float> rounded(const std::vector<double>& v) {
    return as_float(stored<T>(std::vector<float>(v.begin(), v.end())));
}

// An emulated device copy of `v` starting `off` elements into its buffer (off = 1 breaks 16-byte alignment).
template <class T>
struct DevVec {
    int64_t off;
    emu::Buffer<T> buf;
    DevVec(const std::vector<float>& v, int64_t o) : off(o), buf(padded(v, o)) {}
    static std::vector<T> padded(std::vector<float> v, int64_t o) {
        v.insert(v.begin(), static_cast<size_t>(o), 0.f);
        return stored<T>(v);
    }
    T* ptr() const { return buf.data() + off; }
    std::vector<float> get() const { return as_float(std::vector<T>(buf.begin() + off, buf.end())); }
};

template <class T>
const Tol kEmuTol = std::is_same<T, float>::value ? tol_emu_f32() : tol_for(DType::bf16);

template <class T>
void emu_unary(const UnaryCase& uc, int64_t n, int64_t off) {
    const std::string what = str(uc.name, " n=", n, " off=", off, " ", dtype_name(dtype_of<T>::value));
    UnaryParams p = uc.params;
    p.n = n;
    const std::vector<float> x = rounded<T>(values(n, 61 + n, uc.lo, uc.hi, uc.kinks));
    std::vector<float> y_ref(n), dx_ref(n);
    kernels::unary_fwd_cpu(p, x.data(), y_ref.data());
    DevVec<T> dx(x, off), dy(unwritten(n), off);
    kernels::emu::unary_fwd(p, dx.ptr(), dy.ptr(), nullptr);
    const std::vector<float> y = dy.get();
    expect_close(y, y_ref, kEmuTol<T>, what + " forward");

    const std::vector<float> saved = kernels::unary_saves_output(p.op) ? y : x;  // what the op keeps
    const std::vector<float> g = rounded<T>(values(n, 62 + n, -1, 1));
    kernels::unary_bwd_cpu(p, saved.data(), g.data(), dx_ref.data());
    DevVec<T> ds(saved, off), dg(g, off), dgx(unwritten(n), off);
    kernels::emu::unary_bwd(p, kernels::unary_needs_saved(p.op) ? ds.ptr() : nullptr, dg.ptr(), dgx.ptr(), nullptr);
    expect_close(dgx.get(), dx_ref, kEmuTol<T>, what + " backward");
}

// Forward, then backward with both gradients, only da and only db, against the CPU reference.
template <class T>
void emu_binary(const BinaryCase& bc, int64_t n, int64_t c, int64_t off) {
    const std::string what = str(bc.name, " n=", n, " c=", c, " off=", off, " ", dtype_name(dtype_of<T>::value));
    const BinaryParams p{n, c, bc.op, bc.alpha};
    const std::vector<float> a = rounded<T>(values(n, 71 + n, -1, 1));
    const std::vector<float> b = rounded<T>(divisor({c}, 72 + c).to_vector<double>());
    const std::vector<float> g = rounded<T>(values(n, 73 + n, -1, 1));
    std::vector<float> out_ref(n), da_ref(n), db_ref(c);
    kernels::binary_fwd_cpu(p, a.data(), b.data(), out_ref.data());
    kernels::binary_bwd_cpu(p, a.data(), b.data(), g.data(), da_ref.data(), db_ref.data());
    DevVec<T> dev_a(a, off), dev_b(b, off), dg(g, off), dout(unwritten(n), off);
    kernels::emu::binary_fwd(p, dev_a.ptr(), dev_b.ptr(), dout.ptr(), nullptr);
    expect_close(dout.get(), out_ref, kEmuTol<T>, what + " forward");
    emu::Buffer<float> ws(static_cast<size_t>(std::max<int64_t>(1, kernels::binary_bwd_workspace(p))));
    for (int mask : {3, 1, 2}) {
        DevVec<T> ga(unwritten(n), off), gb(unwritten(c), off);
        kernels::emu::binary_bwd(p, dev_a.ptr(), dev_b.ptr(), dg.ptr(), mask & 1 ? ga.ptr() : nullptr,
                                 mask & 2 ? gb.ptr() : nullptr, ws.data(), nullptr);
        if (mask & 1) expect_close(ga.get(), da_ref, kEmuTol<T>, what + " da");
        if (mask & 2) expect_close(gb.get(), db_ref, kEmuTol<T>, what + " db");
    }
}

}  // namespace

TEST_SUITE("emu") {
    TEST_CASE("unary kernels emulated vs CPU: f32 and bf16, packets and scalar tails, misaligned") {
        for (const UnaryCase& uc : unary_cases())
            for (int64_t off : {0, 1}) {
                emu_unary<float>(uc, 1237, off);
                emu_unary<bf16>(uc, 1237, off);
            }
        emu_unary<float>(unary_cases()[0], 3, 0);  // shorter than one packet
    }

    TEST_CASE("binary kernels emulated vs CPU: same shape, scalar, row vectors, both gradients or one") {
        // (n, c): same shape; scalar over several chunks; c = 13 (no packets); c = 64 and 8 (packets for f32 and
        // bf16) over several row chunks; a single row.
        const std::vector<std::pair<int64_t, int64_t>> shapes = {
            {1237, 1237}, {1237, 1}, {97 * 13, 13}, {300 * 64, 64}, {131 * 8, 8}, {40, 40}};
        for (const BinaryCase& bc : binary_cases())
            for (const auto& [n, c] : shapes)
                for (int64_t off : {0, 1}) {
                    emu_binary<float>(bc, n, c, off);
                    emu_binary<bf16>(bc, n, c, off);
                }
    }
}
#endif

TEST_SUITE("gpu") {
    // The op on cuda:0 in `dt` against the same op on the CPU in f32 (on bf16-rounded inputs for bf16),
    // forward and the gradient of every input. `misalign` runs the GPU op on views that start one row in.
    void gpu_vs_cpu(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& host,
                    DType dt, const std::string& what, bool misalign = false) {
        const Tol tol = dt == DType::bf16 ? tol_gpu_bf16() : tol_gpu_f32();
        std::vector<Tensor> ref, dev;
        for (const Tensor& h : host) {
            ref.push_back(h.to(dt).to(DType::f32).detach().requires_grad_());
            Tensor d = h.to(Device::cuda(0)).to(dt);
            if (misalign && d.dim() >= 2) {
                Shape s = d.shape();
                s[0] += 1;
                Tensor big = zeros(s, dt, Device::cuda(0));
                runtime::copy(big.slice(1, s[0]).raw_data(), d.device(), d.raw_data(), d.device(), d.nbytes());
                d = big.slice(1, s[0]);
            }
            dev.push_back(d.detach().requires_grad_());
        }
        Tensor y_ref = f(ref), y = f(dev);
        Tensor w = random_tensor(y_ref.shape(), 99).to(dt).to(DType::f32);
        y_ref.backward(w);
        y.backward(w.to(Device::cuda(0)).to(dt));
        expect_close(y, y_ref, tol, what + " forward");
        for (size_t i = 0; i < ref.size(); ++i)
            expect_close(dev[i].grad(), ref[i].grad(), tol, str(what, " grad ", i));
    }

    TEST_CASE("every unary op on the GPU matches the CPU, f32 and bf16") {
        for (const UnaryCase& uc : unary_cases())
            for (DType dt : {DType::f32, DType::bf16})
                for (const Shape& s : {Shape{37, 129}, Shape{8, 14, 14, 96}}) {
                    auto f = [&](const std::vector<Tensor>& in) { return uc.fn(in[0]); };
                    const std::vector<Tensor> x{input(s, 81, uc.lo, uc.hi, uc.kinks, DType::f32)};
                    gpu_vs_cpu(f, x, dt, str(uc.name, " ", shape_str(s), " ", dtype_name(dt)));
                    gpu_vs_cpu(f, x, dt, str(uc.name, " misaligned ", dtype_name(dt)), true);
                }
    }

    TEST_CASE("every binary op and broadcast on the GPU matches the CPU, f32 and bf16") {
        const std::vector<std::pair<Shape, Shape>> shapes = {
            {{37, 129}, {37, 129}}, {{37, 129}, {1}},        {{37, 129}, {129}},     {{8, 28, 28, 32}, {32}},
            {{4, 197, 384}, {384}}, {{64, 1000}, {}},        {{5, 3}, {3}}};
        for (const BinaryCase& bc : binary_cases())
            for (DType dt : {DType::f32, DType::bf16})
                for (const auto& [sa, sb] : shapes) {
                    auto f = [&](const std::vector<Tensor>& in) { return bc.fn(in[0], in[1]); };
                    const std::vector<Tensor> ab{input(sa, 82, -1, 1, {}, DType::f32), divisor(sb, 83, DType::f32)};
                    gpu_vs_cpu(f, ab, dt, str(label(bc.name, sa, sb), " ", dtype_name(dt)));
                    gpu_vs_cpu(f, ab, dt, str(label(bc.name, sa, sb), " misaligned ", dtype_name(dt)), true);
                }
    }

    TEST_CASE("GPU broadcast gradients are bitwise reproducible; in-place helpers; device mismatch") {
        const Device g = Device::cuda(0);
        Tensor x = random_tensor({8, 28, 28, 32}, 91).to(g), w = random_tensor({8, 28, 28, 32}, 92).to(g);
        std::vector<std::vector<float>> grads;
        for (int rep = 0; rep < 2; ++rep) {
            Tensor s = random_tensor({32}, 93).to(g).requires_grad_();
            Tensor k = random_tensor({1}, 94).to(g).requires_grad_();
            (x * s + k).backward(w);
            grads.push_back(s.grad().to_vector<float>());
            grads.push_back(k.grad().to_vector<float>());
        }
        CHECK(grads[0] == grads[2]);
        CHECK(grads[1] == grads[3]);

        Tensor p = random_tensor({517, 3}, 95), q = random_tensor({517, 3}, 96);
        Tensor pg = p.to(g), qg = q.to(g);
        add_(p, q, 0.25);
        mul_(p, -1.5);
        add_(pg, qg, 0.25);
        mul_(pg, -1.5);
        expect_close(pg, p, tol_gpu_f32(), "add_/mul_ on the GPU");
        CHECK_THROWS_AS(add(p, qg), DeviceError);
        CHECK_THROWS_AS(exp(p.to(DType::f64).to(g)), DTypeError);
    }
}
