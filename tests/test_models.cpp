// The backbones (models/): parameter counts, state_dict names and shapes against torchvision's (figures
// computed once from torchvision 0.14 and hard-coded), output shapes, analytic FLOPs, the torch-layout
// safetensors interchange (round trip, OIHW in the file, bf16 files, every mismatch reported at once), a
// training step that changes the parameters, and (gpu) CUDA forward/backward against the CPU.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <string>

#include <unistd.h>

#include "engine/autograd.h"
#include "engine/nn/layers.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"
#include "engine/random.h"
#include "models/backbone.h"
#include "models/flops.h"
#include "models/mobilenet_v2.h"
#include "models/weights.h"
#include "tests/compare.h"

using namespace sslight;
using namespace sslight::test;
using models::Backbone;

namespace {

struct Expected {
    const char* name;
    double width;
    int64_t params, keys;
    uint64_t hash;  // FNV-1a 64 of the sorted "name:[shape]\n" lines, shapes in torch (OIHW) layout
    const char *first, *last;  // first parameter and last buffer in torch's registration order
    int64_t dim;
};

// From torchvision 0.14 (weights=None, classifier / fc replaced by Identity): len(state_dict()),
// sum(p.numel()), and the FNV-1a hash of the key/shape listing.
const Expected kExpected[] = {
    {"mobilenet_v2", 1.0, 2223872, 312, 0x19870fd1d688e4c9ull, "features.0.0.weight",
     "features.18.1.num_batches_tracked", 1280},
    {"resnet18", 1.0, 11176512, 120, 0x9e7378bbc12f9d49ull, "conv1.weight", "layer4.1.bn2.num_batches_tracked", 512},
    {"resnet34", 1.0, 21284672, 216, 0x9c89b5358bd491b3ull, "conv1.weight", "layer4.2.bn2.num_batches_tracked", 512},
    {"resnet50", 1.0, 23508032, 318, 0xeca3c835c9ffd52full, "conv1.weight", "layer4.2.bn3.num_batches_tracked", 2048},
    {"mobilenet_v2", 0.5, 687680, 312, 0xe9cbd286a69ca166ull, "features.0.0.weight",
     "features.18.1.num_batches_tracked", 1280},
    {"mobilenet_v2", 1.4, 4315776, 312, 0x4ca2031a1025aab4ull, "features.0.0.weight",
     "features.18.1.num_batches_tracked", 1792},
};

std::shared_ptr<Backbone> make(const std::string& name, uint64_t seed = 0, double width = 1.0) {
    nn::manual_seed(seed);
    models::BackboneOptions o;
    o.width_mult = width;
    return models::make_backbone(name, o);
}

// One seed-0 instance per name for the read-only tests (construction draws millions of initial weights).
Backbone& shared(const std::string& name) {
    static std::map<std::string, std::shared_ptr<Backbone>> cache;
    auto& m = cache[name];
    if (!m) m = make(name);
    return *m;
}

uint64_t fnv1a(const std::string& s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
    return h;
}

// Non-trivial BN state (as after some training): running mean/var and affine parameters drawn at random.
void randomize_bn(nn::Module& m, uint64_t seed) {
    NoGradGuard ng;
    uint64_t k = 0;
    for (auto& [name, mod] : m.named_modules()) {
        auto* bn = dynamic_cast<nn::BatchNorm*>(mod);
        if (!bn) continue;
        uniform_(bn->running_mean, -0.2, 0.2, RngKey{seed, k++});
        uniform_(bn->running_var, 0.5, 1.5, RngKey{seed, k++});
        uniform_(bn->weight, 0.5, 1.5, RngKey{seed, k++});
        uniform_(bn->bias, -0.1, 0.1, RngKey{seed, k++});
    }
}

Tensor image(int64_t n, int64_t px, uint64_t seed, Device d = Device::cpu()) {
    return rand({n, px, px, 3}, RngKey{seed, 7}, DType::f32, d) * 2.0 - 1.0;
}

bool bit_equal(const Tensor& a, const Tensor& b) {
    if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
    const Tensor ca = a.to(Device::cpu()), cb = b.to(Device::cpu());
    return std::memcmp(ca.raw_data(), cb.raw_data(), ca.nbytes()) == 0;
}

std::string temp_path(const std::string& tag) {
    return "/tmp/sslight_test_models_" + std::to_string(::getpid()) + "_" + tag + ".safetensors";
}

std::string io_error_of(const std::function<void()>& fn) {
    try {
        fn();
    } catch (const IoError& e) {
        return e.what();
    }
    return "";
}

// CPU and GPU sum in different orders (im2col GEMM vs cuDNN, BN reductions), so values are compared relative
// to the reference's scale (its max |value|). Gradients of deep ReLU networks are compared by relative L2
// error instead: a pre-activation within f32 rounding of a ReLU/ReLU6 kink takes the other branch on one side
// and moves its whole receptive field's gradient (see tests/test_parity_models.cpp: torchvision's own f32 and
// f64 runs differ by up to 5e-2 for that reason); a real error gives O(1).
void expect_close_scaled(const Tensor& got, const Tensor& ref, double rel, const std::string& what) {
    double scale = 0;
    for (double v : ref.to_vector<double>()) scale = std::max(scale, std::fabs(v));
    REQUIRE_MESSAGE(scale > 0, what, ": all-zero reference");
    expect_close(got, ref, Tol{rel * scale, rel}, what);
}

void expect_rel_l2(const Tensor& got, const Tensor& ref, double bound, const std::string& what) {
    REQUIRE_MESSAGE(got.defined(), what, ": no value");
    REQUIRE_MESSAGE(got.shape() == ref.shape(), what, ": shape ", shape_str(got.shape()), " vs ",
                    shape_str(ref.shape()));
    const auto g = got.to_vector<double>(), r = ref.to_vector<double>();
    double num = 0, den = 0;
    for (size_t i = 0; i < g.size(); ++i) {
        num += (g[i] - r[i]) * (g[i] - r[i]);
        den += r[i] * r[i];
    }
    REQUIRE_MESSAGE(den > 0, what, ": all-zero reference");
    CHECK_MESSAGE(std::sqrt(num / den) <= bound, what, ": relative L2 error ", std::sqrt(num / den), " > ", bound);
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("parameter counts, state_dict names and shapes match torchvision") {
        for (const Expected& e : kExpected) {
            INFO(e.name, " width ", e.width);
            std::shared_ptr<Backbone> own = e.width == 1.0 ? nullptr : make(e.name, 0, e.width);
            Backbone* m = own ? own.get() : &shared(e.name);
            CHECK(m->num_parameters() == e.params);
            CHECK(m->feature_dim() == e.dim);
            const io::TensorMap sd = models::export_state_dict(*m);
            CHECK(static_cast<int64_t>(sd.size()) == e.keys);
            std::string listing;
            for (const auto& [k, t] : sd) listing += k + ":" + shape_str(t.shape()) + "\n";
            CHECK_MESSAGE(fnv1a(listing) == e.hash, "key/shape listing differs from torchvision's:\n", listing);
            CHECK(m->named_parameters().front().first == e.first);
            CHECK(m->named_buffers().back().first == e.last);
        }
    }

    TEST_CASE("make_divisible follows torchvision") {
        CHECK(models::make_divisible(32 * 0.5, 8) == 16);
        CHECK(models::make_divisible(24 * 0.35, 8) == 8);
        CHECK(models::make_divisible(96 * 0.75, 8) == 72);
        CHECK(models::make_divisible(1280 * 1.4, 8) == 1792);
        CHECK(models::make_divisible(20, 8) == 24);   // rounds half up
        CHECK(models::make_divisible(19, 16) == 32);  // 16 would lose more than 10%
    }

    TEST_CASE("unknown backbone names and inapplicable options are refused") {
        CHECK(models::backbone_names().size() >= 4);
        try {
            models::make_backbone("resnet19");
            FAIL("no error");
        } catch (const ConfigError& e) {
            const std::string msg = e.what();
            CHECK(msg.find("resnet19") != std::string::npos);
            CHECK(msg.find("mobilenet_v2") != std::string::npos);
        }
        models::BackboneOptions o;
        o.width_mult = 0.5;
        CHECK_THROWS_AS(models::make_backbone("resnet18", o), ConfigError);
        o.width_mult = -1;
        CHECK_THROWS_AS(models::make_backbone("mobilenet_v2", o), Error);
    }

    TEST_CASE("output shapes at 224, 128, 96 and an odd size agree with the FLOP walk") {
        NoGradGuard ng;
        for (const char* name : {"mobilenet_v2", "resnet18", "resnet34", "resnet50"}) {
            Backbone& m = shared(name);
            m.eval();
            for (int64_t px : {224, 128, 96, 65}) {
                INFO(name, " at ", px);
                const int64_t n = px == 224 ? 1 : 2;
                const int64_t s = (px + 31) / 32;  // five stride-2 stages, each ceil-halving
                if (px == 96) {
                    const Tensor f = m.forward_features(image(n, px, 1));
                    REQUIRE(f.shape() == Shape{n, m.feature_dim()});
                    const auto v = f.to_vector<float>();
                    CHECK(std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); }));
                    CHECK(std::any_of(v.begin(), v.end(), [](float x) { return x != 0.f; }));
                } else {
                    CHECK(m.forward_map(image(n, px, 1)).shape() == Shape{n, s, s, m.feature_dim()});
                }
                const models::FlopCounter fc = models::count_flops(m, px, px);
                Shape last;
                for (const auto& e : fc.entries())
                    if (e.kind == "conv") last = e.out;
                CHECK(last == Shape{s, s, m.feature_dim()});
            }
            m.train();
        }
        CHECK_THROWS_AS(shared("resnet18").forward_features(rand({1, 32, 32, 4}, RngKey{1, 1})), ShapeError);
        CHECK_THROWS_AS(models::count_flops(shared("resnet18"), 0, 224), ShapeError);
        models::FlopCounter fc;
        nn::Conv2d valid(3, 8, 3);  // no padding: needs at least 3 pixels
        CHECK(fc.conv("c", valid, {3, 4}).w == 2);
        CHECK_THROWS_AS(fc.conv("c", valid, {2, 5}), ShapeError);
    }

    TEST_CASE("FLOPs: conv MACs equal torchvision's exactly and the quoted figures within a few percent") {
        // Conv MACs summed by forward hooks on torchvision's modules (out.numel() * weight[0].numel()).
        const struct {
            const char* name;
            int64_t px, macs;
        } cases[] = {
            {"mobilenet_v2", 224, 299494272}, {"mobilenet_v2", 128, 97794048}, {"mobilenet_v2", 96, 55009152},
            {"resnet18", 224, 1813561344},    {"resnet18", 128, 592183296},    {"resnet18", 96, 333103104},
            {"resnet34", 224, 3663249408},    {"resnet34", 96, 672841728},     {"resnet50", 224, 4087136256},
            {"resnet50", 128, 1334575104},    {"resnet50", 96, 750698496},
        };
        for (const auto& c : cases) {
            INFO(c.name, " at ", c.px);
            const models::FlopCounter fc = models::count_flops(shared(c.name), c.px, c.px);
            CHECK(fc.macs() == c.macs);
            CHECK(fc.flops() == 2 * c.macs);
            CHECK(fc.other_flops() > 0);
            CHECK(fc.other_flops() < fc.flops() / 20);  // element-wise work is a few percent at most
        }
        // The commonly quoted numbers (papers, torchvision's model table): 1.82 / 3.67 / 4.11 / 0.30 GMACs.
        auto approx = [](const char* name, double gmacs) {
            const double got = static_cast<double>(models::count_flops(shared(name), 224, 224).macs()) * 1e-9;
            CHECK_MESSAGE(std::fabs(got - gmacs) <= 0.03 * gmacs, name, ": ", got, " GMACs vs quoted ", gmacs);
        };
        approx("resnet18", 1.82);
        approx("resnet34", 3.67);
        approx("resnet50", 4.11);
        approx("mobilenet_v2", 0.30);
        const std::string table = models::flops_table(models::count_flops(shared("resnet18"), 224, 224));
        CHECK(table.find("layer4.1.conv2") != std::string::npos);
        CHECK(table.find("1.81 GMACs") != std::string::npos);
        CHECK(models::format_count(299494272) == "299.5 M");
    }

    TEST_CASE("save -> load through safetensors reproduces outputs bit-exactly; the file holds OIHW") {
        for (const char* name : {"resnet18", "mobilenet_v2"}) {
            INFO(name);
            auto a = make(name, 1);
            randomize_bn(*a, 11);
            const std::string path = temp_path(name);
            models::save_backbone(path, *a);
            const io::TensorMap file = io::load_safetensors(path);
            const std::string w0 = a->named_parameters().front().first;
            const Tensor ohwi = *a->named_parameters().front().second;
            const Tensor oihw = file.at(w0);
            REQUIRE(oihw.shape() == Shape{ohwi.size(0), ohwi.size(3), ohwi.size(1), ohwi.size(2)});
            const auto fo = oihw.to_vector<float>(), mo = ohwi.to_vector<float>();
            const int64_t I = ohwi.size(3), H = ohwi.size(1), W = ohwi.size(2);
            const int64_t o = 5, i = 2, h = 1, w = 2;  // one element, both layouts
            CHECK(fo[((o * I + i) * H + h) * W + w] == mo[((o * H + h) * W + w) * I + i]);
            CHECK(bit_equal(models::oihw_to_ohwi(oihw), ohwi));

            auto b = make(name, 2);
            CHECK_FALSE(bit_equal(*b->named_parameters().front().second, ohwi));
            models::load_backbone(path, *b);
            std::remove(path.c_str());
            for (auto& [k, t] : a->state_dict()) CHECK_MESSAGE(bit_equal(b->state_dict().at(k), t), k);
            const Tensor x = image(2, 64, 3);
            a->eval();
            b->eval();
            NoGradGuard ng;
            CHECK(bit_equal(a->forward_features(x), b->forward_features(x)));
            a->train();
            b->train();
            CHECK(bit_equal(a->forward_map(x), b->forward_map(x)));
        }
    }

    TEST_CASE("bf16 files load (converted to f32)") {
        auto a = make("resnet18", 3);
        randomize_bn(*a, 12);
        const std::string path = temp_path("bf16");
        models::save_backbone(path, *a, DType::bf16);
        const io::TensorMap file = io::load_safetensors(path);
        CHECK(file.at("layer1.0.conv1.weight").dtype() == DType::bf16);
        CHECK(file.at("bn1.num_batches_tracked").dtype() == DType::i64);
        auto b = make("resnet18", 4);
        models::load_backbone(path, *b);
        std::remove(path.c_str());
        for (auto& [k, t] : a->state_dict()) {
            const Tensor want = is_floating(t.dtype()) ? t.to(DType::bf16).to(DType::f32) : t;
            CHECK_MESSAGE(bit_equal(b->state_dict().at(k), want), k);
        }
    }

    TEST_CASE("loading reports every mismatch at once and changes nothing") {
        auto a = make("resnet18", 5);
        io::TensorMap sd = models::export_state_dict(*a);
        sd.erase("layer1.0.bn1.running_var");
        sd["layer2.0.conv1.weight"] = zeros({128, 64, 5, 5});
        sd["bn1.weight"] = sd["bn1.weight"].to(DType::f64);
        sd["fc.weight"] = ones({1000, 512});
        const std::string path = temp_path("bad");
        io::save_safetensors(path, sd);
        auto b = make("resnet18", 6);
        const Tensor before = b->state_dict().at("conv1.weight").clone();
        const std::string msg = io_error_of([&] { models::load_backbone(path, *b); });
        std::remove(path.c_str());
        CHECK(msg.find(path) != std::string::npos);
        CHECK(msg.find("missing key: layer1.0.bn1.running_var") != std::string::npos);
        CHECK(msg.find("shape mismatch for layer2.0.conv1.weight: file has [128, 64, 5, 5], expected "
                       "[128, 64, 3, 3] (OIHW)") != std::string::npos);
        CHECK(msg.find("dtype mismatch for bn1.weight: file has f64") != std::string::npos);
        CHECK(msg.find("unexpected key: fc.weight") != std::string::npos);
        CHECK(bit_equal(b->state_dict().at("conv1.weight"), before));
        CHECK(io_error_of([&] { models::load_backbone("/nonexistent/w.safetensors", *b); }).find("/nonexistent") !=
              std::string::npos);
    }

    TEST_CASE("a training step (forward, backward, SGD) changes every parameter and lowers the loss") {
        for (const char* name : {"mobilenet_v2", "resnet18"}) {
            INFO(name);
            auto m = make(name, 7);
            m->train();
            const Tensor x = image(3, 48, 8);
            const Tensor target = rand({3, m->feature_dim()}, RngKey{9, 1});
            auto loss_fn = [&] {
                const Tensor d = m->forward_features(x) - target;
                return mean(d * d);
            };
            std::map<std::string, Tensor> before;
            for (auto& [k, t] : m->named_parameters()) before[k] = t->clone();
            const Tensor loss0 = loss_fn();
            loss0.backward();
            for (auto& [k, t] : m->named_parameters()) {
                REQUIRE_MESSAGE(t->grad().defined(), k, " has no gradient");
                add_(*t, t->grad(), -0.05);
            }
            m->zero_grad();
            int changed = 0;
            for (auto& [k, t] : m->named_parameters()) changed += !bit_equal(*t, before.at(k));
            CHECK(changed == static_cast<int>(before.size()));
            NoGradGuard ng;
            CHECK(loss_fn().item() < loss0.item());
            CHECK(m->state_dict().at(std::string(name) == "resnet18" ? "bn1.num_batches_tracked"
                                                                     : "features.0.1.num_batches_tracked")
                      .item() == 2);
        }
    }
}

