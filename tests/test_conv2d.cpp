// conv2d: forward against a naive direct convolution written here (f64 and f32), finite-difference gradient
// checks in double (1x1, 3x3/s2, ResNet stem 7x7/s2, dilation, groups 2 and 3, non-square kernels, with and
// without bias), chunked im2col equals one-shot, the depthwise routing equals the generic grouped kernels,
// error messages; on a GPU, cuDNN forward and backward against the CPU for f32 and bf16.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "engine/autograd.h"
#include "engine/ops/conv2d.h"
#include "kernels/conv2d.h"
#include "tests/compare.h"
#include "tests/gradcheck.h"

using namespace sslight;
using namespace sslight::test;

namespace {

struct ConvCase {
    const char* name;
    Shape x;                  // [N, H, W, Cin]
    int64_t K, kh, kw;        // Cout and kernel size
    Conv2dArgs a;
    bool bias;
};

Conv2dArgs args(int s_h, int s_w, int p_h, int p_w, int d_h = 1, int d_w = 1, int groups = 1) {
    Conv2dArgs a;
    a.stride_h = s_h, a.stride_w = s_w, a.pad_h = p_h, a.pad_w = p_w, a.dil_h = d_h, a.dil_w = d_w, a.groups = groups;
    return a;
}

Shape weight_shape(const ConvCase& c) { return {c.K, c.kh, c.kw, c.x[3] / c.a.groups}; }

kernels::Conv2dParams params_of(const Shape& x, const Shape& w, const Conv2dArgs& a) {
    kernels::Conv2dParams p;
    p.N = x[0], p.H = x[1], p.W = x[2], p.C = x[3], p.K = w[0], p.kh = w[1], p.kw = w[2];
    p.stride_h = a.stride_h, p.stride_w = a.stride_w, p.pad_h = a.pad_h, p.pad_w = a.pad_w;
    p.dil_h = a.dil_h, p.dil_w = a.dil_w, p.groups = a.groups;
    p.Ho = kernels::conv2d_out_size(p.H, p.kh, p.stride_h, p.pad_h, p.dil_h);
    p.Wo = kernels::conv2d_out_size(p.W, p.kw, p.stride_w, p.pad_w, p.dil_w);
    return p;
}

// The definition, one output element at a time, in double.
std::vector<double> naive_conv2d(const kernels::Conv2dParams& p, const std::vector<double>& x,
                                 const std::vector<double>& w, const std::vector<double>& b) {
    std::vector<double> y(static_cast<size_t>(p.N * p.Ho * p.Wo * p.K));
    const int64_t Cg = p.C / p.groups, Kg = p.K / p.groups;
    for (int64_t n = 0; n < p.N; ++n)
        for (int64_t oh = 0; oh < p.Ho; ++oh)
            for (int64_t ow = 0; ow < p.Wo; ++ow)
                for (int64_t k = 0; k < p.K; ++k) {
                    double s = b.empty() ? 0.0 : b[k];
                    const int64_t g = k / Kg;
                    for (int64_t i = 0; i < p.kh; ++i)
                        for (int64_t j = 0; j < p.kw; ++j) {
                            const int64_t ih = oh * p.stride_h - p.pad_h + i * p.dil_h;
                            const int64_t iw = ow * p.stride_w - p.pad_w + j * p.dil_w;
                            if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) continue;
                            for (int64_t c = 0; c < Cg; ++c)
                                s += x[((n * p.H + ih) * p.W + iw) * p.C + g * Cg + c] *
                                     w[((k * p.kh + i) * p.kw + j) * Cg + c];
                        }
                    y[((n * p.Ho + oh) * p.Wo + ow) * p.K + k] = s;
                }
    return y;
}

// |got - ref| <= atol · max(1, max |ref|) + rtol · |ref|: long f32 sums carry an error proportional to the
// magnitude of their terms, not of their (possibly cancelling) result.
void expect_close_scaled(const Tensor& got, const Tensor& ref, Tol tol, const std::string& what) {
    REQUIRE_MESSAGE(got.shape() == ref.shape(), what, ": shape ", shape_str(got.shape()), " vs ",
                    shape_str(ref.shape()));
    std::vector<double> r = ref.to_vector<double>();
    double m = 1.0;
    for (double v : r) m = std::max(m, std::fabs(v));
    expect_close(got.to_vector<double>(), r, Tol{tol.atol * m, tol.rtol}, what);
}

