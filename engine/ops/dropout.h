// Inverted dropout (Srivastava et al. 2014) and drop path / stochastic depth (Huang et al. 2016, timm
// semantics): masks come from the counter-based sequence of `key` (engine/random.h), so backward
// regenerates them from the key instead of saving a mask. Gradient: dx = mask * scale * dy (written).
// Decision k is `rand(key)[k] < 1 - p`, so give every call its own key (Generator::next or derive).
#pragma once
#include "engine/random.h"
#include "engine/tensor.h"

namespace sslight {

// Each element kept with probability 1 - p and scaled by 1 / (1 - p); dropped elements are 0. Returns x
// itself when !training or p == 0; p == 1 gives zeros. p outside [0, 1] is an error.
// CPU: f32, f64; CUDA: f32, bf16.
Tensor dropout(const Tensor& x, double p, bool training, RngKey key);

// One keep/drop decision per sample along dim 0 (x: [B, ...]); kept samples scaled by 1 / (1 - p). Returns x
// itself when !training or p == 0; p == 1 gives zeros. CPU: f32, f64; CUDA: f32, bf16.
Tensor drop_path(const Tensor& x, double p, bool training, RngKey key);

}  // namespace sslight
