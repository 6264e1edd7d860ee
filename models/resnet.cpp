// ResNet blocks and stages as torchvision builds them (_make_layer: the first block of a stage carries the
// stride and, when the shape changes, the 1x1 downsample), forward through conv2d / batch_norm (fused ReLU) /
// max_pool2d / add / relu / global_avg_pool, and the per-layer FLOP walk.
#include "models/resnet.h"

#include "engine/ops/elementwise.h"
#include "engine/ops/pool.h"

namespace sslight::models {
namespace {

using Hw = FlopCounter::Hw;

std::shared_ptr<nn::Conv2d> conv(int64_t in, int64_t out, int k, int stride) {
    nn::Conv2dOptions o;
    o.stride = stride;
    o.padding = (k - 1) / 2;
    return std::make_shared<nn::Conv2d>(in, out, k, o);
}

std::shared_ptr<nn::BatchNorm> bn(int64_t c, bool relu) {
    return std::make_shared<nn::BatchNorm>(c, true, 1e-5, 0.1, relu ? Activation::relu : Activation::none);
}

// torchvision: downsample = Sequential(conv1x1(inplanes, out, stride), BatchNorm2d(out)) when the shape changes.
std::shared_ptr<nn::Sequential> make_downsample(int64_t inplanes, int64_t out, int stride) {
    if (stride == 1 && inplanes == out) return nullptr;
    return std::make_shared<nn::Sequential>(std::vector<std::shared_ptr<nn::Module>>{conv(inplanes, out, 1, stride),
                                                                                     bn(out, false)});
}

// relu(body + shortcut): the add and the ReLU after it, one op each per element.
Tensor residual_out(const Tensor& body, const Tensor& x, const std::shared_ptr<nn::Sequential>& downsample) {
    return relu(add(body, downsample ? downsample->forward(x) : x));
}

Hw count_shortcut(FlopCounter& fc, const std::string& prefix, const std::shared_ptr<nn::Sequential>& downsample,
                  Hw in, Hw out, int64_t channels) {
    if (downsample) {
        const Hw d = fc.conv(prefix + ".downsample.0", static_cast<const nn::Conv2d&>((*downsample)[0]), in);
        fc.batch_norm(prefix + ".downsample.1", static_cast<const nn::BatchNorm&>((*downsample)[1]), d);
    }
    fc.elementwise(prefix + ".add", "add", out.h * out.w * channels, 1, {out.h, out.w, channels});
    fc.elementwise(prefix + ".relu", "act", out.h * out.w * channels, 1, {out.h, out.w, channels});
    return out;
}

}  // namespace

BasicBlock::BasicBlock(int64_t inplanes, int64_t planes, int stride) : ResidualBlock("BasicBlock"), planes_(planes) {
    conv1 = register_module("conv1", conv(inplanes, planes, 3, stride));
    bn1 = register_module("bn1", bn(planes, true));
    conv2 = register_module("conv2", conv(planes, planes, 3, 1));
    bn2 = register_module("bn2", bn(planes, false));
    downsample = make_downsample(inplanes, planes * kExpansion, stride);
    if (downsample) register_module("downsample", downsample);
}

Tensor BasicBlock::forward(const Tensor& x) {
    Tensor h = bn2->forward(conv2->forward(bn1->forward(conv1->forward(x))));
    return residual_out(h, x, downsample);
}

Hw BasicBlock::count_flops(FlopCounter& fc, const std::string& prefix, Hw hw) {
    Hw h = fc.conv(prefix + ".conv1", *conv1, hw);
    fc.batch_norm(prefix + ".bn1", *bn1, h);
    h = fc.conv(prefix + ".conv2", *conv2, h);
    fc.batch_norm(prefix + ".bn2", *bn2, h);
    return count_shortcut(fc, prefix, downsample, hw, h, out_channels());
}

Bottleneck::Bottleneck(int64_t inplanes, int64_t planes, int stride) : ResidualBlock("Bottleneck"), planes_(planes) {
    conv1 = register_module("conv1", conv(inplanes, planes, 1, 1));
    bn1 = register_module("bn1", bn(planes, true));
    conv2 = register_module("conv2", conv(planes, planes, 3, stride));
    bn2 = register_module("bn2", bn(planes, true));
    conv3 = register_module("conv3", conv(planes, planes * kExpansion, 1, 1));
    bn3 = register_module("bn3", bn(planes * kExpansion, false));
    downsample = make_downsample(inplanes, planes * kExpansion, stride);
    if (downsample) register_module("downsample", downsample);
}

Tensor Bottleneck::forward(const Tensor& x) {
    Tensor h = bn2->forward(conv2->forward(bn1->forward(conv1->forward(x))));
    return residual_out(bn3->forward(conv3->forward(h)), x, downsample);
}

Hw Bottleneck::count_flops(FlopCounter& fc, const std::string& prefix, Hw hw) {
    Hw h = fc.conv(prefix + ".conv1", *conv1, hw);
    fc.batch_norm(prefix + ".bn1", *bn1, h);
    h = fc.conv(prefix + ".conv2", *conv2, h);
    fc.batch_norm(prefix + ".bn2", *bn2, h);
    h = fc.conv(prefix + ".conv3", *conv3, h);
    fc.batch_norm(prefix + ".bn3", *bn3, h);
    return count_shortcut(fc, prefix, downsample, hw, h, out_channels());
}

ResNet::ResNet(ResNetBlock block, std::vector<int> layers) : Backbone("ResNet") {
    SSL_CHECK(layers.size() == 4, "ResNet needs 4 stages, got ", layers.size());
    conv1 = register_module("conv1", conv(3, 64, 7, 2));
    bn1 = register_module("bn1", bn(64, true));
    int64_t inplanes = 64;
    const int64_t planes[4] = {64, 128, 256, 512};
    for (int s = 0; s < 4; ++s) {
        SSL_CHECK(layers[s] >= 1, "ResNet stage ", s + 1, " needs at least one block, got ", layers[s]);
        auto stage = std::make_shared<nn::Sequential>();
        blocks.emplace_back();
        for (int b = 0; b < layers[s]; ++b) {
            const int stride = (b == 0 && s > 0) ? 2 : 1;
            std::shared_ptr<ResidualBlock> blk;
            if (block == ResNetBlock::basic)
                blk = std::make_shared<BasicBlock>(inplanes, planes[s], stride);
            else
                blk = std::make_shared<Bottleneck>(inplanes, planes[s], stride);
            inplanes = blk->out_channels();
            stage->push_back(blk);
            blocks.back().push_back(blk);
        }
        stages.push_back(register_module("layer" + std::to_string(s + 1), stage));
    }
    feature_dim_ = inplanes;
}

Tensor ResNet::forward_map(const Tensor& x) {
    SSL_CHECK_SHAPE(x.dim() == 4 && x.size(3) == 3, "ResNet: input must be [N, H, W, 3] (NHWC), got ",
                    shape_str(x.shape()));
    Tensor h = max_pool2d(bn1->forward(conv1->forward(x)), 3, 2, 1);
    for (auto& stage : stages) h = stage->forward(h);
    return h;
}

Tensor ResNet::forward_features(const Tensor& x) { return global_avg_pool(forward_map(x)); }

void ResNet::count_flops(FlopCounter& fc, int64_t height, int64_t width) {
    Hw h = fc.conv("conv1", *conv1, {height, width});
    fc.batch_norm("bn1", *bn1, h);
    h = fc.max_pool("maxpool", h, 64, 3, 2, 1);
    for (size_t s = 0; s < blocks.size(); ++s)
        for (size_t b = 0; b < blocks[s].size(); ++b)
            h = blocks[s][b]->count_flops(fc, "layer" + std::to_string(s + 1) + "." + std::to_string(b), h);
    fc.global_avg_pool("avgpool", h, feature_dim_);
}

std::shared_ptr<ResNet> resnet18() { return std::make_shared<ResNet>(ResNetBlock::basic, std::vector<int>{2, 2, 2, 2}); }
std::shared_ptr<ResNet> resnet34() { return std::make_shared<ResNet>(ResNetBlock::basic, std::vector<int>{3, 4, 6, 3}); }
std::shared_ptr<ResNet> resnet50() {
    return std::make_shared<ResNet>(ResNetBlock::bottleneck, std::vector<int>{3, 4, 6, 3});
}

}  // namespace sslight::models
