// Multi-crop views and photometric augmentation: the recipes of the 12 SPEC §7 runs (crop counts, sizes,
// scales, augmentation probabilities, loss weights) and their validation; parameter draws (frequencies over
// 10k draws, factor ranges, permutations, determinism per key); the CPU kernel against the naive per-op
// reference of tests/augment_reference.h (each op alone, composed, all 24 jitter orders, odd sizes) and
// exact normalisation; the CUDA kernels through the SIMT emulator and on the GPU against the CPU kernel.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <string>

#include "data/augment_params.h"
#include "data/recipe.h"
#include "engine/check.h"
#include "kernels/augment.h"
#include "tests/augment_reference.h"
#include "tests/compare.h"
#ifdef SSLIGHT_EMU_AVAILABLE
#include "emu/emu.h"
#endif

using namespace sslight;
using namespace sslight::test;
using data::Arch;
using data::Method;
using kernels::AugmentBatch;
using kernels::AugmentParams;

namespace {

// Random crops (B, H, W, 3) with some grey pixels (r = g = b) and some saturated channels.
std::vector<uint8_t> random_images(int B, int H, int W, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int> u(0, 255), kind(0, 9);
    std::vector<uint8_t> v(static_cast<size_t>(B) * H * W * 3);
    for (size_t i = 0; i < v.size(); i += 3) {
        const int k = kind(rng);
        for (int c = 0; c < 3; ++c) v[i + c] = static_cast<uint8_t>(k == 0 ? 255 * (u(rng) & 1) : u(rng));
        if (k == 1) v[i + 1] = v[i + 2] = v[i];
    }
    return v;
}

AugmentBatch batch(int B, int H, int W) {
    AugmentBatch p;
    p.B = B, p.H = H, p.W = W, p.threads = 1;
    return p;
}

// Element-wise comparison that tolerates a solarize decision flipped by rounding: both values, de-normalised,
// lie next to the threshold 128/255 (one inverted, one not). Flips must stay rare.
template <class A, class R>
void expect_aug_close(const std::vector<A>& got, const std::vector<R>& ref, const AugmentBatch& p,
                      const AugmentParams* aug, Tol tol, const std::string& what) {
    REQUIRE(got.size() == ref.size());
    size_t bad = 0, flips = 0;
    const size_t per_img = static_cast<size_t>(p.H) * p.W * 3;
    for (size_t i = 0; i < got.size(); ++i) {
        const double g = static_cast<double>(got[i]), r = static_cast<double>(ref[i]);
        if (std::fabs(g - r) <= tol.atol + tol.rtol * std::fabs(r)) continue;
        const int c = static_cast<int>(i % 3);
        const double vg = g * p.std[c] + p.mean[c], vr = r * p.std[c] + p.mean[c];
        if (aug[i / per_img].solarize && std::fabs(vg - 0.5) < 5e-3 && std::fabs(vr - 0.5) < 5e-3) {
            ++flips;
            continue;
        }
        if (bad++ < 10) MESSAGE(what, ": mismatch at [", i, "]: got ", g, ", expected ", r);
    }
    CHECK_MESSAGE(bad == 0, what, ": ", bad, " of ", got.size(), " elements differ");
    CHECK_MESSAGE(flips <= std::max<size_t>(2, got.size() / 2000), what, ": ", flips, " solarize flips");
}

std::vector<float> run_cpu(const AugmentBatch& p, const std::vector<uint8_t>& in,
                           const std::vector<AugmentParams>& a) {
    std::vector<float> out(in.size());
    kernels::augment_fwd_cpu(p, in.data(), a.data(), out.data());
    return out;
}

// Kernel vs the double reference for each image of a batch of B copies of `a` (odd and even sizes).
void check_vs_reference(const AugmentParams& a, const std::string& what, uint64_t seed) {
    const int sizes[][2] = {{7, 9}, {16, 13}, {37, 37}, {5, 6}};
    for (const auto& hw : sizes) {
        const AugmentBatch p = batch(2, hw[0], hw[1]);
        const std::vector<uint8_t> in = random_images(p.B, p.H, p.W, seed++);
        const std::vector<AugmentParams> aug(p.B, a);
        std::vector<double> ref(in.size());
        ref_augment<double>(p, in.data(), aug.data(), ref.data());
        expect_aug_close(run_cpu(p, in, aug), ref, p, aug.data(), tol_for(DType::f32),
                         what + " " + std::to_string(hw[0]) + "x" + std::to_string(hw[1]));
    }
}

AugmentParams jitter(int op, float f) {
    AugmentParams a;
    a.jitter_apply = 1;
    if (op == kernels::kOpBrightness) a.brightness = f;
    if (op == kernels::kOpContrast) a.contrast = f;
    if (op == kernels::kOpSaturation) a.saturation = f;
    if (op == kernels::kOpHue) a.hue = f;
    return a;
}

// A batch of views whose parameters are drawn from `spec` (probabilities raised so that every op shows up).
std::vector<AugmentParams> drawn_params(int B, data::ViewSpec spec, uint64_t seed) {
    spec.jitter_p = 0.9, spec.gray_p = 0.3, spec.blur_p = 0.6, spec.solarize_p = 0.5;
    std::vector<AugmentParams> a;
    for (int i = 0; i < B; ++i) a.push_back(data::draw_augment(spec, seed, 0, i, 1));
    return a;
}

struct SpecRun {
    const char* name;
    Method m;
    Arch a;
    bool sslight;
    double global_scale_lo;
    size_t locals;
    int local_size;
    double local_scale_hi, lambda_gg;
};

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("recipes: the 12 SPEC §7 runs (crops, scales, augmentation, loss weights)") {
        const SpecRun runs[] = {
            {"DINO ViT-Tiny/16", Method::dino, Arch::vit, false, 0.25, 10, 96, 0.25, 1.0 / 11},
            {"DINO ViT-Tiny/16 SSLight", Method::dino, Arch::vit, true, 0.3, 10, 128, 0.3, 0.4},
            {"DINO ResNet18", Method::dino, Arch::cnn, false, 0.14, 6, 96, 0.14, 1.0 / 7},
            {"DINO ResNet18 SSLight", Method::dino, Arch::cnn, true, 0.3, 6, 128, 0.3, 0.4},
            {"DINO ResNet34", Method::dino, Arch::cnn, false, 0.14, 6, 96, 0.14, 1.0 / 7},
            {"DINO ResNet34 SSLight", Method::dino, Arch::cnn, true, 0.3, 6, 128, 0.3, 0.4},
            {"DINO MobileNetV2", Method::dino, Arch::cnn, false, 0.14, 6, 96, 0.14, 1.0 / 7},
            {"DINO MobileNetV2 SSLight", Method::dino, Arch::cnn, true, 0.3, 6, 128, 0.3, 0.4},
            {"SwAV MobileNetV2", Method::swav, Arch::cnn, false, 0.14, 6, 96, 0.14, 1.0 / 7},
            {"SwAV MobileNetV2 SSLight", Method::swav, Arch::cnn, true, 0.3, 6, 128, 0.3, 0.4},
            {"MoCo-v2 MobileNetV2", Method::moco, Arch::cnn, false, 0.14, 6, 96, 0.14, 1.0 / 7},
            {"MoCo-v2 MobileNetV2 SSLight", Method::moco, Arch::cnn, true, 0.3, 6, 128, 0.3, 0.4},
        };
        for (const SpecRun& run : runs) {
            CAPTURE(run.name);
            const data::ViewRecipe r = data::make_recipe(run.m, run.a, run.sslight);
            REQUIRE(r.globals.size() == 2);
            REQUIRE(r.locals.size() == run.locals);
            CHECK(r.num_views() == static_cast<int>(2 + run.locals));
            const bool swav = run.m == Method::swav;
            for (int v = 0; v < r.num_views(); ++v) {
                const data::ViewSpec& s = r.view(v);
                const bool global = v < 2;
                CHECK(s.size == (global ? 224 : run.local_size));
                CHECK(s.scale_lo == (global ? run.global_scale_lo : 0.05));
                CHECK(s.scale_hi == (global ? 1.0 : run.local_scale_hi));
                CHECK(s.ratio_lo == 3.0 / 4);
                CHECK(s.ratio_hi == 4.0 / 3);
                CHECK(s.flip_p == 0.5);
                CHECK(s.jitter_p == 0.8);
                CHECK(s.gray_p == 0.2);
                CHECK(s.brightness == (swav ? 0.8 : 0.4));
                CHECK(s.contrast == (swav ? 0.8 : 0.4));
                CHECK(s.saturation == (swav ? 0.8 : 0.2));
                CHECK(s.hue == (swav ? 0.2 : 0.1));
                CHECK(s.blur_sigma_lo == 0.1);
                CHECK(s.blur_sigma_hi == 2.0);
                CHECK(s.blur_p == (swav ? 0.5 : (v == 0 ? 1.0 : v == 1 ? 0.1 : 0.5)));
                CHECK(s.solarize_p == (!swav && v == 1 ? 0.2 : 0.0));
            }
            const data::LossWeights w = data::loss_weights(r);
            CHECK(w.gg == doctest::Approx(run.lambda_gg).epsilon(1e-15));
            CHECK(w.gl == doctest::Approx(1.0 - run.lambda_gg).epsilon(1e-15));
        }
        // The baseline weights are the plain average over pairs for any view counts: G = 3, N = 4 -> 2/6.
        data::ViewRecipe r = data::make_recipe(Method::dino, Arch::cnn, false);
        r.globals.push_back(r.globals[0]);
        r.locals.resize(4);
        CHECK(data::loss_weights(r).gg == doctest::Approx(2.0 / 6));
    }

