// depthwise_conv2d: hand-computed values, a naive loop written here, finite-difference gradients in double
// (k 3/5, stride 1/2, padding 0-2, odd sizes and channel counts, with and without bias), the gradient
// contract (dw/dbias accumulate in the kernels, the op returns fresh gradients, needs-grad masks), error
// paths; the dwconv2d.cu kernels through the SIMT emulator against the CPU reference (f32, bf16, vector and
// scalar channel paths); and the op on the GPU against the CPU on MobileNetV2 and odd shapes.
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "engine/autograd.h"
#include "engine/ops/dwconv2d.h"
#include "kernels/dwconv2d.h"
#include "tests/compare.h"
#include "tests/gradcheck.h"
#ifdef SSLIGHT_EMU_AVAILABLE
#include "emu/emu.h"
#endif

using namespace sslight;
using namespace sslight::test;

namespace {

struct DwCase {
    Shape x;  // [N, H, W, C]
    int k, s, pad;
    bool bias;
};

std::string case_name(const DwCase& c) {
    return shape_str(c.x) + " k" + std::to_string(c.k) + " s" + std::to_string(c.s) + " p" + std::to_string(c.pad) +
           (c.bias ? " bias" : "");
}

// y[n,i,j,c] = b[c] + sum_{u,v} w[c,u,v] x[n, i*s-p+u, j*s-p+v, c], straight from the definition.
std::vector<double> naive_dwconv(const std::vector<double>& x, const std::vector<double>& w,
                                 const std::vector<double>* b, const Shape& s, int k, int st, int pad) {
    const int64_t N = s[0], H = s[1], W = s[2], C = s[3];
    const int64_t Ho = (H + 2 * pad - k) / st + 1, Wo = (W + 2 * pad - k) / st + 1;
    std::vector<double> y(static_cast<size_t>(N * Ho * Wo * C));
    for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < Ho; ++i)
            for (int64_t j = 0; j < Wo; ++j)
                for (int64_t c = 0; c < C; ++c) {
                    double acc = b ? (*b)[c] : 0.0;
                    for (int64_t u = 0; u < k; ++u)
                        for (int64_t v = 0; v < k; ++v) {
                            const int64_t ih = i * st - pad + u, iw = j * st - pad + v;
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                            acc += w[(c * k + u) * k + v] * x[((n * H + ih) * W + iw) * C + c];
                        }
                    y[((n * Ho + i) * Wo + j) * C + c] = acc;
                }
    return y;
}

void check_forward_vs_naive(const DwCase& c, DType dt, uint64_t seed) {
    const int64_t C = c.x[3];
    Tensor x = random_tensor(c.x, seed, DType::f64), w = random_tensor({C, c.k, c.k, 1}, seed + 1, DType::f64);
    Tensor b = c.bias ? random_tensor({C}, seed + 2, DType::f64) : Tensor();
    std::vector<double> bv = c.bias ? b.to_vector<double>() : std::vector<double>();
    std::vector<double> ref = naive_dwconv(x.to_vector<double>(), w.to_vector<double>(), c.bias ? &bv : nullptr, c.x,
                                           c.k, c.s, c.pad);
    Tensor y = depthwise_conv2d(x.to(dt), w.to(dt), c.bias ? b.to(dt) : Tensor(), c.s, c.pad);
    CHECK(y.dtype() == dt);
    expect_close(y.to_vector<double>(), ref, tol_for(dt), "forward vs naive " + case_name(c));
}

void check_gradients(const DwCase& c, uint64_t seed) {
    const int64_t C = c.x[3];
    std::vector<Tensor> in{random_tensor(c.x, seed, DType::f64).requires_grad_(),
                           random_tensor({C, c.k, c.k, 1}, seed + 1, DType::f64).requires_grad_()};
    if (c.bias) in.push_back(random_tensor({C}, seed + 2, DType::f64).requires_grad_());
    const int s = c.s, pad = c.pad;
    gradcheck([s, pad](const std::vector<Tensor>& t) {
        return depthwise_conv2d(t[0], t[1], t.size() > 2 ? t[2] : Tensor(), s, pad);
    }, in, "depthwise_conv2d " + case_name(c), seed + 3);
}

