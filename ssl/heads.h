// The heads of the SSL methods (SPEC.md §4) and the backbone + head wrapper they run on. DINOHead:
// MLP(d→h→h→bottleneck) with optional BN1d and GELU, L2-normalise, then the weight-normalised last layer
// y = (x·v̂ᵀ)·g with v̂ the rows of v over their norm (g frozen at 1 for CNNs). MLPs for MoCo-v2 / SwAV
// projections. Gradients flow through everything by the engine ops' autograd; frozen parameters have
// requires_grad off.
#pragma once
#include <memory>
#include <vector>

#include "engine/nn/layers.h"
#include "models/backbone.h"

namespace sslight::ssl {

// weight_v [out, in], weight_g [out, 1] (PyTorch weight_norm names and shapes, dim 0). v ~ U(±1/√in) (nn.Linear's
// default), g = 1; frozen_norm turns g's gradient off and drops it from the forward (it is exactly 1).
class WeightNormLinear : public nn::Module {
public:
    WeightNormLinear(int64_t in, int64_t out, bool frozen_norm);
    Tensor forward(const Tensor& x) override;
    Tensor weight_g, weight_v;
    bool frozen_norm;
};

// DINO's DINOHead: `mlp` (Sequential: Linear [BN] GELU, Linear [BN] GELU, Linear) with trunc_normal(0.02) weights
// and zero biases, then `last_layer` (WeightNormLinear).
class DinoHead : public nn::Module {
public:
    DinoHead(int64_t in, int64_t out, bool use_bn, bool norm_last_layer, int64_t hidden = 2048,
             int64_t bottleneck = 256);
    Tensor forward(const Tensor& x) override;
    std::shared_ptr<nn::Sequential> mlp;
    std::shared_ptr<WeightNormLinear> last_layer;
};

// Linear(in, hidden) [BN1d] ReLU Linear(hidden, out) (MoCo-v2: no BN, PyTorch init; SwAV: BN, N(0, 0.01)).
std::shared_ptr<nn::Sequential> make_projection(int64_t in, int64_t hidden, int64_t out, bool use_bn);
// Re-initialises every Linear weight inside `m` to N(0, std²) and its bias to 0 (SwAV's init).
void init_linears_normal(nn::Module& m, double std);

// Children "backbone" and "head" (DINO's MultiCropWrapper names). forward_groups runs the backbone once per
// non-empty group, concatenates the features in group order and applies the head once.
class BackboneWithHead : public nn::Module {
public:
    BackboneWithHead(std::shared_ptr<models::Backbone> backbone, std::shared_ptr<nn::Module> head);
    Tensor forward_groups(const std::vector<Tensor>& groups);
    Tensor forward(const Tensor& x) override { return forward_groups({x}); }
    std::shared_ptr<models::Backbone> backbone;
    std::shared_ptr<nn::Module> head;
    Tensor last_features;  // the first group's pooled backbone features of the last call, detached
};

// In-place copy into a leaf (parameter or buffer) under no-grad: dst ← src (same shape, dtype, device).
void assign_(Tensor& dst, const Tensor& src);

}  // namespace sslight::ssl
