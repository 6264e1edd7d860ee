// Layer modules: registration of parameters/buffers under PyTorch's names, initialisation, forward
// through the ops (autograd records there).
#include "engine/nn/layers.h"

#include <cmath>

#include "engine/autograd.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/layer_norm.h"
#include "engine/ops/matmul.h"

namespace sslight::nn {

Generator& init_generator() {
    static Generator gen(0);
    return gen;
}
void manual_seed(uint64_t seed) { init_generator() = Generator(seed); }

Conv2d::Conv2d(int64_t in, int64_t out, int kernel, Conv2dOptions opt) : Module("Conv2d") {
    SSL_CHECK(in > 0 && out > 0 && kernel > 0 && opt.groups > 0 && in % opt.groups == 0 && out % opt.groups == 0,
              "Conv2d(", in, ", ", out, ", k=", kernel, ", groups=", opt.groups,
              "): channels must be positive and divisible by groups");
    Tensor w = empty({out, kernel, kernel, in / opt.groups});
    kaiming_normal_(w, out * kernel * kernel, init_generator().next());
    register_parameter("weight", &weight, w);
    if (opt.bias) register_parameter("bias", &bias, zeros({out}));
    args.stride_h = args.stride_w = opt.stride;
    args.pad_h = args.pad_w = opt.padding;
    args.dil_h = args.dil_w = opt.dilation;
    args.groups = opt.groups;
}

Tensor Conv2d::forward(const Tensor& x) { return conv2d(x, weight, bias, args); }

BatchNorm::BatchNorm(int64_t channels, bool two_d, double eps, double momentum, Activation act)
    : Module(two_d ? "BatchNorm2d" : "BatchNorm1d") {
    SSL_CHECK(channels > 0, type_name(), ": channels must be positive, got ", channels);
    register_parameter("weight", &weight, ones({channels}));
    register_parameter("bias", &bias, zeros({channels}));
    register_buffer("running_mean", &running_mean, zeros({channels}));
    register_buffer("running_var", &running_var, ones({channels}));
    register_buffer("num_batches_tracked", &num_batches_tracked, zeros({}, DType::i64), /*host=*/true);
    args.eps = eps;
    args.momentum = momentum;
    args.act = act;
}

Tensor BatchNorm::forward(const Tensor& x) {
    BatchNormArgs a = args;
    a.training = is_training();
    // A host buffer (never moved to the GPU), kept for state_dict compatibility with PyTorch.
    if (a.training) num_batches_tracked.data<int64_t>()[0] += 1;
    return batch_norm(x, weight, bias, running_mean, running_var, a);
}

Linear::Linear(int64_t in, int64_t out, bool with_bias) : Module("Linear") {
    SSL_CHECK(in > 0 && out > 0, "Linear(", in, ", ", out, "): sizes must be positive");
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    Tensor w = empty({out, in});
    uniform_(w, -bound, bound, init_generator().next());
    register_parameter("weight", &weight, w);
    if (with_bias) {
        Tensor b = empty({out});
        uniform_(b, -bound, bound, init_generator().next());
        register_parameter("bias", &bias, b);
    }
}

Tensor Linear::forward(const Tensor& x) { return linear(x, weight, bias); }

LayerNorm::LayerNorm(int64_t channels, double eps_) : Module("LayerNorm"), eps(eps_) {
    register_parameter("weight", &weight, ones({channels}));
    register_parameter("bias", &bias, zeros({channels}));
}

Tensor LayerNorm::forward(const Tensor& x) { return layer_norm(x, weight, bias, eps); }

Tensor ReLU::forward(const Tensor& x) { return relu(x); }
Tensor ReLU6::forward(const Tensor& x) { return relu6(x); }
Tensor GELU::forward(const Tensor& x) { return gelu(x); }

Sequential::Sequential(std::vector<std::shared_ptr<Module>> mods) : Module("Sequential") {
    for (auto& m : mods) push_back(std::move(m));
}

Sequential& Sequential::push_back(std::shared_ptr<Module> m) {
    add_child(std::to_string(layers_.size()), m);
    layers_.push_back(std::move(m));
    return *this;
}

Tensor Sequential::forward(const Tensor& x) {
    Tensor h = x;
    for (auto& m : layers_) h = m->forward(h);
    return h;
}

}  // namespace sslight::nn
