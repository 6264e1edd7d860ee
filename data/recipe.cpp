// The SPEC.md §1-2 view recipes (crop geometry per backbone family and setting, augmentation strengths per
// method), their validation and the loss weights of the view pairs. Nothing here is differentiable.
#include "data/recipe.h"

#include <cmath>

#include "engine/check.h"
#include "kernels/augment.h"

namespace sslight::data {
namespace {

constexpr int kGlobalSize = 224;
constexpr double kLocalScaleLo = 0.05;
constexpr double kSslightLambdaGG = 0.4;

// SPEC §1: crop geometry per (arch, setting).
struct Geometry {
    double global_scale_lo;
    int num_locals, local_size;
    double local_scale_hi;
};
Geometry geometry(Arch a, bool sslight) {
    if (a == Arch::cnn) return sslight ? Geometry{0.3, 6, 128, 0.3} : Geometry{0.14, 6, 96, 0.14};
    return sslight ? Geometry{0.3, 10, 128, 0.3} : Geometry{0.25, 10, 96, 0.25};
}

// SPEC §2: jitter strengths and the per-view blur / solarize probabilities per method.
ViewSpec base_view(Method m) {
    ViewSpec v;
    if (m == Method::swav) {
        v.brightness = 0.8, v.contrast = 0.8, v.saturation = 0.8, v.hue = 0.2;
    } else {
        v.brightness = 0.4, v.contrast = 0.4, v.saturation = 0.2, v.hue = 0.1;
    }
    return v;
}

void check_range(bool ok, const std::string& name, const char* field, double got, const char* expected) {
    if (!ok) throw ConfigError(str("view recipe: ", name, ".", field, " must be ", expected, ", got ", got));
}

bool finite(double x) { return std::isfinite(x); }

}  // namespace

const char* method_name(Method m) {
    switch (m) {
        case Method::dino: return "dino";
        case Method::moco: return "moco";
        case Method::swav: return "swav";
    }
    return "?";
}

const char* arch_name(Arch a) { return a == Arch::cnn ? "cnn" : "vit"; }

ViewRecipe make_recipe(Method m, Arch a, bool sslight) {
    const Geometry geo = geometry(a, sslight);
    const bool swav = m == Method::swav;
    ViewRecipe r;
    for (int g = 0; g < 2; ++g) {
        ViewSpec v = base_view(m);
        v.size = kGlobalSize;
        v.scale_lo = geo.global_scale_lo, v.scale_hi = 1.0;
        v.blur_p = swav ? 0.5 : (g == 0 ? 1.0 : 0.1);
        v.solarize_p = (!swav && g == 1) ? 0.2 : 0.0;
        r.globals.push_back(v);
    }
    for (int l = 0; l < geo.num_locals; ++l) {
        ViewSpec v = base_view(m);
        v.size = geo.local_size;
        v.scale_lo = kLocalScaleLo, v.scale_hi = geo.local_scale_hi;
        v.blur_p = 0.5;
        v.solarize_p = 0.0;
        r.locals.push_back(v);
    }
    r.lambda_gg = sslight ? kSslightLambdaGG : -1.0;
    validate(r);
    return r;
}

void validate(const ViewSpec& v, const std::string& name) {
    if (v.size <= 0) throw ConfigError(str("view recipe: ", name, ".size must be > 0, got ", v.size));
    check_range(finite(v.scale_lo) && v.scale_lo > 0 && v.scale_lo <= 1, name, "scale_lo", v.scale_lo, "in (0, 1]");
    check_range(finite(v.scale_hi) && v.scale_hi >= v.scale_lo && v.scale_hi <= 1, name, "scale_hi", v.scale_hi,
                "in [scale_lo, 1]");
    check_range(finite(v.ratio_lo) && v.ratio_lo > 0, name, "ratio_lo", v.ratio_lo, "> 0");
    check_range(finite(v.ratio_hi) && v.ratio_hi >= v.ratio_lo, name, "ratio_hi", v.ratio_hi, ">= ratio_lo");
    const struct {
        const char* field;
        double p;
    } probs[] = {{"flip_p", v.flip_p},     {"jitter_p", v.jitter_p}, {"gray_p", v.gray_p},
                 {"blur_p", v.blur_p},     {"solarize_p", v.solarize_p}};
    for (const auto& p : probs) check_range(p.p >= 0 && p.p <= 1, name, p.field, p.p, "a probability in [0, 1]");
    check_range(finite(v.brightness) && v.brightness >= 0, name, "brightness", v.brightness, "finite and >= 0");
    check_range(finite(v.contrast) && v.contrast >= 0, name, "contrast", v.contrast, "finite and >= 0");
    check_range(finite(v.saturation) && v.saturation >= 0, name, "saturation", v.saturation, "finite and >= 0");
    check_range(v.hue >= 0 && v.hue <= 0.5, name, "hue", v.hue, "in [0, 0.5]");
    check_range(finite(v.blur_sigma_lo) && v.blur_sigma_lo > 0, name, "blur_sigma_lo", v.blur_sigma_lo, "> 0");
    check_range(v.blur_sigma_hi >= v.blur_sigma_lo && v.blur_sigma_hi <= kernels::kAugmentMaxBlurSigma, name,
                "blur_sigma_hi", v.blur_sigma_hi,
                "in [blur_sigma_lo, 8/3] (the blur kernel's radius ceil(3 sigma) is at most 8)");
}

void validate(const ViewRecipe& r) {
    if (r.globals.empty()) throw ConfigError("view recipe: at least one global view is needed, got none");
    for (size_t i = 0; i < r.globals.size(); ++i) validate(r.globals[i], str("globals[", i, "]"));
    for (size_t i = 0; i < r.locals.size(); ++i) validate(r.locals[i], str("locals[", i, "]"));
    if (!(r.lambda_gg < 0) && !(r.lambda_gg <= 1))
        throw ConfigError(str("view recipe: lambda_gg must be < 0 (baseline: average over view pairs) or in [0, 1], "
                              "got ", r.lambda_gg));
}

LossWeights loss_weights(const ViewRecipe& r) {
    validate(r);
    if (r.lambda_gg >= 0) return {r.lambda_gg, 1.0 - r.lambda_gg};
    const double G = static_cast<double>(r.globals.size()), N = static_cast<double>(r.locals.size());
    if (G - 1 + N <= 0)
        throw ConfigError("view recipe: a single global view and no local view form no view pair to weight");
    return {(G - 1) / (G - 1 + N), N / (G - 1 + N)};
}

}  // namespace sslight::data
