// The tape itself: leaf accumulation, gradients meeting at a tensor, needs-grad masks, no-grad scope,
// detach, freeing the graph, refusing ops without a backward, backward seeds, post-accumulate hooks.
#include <doctest/doctest.h>

#include <string>

#include "engine/autograd.h"
#include "engine/ops/elementwise.h"
#include "tests/compare.h"

using namespace sslight;
using namespace sslight::test;

TEST_SUITE("cpu") {
    TEST_CASE("reshape/slice/clone/cast backward route gradients") {
        Tensor x = random_tensor({4, 3}, 1, DType::f64).requires_grad_();
        Tensor y = x.slice(1, 3).reshape({6}).clone().to(DType::f32);
        CHECK(y.requires_grad());
        y.backward(ones({6}));
        std::vector<double> g = x.grad().to_vector<double>();
        for (int i = 0; i < 12; ++i) CHECK(g[i] == ((i >= 3 && i < 9) ? 1.0 : 0.0));
    }

    TEST_CASE("gradients accumulate into leaves across backward calls, zero_grad resets") {
        Tensor x = random_tensor({5}, 2, DType::f64).requires_grad_();
        x.clone().backward(full({5}, 2.0, DType::f64));
        x.clone().backward(full({5}, 3.0, DType::f64));
        for (double v : x.grad().to_vector<double>()) CHECK(v == 5.0);
        x.zero_grad();
        CHECK(!x.grad().defined());
    }

    TEST_CASE("two uses of one tensor sum their gradients") {
        Tensor x = random_tensor({3, 2}, 3, DType::f64).requires_grad_();
        Tensor a = x.slice(0, 2), b = x.slice(1, 3);
        // d/dx of (a + b) routed through two slices: the middle row gets both.
        Tensor y = a.clone();
        y.backward(ones({2, 2}, DType::f64));
        b.clone().backward(ones({2, 2}, DType::f64));
        std::vector<double> g = x.grad().to_vector<double>();
        CHECK(g == std::vector<double>{1, 1, 2, 2, 1, 1});
    }

    TEST_CASE("no-grad scope and detach record nothing") {
        Tensor x = random_tensor({3}, 4).requires_grad_();
        {
            NoGradGuard ng;
            CHECK(!x.clone().requires_grad());
        }
        CHECK(x.clone().requires_grad());
        CHECK(!x.detach().requires_grad());
        CHECK(x.detach().raw_data() == x.raw_data());
        CHECK_THROWS_AS(x.detach().backward(ones({3})), AutogradError);
    }

    TEST_CASE("the graph is freed by backward; a second backward fails clearly") {
        Tensor x = random_tensor({2}, 5, DType::f64).requires_grad_();
        Tensor y = x.clone();
        y.backward(ones({2}, DType::f64));
        try {
            y.backward(ones({2}, DType::f64));
            FAIL("expected AutogradError");
        } catch (const AutogradError& e) {
            CHECK(std::string(e.what()).find("freed") != std::string::npos);
        }
    }

    TEST_CASE("backward seeds: scalar without argument, shape checked otherwise") {
        Tensor x = random_tensor({1}, 6, DType::f64).requires_grad_();
        x.clone().backward();
        CHECK(x.grad().item() == 1.0);
        CHECK_THROWS_AS(random_tensor({2}, 7).requires_grad_().clone().backward(), AutogradError);
        CHECK_THROWS_AS(x.clone().backward(ones({3}, DType::f64)), ShapeError);
    }

    TEST_CASE("ops without a backward are refused when the graph is built") {
        Tensor x = random_tensor({2}, 8).requires_grad_();
        CHECK_THROWS_AS(refuse_grad("argmax", {x}), AutogradError);
        CHECK_NOTHROW(refuse_grad("argmax", {x.detach()}));
        NoGradGuard ng;
        CHECK_NOTHROW(refuse_grad("argmax", {x}));
    }

    TEST_CASE("needs-grad mask reaches backward") {
        struct Probe : Node {
            std::vector<bool> seen;
            const char* name() const override { return "probe"; }
            std::vector<Tensor> backward(const std::vector<Tensor>& g, const std::vector<bool>& needs) override {
                seen = needs;
                return {needs[0] ? g[0] : Tensor(), needs[1] ? g[0] : Tensor()};
            }
        };
        Tensor a = random_tensor({2}, 9).requires_grad_(), b = random_tensor({2}, 10);
        Tensor out = empty({2});
        auto node = std::make_shared<Probe>();
        record(node, {a, b}, {out});
        out.backward(ones({2}));
        CHECK(node->seen == std::vector<bool>{true, false});
        CHECK(a.grad().defined());
        CHECK(!b.grad().defined());
    }

    TEST_CASE("post-accumulate hooks: once per backward, after the summed gradient lands, in completion order") {
        Tensor w1 = random_tensor({3}, 11, DType::f64).requires_grad_();
        Tensor w2 = random_tensor({3}, 12, DType::f64).requires_grad_();
        Tensor unused = random_tensor({3}, 13, DType::f64).requires_grad_();
        std::vector<std::string> order;
        std::vector<double> seen;
        const uint64_t id1 = add_post_accumulate_hook(w1, [&](const Tensor& leaf) {
            order.push_back("w1");
            seen.push_back(leaf.grad().to_vector<double>()[0]);
        });
        const uint64_t id2 = add_post_accumulate_hook(w2, [&](const Tensor&) { order.push_back("w2"); });
        add_post_accumulate_hook(unused, [&](const Tensor&) { order.push_back("unused"); });
        // w1 is used first and twice (its two gradients meet), w2 later: backward completes w2 first.
        auto loss = [&] { return mul(add(add(w1, w1), w2), random_tensor({3}, 14, DType::f64)); };
        loss().backward(ones({3}, DType::f64));
        CHECK(order == std::vector<std::string>{"w2", "w1"});
        REQUIRE(seen.size() == 1);
        CHECK(seen[0] == w1.grad().to_vector<double>()[0]);  // the hook saw the complete (summed) gradient
        loss().backward(ones({3}, DType::f64));               // accumulates; the hook sees the new total
        CHECK(seen.size() == 2);
        CHECK(seen[1] == doctest::Approx(2 * seen[0]));
        remove_post_accumulate_hook(id1);
        remove_post_accumulate_hook(id2);
        remove_post_accumulate_hook(id2);  // unknown id: ignored
        order.clear();
        loss().backward(ones({3}, DType::f64));
        CHECK(order.empty());
        CHECK_THROWS_AS(add_post_accumulate_hook(w1.clone(), [](const Tensor&) {}), AutogradError);
        CHECK_THROWS_AS(add_post_accumulate_hook(random_tensor({2}, 15), [](const Tensor&) {}), AutogradError);
    }
}
