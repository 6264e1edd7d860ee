// Multi-crop view recipes as data (SPEC.md §1-2): per view, the RandomResizedCrop geometry and the photometric
// augmentation probabilities and strengths, for the baseline and SSLight settings of DINO / MoCo-v2 / SwAV on
// CNN and ViT backbones, and the loss weights (λ_gg, λ_gl) of the two kinds of view pairs. Baseline λ's are
// the plain average over view pairs; SSLight re-balances them to (0.4, 0.6). Nothing here is differentiable.
#pragma once
#include <string>
#include <vector>

namespace sslight::data {

enum class Method { dino, moco, swav };
enum class Arch { cnn, vit };  // cnn: MobileNetV2 / ResNet18 / ResNet34; vit: ViT-Tiny/16

// One view: output size, RandomResizedCrop ranges, then per-view augmentation (torchvision semantics).
struct ViewSpec {
    int size = 0;                                     // output side in pixels
    double scale_lo = 0, scale_hi = 0;                // fraction of the image area
    double ratio_lo = 3.0 / 4, ratio_hi = 4.0 / 3;    // aspect ratio range
    double flip_p = 0.5;                              // horizontal flip
    double jitter_p = 0.8;                            // colour jitter applied (the four ops in random order)
    double brightness = 0, contrast = 0, saturation = 0, hue = 0;  // ColorJitter strengths (0: op off)
    double gray_p = 0.2;                              // RandomGrayscale
    double blur_p = 0, blur_sigma_lo = 0.1, blur_sigma_hi = 2.0;  // Gaussian blur, sigma ~ U(lo, hi)
    double solarize_p = 0;                            // Solarization at 128
};

// [g1, g2, l1 .. lN]: globals first, then locals.
struct ViewRecipe {
    std::vector<ViewSpec> globals, locals;
    // < 0: the baseline weights, the plain average over the view pairs; otherwise λ_gg (λ_gl = 1 - λ_gg).
    double lambda_gg = -1;

    int num_views() const { return static_cast<int>(globals.size() + locals.size()); }
    const ViewSpec& view(int v) const {
        const int g = static_cast<int>(globals.size());
        return v < g ? globals[v] : locals[v - g];
    }
};

// The recipe of one SPEC §1-2 setting. Throws ConfigError for combinations SPEC does not define (none today).
ViewRecipe make_recipe(Method m, Arch a, bool sslight);

struct LossWeights {
    double gg = 0, gl = 0;  // λ_gg (global-global pairs), λ_gl (global-local pairs)
};
// Baseline: G globals and N locals give G(G-1) global-global and G·N global-local pairs, all weighted equally,
// so λ_gg = (G - 1) / (G - 1 + N): 1/7 for 2 + 6 views, 1/11 for 2 + 10. SSLight: (lambda_gg, 1 - lambda_gg).
// Validates the recipe first.
LossWeights loss_weights(const ViewRecipe& r);

// Throws ConfigError naming the field ("locals[3].scale_lo") and the expected range: sizes > 0,
// 0 < scale_lo <= scale_hi <= 1, 0 < ratio_lo <= ratio_hi, probabilities in [0, 1], jitter strengths >= 0
// (hue <= 0.5), 0 < blur_sigma_lo <= blur_sigma_hi <= 8/3 (the blur
// kernel's largest radius), at least one global view, lambda_gg < 0 or in [0, 1].
void validate(const ViewRecipe& r);
void validate(const ViewSpec& v, const std::string& name);

const char* method_name(Method m);
const char* arch_name(Arch a);

}  // namespace sslight::data