    TEST_CASE("recipes: validation names the field") {
        const auto expect_config_error = [](const data::ViewRecipe& r, const char* needle) {
            bool thrown = false;
            try {
                data::validate(r);
            } catch (const ConfigError& e) {
                thrown = true;
                CHECK_MESSAGE(std::string(e.what()).find(needle) != std::string::npos, e.what(), " lacks ", needle);
            }
            CHECK_MESSAGE(thrown, "no ConfigError for ", needle);
        };
        const data::ViewRecipe good = data::make_recipe(Method::swav, Arch::vit, true);
        data::ViewRecipe r = good;
        r.locals[3].size = 0;
        expect_config_error(r, "locals[3].size");
        r = good, r.globals[1].scale_lo = 0;
        expect_config_error(r, "globals[1].scale_lo");
        r = good, r.locals[0].scale_hi = 1.5;
        expect_config_error(r, "locals[0].scale_hi");
        r = good, r.locals[0].scale_lo = 0.5, r.locals[0].scale_hi = 0.3;
        expect_config_error(r, "locals[0].scale_hi");
        r = good, r.globals[0].ratio_hi = 0.5;
        expect_config_error(r, "globals[0].ratio_hi");
        r = good, r.globals[0].flip_p = 1.2;
        expect_config_error(r, "globals[0].flip_p");
        r = good, r.locals[9].gray_p = -0.1;
        expect_config_error(r, "locals[9].gray_p");
        r = good, r.globals[1].solarize_p = std::nan("");
        expect_config_error(r, "globals[1].solarize_p");
        r = good, r.globals[1].hue = 0.7;
        expect_config_error(r, "globals[1].hue");
        r = good, r.globals[1].blur_sigma_hi = 3.0;
        expect_config_error(r, "globals[1].blur_sigma_hi");
        r = good, r.locals[2].blur_sigma_lo = 0;
        expect_config_error(r, "locals[2].blur_sigma_lo");
        r = good, r.lambda_gg = 1.5;
        expect_config_error(r, "lambda_gg");
        r = good, r.globals.clear();
        expect_config_error(r, "global view");
        CHECK_THROWS_AS(data::loss_weights(r), ConfigError);
    }

