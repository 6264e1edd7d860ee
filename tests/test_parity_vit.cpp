// Parity of ViT-Tiny/16 with a plain-torch model written to timm's definition and DINO's
// interpolate_pos_encoding / get_intermediate_layers (tests/parity/vit_parity.py, Debian's python3-torch):
// random weights (timm names, OIHW patch conv) loaded through load_backbone (strict names and shapes), the
// position embedding resized for 224/128/96 px and non-square images, and per case (224 px f32, 96 px f32,
// 96 px f64) the CLS feature, the last-4-blocks probe feature, and the gradients of the input and of a few
// parameters for fixed upstream gradients. ctest passes --require-torch: skipped (exit 77) only where torch is
// not importable.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include <unistd.h>

#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "models/vit.h"
#include "models/weights.h"
#include "tests/compare.h"

using namespace sslight;
using namespace sslight::test;

namespace {

// Tolerances, relative to the reference's scale (its max |value|):
// - f64 (both sides in float64): only summation orders differ (BLAS blocking, the flash-style online softmax vs
//   torch's softmax); measured below 1e-13 of the scale, so 1e-9 is the tight check of the semantics.
// - f32: the same differences at f32 rounding (6e-8), accumulated through 12 residual blocks of 192-wide dot
//   products and softmaxes; measured up to ~2e-6 of the scale (outputs and gradients, all within 1e-5). The
//   network is smooth (GELU, no ReLU kinks to flip), so an element-wise comparison at 1e-4 of the scale holds
//   with a 50x margin, while a real error (bicubic A = -0.5 instead of -0.75, say) shows at 1e-3 or more.
// - the interpolated position embedding is a fixed linear map computed in f64 on both sides: 1e-12.
constexpr double kRelF64 = 1e-9;
constexpr double kRelF32 = 1e-4;
constexpr double kRelInterp = 1e-12;

void expect_close_scaled(const Tensor& got, const Tensor& ref, double rel, const std::string& what) {
    REQUIRE_MESSAGE(got.defined(), what, ": no value");
    double scale = 0;
    for (double v : ref.to_vector<double>()) scale = std::max(scale, std::fabs(v));
    REQUIRE_MESSAGE(scale > 0, what, ": all-zero reference");
    expect_close(got, ref, Tol{rel * scale, rel}, what);
}

const std::string& reference_dir() {
    static const std::string dir = [] {
        std::string templ = "/tmp/sslight_vit_parity_XXXXXX";
        REQUIRE_MESSAGE(::mkdtemp(templ.data()) != nullptr, "mkdtemp failed");
        const std::string cmd = std::string(SSLIGHT_PARITY_PYTHON) + " " SSLIGHT_SOURCE_DIR
                                "/tests/parity/vit_parity.py " + templ;
        REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, "failed: ", cmd);
        return templ;
    }();
    return dir;
}

std::string weights_path() { return reference_dir() + "/vit_tiny.weights.safetensors"; }

const io::TensorMap& reference() {
    static const io::TensorMap ref = io::load_safetensors(reference_dir() + "/vit_tiny.ref.safetensors");
    return ref;
}

Tensor param_grad(nn::Module& m, const std::string& name) {
    for (auto& [n, t] : m.named_parameters())
        if (n == name) return t->grad().defined() && t->dim() == 4 ? models::ohwi_to_oihw(t->grad()) : t->grad();
    FAIL("no parameter ", name);
    return Tensor();
}

void set_precision(nn::Module& m, DType dtype) {
    NoGradGuard ng;
    for (Tensor* t : m.parameters())
        if (t->dtype() != dtype) *t = t->detach().to(dtype).requires_grad_();
}

// One case "<px>.<f32|f64>.": features and probe, then the gradient of
// sum(gout_features * features) + sum(gout_probe * probe) (two backward passes accumulate).
void check_case(models::VisionTransformer& m, const std::string& key) {
    const io::TensorMap& ref = reference();
    const bool f64 = key.find(".f64.") != std::string::npos;
    const DType dt = f64 ? DType::f64 : DType::f32;
    set_precision(m, DType::f32);
    models::load_backbone(weights_path(), m);
    set_precision(m, dt);
    m.train();
    m.zero_grad();
    Tensor x = ref.at(key + "input").to(dt).clone().requires_grad_();
    const Tensor f = m.forward_features(x);
    const Tensor p = m.linear_probe_features(x);
    f.backward(ref.at(key + "gout_features").to(dt));
    p.backward(ref.at(key + "gout_probe").to(dt));
    const double rel = f64 ? kRelF64 : kRelF32;
    expect_close_scaled(f, ref.at(key + "features"), rel, key + "features");
    expect_close_scaled(p, ref.at(key + "probe"), rel, key + "probe");
    expect_close_scaled(x.grad(), ref.at(key + "grad.input"), rel, key + "grad.input");
    int grads = 0;
    for (const auto& [k, v] : ref) {
        const std::string prefix = key + "grad.";
        if (k.rfind(prefix, 0) != 0 || k == prefix + "input") continue;
        expect_close_scaled(param_grad(m, k.substr(prefix.size())), v, rel, k);
        ++grads;
    }
    CHECK(grads == 7);
}

}  // namespace

TEST_SUITE("parity") {
    TEST_CASE("weights load with timm's names; position embedding resized as DINO does (224/128/96, non-square)") {
        nn::manual_seed(1);
        auto m = models::make_vit("vit_tiny");
        models::load_backbone(weights_path(), *m);
        const Tensor pos = m->pos_embed.to(DType::f64);
        int cases = 0;
        for (const auto& [k, v] : reference()) {
            if (k.rfind("interp.", 0) != 0) continue;
            const std::string hw = k.substr(7);
            const int64_t h = std::stoll(hw.substr(0, hw.find('x'))), w = std::stoll(hw.substr(hw.find('x') + 1));
            INFO(k);
            expect_close_scaled(models::interpolate_pos_encoding(pos, h, w, 16), v, kRelInterp, k);
            ++cases;
        }
        CHECK(cases == 5);
    }

    TEST_CASE("ViT-Tiny matches the torch reference: features, probe features, input and parameter gradients") {
        nn::manual_seed(2);
        auto m = models::make_vit("vit_tiny");
        for (const char* key : {"224.f32.", "96.f32.", "96.f64."}) {
            INFO("case ", key);
            check_case(*m, key);
        }
        std::remove(weights_path().c_str());
        std::remove((reference_dir() + "/vit_tiny.ref.safetensors").c_str());
        ::rmdir(reference_dir().c_str());
    }
}
