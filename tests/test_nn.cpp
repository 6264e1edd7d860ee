// Modules: PyTorch-compatible names, train/eval propagation, freezing, state_dict round trip with
// complete mismatch reports, initialisation statistics, gradients through a small conv net.
#include <doctest/doctest.h>

#include <cmath>

#include "engine/autograd.h"
#include "engine/nn/layers.h"
#include "engine/ops/reduce.h"
#include "tests/compare.h"

using namespace sslight;
using namespace sslight::test;
using namespace sslight::nn;

namespace {
std::shared_ptr<Sequential> small_net() {
    auto net = std::make_shared<Sequential>();
    net->push_back(std::make_shared<Conv2d>(3, 8, 3, Conv2dOptions{2, 1}));
    net->push_back(std::make_shared<BatchNorm>(8));
    net->push_back(std::make_shared<ReLU>());
    net->push_back(std::make_shared<Conv2d>(8, 8, 3, Conv2dOptions{1, 1, 1, 8}));  // depthwise
    return net;
}
}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("state_dict keys and shapes follow PyTorch names") {
        manual_seed(0);
        auto net = small_net();
        StateDict sd = net->state_dict();
        std::vector<std::string> keys;
        for (auto& [k, v] : sd) keys.push_back(k);
        CHECK(keys == std::vector<std::string>{"0.weight", "1.bias", "1.num_batches_tracked", "1.running_mean",
                                               "1.running_var", "1.weight", "3.weight"});
        CHECK(sd["0.weight"].shape() == Shape{8, 3, 3, 3});
        CHECK(sd["3.weight"].shape() == Shape{8, 3, 3, 1});
        CHECK(sd["1.num_batches_tracked"].dtype() == DType::i64);
        CHECK(net->num_parameters() == 8 * 27 + 16 + 8 * 9);
    }

    TEST_CASE("train/eval propagate; freezing removes parameters from the trainable set") {
        auto net = small_net();
        net->eval();
        for (auto& [name, m] : net->named_modules()) CHECK(!m->is_training());
        net->train();
        CHECK((*net)[1].is_training());
        (*net)[0].set_requires_grad(false);
        CHECK(net->named_parameters(true).size() == 3);
        CHECK(net->named_parameters().size() == 4);
    }

    TEST_CASE("load_state_dict round-trips and reports every mismatch at once") {
        manual_seed(1);
        auto a = small_net();
        manual_seed(2);
        auto b = small_net();
        CHECK(a->state_dict()["0.weight"].to_vector<float>() != b->state_dict()["0.weight"].to_vector<float>());
        b->load_state_dict(a->state_dict());
        CHECK(a->state_dict()["0.weight"].to_vector<float>() == b->state_dict()["0.weight"].to_vector<float>());

        StateDict bad = a->state_dict();
        bad.erase("1.running_var");
        bad["0.weight"] = zeros({8, 3, 3, 4});
        bad["extra.weight"] = zeros({2});
        try {
            b->load_state_dict(bad);
            FAIL("expected IoError");
        } catch (const IoError& e) {
            const std::string msg = e.what();
            CHECK(msg.find("missing key: 1.running_var") != std::string::npos);
            CHECK(msg.find("shape mismatch for 0.weight: got [8, 3, 3, 4], expected [8, 3, 3, 3]") != std::string::npos);
            CHECK(msg.find("unexpected key: extra.weight") != std::string::npos);
        }
        bad = a->state_dict();
        bad["extra.weight"] = zeros({2});
        CHECK_NOTHROW(b->load_state_dict(bad, /*strict=*/false));
    }

    TEST_CASE("initialisation matches the documented statistics") {
        manual_seed(3);
        Conv2d conv(64, 128, 3);
        std::vector<float> w = conv.weight.to_vector<float>();
        double s2 = 0;
        for (float v : w) s2 += double(v) * v;
        const double std_expected = std::sqrt(2.0 / (128 * 9));
        CHECK(std::sqrt(s2 / w.size()) == doctest::Approx(std_expected).epsilon(0.03));
        Linear lin(100, 50);
        for (float v : lin.weight.to_vector<float>()) CHECK(std::fabs(v) <= 0.1f);
    }

    TEST_CASE("gradients flow through a conv-bn-relu-depthwise net; running stats and counter update") {
        manual_seed(4);
        auto net = small_net();
        Tensor x = random_tensor({2, 9, 9, 3}, 5);
        Tensor y = net->forward(x);
        CHECK(y.shape() == Shape{2, 5, 5, 8});
        sum(y).backward();
        for (auto& [name, p] : net->named_parameters()) CHECK_MESSAGE(p->grad().defined(), name);
        auto* bn = dynamic_cast<BatchNorm*>(&(*net)[1]);
        REQUIRE(bn != nullptr);
        CHECK(bn->num_batches_tracked.item() == 1);
        CHECK(bn->running_var.to_vector<float>() != std::vector<float>(8, 1.f));
        net->zero_grad();
        CHECK(!net->parameters()[0]->grad().defined());
    }
}