// Runs `fn` expecting an exception of type E whose message contains every string of `parts`.
template <class E, class Fn>
void expect_error(Fn fn, std::initializer_list<std::string> parts) {
    try {
        fn();
        FAIL("expected an exception");
    } catch (const E& e) {
        const std::string msg = e.what();
        for (const std::string& p : parts) CHECK_MESSAGE(msg.find(p) != std::string::npos, msg, " lacks '", p, "'");
    }
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("hand-computed 3x3 depthwise values, with padding and bias") {
        // One image 3x3, two channels: channel 0 all ones, channel 1 = 1..9; filters 1..9 and all ones.
        std::vector<double> x(18), w(18);
        for (int i = 0; i < 9; ++i) x[2 * i] = 1, x[2 * i + 1] = i + 1, w[i] = i + 1, w[9 + i] = 1;
        Tensor y = depthwise_conv2d(from_vector(x, {1, 3, 3, 2}), from_vector(w, {2, 3, 3, 1}),
                                    from_vector(std::vector<double>{0.5, -1}, {2}), 1, 1);
        REQUIRE(y.shape() == Shape{1, 3, 3, 2});
        std::vector<double> v = y.to_vector<double>();
        CHECK(v[8] == 45.5);    // centre, channel 0: 1 + ... + 9 + bias
        CHECK(v[0] == 28.5);    // corner (0, 0): taps 5, 6, 8, 9
        CHECK(v[9] == 45 - 1);  // centre, channel 1: 1 + ... + 9 - 1
        CHECK(v[1] == 12 - 1);  // corner (0, 0), channel 1: x 1, 2, 4, 5
        Tensor y2 = depthwise_conv2d(from_vector(x, {1, 3, 3, 2}), from_vector(w, {2, 3, 3, 1}), Tensor(), 2, 1);
        REQUIRE(y2.shape() == Shape{1, 2, 2, 2});
        CHECK(y2.to_vector<double>()[6] == 1 + 2 + 4 + 5);  // (1, 1) at stride 2 is input (2, 2): taps 1, 2, 4, 5
    }

    TEST_CASE("forward matches a naive loop (f64, f32; odd and MobileNetV2 shapes)") {
        uint64_t seed = 10;
        for (int k : {3, 5})
            for (int s : {1, 2})
                for (int pad : {0, 1, 2}) {
                    check_forward_vs_naive({{2, 7, 9, 13}, k, s, pad, pad != 1}, DType::f64, seed += 3);
                    check_forward_vs_naive({{1, 5, 6, 4}, k, s, pad, pad == 1}, DType::f32, seed += 3);
                }
        check_forward_vs_naive({{2, 14, 14, 96}, 3, 1, 1, false}, DType::f32, seed += 3);
        check_forward_vs_naive({{1, 28, 28, 144}, 3, 2, 1, true}, DType::f32, seed += 3);
        check_forward_vs_naive({{1, 7, 7, 160}, 3, 1, 1, false}, DType::f32, seed += 3);
    }

    TEST_CASE("finite-difference gradients: k 3/5, stride 1/2, padding 0/1/2, odd sizes and channels") {
        uint64_t seed = 100;
        for (int k : {3, 5})
            for (int s : {1, 2})
                for (int pad : {0, 1, 2}) {
                    check_gradients({{2, 7, 9, 3}, k, s, pad, (k + s + pad) % 2 == 0}, seed += 4);
                    check_gradients({{1, 5, 5, 5}, k, s, pad, (k + s + pad) % 2 == 1}, seed += 4);
                }
        check_gradients({{1, 6, 5, 13}, 3, 2, 1, true}, seed += 4);
        check_gradients({{1, 8, 7, 13}, 5, 1, 2, false}, seed += 4);
    }

    TEST_CASE("weight and bias gradients accumulate in the kernel; the op returns fresh ones") {
        const kernels::DwConv2dParams p = kernels::dwconv2d_params(2, 6, 5, 3, 3, 2, 1);
        const std::vector<double> x = random_vector<double>(2 * 6 * 5 * 3, 1);
        const std::vector<double> dy = random_vector<double>(size_t(2 * p.Ho * p.Wo * 3), 2);
        std::vector<double> dw1(27, 0.0), db1(3, 0.0), dw2(27, 0.25), db2(3, -0.5);
        kernels::dwconv2d_bwd_weight_cpu(p, x.data(), dy.data(), dw1.data(), db1.data());
        kernels::dwconv2d_bwd_weight_cpu(p, x.data(), dy.data(), dw2.data(), db2.data());
        for (int i = 0; i < 27; ++i) CHECK(dw2[i] == doctest::Approx(dw1[i] + 0.25).epsilon(1e-12));
        for (int i = 0; i < 3; ++i) CHECK(db2[i] == doctest::Approx(db1[i] - 0.5).epsilon(1e-12));
        double sum0 = 0;  // the bias gradient is the sum of dy over N, Ho, Wo
        for (size_t i = 0; i < dy.size(); i += 3) sum0 += dy[i];
        CHECK(db1[0] == doctest::Approx(sum0).epsilon(1e-12));

        // Two backward passes through the op sum into .grad exactly like twice the gradient of one.
        Tensor xt = from_vector(x, {2, 6, 5, 3}), w = random_tensor({3, 3, 3, 1}, 3, DType::f64).requires_grad_();
        Tensor g = from_vector(dy, {2, p.Ho, p.Wo, 3});
        depthwise_conv2d(xt, w, Tensor(), 2, 1).backward(g);
        std::vector<double> once = w.grad().to_vector<double>();
        depthwise_conv2d(xt, w, Tensor(), 2, 1).backward(g);
        std::vector<double> twice = w.grad().to_vector<double>();
        for (size_t i = 0; i < once.size(); ++i) CHECK(twice[i] == doctest::Approx(2 * once[i]).epsilon(1e-12));
        expect_close(once, dw1, tol_for(DType::f64), "op weight gradient vs kernel");
    }

    TEST_CASE("needs-grad masks: only the inputs that require grad receive one") {
        Tensor x = random_tensor({1, 5, 7, 4}, 20, DType::f64), w = random_tensor({4, 3, 3, 1}, 21, DType::f64);
        Tensor b = random_tensor({4}, 22, DType::f64).requires_grad_();
        Tensor y = depthwise_conv2d(x, w, b, 1, 1);
        Tensor dy = random_tensor(y.shape(), 23, DType::f64);
        y.backward(dy);
        CHECK(!x.grad().defined());
        CHECK(!w.grad().defined());
        std::vector<double> g = dy.to_vector<double>(), db = b.grad().to_vector<double>();
        for (int c = 0; c < 4; ++c) {
            double s = 0;
            for (size_t i = c; i < g.size(); i += 4) s += g[i];
            CHECK(db[c] == doctest::Approx(s).epsilon(1e-12));
        }
        x.requires_grad_();
        depthwise_conv2d(x, w, Tensor(), 2, 0).backward(random_tensor({1, 2, 3, 4}, 24, DType::f64));
        CHECK(x.grad().defined());
        CHECK(!w.grad().defined());
    }

    TEST_CASE("errors name the shapes and the supported set") {
        Tensor x = random_tensor({2, 8, 8, 6}, 30);
        expect_error<ShapeError>([&] { depthwise_conv2d(x, random_tensor({5, 3, 3, 1}, 31), Tensor(), 1, 1); },
                                 {"[5, 3, 3, 1]", "[2, 8, 8, 6]", "[C, k, k, 1]"});
        expect_error<ShapeError>([&] { depthwise_conv2d(x, random_tensor({6, 3, 3, 6}, 31), Tensor(), 1, 1); },
                                 {"[6, 3, 3, 6]", "[2, 8, 8, 6]"});
        expect_error<ShapeError>([&] { depthwise_conv2d(x, random_tensor({6, 3, 5, 1}, 31), Tensor(), 1, 1); },
                                 {"[6, 3, 5, 1]"});
        expect_error<ShapeError>([&] { depthwise_conv2d(x, random_tensor({6, 7, 7, 1}, 31), Tensor(), 1, 3); },
                                 {"kernel size 7", "3, 5"});
        expect_error<ShapeError>([&] { depthwise_conv2d(x, random_tensor({6, 3, 3, 1}, 31), Tensor(), 3, 1); },
                                 {"stride 3", "1, 2"});
        expect_error<ShapeError>([&] { depthwise_conv2d(x, random_tensor({6, 3, 3, 1}, 31), Tensor(), 1, -1); },
                                 {"padding"});
        expect_error<ShapeError>(
            [&] { depthwise_conv2d(x, random_tensor({6, 3, 3, 1}, 31), random_tensor({5}, 32), 1, 1); },
            {"[5]", "[2, 8, 8, 6]"});
        expect_error<ShapeError>(
            [&] { depthwise_conv2d(random_tensor({1, 2, 2, 6}, 33), random_tensor({6, 5, 5, 1}, 31), Tensor(), 1, 0); },
            {"empty output", "[1, 2, 2, 6]"});
        expect_error<ShapeError>([&] { depthwise_conv2d(random_tensor({8, 8, 6}, 34), x, Tensor(), 1, 1); },
                                 {"[8, 8, 6]"});
        expect_error<DTypeError>(
            [&] { depthwise_conv2d(x, random_tensor({6, 3, 3, 1}, 31, DType::f64), Tensor(), 1, 1); }, {"f64", "f32"});
        const Tensor wb = random_tensor({6, 3, 3, 1}, 31).to(DType::bf16);
        expect_error<DTypeError>([&] { depthwise_conv2d(x.to(DType::bf16), wb, Tensor(), 1, 1); }, {"bf16", "CPU"});
        CHECK_THROWS_AS(depthwise_conv2d(x, Tensor(), Tensor(), 1, 1), Error);
    }
}