const std::vector<ConvCase>& cases() {
    static const std::vector<ConvCase> c = {
        {"1x1", {2, 5, 7, 3}, 4, 1, 1, args(1, 1, 0, 0), true},
        {"1x1 stride 2 (downsample)", {2, 7, 5, 4}, 6, 1, 1, args(2, 2, 0, 0), false},
        {"1x1 groups 2", {1, 3, 5, 4}, 6, 1, 1, args(1, 1, 0, 0, 1, 1, 2), true},
        {"3x3 stride 2 pad 1", {2, 7, 9, 3}, 5, 3, 3, args(2, 2, 1, 1), true},
        {"3x3 stride 1 pad 1 no bias", {1, 6, 5, 4}, 3, 3, 3, args(1, 1, 1, 1), false},
        {"7x7 stride 2 pad 3 (stem)", {1, 9, 11, 3}, 4, 7, 7, args(2, 2, 3, 3), false},
        {"3x3 dilation 2", {1, 9, 8, 3}, 4, 3, 3, args(1, 1, 2, 2, 2, 2), true},
        {"3x3 groups 2", {2, 5, 6, 4}, 6, 3, 3, args(1, 1, 1, 1, 1, 1, 2), true},
        {"3x3 groups 3 stride 2", {1, 7, 7, 6}, 9, 3, 3, args(2, 2, 1, 1, 1, 1, 3), false},
        {"1x3 pad (0, 1)", {2, 4, 7, 3}, 5, 1, 3, args(1, 1, 0, 1), true},
        {"3x1 stride (2, 1) dilation (1, 2)", {1, 9, 6, 2}, 3, 3, 1, args(2, 1, 1, 0, 1, 2), true},
        {"2x4 asymmetric everything", {2, 8, 9, 4}, 6, 2, 4, args(1, 2, 1, 2, 2, 1, 2), true},
    };
    return c;
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("conv2d forward matches a naive direct convolution (f64 and f32)") {
        uint64_t seed = 100;
        for (const ConvCase& c : cases()) {
            Tensor x = random_tensor(c.x, ++seed, DType::f64);
            Tensor w = random_tensor(weight_shape(c), ++seed, DType::f64);
            Tensor b = c.bias ? random_tensor({c.K}, ++seed, DType::f64) : Tensor();
            const kernels::Conv2dParams p = params_of(c.x, weight_shape(c), c.a);
            std::vector<double> ref = naive_conv2d(p, x.to_vector<double>(), w.to_vector<double>(),
                                                   c.bias ? b.to_vector<double>() : std::vector<double>());
            Tensor y = conv2d(x, w, b, c.a);
            CHECK(y.shape() == Shape{p.N, p.Ho, p.Wo, p.K});
            expect_close(y.to_vector<double>(), ref, tol_for(DType::f64), std::string(c.name) + " f64");
            Tensor y32 = conv2d(x.to(DType::f32), w.to(DType::f32), c.bias ? b.to(DType::f32) : Tensor(), c.a);
            CHECK(y32.dtype() == DType::f32);
            expect_close(y32.to_vector<double>(), ref, tol_for(DType::f32), std::string(c.name) + " f32");
        }
    }

    TEST_CASE("conv2d forward on a ResNet-like shape matches the naive loop") {
        const ConvCase c{"resnet 3x3", {2, 14, 14, 32}, 32, 3, 3, args(1, 1, 1, 1), false};
        Tensor x = random_tensor(c.x, 7), w = random_tensor(weight_shape(c), 8, DType::f32, -0.2, 0.2);
        const kernels::Conv2dParams p = params_of(c.x, weight_shape(c), c.a);
        std::vector<double> ref = naive_conv2d(p, x.to_vector<double>(), w.to_vector<double>(), {});
        expect_close(conv2d(x, w, Tensor(), c.a).to_vector<double>(), ref, tol_for(DType::f32), c.name);
    }

    TEST_CASE("conv2d gradients match finite differences in double") {
        uint64_t seed = 500;
        for (const ConvCase& c : cases()) {
            std::vector<Tensor> in = {random_tensor(c.x, ++seed, DType::f64),
                                      random_tensor(weight_shape(c), ++seed, DType::f64)};
            if (c.bias) in.push_back(random_tensor({c.K}, ++seed, DType::f64));
            for (Tensor& t : in) t.requires_grad_();
            const Conv2dArgs a = c.a;
            auto f = [a](const std::vector<Tensor>& v) { return conv2d(v[0], v[1], v.size() > 2 ? v[2] : Tensor(), a); };
            gradcheck(f, in, c.name);
        }
    }

    TEST_CASE("conv2d gradient flows to x only or to the weight only") {
        const ConvCase& c = cases()[3];
        Tensor x = random_tensor(c.x, 31, DType::f64), w = random_tensor(weight_shape(c), 32, DType::f64);
        gradcheck([&](const std::vector<Tensor>& v) { return conv2d(v[0], w, Tensor(), c.a); }, {x.requires_grad_()},
                  "x only");
        Tensor x2 = random_tensor(c.x, 33, DType::f64);
        gradcheck([&](const std::vector<Tensor>& v) { return conv2d(x2, v[0], Tensor(), c.a); },
                  {w.requires_grad_()}, "weight only");
    }

    TEST_CASE("chunked im2col (one image per chunk) equals the one-shot path") {
        const ConvCase c{"chunks", {3, 6, 7, 4}, 6, 3, 3, args(2, 1, 1, 1, 1, 1, 2), true};
        kernels::Conv2dParams p = params_of(c.x, weight_shape(c), c.a), pc = p;
        pc.cpu_col_budget = 1;
        std::vector<double> x = random_vector<double>(size_t(shape_numel(c.x)), 41);
        std::vector<double> w = random_vector<double>(size_t(shape_numel(weight_shape(c))), 42);
        std::vector<double> b = random_vector<double>(size_t(c.K), 43);
        std::vector<double> dy = random_vector<double>(size_t(p.N * p.Ho * p.Wo * p.K), 44);
        std::vector<double> y1(dy.size()), y2(dy.size()), dx1(x.size()), dx2(x.size()), dw1(w.size()), dw2(w.size());
        kernels::conv2d_fwd_cpu(p, x.data(), w.data(), b.data(), y1.data());
        kernels::conv2d_fwd_cpu(pc, x.data(), w.data(), b.data(), y2.data());
        expect_close(y2, naive_conv2d(p, x, w, b), tol_for(DType::f64), "chunked forward vs naive");
        expect_close(y2, y1, tol_for(DType::f64), "chunked forward");
        kernels::conv2d_bwd_data_cpu(p, dy.data(), w.data(), dx1.data());
        kernels::conv2d_bwd_data_cpu(pc, dy.data(), w.data(), dx2.data());
        expect_close(dx2, dx1, tol_for(DType::f64), "chunked backward data");
        kernels::conv2d_bwd_weight_cpu(p, x.data(), dy.data(), dw1.data());
        kernels::conv2d_bwd_weight_cpu(pc, x.data(), dy.data(), dw2.data());
        expect_close(dw2, dw1, tol_for(DType::f64), "chunked backward weight");
    }

    TEST_CASE("depthwise routing gives the same values and gradients as the generic grouped kernels") {
        uint64_t seed = 900;
        for (int k : {3, 5}) {
            for (int s : {1, 2}) {
                for (int pad : {k / 2, 0}) {
                    const Shape xs{2, 11, 10, 8}, ws{8, k, k, 1};
                    const Conv2dArgs a = args(s, s, pad, pad, 1, 1, 8);
                    const std::string what = "depthwise k" + std::to_string(k) + " s" + std::to_string(s) + " p" +
                                             std::to_string(pad);
                    Tensor x = random_tensor(xs, ++seed, DType::f64).requires_grad_();
                    Tensor w = random_tensor(ws, ++seed, DType::f64).requires_grad_();
                    Tensor b = random_tensor({8}, ++seed, DType::f64).requires_grad_();
                    Tensor y = conv2d(x, w, b, a);
                    CHECK_MESSAGE(std::string(y.grad_fn()->name()) == "depthwise_conv2d", what, " was not routed");
                    const kernels::Conv2dParams p = params_of(xs, ws, a);
                    REQUIRE(y.shape() == Shape{p.N, p.Ho, p.Wo, p.K});
                    Tensor ref = empty(y.shape(), DType::f64), dy = random_tensor(y.shape(), ++seed, DType::f64);
                    kernels::conv2d_fwd_cpu(p, x.data<double>(), w.data<double>(), b.data<double>(),
                                            ref.data<double>());
                    expect_close(y, ref, tol_for(DType::f64), what + " forward");
                    y.backward(dy);
                    Tensor dx = empty(xs, DType::f64), dw = empty(ws, DType::f64), db = empty({8}, DType::f64);
                    kernels::conv2d_bwd_data_cpu(p, dy.data<double>(), w.data<double>(), dx.data<double>());
                    kernels::conv2d_bwd_weight_cpu(p, x.data<double>(), dy.data<double>(), dw.data<double>());
                    kernels::conv2d_bwd_bias_cpu(p, dy.data<double>(), db.data<double>());
                    expect_close(x.grad(), dx, tol_for(DType::f64), what + " dx");
                    expect_close(w.grad(), dw, tol_for(DType::f64), what + " dw");
                    expect_close(b.grad(), db, tol_for(DType::f64), what + " db");
                }
            }
        }
    }

    TEST_CASE("weight and bias gradients accumulate over two backward passes") {
        const ConvCase& c = cases()[7];
        Tensor x = random_tensor(c.x, 61, DType::f64);
        Tensor w = random_tensor(weight_shape(c), 62, DType::f64).requires_grad_();
        Tensor b = random_tensor({c.K}, 63, DType::f64).requires_grad_();
        Tensor dy = random_tensor(conv2d(x, w, b, c.a).shape(), 64, DType::f64);
        conv2d(x, w, b, c.a).backward(dy);
        std::vector<double> gw = w.grad().to_vector<double>(), gb = b.grad().to_vector<double>();
        conv2d(x, w, b, c.a).backward(dy);
        for (double& v : gw) v *= 2;
        for (double& v : gb) v *= 2;
        expect_close(w.grad().to_vector<double>(), gw, tol_for(DType::f64), "dw accumulated");
        expect_close(b.grad().to_vector<double>(), gb, tol_for(DType::f64), "db accumulated");
    }

    TEST_CASE("conv2d errors name the shapes") {
        auto message_of = [](auto fn) {
            try {
                fn();
            } catch (const ShapeError& e) {
                return std::string(e.what());
            }
            return std::string("no ShapeError");
        };
        Tensor x = random_tensor({1, 5, 5, 4}, 1);
        std::string m = message_of([&] { conv2d(x, random_tensor({3, 3, 3, 3}, 2), Tensor(), {}); });
        CHECK_MESSAGE(m.find("[1, 5, 5, 4]") != std::string::npos, m);
        CHECK_MESSAGE(m.find("[3, 3, 3, 3]") != std::string::npos, m);
        CHECK_MESSAGE(m.find("Cin") != std::string::npos, m);
        m = message_of([&] { conv2d(x, random_tensor({6, 3, 3, 1}, 3), Tensor(), args(1, 1, 1, 1, 1, 1, 3)); });
        CHECK_MESSAGE(m.find("groups = 3") != std::string::npos, m);
        m = message_of([&] { conv2d(x, random_tensor({5, 3, 3, 2}, 3), Tensor(), args(1, 1, 1, 1, 1, 1, 2)); });
        CHECK_MESSAGE(m.find("divide") != std::string::npos, m);  // Cout 5 not divisible by 2
        m = message_of([&] { conv2d(x, random_tensor({2, 7, 7, 4}, 4), Tensor(), {}); });
        CHECK_MESSAGE(m.find("empty output") != std::string::npos, m);
        m = message_of([&] { conv2d(x, random_tensor({2, 3, 3, 4}, 4), Tensor(), args(1, 1, 0, 0, 3, 3)); });
        CHECK_MESSAGE(m.find("empty output") != std::string::npos, m);
        CHECK_THROWS_AS(conv2d(x, random_tensor({2, 3, 3, 4}, 5), random_tensor({3}, 6), {}), ShapeError);
        CHECK_THROWS_AS(conv2d(x.reshape({5, 5, 4}), random_tensor({2, 3, 3, 4}, 5), Tensor(), {}), ShapeError);
        CHECK_THROWS_AS(conv2d(x, random_tensor({2, 3, 3, 4}, 5), Tensor(), args(0, 1, 0, 0)), ShapeError);
        CHECK_THROWS_AS(conv2d(x, random_tensor({2, 3, 3, 4}, 5, DType::f64), Tensor(), {}), DTypeError);
        CHECK_THROWS_AS(conv2d(x.to(DType::bf16), random_tensor({2, 3, 3, 4}, 5).to(DType::bf16), Tensor(), {}),
                        DTypeError);
    }
}

