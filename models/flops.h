// Analytic forward cost of a backbone for one image at a given input size. The headline figure is
// FLOPs = 2 x multiply-accumulates of the convolutions, linear layers and attention matmuls (the convention
// behind the usually quoted "1.8 G" of ResNet18 and "0.3 G" of MobileNetV2 MACs); BN, activations,
// residual adds and pooling are counted separately as other_flops (one op per element, two for an affine BN).
// Nothing here runs a forward pass: each backbone walks its own modules (Backbone::count_flops).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/nn/layers.h"

namespace sslight::models {

class Backbone;

struct FlopEntry {
    std::string name;  // module path, e.g. "layer1.0.conv1"
    std::string kind;  // "conv", "linear", "matmul", "bn", "act", "add", "pool"
    int64_t macs = 0;   // multiply-accumulates (0 for element-wise entries)
    int64_t other = 0;  // element-wise FLOPs
    Shape out;          // output shape for one image (NHWC without N, or [T, C])
};

class FlopCounter {
public:
    struct Hw {
        int64_t h = 0, w = 0;
    };
    // A convolution applied to an [h, w, Cin] map; returns the output size. Bias adds count as other.
    Hw conv(const std::string& name, const nn::Conv2d& c, Hw in);
    // y = x W^T + b on `rows` rows.
    void linear(const std::string& name, const nn::Linear& l, int64_t rows);
    // batch x [m, k] · [k, n] products (attention scores and values).
    void matmul(const std::string& name, int64_t batch, int64_t m, int64_t k, int64_t n);
    // BN over an [h, w, C] map (affine: 2 FLOPs per element, plus 1 for a fused activation).
    void batch_norm(const std::string& name, const nn::BatchNorm& bn, Hw at);
    // Any other element-wise op: `flops_per_element` x elements.
    void elementwise(const std::string& name, const std::string& kind, int64_t elements, int64_t flops_per_element,
                     Shape out);
    Hw max_pool(const std::string& name, Hw in, int64_t channels, int kernel, int stride, int padding);
    void global_avg_pool(const std::string& name, Hw in, int64_t channels);

    int64_t macs() const { return macs_; }
    int64_t flops() const { return 2 * macs_; }  // the headline figure
    int64_t other_flops() const { return other_; }
    const std::vector<FlopEntry>& entries() const { return entries_; }

private:
    int64_t macs_ = 0, other_ = 0;
    std::vector<FlopEntry> entries_;
};

// Walks `m` at an input of [height, width, 3] for one image. Throws ShapeError when the input is too small
// for the network (a layer would produce an empty map).
FlopCounter count_flops(Backbone& m, int64_t height, int64_t width);

// "1.82 G", "299.5 M", "12.3 k": two decimals below 10, one above, with an SI prefix and a trailing space.
std::string format_count(double value);

// A per-layer table (name, kind, output shape, MACs) followed by the totals, for `sslight info`.
std::string flops_table(const FlopCounter& fc);

}  // namespace sslight::models