#ifdef SSLIGHT_EMU_AVAILABLE
namespace {

template <class T>
std::vector<float> as_f32(const emu::Buffer<T>& b) {
    std::vector<float> v(b.size());
    for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(b[i]);
    return v;
}

// T-rounded random values, returned as T (for the emulated kernels) and as f32 (for the CPU reference).
template <class T>
void rounded(size_t n, uint64_t seed, std::vector<T>& t, std::vector<float>& f) {
    std::vector<float> r = random_vector<float>(n, seed);
    t.resize(n), f.resize(n);
    for (size_t i = 0; i < n; ++i) t[i] = T(r[i]), f[i] = static_cast<float>(t[i]);
}

// The three emulated kernels of T against the CPU reference in f32 on the same T-rounded inputs; dw and dbias
// start from non-zero values to check the += contract.
template <class T>
void emu_dwconv(const DwCase& c, uint64_t seed) {
    const kernels::DwConv2dParams p =
        kernels::dwconv2d_params(int(c.x[0]), int(c.x[1]), int(c.x[2]), int(c.x[3]), c.k, c.s, c.pad);
    const size_t nx = size_t(shape_numel(c.x)), ny = size_t(p.B) * p.Ho * p.Wo * p.C, nw = size_t(p.C) * c.k * c.k;
    std::vector<T> x, dy, w, b, dw0, db0;
    std::vector<float> xf, dyf, wf, bf, dwf, dbf;
    rounded(nx, seed, x, xf), rounded(ny, seed + 1, dy, dyf), rounded(nw, seed + 2, w, wf);
    rounded(size_t(p.C), seed + 3, b, bf), rounded(nw, seed + 4, dw0, dwf), rounded(size_t(p.C), seed + 5, db0, dbf);

    std::vector<float> y_ref(ny), dx_ref(nx);
    kernels::dwconv2d_fwd_cpu(p, xf.data(), wf.data(), c.bias ? bf.data() : nullptr, y_ref.data());
    kernels::dwconv2d_bwd_input_cpu(p, dyf.data(), wf.data(), dx_ref.data());
    kernels::dwconv2d_bwd_weight_cpu(p, xf.data(), dyf.data(), dwf.data(), c.bias ? dbf.data() : nullptr);

    emu::Buffer<T> bx(x), by(ny), bdy(dy), bdx(nx), bw(w), bb(b), bdw(dw0), bdb(db0);
    emu::Buffer<float> ws(kernels::emu::dwconv2d_bwd_weight_workspace(p));
    kernels::emu::dwconv2d_fwd(p, bx.data(), bw.data(), c.bias ? bb.data() : nullptr, by.data(), nullptr);
    kernels::emu::dwconv2d_bwd_input(p, bdy.data(), bw.data(), bdx.data(), nullptr);
    kernels::emu::dwconv2d_bwd_weight(p, bx.data(), bdy.data(), bdw.data(), c.bias ? bdb.data() : nullptr, ws.data(),
                                      nullptr);
    const bool f32 = std::is_same<T, float>::value;
    const Tol tol = f32 ? tol_emu_f32() : tol_for(DType::bf16);
    const std::string what = std::string("emu dwconv2d ") + (f32 ? "f32 " : "bf16 ") + case_name(c);
    expect_close(as_f32(by), y_ref, tol, what + " forward");
    expect_close(as_f32(bdx), dx_ref, tol, what + " backward input");
    expect_close(as_f32(bdw), dwf, f32 ? tol_emu_f32() : Tol{5e-2, 2e-2}, what + " backward weight");
    if (c.bias) expect_close(as_f32(bdb), dbf, f32 ? tol_emu_f32() : Tol{5e-2, 2e-2}, what + " backward bias");
    else CHECK(as_f32(bdb) == dbf);  // no bias: dbias untouched
}

}  // namespace

