// Gradient clipping in place on the grads of parameters (those with an undefined grad are skipped):
//   clip_grad_norm: torch.nn.utils.clip_grad_norm_ — n = ‖all grads‖₂, every grad scaled by max_norm/(n + 1e-6)
//                   when that is < 1; returns n (before clipping).
//   clip_grad_per_param: DINO utils.clip_gradients — per parameter, n_i = ‖g_i‖₂, g_i scaled by clip/(n_i + 1e-6)
//                   when that is < 1; returns the n_i of the parameters that have a grad, in order.
// Multi-tensor kernels on the GPU (the coefficients never leave the device; the norms are read back once).
#pragma once
#include <vector>

#include "engine/tensor.h"

namespace sslight::optim {

double clip_grad_norm(const std::vector<Tensor*>& params, double max_norm);
std::vector<double> clip_grad_per_param(const std::vector<Tensor*>& params, double clip);

}  // namespace sslight::optim
