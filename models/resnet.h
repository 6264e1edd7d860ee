// ResNet18/34 (BasicBlock) and ResNet50 (Bottleneck, stride on the 3x3 conv: torchvision's v1.5) without the
// classifier, on NHWC images: conv7x7/2 - BN - ReLU - maxpool3x3/2 - layer1..4 - global average pool.
// Names and shapes are torchvision's state_dict minus fc.* (conv weights OHWI here, OIHW in files). BN -> ReLU
// pairs use BN's fused ReLU; the ReLU after a residual add is a separate op. Gradients: autograd through the ops.
#pragma once
#include <memory>
#include <vector>

#include "engine/nn/layers.h"
#include "models/backbone.h"
#include "models/flops.h"

namespace sslight::models {

// A residual block: y = relu(body(x) + shortcut(x)), shortcut = downsample (1x1 conv/stride + BN) or identity.
class ResidualBlock : public nn::Module {
public:
    using nn::Module::Module;
    // Adds the block's layers for an input of `hw` x in_channels under `prefix`; returns the output size.
    virtual FlopCounter::Hw count_flops(FlopCounter& fc, const std::string& prefix, FlopCounter::Hw hw) = 0;
    virtual int64_t out_channels() const = 0;
};

class BasicBlock : public ResidualBlock {
public:
    static constexpr int64_t kExpansion = 1;
    BasicBlock(int64_t inplanes, int64_t planes, int stride);
    Tensor forward(const Tensor& x) override;
    FlopCounter::Hw count_flops(FlopCounter& fc, const std::string& prefix, FlopCounter::Hw hw) override;
    int64_t out_channels() const override { return planes_ * kExpansion; }

    std::shared_ptr<nn::Conv2d> conv1, conv2;
    std::shared_ptr<nn::BatchNorm> bn1, bn2;  // bn1 carries the fused ReLU
    std::shared_ptr<nn::Sequential> downsample;  // null when the shortcut is the identity

private:
    int64_t planes_;
};

class Bottleneck : public ResidualBlock {
public:
    static constexpr int64_t kExpansion = 4;
    Bottleneck(int64_t inplanes, int64_t planes, int stride);
    Tensor forward(const Tensor& x) override;
    FlopCounter::Hw count_flops(FlopCounter& fc, const std::string& prefix, FlopCounter::Hw hw) override;
    int64_t out_channels() const override { return planes_ * kExpansion; }

    std::shared_ptr<nn::Conv2d> conv1, conv2, conv3;  // 1x1, 3x3 (stride), 1x1 (x4)
    std::shared_ptr<nn::BatchNorm> bn1, bn2, bn3;     // bn1, bn2 carry the fused ReLU
    std::shared_ptr<nn::Sequential> downsample;

private:
    int64_t planes_;
};

enum class ResNetBlock { basic, bottleneck };

class ResNet : public Backbone {
public:
    // layers: blocks per stage, e.g. {2, 2, 2, 2} (ResNet18), {3, 4, 6, 3} (ResNet34 / ResNet50).
    ResNet(ResNetBlock block, std::vector<int> layers);
    Tensor forward_features(const Tensor& x) override;
    Tensor forward_map(const Tensor& x) override;
    int64_t feature_dim() const override { return feature_dim_; }
    void count_flops(FlopCounter& fc, int64_t height, int64_t width) override;

    std::shared_ptr<nn::Conv2d> conv1;
    std::shared_ptr<nn::BatchNorm> bn1;  // with the fused ReLU
    std::vector<std::shared_ptr<nn::Sequential>> stages;  // layer1..layer4
    std::vector<std::vector<std::shared_ptr<ResidualBlock>>> blocks;  // typed view of the stages

private:
    int64_t feature_dim_ = 0;
};

std::shared_ptr<ResNet> resnet18();
std::shared_ptr<ResNet> resnet34();
std::shared_ptr<ResNet> resnet50();

}  // namespace sslight::models