TEST_SUITE("emu") {
    TEST_CASE("dwconv2d kernels emulated vs CPU, f32: vector (C % 4 == 0) and scalar paths") {
        uint64_t seed = 500;
        for (int k : {3, 5})
            for (int s : {1, 2}) {
                emu_dwconv<float>({{2, 7, 9, 8}, k, s, 1, true}, seed += 6);   // float4 path
                emu_dwconv<float>({{1, 9, 7, 6}, k, s, 2, false}, seed += 6);  // scalar path
                emu_dwconv<float>({{1, 5, 6, 3}, k, s, 0, true}, seed += 6);
            }
        emu_dwconv<float>({{1, 6, 5, 136}, 3, 2, 1, true}, seed += 6);  // two channel blocks
        emu_dwconv<float>({{2, 28, 28, 32}, 3, 1, 1, false}, seed += 6);  // MobileNetV2 layers at small size
        emu_dwconv<float>({{2, 14, 14, 96}, 3, 2, 1, false}, seed += 6);
        emu_dwconv<float>({{2, 7, 7, 960}, 3, 1, 1, true}, seed += 6);
    }

    TEST_CASE("dwconv2d kernels emulated vs CPU, bf16: 8-wide, 4-wide (5x5) and scalar paths") {
        uint64_t seed = 700;
        for (int s : {1, 2}) {
            emu_dwconv<bf16>({{2, 7, 9, 16}, 3, s, 1, true}, seed += 6);   // 8 x bf16 (uint4)
            emu_dwconv<bf16>({{1, 9, 7, 12}, 3, s, 2, false}, seed += 6);  // scalar: 12 % 8 != 0
            emu_dwconv<bf16>({{1, 7, 9, 12}, 5, s, 2, true}, seed += 6);   // 4 x bf16 (uint2) for 5x5
            emu_dwconv<bf16>({{1, 5, 6, 5}, 5, s, 0, false}, seed += 6);
        }
        emu_dwconv<bf16>({{1, 5, 7, 144}, 3, 2, 1, false}, seed += 6);  // two channel blocks
        emu_dwconv<bf16>({{2, 28, 28, 32}, 3, 1, 1, false}, seed += 6);  // MobileNetV2 layers at small size
        emu_dwconv<bf16>({{2, 14, 14, 144}, 3, 2, 1, false}, seed += 6);
        emu_dwconv<bf16>({{2, 7, 7, 960}, 3, 1, 1, true}, seed += 6);
    }
}
#endif