    TEST_CASE("draws: frequencies over 10k draws, factor ranges, permutations") {
        const data::ViewRecipe dino = data::make_recipe(Method::dino, Arch::cnn, false);
        const data::ViewRecipe swav = data::make_recipe(Method::swav, Arch::cnn, true);
        const int n = 10000;
        for (int v : {0, 1, 2}) {
            for (const data::ViewRecipe* r : {&dino, &swav}) {
                const data::ViewSpec& s = r->view(v);
                CAPTURE(v);
                CAPTURE(s.brightness);
                std::map<std::string, int> perms;
                int flip = 0, jit = 0, gray = 0, blur = 0, sol = 0;
                float lo[4] = {9, 9, 9, 9}, hi[4] = {-9, -9, -9, -9}, slo = 9, shi = -9;
                for (int i = 0; i < n; ++i) {
                    const AugmentParams a = data::draw_augment(s, 42, 3, i, v);
                    flip += a.flip, jit += a.jitter_apply, gray += a.gray, blur += a.blur, sol += a.solarize;
                    if (a.jitter_apply) {
                        const float f[4] = {a.brightness, a.contrast, a.saturation, a.hue};
                        for (int k = 0; k < 4; ++k) lo[k] = std::min(lo[k], f[k]), hi[k] = std::max(hi[k], f[k]);
                        uint8_t o[4];
                        std::copy(a.order, a.order + 4, o);
                        std::sort(o, o + 4);
                        CHECK((o[0] == 0 && o[1] == 1 && o[2] == 2 && o[3] == 3));
                        ++perms[std::string(a.order, a.order + 4)];
                    } else {
                        CHECK((a.brightness == 1 && a.contrast == 1 && a.saturation == 1 && a.hue == 0));
                    }
                    if (a.blur) slo = std::min(slo, a.blur_sigma), shi = std::max(shi, a.blur_sigma);
                }
                // Within 4.5 standard deviations of p (never for p = 0, always for p = 1).
                const auto near = [&](int count, double p) {
                    return std::fabs(count / double(n) - p) <= 4.5 * std::sqrt(p * (1 - p) / n);
                };
                CHECK(near(flip, 0.5));
                CHECK(near(jit, 0.8));
                CHECK(near(gray, 0.2));
                CHECK(near(blur, s.blur_p));
                CHECK(near(sol, s.solarize_p));
                const double str[4] = {s.brightness, s.contrast, s.saturation, s.hue};
                for (int k = 0; k < 3; ++k) {
                    CHECK(lo[k] >= std::max(0.0, 1 - str[k]) - 1e-6);
                    CHECK(hi[k] <= 1 + str[k] + 1e-6);
                    CHECK(lo[k] < std::max(0.0, 1 - str[k]) + 0.01);  // the range is covered
                    CHECK(hi[k] > 1 + str[k] - 0.01);
                }
                CHECK(lo[3] >= -s.hue - 1e-7);
                CHECK(hi[3] <= s.hue + 1e-7);
                CHECK(lo[3] < -s.hue + 0.005);
                CHECK(hi[3] > s.hue - 0.005);
                if (blur > 100) CHECK((slo >= 0.1f && shi <= 2.0f && slo < 0.15f && shi > 1.95f));
                CHECK(perms.size() == 24);  // all orders, roughly uniformly (8000 / 24 = 333 each)
                for (const auto& kv : perms) CHECK((kv.second > 230 && kv.second < 440));
            }
        }
    }

