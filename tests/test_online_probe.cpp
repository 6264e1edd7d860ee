// The online linear probe (ssl/online_probe.h) and its use in `sslight pretrain` (eval.online_probe): it learns
// separable features; its loss never reaches the features (so pre-training is unchanged: the backbone's gradients
// with the probe equal those without it, bit for bit, for DINO, SwAV and MoCo); each method leaves the features
// of the right views; a run with the probe resumes bit for bit (the probe and its optimizer are in the checkpoint),
// logs probe_top1, reports the val accuracy, and export ignores the probe; bad labels name the problem.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "apps/checkpoint.h"
#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/shape_ops.h"
#include "engine/optim/optimizer.h"
#include "engine/random.h"
#include "ssl/method.h"
#include "ssl/online_probe.h"
#include "tests/files.h"
#include "tests/tiny_run.h"

using namespace sslight;
using namespace sslight::test;

namespace {

ssl::MethodConfig small(const std::string& method) {
    ssl::MethodConfig c;
    c.method = method;
    c.backbone = "mobilenet_v2";
    c.backbone_options.width_mult = 0.25;
    c.sslight = true;
    c.total_epochs = 2;
    c.dino_out_dim = 32, c.dino_hidden_dim = 24, c.dino_bottleneck_dim = 16;
    c.swav_prototypes = 20, c.swav_hidden_dim = 24, c.swav_out_dim = 16;
    c.swav_queue_length = 0;
    c.moco_hidden_dim = 24, c.moco_dim = 16, c.moco_queue = 16;
    return c;
}

ssl::Views views(int64_t B, uint64_t seed) {
    ssl::Views v;
    v.batch = B, v.n_global = 2, v.n_local = 2;
    v.groups = {randn({2 * B, 32, 32, 3}, RngKey{seed, 1}), randn({2 * B, 16, 16, 3}, RngKey{seed, 2})};
    return v;
}

// The student's gradients after one backward of the method's loss, plus the probe's loss when with_probe.
std::vector<std::vector<float>> student_grads(const std::string& method, bool with_probe, const Tensor& labels) {
    nn::manual_seed(3);
    std::shared_ptr<ssl::Method> m = ssl::make_method(small(method));
    m->enable_online_probe(10);
    m->train();
    Tensor loss = m->forward_loss(views(4, 9), ssl::StepContext{1, 1, 5, 2});
    if (with_probe) loss = add(loss, m->online_probe->forward_loss(m->probe_features, labels).loss);
    loss.backward();
    std::vector<std::vector<float>> g;
    for (const auto& group : m->param_groups(0.1, 0.0))
        for (Tensor* p : group.params) g.push_back(p->grad().defined() ? p->grad().to_vector<float>() : std::vector<float>{});
    if (with_probe)  // the probe itself did learn something
        CHECK(m->online_probe->linear->weight.grad().defined());
    return g;
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const std::exception& e) { return e.what(); }
    return "(no error)";
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("online probe: learns linearly separable features; no gradient reaches the features") {
        nn::manual_seed(1);
        ssl::OnlineProbe probe(16, 4);
        probe.train();
        optim::SGD opt({optim::ParamGroup{probe.parameters(), 0.1, 0.0, false, "probe"}}, 0.9);
        const Tensor centres = mul(randn({4, 16}, RngKey{5, 0}), 3.0);
        double first = 0, last = 0;
        for (int step = 0; step < 60; ++step) {
            std::vector<int64_t> y(32);
            for (int i = 0; i < 32; ++i) y[size_t(i)] = (i * 7 + step) % 4;
            const Tensor labels = from_vector(y, {32});
            // Two views of 16 samples each: rows v·16 + b carry label y[b].
            std::vector<Tensor> rows;
            for (int v = 0; v < 2; ++v)
                for (int b = 0; b < 16; ++b) rows.push_back(centres.slice(y[size_t(b)], y[size_t(b)] + 1));
            Tensor feats = add(concat(rows, 0), randn({32, 16}, RngKey{6, uint64_t(step)}));
            feats.requires_grad_(true);
            ssl::OnlineProbe::Step s = probe.forward_loss(feats, labels.slice(0, 16));
            CHECK(s.rows == 32);
            s.loss.backward();
            CHECK_FALSE(feats.grad().defined());  // detached inside
            opt.step();
            opt.zero_grad();
            if (step == 0) first = double(s.correct) / s.rows;
            if (step >= 55) last += double(s.correct) / s.rows;
        }
        CHECK(first < 0.6);  // N(0, 0.01) init: about chance (0.25) before the first step
        CHECK(last / 5 > 0.95);
    }