namespace {

// The op on cuda:0 in `dt` against the CPU op in f64 on the same dt-rounded values: forward and the gradients
// of x, weight and bias. bf16 is compared with its table tolerance; f32 with the GPU f32 one.
void dwconv_gpu_vs_cpu(const DwCase& c, DType dt, uint64_t seed) {
    const Device g = Device::cuda(0);
    const int64_t C = c.x[3];
    auto make = [&](const Shape& s, uint64_t sd) { return random_tensor(s, sd).to(dt).to(DType::f64); };
    Tensor x = make(c.x, seed), w = make({C, c.k, c.k, 1}, seed + 1);
    Tensor b = c.bias ? make({C}, seed + 2) : Tensor();
    Tensor cpu[3] = {x.clone().requires_grad_(), w.clone().requires_grad_(),
                     c.bias ? b.clone().requires_grad_() : Tensor()};
    Tensor y = depthwise_conv2d(cpu[0], cpu[1], cpu[2], c.s, c.pad);
    Tensor dy = make(y.shape(), seed + 3);
    y.backward(dy);

    Tensor gpu[3] = {x.to(dt).to(g).requires_grad_(), w.to(dt).to(g).requires_grad_(),
                     c.bias ? b.to(dt).to(g).requires_grad_() : Tensor()};
    Tensor yg = depthwise_conv2d(gpu[0], gpu[1], gpu[2], c.s, c.pad);
    CHECK(yg.dtype() == dt);
    yg.backward(dy.to(dt).to(g));
    const Tol tol = dt == DType::bf16 ? tol_gpu_bf16() : tol_gpu_f32();
    const std::string what = "gpu " + std::string(dtype_name(dt)) + " " + case_name(c);
    expect_close(yg.to(Device::cpu()), y, tol, what + " forward");
    const char* names[] = {" dx", " dw", " dbias"};
    for (int i = 0; i < (c.bias ? 3 : 2); ++i) {
        // Parameter gradients are sums over N*Ho*Wo terms: atol scales with their typical size sqrt(n) / 3.
        const double scale = i == 0 ? 1.0 : std::sqrt(double(y.numel() / C)) / 3;
        expect_close(gpu[i].grad().to(Device::cpu()), cpu[i].grad(), Tol{tol.atol * scale, tol.rtol},
                     what + names[i]);
    }
}

}  // namespace