namespace {

// The same convolution on cuda:0 in `dt` and on the CPU in f32 from the same (dt-rounded) values.
void gpu_vs_cpu(const ConvCase& c, DType dt, uint64_t seed) {
    const Device g = Device::cuda(0);
    auto rounded = [dt](Tensor t) { return t.to(dt).to(DType::f32); };
    Tensor x = rounded(random_tensor(c.x, seed)), w = rounded(random_tensor(weight_shape(c), seed + 1, DType::f32,
                                                                            -0.3, 0.3));
    Tensor b = c.bias ? rounded(random_tensor({c.K}, seed + 2)) : Tensor();
    Tensor xc = x.clone().requires_grad_(), wc = w.clone().requires_grad_();
    Tensor bc = c.bias ? b.clone().requires_grad_() : Tensor();
    Tensor y = conv2d(xc, wc, bc, c.a);
    Tensor dy = rounded(random_tensor(y.shape(), seed + 3));
    y.backward(dy);

    Tensor xg = x.to(dt).to(g).requires_grad_(), wg = w.to(dt).to(g).requires_grad_();
    Tensor bg = c.bias ? b.to(dt).to(g).requires_grad_() : Tensor();
    Tensor yg = conv2d(xg, wg, bg, c.a);
    CHECK(yg.dtype() == dt);
    yg.backward(dy.to(dt).to(g));
    const Tol tol = dt == DType::bf16 ? tol_gpu_bf16() : tol_gpu_f32();
    const std::string what = std::string(c.name) + (dt == DType::bf16 ? " bf16" : " f32");
    expect_close_scaled(yg.to(Device::cpu()), y, tol, what + " forward");
    expect_close_scaled(xg.grad().to(Device::cpu()), xc.grad(), tol, what + " dx");
    expect_close_scaled(wg.grad().to(Device::cpu()), wc.grad(), tol, what + " dw");
    if (c.bias) expect_close_scaled(bg.grad().to(Device::cpu()), bc.grad(), tol, what + " db");
}

const std::vector<ConvCase>& gpu_cases() {
    static const std::vector<ConvCase> c = {
        {"resnet 3x3 [8,56,56,64]", {8, 56, 56, 64}, 64, 3, 3, args(1, 1, 1, 1), false},
        {"resnet stem 7x7/2", {4, 64, 64, 3}, 64, 7, 7, args(2, 2, 3, 3), false},
        {"resnet 1x1/2 downsample", {8, 28, 28, 128}, 256, 1, 1, args(2, 2, 0, 0), false},
        {"mobilenet 1x1 expand with bias", {8, 28, 28, 32}, 192, 1, 1, args(1, 1, 0, 0), true},
        {"odd 3x3/2 with bias", {3, 17, 13, 5}, 7, 3, 3, args(2, 2, 1, 1), true},
        {"odd groups 3 dilation 2", {2, 15, 11, 6}, 9, 3, 3, args(1, 1, 2, 2, 2, 2, 3), true},
        {"odd 1x3", {2, 9, 10, 5}, 3, 1, 3, args(1, 1, 0, 1), false},
    };
    return c;
}

}  // namespace

TEST_SUITE("gpu") {
    TEST_CASE("conv2d on the GPU matches the CPU, f32 and bf16, forward and backward") {
        uint64_t seed = 7000;
        for (const ConvCase& c : gpu_cases()) {
            gpu_vs_cpu(c, DType::f32, seed += 10);
            gpu_vs_cpu(c, DType::bf16, seed += 10);
        }
    }

    TEST_CASE("conv2d on the GPU: a second call reuses the cached algorithm and gives the same bits") {
        const ConvCase& c = gpu_cases()[4];
        const Device g = Device::cuda(0);
        Tensor x = random_tensor(c.x, 1).to(g), w = random_tensor(weight_shape(c), 2).to(g);
        Tensor b = random_tensor({c.K}, 3).to(g);
        std::vector<float> y1 = conv2d(x, w, b, c.a).to_vector<float>();
        std::vector<float> y2 = conv2d(x, w, b, c.a).to_vector<float>();
        CHECK(y1 == y2);
    }
}