    TEST_CASE("online probe: the backbone's gradients are the same with and without the probe, every method") {
        const Tensor labels = from_vector(std::vector<int64_t>{0, 3, 9, 3}, {4});
        for (const char* method : {"dino", "swav", "moco"}) {
            INFO(method);
            const auto a = student_grads(method, false, labels), b = student_grads(method, true, labels);
            REQUIRE(a.size() == b.size());
            REQUIRE(a.size() > 10);
            for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == b[i]);
        }
    }

    TEST_CASE("online probe: each method leaves the student features of its global views") {
        for (const char* method : {"dino", "swav", "moco"}) {
            INFO(method);
            nn::manual_seed(3);
            std::shared_ptr<ssl::Method> m = ssl::make_method(small(method));
            m->train();
            const ssl::Views v = views(4, 10);
            Tensor loss = m->forward_loss(v, ssl::StepContext{1, 1, 5, 2});
            const bool moco = std::string(method) == "moco";
            // MoCo's query encoder sees g2 only (g1 is the key); the others both globals.
            const Tensor x = moco ? v.groups[0].slice(4, 8) : v.groups[0];
            REQUIRE(m->probe_features.defined());
            CHECK(m->probe_features.size(0) == x.size(0));
            CHECK(m->probe_features.size(1) == m->student_backbone().feature_dim());
            CHECK_FALSE(m->probe_features.requires_grad());
            // Train-mode BN: the same batch through the backbone again gives the same features.
            NoGradGuard guard;
            const Tensor again = m->student_backbone().forward_features(x);
            CHECK(again.to_vector<float>() == m->probe_features.to_vector<float>());
        }
    }

    TEST_CASE("online probe: bad labels and shapes are named") {
        nn::manual_seed(1);
        ssl::OnlineProbe probe(8, 3);
        const Tensor f = randn({6, 8}, RngKey{1, 1});
        CHECK(contains(error_of([&] { probe.forward_loss(f, from_vector(std::vector<int64_t>{0, 1, 3}, {3})); }),
                       "label 3 is outside the probe's 3 classes"));
        CHECK(contains(error_of([&] { probe.forward_loss(f, from_vector(std::vector<int64_t>{0, 1, 2, 0}, {4})); }),
                       "6 feature rows are not a whole number of views of 4 labels"));
        CHECK(contains(error_of([&] { probe.forward_loss(Tensor(), from_vector(std::vector<int64_t>{0}, {1})); }),
                       "expected features"));
        CHECK(contains(error_of([] { ssl::OnlineProbe(8, 1); }), ">= 2 classes"));
    }

    TEST_CASE("pretrain with eval.online_probe: 3 + 3 steps resume bit for bit; logs, reports, exports") {
        const std::vector<std::string> probe = {"eval.online_probe=true", "data.max_train_samples=16",
                                                "run.epochs=2"};
        auto cfg = [&](std::vector<std::string> more) {
            more.insert(more.begin(), probe.begin(), probe.end());
            return tiny_config(more);
        };
        const std::string one = temp_dir("probe_full"), two = temp_dir("probe_split");
        run_tiny(cfg({"train.max_steps=6"}), one, false);
        run_tiny(cfg({"train.max_steps=3"}), two, false);
        run_tiny(cfg({"train.max_steps=6"}), two, true);
        int probe_tensors = 0;
        for (const std::string& k :
             check_same_checkpoint(apps::list_checkpoints(one).back(), apps::list_checkpoints(two).back()))
            probe_tensors += k.rfind("model.online_probe.", 0) == 0 || k.rfind("probe_optim.", 0) == 0;
        io::TensorMap a = io::load_safetensors(apps::list_checkpoints(one).back());
        CHECK(a.count("model.online_probe.linear.weight") == 1);
        CHECK(a.count("probe_optim.group0.param0.momentum_buffer") == 1);
        CHECK(probe_tensors >= 8);  // BN (4) + linear (2) + momentum buffers
        // metrics.jsonl carries probe_top1 on step records.
        std::ifstream f(one + "/metrics.jsonl");
        std::stringstream ss;
        ss << f.rdbuf();
        CHECK(contains(ss.str(), "\"probe_top1\""));
        // Export builds the method without a probe: the probe tensors are ignored, the backbone is the same.
        const std::string out = one + "/exported.safetensors";
        apps::export_backbone(apps::list_checkpoints(one).back(), cfg({"train.max_steps=6"}), out);
        CHECK(io::load_safetensors(out).size() == io::load_safetensors(one + "/backbone.safetensors").size());
        // A run without the probe refuses the checkpoint of one with it (the key is in the compatibility hash).
        const apps::PretrainConfig without =
            tiny_config({"data.max_train_samples=16", "train.max_steps=8", "eval.online_probe=false"});
        CHECK(contains(error_of([&] { run_tiny(without, two, true); }), "eval.online_probe"));
        // The final report: the probe's val accuracy is a fraction.
        const std::string three = temp_dir("probe_knn");
        const apps::PretrainResult r = run_tiny(cfg({"train.max_steps=4", "run.epochs=1"}),
                                                three, false);
        CHECK(r.probe_val_top1 >= 0.0);
        CHECK(r.probe_val_top1 <= 1.0);
        std::ifstream g(three + "/metrics.jsonl");
        std::stringstream gs;
        gs << g.rdbuf();
        CHECK(contains(gs.str(), "{\"type\":\"probe\",\"iteration\":4,\"val_top1\":"));
    }
}
