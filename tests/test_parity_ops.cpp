// Parity with PyTorch: tests/parity/ops_parity.py (Debian's python3-torch, float64) writes inputs,
// outputs, an upstream gradient and input gradients for each op; sslight computes the same in float64 on
// the CPU and must agree. ctest passes --require-torch, so the test is skipped (exit 77, with the reason)
// only where python3-torch is not importable.
#include <doctest/doctest.h>

#include <cstdlib>
#include <functional>
#include <map>

#include <unistd.h>

#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "engine/ops/batch_norm.h"
#include "engine/ops/conv2d.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/layer_norm.h"
#include "engine/ops/matmul.h"
#include "engine/ops/pool.h"
#include "engine/ops/reduce.h"
#include "engine/ops/softmax.h"
#include "tests/compare.h"

using namespace sslight;
using namespace sslight::test;

namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

const io::TensorMap& reference() {
    static io::TensorMap ref = [] {
        const std::string out = "/tmp/sslight_ops_parity_" + std::to_string(::getpid()) + ".safetensors";
        const std::string cmd = std::string(SSLIGHT_PARITY_PYTHON) + " " SSLIGHT_SOURCE_DIR "/tests/parity/ops_parity.py " + out;
        REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, "failed: ", cmd);
        io::TensorMap m = io::load_safetensors(out);
        std::remove(out.c_str());
        return m;
    }();
    return ref;
}

Tensor bn_train(const std::vector<Tensor>& in) {
    Tensor rm, rv;
    BatchNormArgs a;
    return batch_norm(in[0], in[1], in[2], rm, rv, a);
}

void check_case(const std::string& name, const Fn& fn) {
    const io::TensorMap& ref = reference();
    std::vector<Tensor> inputs;
    for (int i = 0; ref.count(name + ".in" + std::to_string(i)); ++i) {
        Tensor t = ref.at(name + ".in" + std::to_string(i)).clone();
        if (ref.count(name + ".grad" + std::to_string(i))) t.requires_grad_();
        inputs.push_back(t);
    }
    REQUIRE_MESSAGE(!inputs.empty(), "no reference inputs for ", name);
    Tensor out = fn(inputs);
    const Tol tol{1e-9, 1e-7};
    expect_close(out, ref.at(name + ".out"), tol, name + " forward");
    out.backward(ref.at(name + ".gout"));
    for (size_t i = 0; i < inputs.size(); ++i) {
        const std::string key = name + ".grad" + std::to_string(i);
        if (ref.count(key)) expect_close(inputs[i].grad(), ref.at(key), tol, name + " d/d input " + std::to_string(i));
    }
}

}  // namespace

TEST_SUITE("parity") {
    TEST_CASE("element-wise, softmax family, norms, GEMMs, convolutions, BN and pooling match PyTorch") {
        const std::map<std::string, Fn> cases = {
            {"gelu", [](auto& in) { return gelu(in[0]); }},
            {"sigmoid", [](auto& in) { return sigmoid(in[0]); }},
            {"tanh", [](auto& in) { return sslight::tanh(in[0]); }},
            {"exp_log", [](auto& in) { return sslight::log(sslight::exp(in[0]) + 1.5); }},
            {"softmax", [](auto& in) { return softmax(in[0]); }},
            {"log_softmax", [](auto& in) { return log_softmax(in[0]); }},
            {"cross_entropy", [](auto& in) { return cross_entropy(in[0], in[1]); }},
            {"cross_entropy_soft", [](auto& in) { return cross_entropy_soft(in[0], in[1]); }},
            {"layer_norm", [](auto& in) { return layer_norm(in[0], in[1], in[2], 1e-6); }},
            {"l2_normalize", [](auto& in) { return l2_normalize(in[0]); }},
            {"linear", [](auto& in) { return linear(in[0], in[1], in[2]); }},
            {"matmul", [](auto& in) { return matmul(in[0], in[1]); }},
            {"conv2d_s2", [](auto& in) { return conv2d(in[0], in[1], in[2], Conv2dArgs{2, 2, 1, 1, 1, 1, 1}); }},
            {"conv2d_groups", [](auto& in) { return conv2d(in[0], in[1], Tensor(), Conv2dArgs{1, 1, 2, 2, 2, 2, 2}); }},
            {"depthwise", [](auto& in) { return conv2d(in[0], in[1], in[2], Conv2dArgs{2, 2, 1, 1, 1, 1, 6}); }},
            {"batch_norm_train", bn_train},
            {"max_pool", [](auto& in) { return max_pool2d(in[0], 3, 2, 1); }},
            {"global_avg_pool", [](auto& in) { return global_avg_pool(in[0]); }},
        };
        for (const auto& [name, fn] : cases) {
            INFO("case ", name);
            check_case(name, fn);
        }
    }
}