TEST_SUITE("gpu") {
    TEST_CASE("CUDA forward and backward match the CPU (f32)") {
        const Device gpu = Device::cuda(0);
        for (const char* name : {"mobilenet_v2", "resnet18", "resnet50"}) {
            for (bool training : {true, false}) {
                INFO(name, training ? " train" : " eval");
                auto cpu_m = make(name, 10), gpu_m = make(name, 10);
                randomize_bn(*cpu_m, 13);
                randomize_bn(*gpu_m, 13);
                gpu_m->to(gpu);
                cpu_m->train(training);
                gpu_m->train(training);
                const Tensor x = image(2, 64, 14);
                const Tensor gout = rand({2, cpu_m->feature_dim()}, RngKey{15, 0}) - 0.5;
                Tensor xc = x.clone().requires_grad_(), xg = x.to(gpu).requires_grad_();
                const Tensor fc = cpu_m->forward_features(xc), fg = gpu_m->forward_features(xg);
                fc.backward(gout);
                fg.backward(gout.to(gpu));
                expect_close_scaled(fg, fc, 1e-3, "features");
                expect_rel_l2(xg.grad(), xc.grad(), 0.1, "input gradient");
                const std::string first = cpu_m->named_parameters().front().first;
                const std::string last = cpu_m->named_parameters().back().first;
                for (const std::string& k : {first, last}) {
                    auto find = [&](nn::Module& m) {
                        for (auto& [n, t] : m.named_parameters())
                            if (n == k) return t->grad();
                        return Tensor();
                    };
                    expect_rel_l2(find(*gpu_m), find(*cpu_m), 0.1, k + " gradient");
                }
            }
        }
    }
}
