// MobileNetV2 construction following torchvision.models.mobilenetv2 (inverted residual settings, channel
// rounding, module indices), its forward (conv2d routes the depthwise 3x3 to depthwise_conv2d; BN carries the
// fused ReLU6) and the per-layer FLOP walk.
#include "models/mobilenet_v2.h"

#include <algorithm>

#include "engine/ops/elementwise.h"
#include "engine/ops/pool.h"

namespace sslight::models {
namespace {
using Hw = FlopCounter::Hw;
}  // namespace

int64_t make_divisible(double v, int64_t divisor, int64_t min_value) {
    if (min_value == 0) min_value = divisor;
    int64_t nv = std::max(min_value, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
    if (static_cast<double>(nv) < 0.9 * v) nv += divisor;
    return nv;
}

ConvBNReLU6::ConvBNReLU6(int64_t in, int64_t out, int kernel, int stride, int groups) {
    nn::Conv2dOptions o;
    o.stride = stride;
    o.padding = (kernel - 1) / 2;
    o.groups = groups;
    conv = std::make_shared<nn::Conv2d>(in, out, kernel, o);
    bn = std::make_shared<nn::BatchNorm>(out, true, 1e-5, 0.1, Activation::relu6);
    push_back(conv);
    push_back(bn);
    push_back(std::make_shared<nn::Identity>());  // torchvision's ReLU6 slot, fused into the BN above
}

Hw ConvBNReLU6::count_flops(FlopCounter& fc, const std::string& prefix, Hw hw) const {
    const Hw out = fc.conv(prefix + ".0", *conv, hw);
    fc.batch_norm(prefix + ".1", *bn, out);
    return out;
}

InvertedResidual::InvertedResidual(int64_t in, int64_t out, int stride, int expand_ratio)
    : nn::Module("InvertedResidual"), out_channels(out) {
    SSL_CHECK(stride == 1 || stride == 2, "InvertedResidual: stride must be 1 or 2, got ", stride);
    // torchvision: hidden_dim = int(round(inp * expand_ratio)); an integer product here.
    const int64_t hidden = in * expand_ratio;
    use_res_connect = stride == 1 && in == out;
    conv = register_module("conv", std::make_shared<nn::Sequential>());
    if (expand_ratio != 1) {
        expand = std::make_shared<ConvBNReLU6>(in, hidden, 1, 1);
        conv->push_back(expand);
    }
    depthwise = std::make_shared<ConvBNReLU6>(hidden, hidden, 3, stride, static_cast<int>(hidden));
    project = std::make_shared<nn::Conv2d>(hidden, out, 1);
    project_bn = std::make_shared<nn::BatchNorm>(out);
    conv->push_back(depthwise);
    conv->push_back(project);
    conv->push_back(project_bn);
}

Tensor InvertedResidual::forward(const Tensor& x) {
    Tensor y = conv->forward(x);
    return use_res_connect ? add(x, y) : y;
}

Hw InvertedResidual::count_flops(FlopCounter& fc, const std::string& prefix, Hw hw) const {
    const std::string p = prefix + ".conv.";
    int i = 0;
    Hw h = hw;
    if (expand) h = expand->count_flops(fc, p + std::to_string(i++), h);
    h = depthwise->count_flops(fc, p + std::to_string(i++), h);
    h = fc.conv(p + std::to_string(i++), *project, h);
    fc.batch_norm(p + std::to_string(i), *project_bn, h);
    if (use_res_connect) fc.elementwise(prefix + ".add", "add", h.h * h.w * out_channels, 1, {h.h, h.w, out_channels});
    return h;
}

MobileNetV2::MobileNetV2(double width_mult) : Backbone("MobileNetV2") {
    SSL_CHECK(width_mult > 0, "MobileNetV2: width_mult must be positive, got ", width_mult);
    // (t, c, n, s): expansion, output channels, repeats, stride of the first repeat.
    const int settings[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                                {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
    int64_t in = make_divisible(32 * width_mult, 8);
    last_channel_ = make_divisible(1280 * std::max(1.0, width_mult), 8);
    features = register_module("features", std::make_shared<nn::Sequential>());
    stem = std::make_shared<ConvBNReLU6>(3, in, 3, 2);
    features->push_back(stem);
    for (const auto& s : settings) {
        const int64_t out = make_divisible(s[1] * width_mult, 8);
        for (int i = 0; i < s[2]; ++i) {
            auto blk = std::make_shared<InvertedResidual>(in, out, i == 0 ? s[3] : 1, s[0]);
            features->push_back(blk);
            blocks.push_back(blk);
            in = out;
        }
    }
    head = std::make_shared<ConvBNReLU6>(in, last_channel_, 1, 1);
    features->push_back(head);
}

Tensor MobileNetV2::forward_map(const Tensor& x) {
    SSL_CHECK_SHAPE(x.dim() == 4 && x.size(3) == 3, "MobileNetV2: input must be [N, H, W, 3] (NHWC), got ",
                    shape_str(x.shape()));
    return features->forward(x);
}

Tensor MobileNetV2::forward_features(const Tensor& x) { return global_avg_pool(forward_map(x)); }

void MobileNetV2::count_flops(FlopCounter& fc, int64_t height, int64_t width) {
    Hw h = stem->count_flops(fc, "features.0", {height, width});
    for (size_t i = 0; i < blocks.size(); ++i) h = blocks[i]->count_flops(fc, "features." + std::to_string(i + 1), h);
    h = head->count_flops(fc, "features." + std::to_string(blocks.size() + 1), h);
    fc.global_avg_pool("avgpool", h, last_channel_);
}

}  // namespace sslight::models
