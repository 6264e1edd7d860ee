// MobileNetV2 (Sandler et al. 2018) as torchvision builds it, without the classifier, on NHWC images:
// features = [conv3x3/2 BN ReLU6] + inverted residual blocks (t, c, n, s) + [conv1x1 to 1280 BN ReLU6], then
// global average pooling. Channels follow torchvision's _make_divisible(c * width_mult, 8). Names and shapes
// are torchvision's state_dict minus classifier.*; each BN -> ReLU6 uses BN's fused ReLU6 and keeps the index
// layout with an Identity at the activation's slot. Gradients: autograd through the ops.
#pragma once
#include <memory>
#include <vector>

#include "engine/nn/layers.h"
#include "models/backbone.h"
#include "models/flops.h"

namespace sslight::models {

// torchvision's _make_divisible: round v to the nearest multiple of `divisor` (at least min_value, default
// divisor), bumped up one step when rounding down lost more than 10%.
int64_t make_divisible(double v, int64_t divisor, int64_t min_value = 0);

// torchvision's Conv2dNormActivation(in, out, k, stride, groups) with ReLU6: a Sequential
// ["0" Conv2d (no bias, padding (k-1)/2), "1" BatchNorm with fused ReLU6, "2" Identity].
class ConvBNReLU6 : public nn::Sequential {
public:
    ConvBNReLU6(int64_t in, int64_t out, int kernel, int stride, int groups = 1);
    FlopCounter::Hw count_flops(FlopCounter& fc, const std::string& prefix, FlopCounter::Hw hw) const;
    std::shared_ptr<nn::Conv2d> conv;
    std::shared_ptr<nn::BatchNorm> bn;
};

// y = x + conv(x) when stride 1 and in == out, else conv(x); conv = Sequential of
// [expand ConvBNReLU6 1x1 (only when expand_ratio != 1), depthwise ConvBNReLU6 3x3, Conv2d 1x1, BatchNorm].
class InvertedResidual : public nn::Module {
public:
    InvertedResidual(int64_t in, int64_t out, int stride, int expand_ratio);
    Tensor forward(const Tensor& x) override;
    FlopCounter::Hw count_flops(FlopCounter& fc, const std::string& prefix, FlopCounter::Hw hw) const;

    std::shared_ptr<nn::Sequential> conv;
    std::shared_ptr<ConvBNReLU6> expand;  // null when expand_ratio == 1
    std::shared_ptr<ConvBNReLU6> depthwise;
    std::shared_ptr<nn::Conv2d> project;
    std::shared_ptr<nn::BatchNorm> project_bn;
    bool use_res_connect = false;
    int64_t out_channels = 0;
};

class MobileNetV2 : public Backbone {
public:
    explicit MobileNetV2(double width_mult = 1.0);
    Tensor forward_features(const Tensor& x) override;
    Tensor forward_map(const Tensor& x) override;
    int64_t feature_dim() const override { return last_channel_; }
    void count_flops(FlopCounter& fc, int64_t height, int64_t width) override;

    std::shared_ptr<nn::Sequential> features;  // "features.0" ... "features.18" at width 1.0
    std::shared_ptr<ConvBNReLU6> stem, head;
    std::vector<std::shared_ptr<InvertedResidual>> blocks;

private:
    int64_t last_channel_ = 0;
};

}  // namespace sslight::models
