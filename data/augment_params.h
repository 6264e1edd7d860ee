// Per-view photometric augmentation parameters (SPEC.md §2), drawn as torchvision draws them: horizontal flip
// (p), RandomApply(ColorJitter, p) with ColorJitter.get_params (fn_idx = randperm(4); factors uniform in
// [max(0, 1 - b), 1 + b], [max(0, 1 - c), 1 + c], [max(0, 1 - s), 1 + s], hue in [-h, h]; a strength of 0
// disables its op), RandomGrayscale (p), DINO's GaussianBlur (p, sigma ~ U(lo, hi)) and Solarization (p).
// Draws come from the counter-based Philox stream keyed by (seed, epoch, sample, view): the same key gives the
// same parameters on any thread. The kernel (kernels/augment.h) applies them. Nothing here is differentiable.
#pragma once
#include <cstdint>
#include <vector>

#include "data/recipe.h"
#include "engine/random.h"
#include "kernels/augment.h"

namespace sslight::data {

using AugmentParams = kernels::AugmentParams;

// The photometric stream of view `view` of sample `sample` in `epoch`: derive(seed, {epoch, sample, view,
// kAugmentStreamTag}), independent of the crop stream Rng::for_view(seed, epoch, sample, view) of data/crop.h.
constexpr uint64_t kAugmentStreamTag = 0x70686f746full;  // "photo"
RngKey augment_key(uint64_t seed, int64_t epoch, int64_t sample, int64_t view);

// Draws every parameter from fixed positions of the key's stream (16 words: flip, jitter, 3 for the
// permutation, 4 factors, gray, blur, sigma, solarize), so one decision never shifts another. An event of
// probability p happens when u < p, u uniform in [0, 1) with 24 bits (p = 0: never, p = 1: always).
// Parameters of ops that are not applied are left at their identity values.
AugmentParams draw_augment(const ViewSpec& spec, RngKey key);
inline AugmentParams draw_augment(const ViewSpec& spec, uint64_t seed, int64_t epoch, int64_t sample, int64_t view) {
    return draw_augment(spec, augment_key(seed, epoch, sample, view));
}

// Every view of one sample in recipe order [g1, g2, l1 .. lN]; view v is drawn with augment_key(.., v).
std::vector<AugmentParams> draw_views(const ViewRecipe& r, uint64_t seed, int64_t epoch, int64_t sample);

}  // namespace sslight::data