    TEST_CASE("draws: deterministic per (seed, epoch, sample, view), all views of a sample") {
        const data::ViewRecipe dino = data::make_recipe(Method::dino, Arch::cnn, false);
        const data::ViewSpec& g2 = dino.view(1);
        const AugmentParams a = data::draw_augment(g2, 7, 1, 123, 1), b = data::draw_augment(g2, 7, 1, 123, 1);
        CHECK(std::memcmp(&a, &b, sizeof(a)) == 0);
        CHECK(data::augment_key(7, 1, 123, 1) == data::augment_key(7, 1, 123, 1));
        CHECK(data::augment_key(7, 1, 123, 1) != data::augment_key(7, 1, 123, 2));
        CHECK(data::augment_key(7, 1, 123, 1) != data::augment_key(7, 2, 123, 1));
        CHECK(data::augment_key(7, 1, 123, 1) != data::augment_key(7, 1, 124, 1));
        CHECK(data::augment_key(7, 1, 123, 1) != data::augment_key(8, 1, 123, 1));
        CHECK(data::augment_key(7, 1, 123, 1) != derive(7, {1, 123, 1}));  // not the crop stream of data/crop.h
        const std::vector<AugmentParams> all = data::draw_views(dino, 7, 1, 123);
        REQUIRE(all.size() == 8);
        CHECK(std::memcmp(&all[1], &a, sizeof(a)) == 0);
        for (int v = 0; v < 8; ++v) {
            const AugmentParams x = data::draw_augment(dino.view(v), data::augment_key(7, 1, 123, v));
            CHECK(std::memcmp(&all[v], &x, sizeof(x)) == 0);
        }
        int differ = 0;
        for (int i = 0; i < 50; ++i) {
            const AugmentParams x = data::draw_augment(g2, 7, 1, i, 1), y = data::draw_augment(g2, 7, 1, i + 50, 1);
            differ += std::memcmp(&x, &y, sizeof(x)) != 0;
        }
        CHECK(differ >= 45);
    }

