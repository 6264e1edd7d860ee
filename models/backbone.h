// The backbone interface shared by every model the SSL methods train (SPEC.md §3): a Module whose forward
// is the pooled feature [N, feature_dim()] (global average pool of the last feature map for CNNs, the
// final-norm CLS token for ViTs), with the last feature map available as forward_map (NHWC [N, h, w, C] or
// tokens [N, T, C]). Gradients flow through both to the input and every parameter (autograd records in
// the ops). make_backbone builds one by name; new families add one row to its table (models/backbone.cpp).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "engine/nn/module.h"

namespace sslight::models {

class FlopCounter;

class Backbone : public nn::Module {
public:
    using nn::Module::Module;

    // x: [N, H, W, 3] -> [N, feature_dim()].
    virtual Tensor forward_features(const Tensor& x) = 0;
    // x: [N, H, W, 3] -> the last feature map: [N, h, w, feature_dim()] (CNN) or [N, T, feature_dim()] (ViT).
    virtual Tensor forward_map(const Tensor& x) = 0;
    virtual int64_t feature_dim() const = 0;
    // Adds this network's layers, for one image of [height, width, 3], to `fc` (models/flops.h).
    virtual void count_flops(FlopCounter& fc, int64_t height, int64_t width) = 0;

    Tensor forward(const Tensor& x) override { return forward_features(x); }
};

struct BackboneOptions {
    double width_mult = 1.0;       // MobileNetV2 channel multiplier (torchvision's _make_divisible rounding)
    double drop_path_rate = 0.0;   // stochastic depth of ViTs (SPEC.md: 0.1 on the student); CNNs ignore it
};

// "mobilenet_v2", "resnet18", "resnet34", "resnet50" (and the ViTs once they exist). Initialised as
// torchvision from nn::init_generator(). An unknown name throws ConfigError listing the known ones.
std::shared_ptr<Backbone> make_backbone(const std::string& name, const BackboneOptions& options = {});
std::vector<std::string> backbone_names();

}  // namespace sslight::models
