// Optimizers, schedules and clipping: SGD / LARS / AdamW steps against values computed by hand and with
// PyTorch (torch.optim.SGD, AdamW and DINO's LARS, float64), skipping of parameters without a grad, the
// state_dict round trip and its error report, an independent double-precision loop on realistic sizes
// (chunked reductions), DINO/SwAV schedules against numpy, both clipping rules, SPEC §5 parameter groups;
// the multi-tensor kernels through the SIMT emulator against the CPU reference (more tensors than one launch
// holds, sizes around the chunk, misaligned pointers, block-order independence); the same on the GPU.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <memory>
#include <string>

#include "engine/nn/layers.h"
#include "engine/optim/clip.h"
#include "engine/optim/optimizer.h"
#include "engine/optim/schedule.h"
#include "kernels/optim.h"
#include "tests/compare.h"
#ifdef SSLIGHT_EMU_AVAILABLE
#include "emu/emu.h"
#endif

using namespace sslight;
using namespace sslight::test;
using optim::ParamGroup;

namespace {

Tensor vec(const std::vector<double>& v, DType dt = DType::f64) {
    return from_vector(v, {static_cast<int64_t>(v.size())}).to(dt);
}
void grad(Tensor& p, const std::vector<double>& g) { p.set_grad(from_vector(g, p.shape()).to(p.dtype())); }
void expect_values(const Tensor& t, const std::vector<double>& want, const std::string& what, double tol = 1e-13) {
    expect_close(t.to_vector<double>(), want, Tol{tol, tol}, what);
}
ParamGroup group(std::vector<Tensor*> params, double lr, double wd, bool adapt = true, std::string name = "") {
    return ParamGroup{std::move(params), lr, wd, adapt, std::move(name)};
}
bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Sizes of the multi-tensor tests: 60 tensors (more than kMtaMaxTensors), one empty, three around the chunk.
std::vector<int64_t> many_sizes() {
    const int64_t small[] = {1, 3, 15, 91, 1000, 5, 257, 33};
    std::vector<int64_t> n;
    for (int k = 0; k < 60; ++k) n.push_back(small[k % 8]);
    n[7] = kernels::kMtaChunk - 1, n[30] = kernels::kMtaChunk + 1, n[55] = 2 * kernels::kMtaChunk + 7, n[12] = 0;
    return n;
}

// Independent double-precision loops of the three updates (one tensor, one step).
struct Ref {
    std::vector<double> p, g, m, v;
    double lr, wd;
    bool adapt;
    int64_t step;
};
void ref_step(Ref& r, int kind) {  // 0 SGD momentum 0.9, 1 LARS (0.9, 0.001), 2 AdamW defaults
    const size_t n = r.p.size();
    double pp = 0, dd = 0;
    for (size_t i = 0; i < n; ++i) pp += r.p[i] * r.p[i], dd += std::pow(r.g[i] + r.wd * r.p[i], 2);
    const double q = r.adapt && pp > 0 && dd > 0 ? 0.001 * std::sqrt(pp) / std::sqrt(dd) : 1.0;
    const double bc1 = 1 - std::pow(0.9, double(r.step)), bc2 = 1 - std::pow(0.999, double(r.step));
    for (size_t i = 0; i < n; ++i) {
        const double d = r.g[i] + r.wd * r.p[i];
        if (kind == 0) {
            r.m[i] = r.step == 1 ? d : 0.9 * r.m[i] + d;
            r.p[i] -= r.lr * r.m[i];
        } else if (kind == 1) {
            r.m[i] = 0.9 * r.m[i] + d * q;
            r.p[i] -= r.lr * r.m[i];
        } else {
            r.m[i] = 0.9 * r.m[i] + 0.1 * r.g[i];
            r.v[i] = 0.999 * r.v[i] + 0.001 * r.g[i] * r.g[i];
            r.p[i] = r.p[i] * (1 - r.lr * r.wd) - r.lr / bc1 * r.m[i] / (std::sqrt(r.v[i] / bc2) + 1e-8);
        }
    }
}

std::unique_ptr<optim::Optimizer> make(int kind, std::vector<ParamGroup> groups) {
    if (kind == 0) return std::make_unique<optim::SGD>(std::move(groups), 0.9, false);
    if (kind == 1) return std::make_unique<optim::LARS>(std::move(groups), 0.9, 0.001);
    if (kind == 2) return std::make_unique<optim::AdamW>(std::move(groups));
    return std::make_unique<optim::SGD>(std::move(groups), 0.9, true);
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("SGD: plain, momentum and Nesterov against torch.optim.SGD") {
        const std::vector<std::vector<double>> gs = {{0.1, 0.2, -0.3}, {-0.4, 0.05, 0.25}, {0.3, -0.1, 0.2}};
        struct Case {
            double momentum;
            bool nesterov;
            std::vector<std::vector<double>> want;
        };
        const Case cases[] = {
            {0, false, {{0.989, -2.018, 0.5295}, {1.028011, -2.020982, 0.5039705},
                        {0.996982989, -2.008961018, 0.4834665295}}},
            {0.9, false, {{0.989, -2.018, 0.5295}, {1.018111, -2.037182, 0.5305205},
                          {1.013292789, -2.042408618, 0.5109084295}}},
            {0.9, true, {{0.9791, -2.0342, 0.55605}, {1.04432971, -2.05441502, 0.531388505},
                         {1.008933412551, -2.047035929462, 0.4931839663405}}}};
        for (const Case& c : cases) {
            Tensor p = vec({1.0, -2.0, 0.5});
            optim::SGD opt({group({&p}, 0.1, 0.01)}, c.momentum, c.nesterov);
            for (size_t k = 0; k < gs.size(); ++k) {
                grad(p, gs[k]);
                opt.step();
                expect_values(p, c.want[k], str("SGD momentum ", c.momentum, " nesterov ", c.nesterov, " step ", k));
                if (k == 0 && c.momentum > 0)  // the first step copies d = g + wd·p into the buffer
                    expect_values(opt.state_dict().at("group0.param0.momentum_buffer"), {0.11, 0.18, -0.295}, "buf");
            }
            CHECK(opt.state_dict().count("group0.param0.momentum_buffer") == (c.momentum > 0 ? 1u : 0u));
        }
    }

    TEST_CASE("LARS: trust ratio, excluded group, zero norms, momentum buffer (DINO's LARS)") {
        Tensor a = vec({3.0, 4.0}), b = vec({1.0, -1.0, 2.0}), c = vec({0.0, 0.0}), d = vec({1.0, 2.0});
        optim::LARS opt({group({&a}, 0.5, 0.1, true, "adapted"), group({&b}, 0.5, 0.0, false, "excluded"),
                         group({&c, &d}, 0.5, 0.0, true, "zero norms")});
        grad(a, {0.3, 0.4}), grad(b, {0.5, 0.25, -1.0}), grad(c, {0.2, -0.4}), grad(d, {0.0, 0.0});
        opt.step();
        // a: d = g + 0.1·p = (0.6, 0.8), ‖p‖ = 5, ‖d‖ = 1, q = 0.001·5 = 0.005, μ = (0.003, 0.004), p -= 0.5·μ.
        expect_values(a, {2.9985, 3.998}, "LARS adapted step 1");
        expect_values(opt.state_dict().at("group0.param0.mu"), {0.003, 0.004}, "LARS mu step 1");
        CHECK(opt.last_sumsq()[0] == doctest::Approx(25.0));
        CHECK(opt.last_sumsq()[1] == doctest::Approx(1.0));
        expect_values(b, {0.75, -1.125, 2.5}, "LARS excluded: p -= lr·g");
        expect_values(c, {-0.1, 0.2}, "LARS ‖p‖ = 0: q = 1");
        expect_values(d, {1.0, 2.0}, "LARS ‖d‖ = 0: no update");
        grad(a, {-0.5, 0.1}), grad(b, {0.1, 0.2, 0.3}), grad(c, {0.1, 0.1});
        opt.step();
        expect_values(a, {2.9980789326139363, 3.9938803371449145}, "LARS adapted step 2");
        expect_values(opt.state_dict().at("group0.param0.mu"), {0.0008421347721270941, 0.008239325710171764},
                      "LARS mu step 2");
        expect_values(b, {0.475, -1.3375, 2.8}, "LARS excluded step 2");
        expect_values(c, {-0.19007905694150423, 0.37992094305849583}, "LARS adapted once ‖p‖ > 0");
    }

    TEST_CASE("AdamW: bias correction at steps 1 and 2, decoupled decay (torch.optim.AdamW)") {
        Tensor p = vec({1.0, -2.0, 0.5, 3.0});
        optim::AdamW opt({group({&p}, 0.01, 0.05)});
        grad(p, {0.1, -0.2, 0.3, 0.0});
        opt.step();
        // Step 1: m̂ = g, v̂ = g², so p·(1 − lr·wd) − lr·g/(|g| + eps); the zero-grad element only decays.
        expect_values(p, {0.9895000009999999, -1.9890000005000001, 0.4897500003333333, 2.9985}, "AdamW step 1");
        grad(p, {-0.05, -0.1, 0.4, 0.0});
        opt.step();
        expect_values(p, {0.9863418809398392, -1.9786837047012868, 0.47953189683665937, 2.99700075}, "AdamW step 2");
        const nn::StateDict s = opt.state_dict();
        expect_values(s.at("group0.param0.exp_avg"), {0.004, -0.028, 0.067, 0.0}, "exp_avg");
        expect_values(s.at("group0.param0.exp_avg_sq"), {1.249e-05, 4.996e-05, 2.4991e-04, 0.0}, "exp_avg_sq", 1e-17);
        CHECK(s.at("group0.param0.step").item() == 2);
    }

    TEST_CASE("a parameter without a grad is skipped and keeps no state") {
        Tensor p = vec({1.0, 2.0}), q = vec({3.0, 4.0});
        optim::SGD opt({group({&p, &q}, 0.1, 0.0)}, 0.9);
        grad(p, {1.0, 1.0});
        opt.step();
        expect_values(q, {3.0, 4.0}, "no grad: unchanged");
        CHECK(opt.state_dict().count("group0.param1.step") == 0);
        opt.zero_grad();
        CHECK_FALSE(p.grad().defined());
        grad(q, {1.0, -1.0});
        opt.step();  // q's first step: buf = d
        expect_values(q, {2.9, 4.1}, "first step of a late parameter");
        CHECK(opt.state_dict().at("group0.param1.step").item() == 1);
    }

    TEST_CASE("state_dict round trip: the restored optimizer takes the identical next step") {
        for (int kind = 0; kind < 4; ++kind) {
            Tensor a = random_tensor({7, 13}, 1), b = random_tensor({5}, 2), a2 = a.clone(), b2 = b.clone();
            auto opt = make(kind, {group({&a}, 0.3, 0.01), group({&b}, 0.2, 0.0, false)});
            for (uint64_t s = 0; s < 2; ++s) {
                a.set_grad(random_tensor({7, 13}, 10 + s)), b.set_grad(random_tensor({5}, 20 + s));
                opt->step();
            }
            auto restored = make(kind, {group({&a2}, 0.3, 0.01), group({&b2}, 0.2, 0.0, false)});
            runtime::copy(a2.raw_data(), a2.device(), a.raw_data(), a.device(), a.nbytes());
            runtime::copy(b2.raw_data(), b2.device(), b.raw_data(), b.device(), b.nbytes());
            restored->load_state_dict(opt->state_dict());
            for (Tensor* t : {&a, &a2}) t->set_grad(random_tensor({7, 13}, 30));
            for (Tensor* t : {&b, &b2}) t->set_grad(random_tensor({5}, 31));
            opt->step();
            restored->step();
            CHECK_MESSAGE(a.to_vector<float>() == a2.to_vector<float>(), "kind ", kind);
            CHECK_MESSAGE(b.to_vector<float>() == b2.to_vector<float>(), "kind ", kind);
        }
    }

    TEST_CASE("load_state_dict reports every problem at once") {
        Tensor a = vec({1.0, 2.0, 3.0});
        optim::AdamW opt({group({&a}, 0.1, 0.0)});
        nn::StateDict bad;
        bad["group0.param0.exp_avg"] = vec({0.0, 0.0});
        bad["group0.param0.step"] = from_vector(std::vector<int64_t>{3}, Shape{});
        bad["group0.param0.mu"] = vec({0.0, 0.0, 0.0});
        bad["group2.param0.step"] = from_vector(std::vector<int64_t>{1}, Shape{});
        bad["nonsense"] = vec({1.0});
        const std::string msg = error_of([&] { opt.load_state_dict(bad); });
        CHECK(has(msg, "shape mismatch for group0.param0.exp_avg: got [2], expected [3]"));
        CHECK(has(msg, "unexpected key: group0.param0.mu"));
        CHECK(has(msg, "no such parameter: group2.param0.step"));
        CHECK(has(msg, "malformed key: nonsense"));
        CHECK(has(msg, "missing key: group0.param0.exp_avg_sq"));
        CHECK_THROWS_AS(opt.load_state_dict(bad), IoError);
    }

    TEST_CASE("realistic sizes: f64 and f32 steps match an independent double loop (chunked norms)") {
        const std::vector<int64_t> sizes = {kernels::kMtaChunk * 2 + 5, 7 * 13, 3 * 5, 1};
        for (int kind = 0; kind < 3; ++kind) {
            std::vector<Ref> ref;
            std::vector<Tensor> p64, p32;
            std::vector<ParamGroup> g64, g32;
            for (size_t k = 0; k < sizes.size(); ++k) {
                const size_t n = static_cast<size_t>(sizes[k]);
                ref.push_back({random_vector<double>(n, 40 + k), {}, std::vector<double>(n), std::vector<double>(n),
                               0.1 * double(k + 1), k % 2 ? 0.0 : 0.05, k != 2, 0});
                p64.push_back(vec(ref[k].p)), p32.push_back(vec(ref[k].p, DType::f32));
            }
            for (size_t k = 0; k < sizes.size(); ++k) {
                g64.push_back(group({&p64[k]}, ref[k].lr, ref[k].wd, ref[k].adapt));
                g32.push_back(group({&p32[k]}, ref[k].lr, ref[k].wd, ref[k].adapt));
            }
            auto o64 = make(kind, g64), o32 = make(kind, g32);
            for (int s = 1; s <= 3; ++s) {
                for (size_t k = 0; k < sizes.size(); ++k) {
                    ref[k].g = random_vector<double>(ref[k].p.size(), 100 * s + k);
                    ref[k].step = s;
                    ref_step(ref[k], kind);
                    grad(p64[k], ref[k].g), grad(p32[k], ref[k].g);
                }
                o64->step(), o32->step();
            }
            for (size_t k = 0; k < sizes.size(); ++k) {
                expect_close(p64[k].to_vector<double>(), ref[k].p, Tol{1e-12, 1e-11}, str("f64 kind ", kind, " t", k));
                expect_close(p32[k].to_vector<double>(), ref[k].p, tol_for(DType::f32),
                             str("f32 kind ", kind, " t", k));
            }
        }
    }

    TEST_CASE("optimizer argument and parameter errors") {
        Tensor p = vec({1.0, 2.0}, DType::bf16), q = vec({1.0, 2.0}, DType::f32);
        grad(p, {1.0, 1.0});
        optim::SGD bf({group({&p}, 0.1, 0.0)});
        CHECK(has(error_of([&] { bf.step(); }), "must be f32"));
        CHECK_THROWS_AS(bf.step(), DTypeError);
        q.set_grad(vec({1.0, 1.0}, DType::f64));
        optim::LARS mixed({group({&q}, 0.1, 0.0)});
        CHECK_THROWS_AS(mixed.step(), DTypeError);
        CHECK_THROWS(optim::SGD({group({&q, &q}, 0.1, 0.0)}));
        CHECK_THROWS_AS(optim::SGD({group({&q}, 0.1, 0.0)}, 0.0, true), ConfigError);
        CHECK_THROWS_AS(optim::AdamW({group({&q}, 0.1, 0.0)}, 1.0), ConfigError);
    }

    TEST_CASE("schedules: DINO cosine with warmup, SwAV warmup start, wd cosine, teacher temperature") {
        const std::vector<double> lr = optim::cosine_schedule(1.92, 0.0048, 100, 37, 10);
        REQUIRE(lr.size() == 3700);
        CHECK(lr[0] == 0.0);                               // start of warmup
        CHECK(lr[1] == 0.005203252032520325);              // 1.92 / 369
        CHECK(lr[369] == 1.92);                            // end of warmup (linspace includes the end)
        CHECK(lr[370] == 1.92);                            // first cosine iteration
        CHECK(lr[371] == doctest::Approx(1.9199995738471594).epsilon(1e-15));
        CHECK(lr[370 + 1665] == doctest::Approx(0.9624).epsilon(1e-15));  // mid cosine: (base + final) / 2
        CHECK(lr[3699] == doctest::Approx(0.004800426152840776).epsilon(1e-15));  // last iteration
        const std::vector<double> swav = optim::cosine_schedule(1.2, 0.0048, 100, 37, 10, 0.075);
        CHECK(swav[0] == 0.075);
        CHECK(swav[1] == 0.07804878048780488);
        CHECK(swav[369] == 1.2);
        const std::vector<double> wd = optim::cosine_schedule(0.04, 0.4, 100, 37);
        CHECK(wd[0] == doctest::Approx(0.03999999999999998).epsilon(1e-15));
        CHECK(wd[1850] == doctest::Approx(0.22).epsilon(1e-15));
        CHECK(wd[3699] == doctest::Approx(0.399999935115826).epsilon(1e-15));
        const std::vector<double> temp = optim::teacher_temp_schedule(0.04, 0.07, 30, 100);
        REQUIRE(temp.size() == 100);
        CHECK(temp[0] == 0.04);
        CHECK(temp[1] == 0.04103448275862069);
        CHECK(temp[15] == 0.05551724137931035);
        CHECK(temp[29] == 0.07);
        CHECK(temp[30] == 0.07);
        CHECK(temp[99] == 0.07);
        CHECK(optim::constant_schedule(0.996, 5) == std::vector<double>(5, 0.996));
        CHECK(optim::linear_scaled_lr(0.48, 1024) == 1.92);
        CHECK(optim::linear_scaled_lr(5e-4, 1024) == 0.002);
        CHECK(optim::cosine_schedule(1.0, 0.5, 3, 4, 3).size() == 12);  // warmup over the whole run
        const std::string msg = error_of([] { optim::cosine_schedule(1.0, 0.0, 5, 10, 8); });
        CHECK(has(msg, "warmup_epochs 8"));
        CHECK(has(msg, "epochs = 5"));
        CHECK_THROWS_AS(optim::teacher_temp_schedule(0.04, 0.07, 50, 30), ConfigError);
        CHECK_THROWS_AS(optim::linear_scaled_lr(0.1, 0), ConfigError);
    }

    TEST_CASE("clip_grad_norm (global, PyTorch) and clip_grad_per_param (DINO)") {
        Tensor a = vec({1.0, 1.0}), b = vec({1.0}), c = vec({5.0});
        grad(a, {3.0, 4.0}), grad(b, {12.0});
        std::vector<Tensor*> ps = {&a, &b, &c};
        CHECK(optim::clip_grad_norm(ps, 20.0) == doctest::Approx(13.0));
        expect_values(a.grad(), {3.0, 4.0}, "norm below max: unchanged", 0);
        const double coef = 6.5 / (13.0 + 1e-6);
        CHECK(optim::clip_grad_norm(ps, 6.5) == doctest::Approx(13.0));
        expect_values(a.grad(), {3.0 * coef, 4.0 * coef}, "clipped a");
        expect_values(b.grad(), {12.0 * coef}, "clipped b");
        grad(a, {3.0, 4.0}), grad(b, {0.5});
        const std::vector<double> norms = optim::clip_grad_per_param(ps, 1.0);
        REQUIRE(norms.size() == 2);  // c has no grad
        CHECK(norms[0] == doctest::Approx(5.0));
        CHECK(norms[1] == doctest::Approx(0.5));
        expect_values(a.grad(), {3.0 / (5.0 + 1e-6), 4.0 / (5.0 + 1e-6)}, "per-param clipped");
        expect_values(b.grad(), {0.5}, "per-param below the clip: unchanged", 0);
        CHECK_THROWS_AS(optim::clip_grad_norm(ps, 0.0), ConfigError);
    }

    TEST_CASE("ssl_param_groups: conv, depthwise conv, BN, linear, frozen") {
        nn::Conv2dOptions with_bias, dw;
        with_bias.bias = true, dw.groups = 8, dw.padding = 1;
        auto conv = std::make_shared<nn::Conv2d>(3, 8, 3, with_bias);
        auto dwconv = std::make_shared<nn::Conv2d>(8, 8, 3, dw);
        auto bn = std::make_shared<nn::BatchNorm>(8);
        auto fc = std::make_shared<nn::Linear>(8, 4), frozen = std::make_shared<nn::Linear>(4, 2);
        frozen->set_requires_grad(false);
        nn::Sequential m({conv, dwconv, bn, fc, frozen});
        const std::vector<ParamGroup> groups = optim::ssl_param_groups(m, 0.3, 1e-6);
        REQUIRE(groups.size() == 3);
        CHECK(groups[0].name == "regularized");
        CHECK(groups[0].params == std::vector<Tensor*>{&conv->weight, &fc->weight});
        CHECK(groups[0].weight_decay == 1e-6);
        CHECK(groups[0].lars_adapt);
        CHECK(groups[1].name == "depthwise");
        CHECK(groups[1].params == std::vector<Tensor*>{&dwconv->weight});
        CHECK(groups[1].weight_decay == 0.0);
        CHECK(groups[1].lars_adapt);
        CHECK(groups[2].name == "no_decay");
        CHECK(groups[2].params == std::vector<Tensor*>{&conv->bias, &bn->weight, &bn->bias, &fc->bias});
        CHECK(groups[2].weight_decay == 0.0);
        CHECK_FALSE(groups[2].lars_adapt);
        for (const ParamGroup& g : groups) CHECK(g.lr == 0.3);
    }
}

#ifdef SSLIGHT_EMU_AVAILABLE
namespace {

// One multi-tensor problem: host vectors (the CPU reference works on them) and emulated device copies. Tensors
// k % 3 == 1 start one float past a 16-byte boundary, so their kernels take the scalar path.
struct EmuProblem {
    std::vector<int64_t> n;
    std::vector<std::vector<float>> host[4];  // p, g, m, v
    std::vector<float*> dev[4];
    std::vector<emu::Buffer<float>> bufs;