    TEST_CASE("kernel: identity parameters give exact normalisation") {
        const AugmentBatch p = batch(3, 37, 37);
        const std::vector<uint8_t> in = random_images(p.B, p.H, p.W, 5);
        const std::vector<AugmentParams> aug(p.B);
        const std::vector<float> out = run_cpu(p, in, aug);
        size_t exact = 0;
        for (size_t i = 0; i < in.size(); ++i) {
            const int c = static_cast<int>(i % 3);
            const float x = static_cast<float>(in[i]) / 255.f;
            exact += out[i] == (x - p.mean[c]) * static_cast<float>(1.0 / p.std[c]);
            CHECK(std::fabs(out[i] - (in[i] / 255.0 - p.mean[c]) / p.std[c]) < 1e-6);
        }
        CHECK(exact == in.size());
    }

    TEST_CASE("kernel: each op alone matches the per-op reference") {
        uint64_t seed = 100;
        AugmentParams flip;
        flip.flip = 1;
        check_vs_reference(flip, "flip", seed += 10);
        using kernels::kOpBrightness, kernels::kOpContrast, kernels::kOpSaturation, kernels::kOpHue;
        for (float f : {0.6f, 1.37f, 0.0f}) check_vs_reference(jitter(kOpBrightness, f), "brightness", seed += 10);
        for (float f : {0.61f, 1.4f, 0.0f}) check_vs_reference(jitter(kOpContrast, f), "contrast", seed += 10);
        for (float f : {0.8f, 1.2f, 0.0f, 1.8f}) check_vs_reference(jitter(kOpSaturation, f), "saturation", seed += 10);
        for (float f : {-0.1f, 0.07f, 0.5f, -0.5f, 0.2f}) check_vs_reference(jitter(kOpHue, f), "hue", seed += 10);
        AugmentParams gray;
        gray.gray = 1;
        check_vs_reference(gray, "grayscale", seed += 10);
        for (float s : {0.1f, 0.5f, 1.0f, 1.7f, 2.0f, 2.6f}) {  // radius 1 .. 8; beyond the image on 5x6
            AugmentParams a;
            a.blur = 1, a.blur_sigma = s;
            check_vs_reference(a, "blur sigma " + std::to_string(s), seed += 10);
        }
        AugmentParams sol;
        sol.solarize = 1;
        check_vs_reference(sol, "solarize", seed += 10);
    }

    TEST_CASE("kernel: every jitter order composed with flip, grayscale, blur and solarize") {
        uint8_t order[4] = {0, 1, 2, 3};
        uint64_t seed = 1000;
        int count = 0;
        do {
            AugmentParams a;
            a.jitter_apply = 1, a.brightness = 1.3f, a.contrast = 0.7f, a.saturation = 1.5f, a.hue = -0.08f;
            std::copy(order, order + 4, a.order);
            a.flip = count & 1, a.blur = (count >> 1) & 1, a.blur_sigma = 0.3f + 0.07f * count;
            a.solarize = (count % 3) == 0, a.gray = (count % 5) == 0;
            check_vs_reference(a, "order " + std::to_string(count), seed += 10);
            ++count;
        } while (std::next_permutation(order, order + 4));
        CHECK(count == 24);
    }

