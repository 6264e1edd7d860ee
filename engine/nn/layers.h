// The standard layers as Modules, named and initialised like PyTorch so state_dict keys and shapes match
// torchvision/timm (except the documented layout: conv weights are stored OHWI [out, k, k, in/groups]
// for NHWC; weight interchange transposes to OIHW). Initialisation draws from nn::init_generator().
#pragma once
#include <memory>
#include <vector>

#include "engine/nn/module.h"
#include "engine/ops/batch_norm.h"
#include "engine/ops/conv2d.h"
#include "engine/random.h"

namespace sslight::nn {

// The generator every layer constructor draws its initial weights from (seeded by manual_seed).
Generator& init_generator();
void manual_seed(uint64_t seed);

struct Conv2dOptions {
    int stride = 1, padding = 0, dilation = 1, groups = 1;
    bool bias = false;
};

// weight [out, k, k, in/groups], bias [out] when opt.bias. Init as torchvision's
// kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / (out · k · k)).
class Conv2d : public Module {
public:
    Conv2d(int64_t in, int64_t out, int kernel, Conv2dOptions opt = {});
    Tensor forward(const Tensor& x) override;
    Tensor weight, bias;
    Conv2dArgs args;
};

// BatchNorm1d / BatchNorm2d (the same op on [..., C]); buffers running_mean, running_var and
// num_batches_tracked (i64, shape [] as in PyTorch). An optional fused activation.
class BatchNorm : public Module {
public:
    BatchNorm(int64_t channels, bool two_d = true, double eps = 1e-5, double momentum = 0.1,
              Activation act = Activation::none);
    Tensor forward(const Tensor& x) override;
    Tensor weight, bias, running_mean, running_var, num_batches_tracked;
    BatchNormArgs args;  // training is taken from the module's mode; all_reduce set by data parallel
};

// y = x·Wᵀ + b; weight [out, in]. PyTorch's default init: U(-1/sqrt(in), 1/sqrt(in)) for both.
class Linear : public Module {
public:
    Linear(int64_t in, int64_t out, bool bias = true);
    Tensor forward(const Tensor& x) override;
    Tensor weight, bias;
};

class LayerNorm : public Module {
public:
    explicit LayerNorm(int64_t channels, double eps = 1e-5);
    Tensor forward(const Tensor& x) override;
    Tensor weight, bias;
    double eps;
};

class ReLU : public Module {
public:
    ReLU() : Module("ReLU") {}
    Tensor forward(const Tensor& x) override;
};
class ReLU6 : public Module {
public:
    ReLU6() : Module("ReLU6") {}
    Tensor forward(const Tensor& x) override;
};
class GELU : public Module {
public:
    GELU() : Module("GELU") {}
    Tensor forward(const Tensor& x) override;
};
class Identity : public Module {
public:
    Identity() : Module("Identity") {}
    Tensor forward(const Tensor& x) override { return x; }
};

// Children named "0", "1", ... as torch.nn.Sequential.
class Sequential : public Module {
public:
    Sequential() : Module("Sequential") {}
    explicit Sequential(std::vector<std::shared_ptr<Module>> mods);
    Sequential& push_back(std::shared_ptr<Module> m);
    Tensor forward(const Tensor& x) override;
    size_t size() const { return layers_.size(); }
    Module& operator[](size_t i) { return *layers_.at(i); }

private:
    std::vector<std::shared_ptr<Module>> layers_;
};

}  // namespace sslight::nn