    EmuProblem(const std::vector<int64_t>& sizes, uint64_t seed) : n(sizes) {
        const double lo[4] = {-1, -1, -0.1, 0}, hi[4] = {1, 1, 0.1, 0.01};
        for (size_t k = 0; k < n.size(); ++k)
            for (int j = 0; j < 4; ++j) {
                host[j].push_back(random_vector<float>(size_t(n[k]), seed + 4 * k + j, lo[j], hi[j]));
                const size_t off = k % 3 == 1 ? 1 : 0;
                std::vector<float> padded(off, 0.f);
                padded.insert(padded.end(), host[j][k].begin(), host[j][k].end());
                if (n[k] > 0) bufs.emplace_back(padded);
                dev[j].push_back(n[k] > 0 ? bufs.back().data() + off : nullptr);
            }
    }
    // Slots over the host (device = false) or emulated buffers; `no_m`: some tensors without momentum buffer.
    std::vector<kernels::OptimSlot<float>> slots(bool device, int64_t step, bool adam, bool no_m) {
        std::vector<kernels::OptimSlot<float>> out(n.size());
        for (size_t k = 0; k < n.size(); ++k) {
            kernels::OptimSlot<float>& s = out[k];
            auto ptr = [&](int j) { return device ? dev[j][k] : host[j][k].data(); };
            s.param = ptr(0), s.grad = ptr(1), s.buf1 = no_m && k % 7 == 3 ? nullptr : ptr(2);
            s.buf2 = adam ? ptr(3) : nullptr;
            s.numel = n[k], s.lr = 0.05 + 0.01 * double(k % 5), s.weight_decay = 0.02 * double(k % 3);
            s.lars_adapt = k % 4 != 0, s.step = step + int64_t(k % 2);
        }
        return out;
    }
    void expect_match(const std::string& what) {
        for (int j = 0; j < 4; ++j)
            for (size_t k = 0; k < n.size(); ++k)
                if (n[k] > 0)
                    expect_close(std::vector<float>(dev[j][k], dev[j][k] + n[k]), host[j][k], tol_emu_f32(),
                                 str(what, " array ", j, " tensor ", k, " (", n[k], ")"));
    }
};

}  // namespace

TEST_SUITE("emu") {
    TEST_CASE("multi-tensor SGD / LARS / AdamW emulated vs CPU: 60 tensors, odd sizes, misaligned") {
        const std::vector<int64_t> sizes = many_sizes();
        emu::Buffer<float> ws(kernels::emu::mta_workspace(sizes)), sums(2 * sizes.size());
        for (int kind = 0; kind < 4; ++kind) {
            EmuProblem P(sizes, 7 + kind);
            for (int64_t step = 1; step <= 2; ++step) {
                auto hs = P.slots(false, step, kind == 3, kind == 0), ds = P.slots(true, step, kind == 3, kind == 0);
                if (kind <= 1) {
                    const kernels::SgdHyper h{0.9, kind == 1};
                    kernels::sgd_step_cpu(hs, h);
                    kernels::emu::sgd_step(ds, h, nullptr);
                } else if (kind == 2) {
                    std::vector<double> ref(2 * sizes.size());
                    const kernels::LarsHyper h{0.9, 0.5};  // a large η makes the trust ratio visible in p
                    kernels::lars_step_cpu(hs, h, ref.data());
                    kernels::emu::lars_step(ds, h, ws.data(), sums.data(), nullptr);
                    expect_close(sums.to_vector(), ref, Tol{1e-6, 1e-5}, "LARS sums of squares");
                } else {
                    kernels::adamw_step_cpu(hs, kernels::AdamWHyper{});
                    kernels::emu::adamw_step(ds, kernels::AdamWHyper{}, nullptr);
                }
            }
            P.expect_match(str("optimizer kind ", kind));
        }
    }

    TEST_CASE("multi-tensor sum of squares and clipping (global, per tensor) emulated vs CPU") {
        const std::vector<int64_t> sizes = many_sizes();
        emu::Buffer<float> ws(kernels::emu::mta_workspace(sizes)), sums(sizes.size());
        for (auto mode : {kernels::ClipMode::global, kernels::ClipMode::per_tensor}) {
            EmuProblem P(sizes, 99);
            std::vector<const float*> hx(P.host[1].size()), dx(P.dev[1].begin(), P.dev[1].end());
            std::vector<float*> hy(hx.size());
            for (size_t k = 0; k < hx.size(); ++k) hx[k] = hy[k] = P.host[1][k].data();
            std::vector<double> ref(sizes.size());
            kernels::sumsq_cpu(hx, sizes, ref.data());
            kernels::emu::multi_tensor_sumsq(dx, sizes, ws.data(), sums.data(), nullptr);
            expect_close(sums.to_vector(), ref, Tol{1e-6, 1e-5}, "sums of squares");
            const double max_norm = mode == kernels::ClipMode::global ? 50.0 : 3.0;  // clips some tensors only
            kernels::clip_scale_cpu(hy, sizes, ref.data(), mode, max_norm);
            kernels::emu::clip_scale(P.dev[1], sizes, sums.data(), mode, max_norm, nullptr);
            P.expect_match(mode == kernels::ClipMode::global ? "global clip" : "per-tensor clip");
        }
    }

    TEST_CASE("emulated LARS is bit-identical whatever the block order and thread count") {
        const std::vector<int64_t> sizes = many_sizes();
        emu::Buffer<float> ws(kernels::emu::mta_workspace(sizes)), sums(2 * sizes.size());
        std::vector<std::vector<float>> first;
        for (int run = 0; run < 2; ++run) {
            emu::set_seed(1000 + run);
            emu::set_threads(run + 1);
            EmuProblem P(sizes, 5);
            kernels::emu::lars_step(P.slots(true, 1, false, false), kernels::LarsHyper{}, ws.data(), sums.data(),
                                    nullptr);
            for (size_t k = 0; k < sizes.size(); ++k) {
                std::vector<float> p(P.dev[0][k], P.dev[0][k] + sizes[k]);
                if (run == 0)
                    first.push_back(p);
                else
                    CHECK_MESSAGE(p == first[k], "tensor ", k);
            }
        }
        emu::set_seed(0);
        emu::set_threads(0);
    }
}
#endif  // SSLIGHT_EMU_AVAILABLE

TEST_SUITE("gpu") {
    // Parameters of many_sizes() (the empty one made 2 long) on the CPU and on the GPU, in three groups.
    struct Twin {
        std::vector<Tensor> cpu, gpu;
        std::vector<ParamGroup> groups(bool on_gpu) {
            std::vector<ParamGroup> g = {group({}, 0.3, 0.01, true, "a"), group({}, 0.1, 0.0, false, "b"),
                                         group({}, 0.2, 0.0)};
            for (size_t k = 0; k < cpu.size(); ++k) g[k % 3].params.push_back(on_gpu ? &gpu[k] : &cpu[k]);
            return g;
        }
        void set_grads(uint64_t seed, bool skip_some) {
            for (size_t k = 0; k < cpu.size(); ++k) {
                if (skip_some && k % 9 == 4) continue;
                Tensor g = random_tensor(cpu[k].shape(), seed + k);
                cpu[k].set_grad(g), gpu[k].set_grad(g.to(Device::cuda(0)));
            }
        }
    };
    Twin make_twin() {
        Twin t;
        for (int64_t n : many_sizes()) t.cpu.push_back(random_tensor({n > 0 ? n : 2}, 500 + uint64_t(n)));
        for (const Tensor& c : t.cpu) t.gpu.push_back(c.to(Device::cuda(0)));
        return t;
    }

    TEST_CASE("SGD / Nesterov / LARS / AdamW on the GPU match the CPU over 3 steps") {
        for (int kind = 0; kind < 4; ++kind) {
            Twin t = make_twin();
            auto oc = make(kind, t.groups(false)), og = make(kind, t.groups(true));
            for (uint64_t s = 0; s < 3; ++s) {
                t.set_grads(900 + 100 * s, s == 0);
                oc->step(), og->step();
            }
            for (size_t k = 0; k < t.cpu.size(); ++k)
                expect_close(t.gpu[k].to(Device::cpu()), t.cpu[k], tol_gpu_f32(), str("kind ", kind, " param ", k));
            const nn::StateDict sc = oc->state_dict(), sg = og->state_dict();
            REQUIRE(sc.size() == sg.size());
            for (const auto& [key, v] : sc) expect_close(sg.at(key).to(Device::cpu()), v, tol_gpu_f32(), key);
        }
    }

    TEST_CASE("clipping on the GPU matches the CPU") {
        Twin t = make_twin();
        t.set_grads(77, true);
        std::vector<Tensor*> pc, pg;
        for (size_t k = 0; k < t.cpu.size(); ++k) pc.push_back(&t.cpu[k]), pg.push_back(&t.gpu[k]);
        CHECK(optim::clip_grad_norm(pg, 50.0) == doctest::Approx(optim::clip_grad_norm(pc, 50.0)).epsilon(1e-5));
        const std::vector<double> nc = optim::clip_grad_per_param(pc, 3.0), ng = optim::clip_grad_per_param(pg, 3.0);
        expect_close(ng, nc, tol_gpu_f32(), "per-parameter norms");
        for (size_t k = 0; k < t.cpu.size(); ++k)
            if (t.cpu[k].grad().defined())
                expect_close(t.gpu[k].grad().to(Device::cpu()), t.cpu[k].grad(), tol_gpu_f32(), str("grad ", k));
    }

    TEST_CASE("LARS on the GPU is bit-reproducible") {
        std::vector<std::vector<float>> runs[2];
        for (int r = 0; r < 2; ++r) {
            Twin t = make_twin();
            optim::LARS opt(t.groups(true));
            t.set_grads(5, false);
            opt.step();
            for (const Tensor& p : t.gpu) runs[r].push_back(p.to_vector<float>());
        }
        CHECK(runs[0] == runs[1]);
    }
}