TEST_SUITE("gpu") {
    TEST_CASE("depthwise_conv2d on the GPU matches the CPU: MobileNetV2 shapes (batch 2) and odd shapes") {
        const DwCase cases[] = {
            {{2, 112, 112, 32}, 3, 1, 1, false}, {{2, 112, 112, 96}, 3, 2, 1, false},
            {{2, 56, 56, 144}, 3, 1, 1, false},  {{2, 56, 56, 144}, 3, 2, 1, true},
            {{2, 28, 28, 192}, 3, 2, 1, false},  {{2, 14, 14, 576}, 3, 1, 1, false},
            {{2, 7, 7, 960}, 3, 1, 1, true},     {{3, 7, 9, 13}, 3, 2, 1, true},
            {{2, 9, 7, 5}, 5, 1, 2, false},      {{1, 11, 13, 24}, 5, 2, 2, true},
            {{2, 6, 5, 12}, 3, 2, 0, false},     {{1, 17, 15, 200}, 5, 2, 1, true},
        };
        uint64_t seed = 900;
        for (DType dt : {DType::f32, DType::bf16})
            for (const DwCase& c : cases) dwconv_gpu_vs_cpu(c, dt, seed += 4);
    }

    TEST_CASE("GPU errors: mixed devices, f64 on the GPU") {
        const Device g = Device::cuda(0);
        Tensor x = random_tensor({1, 6, 6, 8}, 1010), w = random_tensor({8, 3, 3, 1}, 1011);
        expect_error<DeviceError>([&] { depthwise_conv2d(x.to(g), w, Tensor(), 1, 1); }, {"cuda:0", "cpu"});
        expect_error<DTypeError>(
            [&] { depthwise_conv2d(x.to(DType::f64).to(g), w.to(DType::f64).to(g), Tensor(), 1, 1); }, {"f64"});
    }

    TEST_CASE("the GPU backward is deterministic: two runs give identical bits") {
        const Device g = Device::cuda(0);
        Tensor x = random_tensor({4, 28, 28, 144}, 1000).to(g), dy = random_tensor({4, 14, 14, 144}, 1001).to(g);
        std::vector<float> first;
        for (int run = 0; run < 2; ++run) {
            Tensor w = random_tensor({144, 3, 3, 1}, 1002).to(g).requires_grad_();
            depthwise_conv2d(x, w, Tensor(), 2, 1).backward(dy);
            std::vector<float> got = w.grad().to_vector<float>();
            if (run == 0) first = got;
            else CHECK(got == first);
        }
    }
}