    TEST_CASE("kernel: drawn batches (mixed views), bf16 output, thread count, errors") {
        const data::ViewRecipe r = data::make_recipe(Method::swav, Arch::vit, false);
        const AugmentBatch p = batch(6, 29, 45);
        const std::vector<uint8_t> in = random_images(p.B, p.H, p.W, 77);
        const std::vector<AugmentParams> aug = drawn_params(p.B, r.view(2), 11);
        std::vector<double> ref(in.size());
        ref_augment<double>(p, in.data(), aug.data(), ref.data());
        const std::vector<float> out = run_cpu(p, in, aug);
        expect_aug_close(out, ref, p, aug.data(), tol_for(DType::f32), "drawn batch");
        std::vector<bf16> outb(in.size());
        kernels::augment_fwd_cpu(p, in.data(), aug.data(), outb.data());
        size_t same = 0;
        for (size_t i = 0; i < out.size(); ++i) same += outb[i].bits == bf16(out[i]).bits;
        CHECK(same == out.size());
        AugmentBatch p2 = p;
        p2.threads = 2;
        std::vector<float> out2(in.size());
        kernels::augment_fwd_cpu(p2, in.data(), aug.data(), out2.data());
        CHECK(out2 == out);
        AugmentBatch bad = p;
        bad.H = 0;
        CHECK_THROWS_AS(kernels::augment_fwd_cpu(bad, in.data(), aug.data(), out2.data()), ShapeError);
    }
}

#ifdef SSLIGHT_EMU_AVAILABLE
namespace {

template <class T>
void emu_vs_cpu(const AugmentBatch& p, const std::vector<AugmentParams>& aug, uint64_t seed, const std::string& what) {
    const std::vector<uint8_t> in = random_images(p.B, p.H, p.W, seed);
    std::vector<T> ref(in.size());
    kernels::augment_fwd_cpu(p, in.data(), aug.data(), ref.data());
    emu::Buffer<uint8_t> din(in);
    emu::Buffer<AugmentParams> daug(aug);
    emu::Buffer<float> ws(static_cast<size_t>(p.B));
    emu::Buffer<T> dout(in.size());
    kernels::emu::augment_fwd(p, din.data(), daug.data(), ws.data(), dout.data(), nullptr);
    std::vector<T> got = dout.to_vector();
    std::vector<float> gf(got.size()), rf(ref.size());
    for (size_t i = 0; i < got.size(); ++i) gf[i] = static_cast<float>(got[i]), rf[i] = static_cast<float>(ref[i]);
    const bool b16 = std::is_same<T, bf16>::value;
    const Tol tol = b16 ? tol_for(DType::bf16) : tol_emu_f32();
    expect_aug_close(gf, rf, p, aug.data(), tol, what + (b16 ? " bf16" : " f32"));
}

}  // namespace

TEST_SUITE("emu") {
    TEST_CASE("emulated augment kernels = CPU kernel: drawn views, odd sizes, f32 and bf16") {
        const data::ViewRecipe dino = data::make_recipe(Method::dino, Arch::cnn, true);
        const AugmentBatch shapes[] = {batch(3, 37, 37), batch(2, 29, 45), batch(4, 5, 6), batch(2, 96, 96)};
        uint64_t seed = 500;
        for (const AugmentBatch& p : shapes) {
            const std::vector<AugmentParams> aug = drawn_params(p.B, dino.view(2), seed);
            const std::string what = "emu " + std::to_string(p.H) + "x" + std::to_string(p.W);
            emu_vs_cpu<float>(p, aug, ++seed, what);
            emu_vs_cpu<bf16>(p, aug, ++seed, what);
        }
    }

    TEST_CASE("emulated augment kernels: every op forced, the largest blur radius, a 224 crop") {
        std::vector<AugmentParams> aug(4);
        for (int i = 0; i < 4; ++i) {
            AugmentParams& a = aug[i];
            a.jitter_apply = 1, a.brightness = 1.2f, a.contrast = 0.65f, a.saturation = 1.3f, a.hue = 0.09f;
            const uint8_t orders[4][4] = {{1, 0, 2, 3}, {0, 1, 3, 2}, {2, 3, 1, 0}, {3, 2, 0, 1}};  // contrast 1st..4th
            std::copy(orders[i], orders[i] + 4, a.order);
            a.flip = i & 1, a.gray = i == 2, a.blur = 1, a.blur_sigma = i == 3 ? 2.65f : 1.1f, a.solarize = i != 1;
        }
        emu_vs_cpu<float>(batch(4, 50, 41), aug, 601, "emu forced");
        aug.resize(1);
        aug[0].blur_sigma = 2.0f;
        emu_vs_cpu<float>(batch(1, 224, 224), aug, 602, "emu 224");
    }
}
#endif

#ifdef SSLIGHT_WITH_CUDA
#include "engine/device.h"

namespace {

template <class T>
void gpu_vs_cpu(const AugmentBatch& p, const data::ViewSpec& spec, uint64_t seed) {
    const Device g = Device::cuda(0);
    const std::vector<uint8_t> in = random_images(p.B, p.H, p.W, seed);
    std::vector<AugmentParams> aug;
    for (int i = 0; i < p.B; ++i) aug.push_back(data::draw_augment(spec, seed, 0, i, 2));
    std::vector<T> ref(in.size());
    kernels::augment_fwd_cpu(p, in.data(), aug.data(), ref.data());
    const auto bytes_to = [&](const void* src, size_t n) {
        Tensor t = empty({static_cast<int64_t>(n)}, DType::u8);
        std::memcpy(t.data<uint8_t>(), src, n);
        return t.to(g);
    };
    Tensor din = bytes_to(in.data(), in.size()), daug = bytes_to(aug.data(), aug.size() * sizeof(AugmentParams));
    Tensor ws = empty({p.B}, DType::f32, g);
    const DType dt = std::is_same<T, bf16>::value ? DType::bf16 : DType::f32;
    Tensor out = empty({p.B, p.H, p.W, 3}, dt, g);
    kernels::cuda::augment_fwd(p, din.data<uint8_t>(), reinterpret_cast<const AugmentParams*>(daug.data<uint8_t>()),
                               ws.data<float>(), out.data<T>(), runtime::stream(g));
    runtime::synchronize(g);
    const std::vector<float> got = out.to(Device::cpu()).to(DType::f32).to_vector<float>();
    std::vector<float> rf(ref.size());
    for (size_t i = 0; i < ref.size(); ++i) rf[i] = static_cast<float>(ref[i]);
    const std::string what = "gpu " + std::string(dtype_name(dt)) + " " + std::to_string(p.B) + "x" +
                             std::to_string(p.H) + "x" + std::to_string(p.W);
    expect_aug_close(got, rf, p, aug.data(), dt == DType::bf16 ? tol_gpu_bf16() : tol_gpu_f32(), what);
}

}  // namespace

TEST_SUITE("gpu") {
    TEST_CASE("augment on the GPU matches the CPU kernel: 2x224 + 6x128 views of 8 samples, odd sizes") {
        const data::ViewRecipe r = data::make_recipe(Method::dino, Arch::cnn, true);
        uint64_t seed = 9000;
        for (int dt = 0; dt < 2; ++dt) {
            const auto run = [&](const AugmentBatch& p, const data::ViewSpec& s) {
                dt == 0 ? gpu_vs_cpu<float>(p, s, ++seed) : gpu_vs_cpu<bf16>(p, s, ++seed);
            };
            run(batch(16, 224, 224), r.view(0));
            run(batch(16, 224, 224), r.view(1));
            run(batch(48, 128, 128), r.view(2));
            run(batch(3, 37, 37), r.view(2));
            run(batch(5, 29, 45), r.view(1));
        }
    }
}
#endif
