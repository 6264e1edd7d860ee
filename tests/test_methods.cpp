// The SSL methods (ssl/method.h, dino.h, moco.h, swav.h) on a ResNet18 at 32×32 globals / 16×16 locals, B = 4,
// with small heads: finite positive losses at init, an optimizer step changes the student, DINO's EMA and centre
// updates against their formulas, MoCo's key-encoder EMA before the keys and the queue FIFO, SwAV's prototype
// normalisation, queue start and use, epoch-0 gradient dropping, the λ combination (baseline uniform, SSLight
// 0.4/0.6) against per-kind losses, overfitting a fixed batch, SPEC-default shapes and parameter groups; gpu: one
// DINO step on CUDA against the CPU.
#include <doctest/doctest.h>

#include <cmath>

#include "engine/autograd.h"
#include "engine/nn/layers.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/matmul.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "engine/optim/optimizer.h"
#include "engine/random.h"
#include "ssl/dino.h"
#include "ssl/moco.h"
#include "ssl/swav.h"
#include "tests/compare.h"

using namespace sslight;
using namespace sslight::ssl;
using namespace sslight::test;

namespace {

constexpr int64_t kB = 4;

MethodConfig small_config(const std::string& method, bool sslight = false) {
    MethodConfig c;
    c.method = method;
    c.backbone = "resnet18";
    c.sslight = sslight;
    c.total_epochs = 4;
    c.dino_out_dim = 64, c.dino_hidden_dim = 48, c.dino_bottleneck_dim = 24;
    c.swav_prototypes = 30, c.swav_hidden_dim = 48, c.swav_out_dim = 16;
    c.swav_queue_length = 10, c.swav_queue_start_epoch = 2;
    c.moco_hidden_dim = 48, c.moco_dim = 16, c.moco_queue = 32;
    return c;
}

std::shared_ptr<Method> make(const MethodConfig& c, uint64_t seed = 7) {
    nn::manual_seed(seed);
    return make_method(c);
}

Views views(int n_local, uint64_t seed, Device d = Device::cpu()) {
    Views v;
    v.batch = kB;
    v.n_local = n_local;
    v.groups.push_back(randn({2 * kB, 32, 32, 3}, RngKey{seed, 1}).to(d));
    if (n_local > 0) v.groups.push_back(randn({n_local * kB, 16, 16, 3}, RngKey{seed, 2}).to(d));
    return v;
}

StepContext ctx_at(int64_t epoch, int64_t step = 0, int64_t iters = 5, int64_t epochs = 4) {
    return {epoch * iters + step, epoch, iters, epochs};
}

// One training step with SGD; returns the loss.
double train_step(Method& m, optim::Optimizer& opt, const Views& v, const StepContext& ctx) {
    opt.zero_grad();
    Tensor loss = m.forward_loss(v, ctx);
    loss.backward();
    m.before_optimizer_step(ctx);
    opt.step();
    m.after_optimizer_step(ctx);
    return loss.item();
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
    return max(abs(sub(a.to(Device::cpu()), b.to(Device::cpu())))).item();
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("every method: finite positive loss at init, a step changes the student and the loss has a gradient") {
        for (const char* name : {"dino", "moco", "swav"}) {
            INFO(std::string(name));
            auto m = make(small_config(name));
            const Views v = views(3, 11);
            auto opt = optim::SGD(m->param_groups(0.1, 0), 0.9);
            Tensor* w = m->student_backbone().named_parameters().front().second;
            const Tensor before = w->clone();
            const double loss = train_step(*m, opt, v, ctx_at(1));
            CHECK(std::isfinite(loss));
            CHECK(loss > 0);
            CHECK(max_abs_diff(*w, before) > 0);
        }
    }

    TEST_CASE("DINO: teacher EMA uses the cosine momentum exactly; the centre moves by 0.9c + 0.1·mean") {
        auto m = make(small_config("dino"));
        auto& d = static_cast<Dino&>(*m);
        const Views v = views(2, 12);
        auto opt = optim::SGD(m->param_groups(0.05, 0), 0.0);
        // The teacher starts equal to the student and is outside the optimizer's groups.
        CHECK(max_abs_diff(d.teacher_head().mlp->parameters()[0]->detach(),
                           d.student_head().mlp->parameters()[0]->detach()) == 0);
        const StepContext ctx = ctx_at(1, 3);
        Tensor* ts = d.teacher_head().mlp->parameters()[0];
        Tensor* ss = d.student_head().mlp->parameters()[0];
        Tensor* tb = d.teacher->backbone->parameters()[0];
        Tensor* sb = d.student->backbone->parameters()[0];
        const Tensor c0 = d.center.clone();
        opt.zero_grad();
        m->forward_loss(v, ctx).backward();
        // The teacher mean the centre receives is the mean of the teacher's outputs on the globals.
        Tensor t_out;
        {
            NoGradGuard g;
            t_out = d.teacher->forward_groups({v.groups[0]});
        }
        expect_close(d.last_teacher_mean, mean(t_out, 0), {1e-6, 1e-5}, "teacher mean");
        const Tensor tm = d.last_teacher_mean.clone();
        opt.step();
        const Tensor t0 = ts->clone(), tb0 = tb->clone();
        CHECK(max_abs_diff(*ss, t0) > 0);
        m->after_optimizer_step(ctx);
        const double mom = d.teacher_momentum(ctx);
        const double N = 4 * 5, i = 1 * 5 + 3;
        CHECK(mom == doctest::Approx(1 + (0.996 - 1) * 0.5 * (1 + std::cos(M_PI * i / N))).epsilon(1e-12));
        expect_close(*ts, add(mul(t0, mom), mul(ss->detach(), 1 - mom)), {1e-7, 1e-6}, "head EMA");
        expect_close(*tb, add(mul(tb0, mom), mul(sb->detach(), 1 - mom)), {1e-7, 1e-6}, "backbone EMA");
        expect_close(d.center, add(mul(c0, 0.9), mul(tm, 0.1)), {1e-7, 1e-6}, "centre");
        CHECK(max(abs(d.center)).item() > 0);
    }

    TEST_CASE("DINO: teacher temperature table 0.04 -> 0.07 (clamped warm-up); last layer frozen in epoch 0 only") {
        MethodConfig c = small_config("dino");
        c.total_epochs = 100;
        auto m = make(c);
        auto& d = static_cast<Dino&>(*m);
        CHECK(d.teacher_temp(0) == doctest::Approx(0.04));
        CHECK(d.teacher_temp(49) == doctest::Approx(0.07));
        CHECK(d.teacher_temp(25) == doctest::Approx(0.04 + 0.03 * 25 / 49.0));
        CHECK(d.teacher_temp(99) == doctest::Approx(0.07));
        auto short_run = make(small_config("dino"));  // 4 epochs: warm-up clamped to 4 epochs
        CHECK(static_cast<Dino&>(*short_run).teacher_temp(3) == doctest::Approx(0.07));
        CHECK(static_cast<Dino&>(*short_run).teacher_temp(1) == doctest::Approx(0.05));
        // weight_g is frozen at 1 for CNNs and left out of the optimizer's groups.
        CHECK_FALSE(d.student_head().last_layer->weight_g.requires_grad());
        const Views v = views(1, 13);
        for (int64_t epoch : {0, 1}) {
            INFO("epoch ", epoch);
            auto opt = optim::SGD(m->param_groups(0.5, 0), 0.0);
            Tensor& lv = d.student_head().last_layer->weight_v;
            const Tensor before = lv.clone();
            const Tensor mlp_before = d.student_head().mlp->parameters()[0]->clone();
            train_step(*m, opt, v, ctx_at(epoch));
            CHECK((max_abs_diff(lv, before) > 0) == (epoch > 0));
            CHECK(max_abs_diff(*d.student_head().mlp->parameters()[0], mlp_before) > 0);
        }
    }

    TEST_CASE("λ weighting: baseline = uniform over pairs, SSLight = 0.4 gg + 0.6 gl (DINO, MoCo, SwAV)") {
        for (const char* name : {"dino", "moco", "swav"}) {
            for (int n_local : {2, 3}) {
                INFO(std::string(name), " locals ", n_local);
                const Views v = views(n_local, 14);
                auto loss_with = [&](double lgg, double lgl, bool sslight) {
                    MethodConfig c = small_config(name, sslight);
                    c.lambda_gg = lgg, c.lambda_gl = lgl;
                    return make(c)->forward_loss(v, ctx_at(1)).item();
                };
                const double nan = std::nan(""), gg = loss_with(1, 0, false), gl = loss_with(0, 1, false);
                CHECK(gg > 0);
                CHECK(gl > 0);
                const double base = loss_with(nan, nan, false), light = loss_with(nan, nan, true);
                CHECK(base == doctest::Approx(gg / (1 + n_local) + gl * n_local / (1 + n_local)).epsilon(1e-5));
                CHECK(light == doctest::Approx(0.4 * gg + 0.6 * gl).epsilon(1e-5));
                CHECK(std::abs(base - light) > 1e-6 * std::abs(base));
            }
        }
        MethodConfig bad = small_config("dino");
        bad.lambda_gg = 0.5;
        CHECK_THROWS_AS(make(bad)->forward_loss(views(1, 1), ctx_at(0)), ConfigError);
        CHECK(method_loss_weights(small_config("dino"), 6).first == doctest::Approx(1.0 / 7));
        // Without locals the gg pairs carry the whole loss in both recipes (SSLight's 0.4 once scaled it down).
        for (bool sslight : {false, true})
            CHECK(method_loss_weights(small_config("moco", sslight), 0) == std::make_pair(1.0, 0.0));
        CHECK(method_loss_weights(small_config("moco", true), 2) == std::make_pair(0.4, 0.6));
        MethodConfig vit = small_config("dino");
        vit.backbone = "vit_tiny";
        CHECK(method_loss_weights(vit, 10).first == doctest::Approx(1.0 / 11));
    }

    TEST_CASE("MoCo: the key encoder is updated before the keys; the keys enter the queue FIFO") {
        auto m = make(small_config("moco"));
        auto& mc = static_cast<MocoV2&>(*m);
        const Views v = views(2, 15);
        auto opt = optim::SGD(m->param_groups(0.1, 0), 0.0);
        train_step(*m, opt, v, ctx_at(0));  // the student now differs from the key encoder
        CHECK(mc.queue_ptr() == kB);
        Tensor* kq = mc.encoder_q->parameters()[0];
        Tensor* kk = mc.encoder_k->parameters()[0];
        const Tensor q0 = kq->clone(), k0 = kk->clone(), queue0 = mc.queue.clone();
        REQUIRE(max_abs_diff(q0, k0) > 0);
        Tensor seen;
        mc.on_keys = [&](MocoV2& self) { seen = self.encoder_k->parameters()[0]->clone(); };
        opt.zero_grad();
        m->forward_loss(v, ctx_at(0, 1)).backward();
        REQUIRE(seen.defined());
        expect_close(seen, add(mul(k0, 0.999), mul(q0, 0.001)), {1e-7, 1e-6}, "key encoder at the keys");
        Tensor expected_keys;
        {
            NoGradGuard g;
            expected_keys = mc.encode_key(v.groups[0].slice(0, kB));
        }
        expect_close(mc.last_keys, expected_keys, {1e-6, 1e-5}, "keys = key encoder on g1");
        opt.step();
        m->after_optimizer_step(ctx_at(0, 1));
        CHECK(mc.queue_ptr() == 2 * kB);
        expect_close(mc.queue.slice(kB, 2 * kB), expected_keys, {1e-6, 1e-5}, "new keys in the queue");
        CHECK(max_abs_diff(mc.queue.slice(2 * kB, 32), queue0.slice(2 * kB, 32)) == 0);
        CHECK(max_abs_diff(mc.queue.slice(0, kB), queue0.slice(0, kB)) == 0);
        expect_close(l2_norm(mc.queue), ones({32}), {1e-5, 1e-5}, "unit rows");
        for (int i = 0; i < 6; ++i) train_step(*m, opt, v, ctx_at(0, 2 + i));
        CHECK(mc.queue_ptr() == 0);  // wrapped: 8 steps of 4 keys
        MethodConfig c = small_config("moco");
        c.moco_queue = 30;
        auto odd = make(c);
        auto opt2 = optim::SGD(odd->param_groups(0.1, 0), 0.0);
        CHECK_THROWS_AS(train_step(*odd, opt2, v, ctx_at(0)), ConfigError);
    }

    TEST_CASE("SwAV: unit prototype rows, frozen prototypes in epoch 0, queue from its start epoch once full") {
        auto m = make(small_config("swav"));
        auto& s = static_cast<Swav&>(*m);
        CHECK(s.queue_length(4) == 8);
        const Views v = views(2, 16);
        auto opt = optim::SGD(m->param_groups(0.5, 0), 0.9);
        const Tensor p0 = s.prototypes->weight.clone();
        train_step(*m, opt, v, ctx_at(0));
        // Epoch 0: prototype gradients dropped, so only the normalisation moved them.
        expect_close(s.prototypes->weight, l2_normalize(p0), {1e-7, 1e-6}, "prototypes in epoch 0");
        CHECK(s.last_codes.size() == 2);
        expect_close(sum(s.last_codes[0], 1), full({kB}, 1.0), {1e-5, 1e-5}, "code rows");
        const Tensor p1 = s.prototypes->weight.clone();
        train_step(*m, opt, v, ctx_at(1));
        CHECK(max_abs_diff(s.prototypes->weight, p1) > 1e-6);
        expect_close(l2_norm(s.prototypes->weight), ones({30}), {1e-6, 1e-6}, "unit prototype rows after a step");
        CHECK(s.queue.empty());
        train_step(*m, opt, v, ctx_at(2));  // the queue starts (length 8 = 2 batches) and is not used yet
        REQUIRE(s.queue.size() == 2);
        CHECK(s.queue[0].shape() == Shape{8, 16});
        CHECK_FALSE(s.use_the_queue);
        train_step(*m, opt, v, ctx_at(2, 1));  // full now, but checked before this step's fill
        CHECK_FALSE(s.use_the_queue);
        opt.zero_grad();
        m->forward_loss(v, ctx_at(2, 2));
        CHECK(s.use_the_queue);
        CHECK(l2_norm(s.queue[1]).to_vector<float>()[0] == doctest::Approx(1.0).epsilon(1e-5));
    }

    TEST_CASE("a few steps on a fixed batch lower each method's loss") {
        for (const char* name : {"dino", "moco", "swav"}) {
            INFO(std::string(name));
            auto m = make(small_config(name), 21);
            const Views v = views(2, 17);
            auto opt = optim::SGD(m->param_groups(0.05, 0), 0.9);
            // MoCo's queue would fill with this batch's own keys (negatives equal to the positives): keep it fixed.
            const bool keep_queue = std::string(name) == "moco";
            double first = 0, last = 0;
            for (int i = 0; i < 6; ++i) {
                opt.zero_grad();
                Tensor loss = m->forward_loss(v, ctx_at(1, i));
                loss.backward();
                m->before_optimizer_step(ctx_at(1, i));
                opt.step();
                if (!keep_queue) m->after_optimizer_step(ctx_at(1, i));
                (i == 0 ? first : last) = loss.item();
            }
            MESSAGE(std::string(name), ": ", first, " -> ", last);
            CHECK(last < first);
        }
    }

    TEST_CASE("weight-normalised last layer: y = (x·v̂ᵀ)·g with g trainable (ViT) or frozen at 1 (CNN)") {
        nn::manual_seed(3);
        WeightNormLinear free(5, 7, false), frozen(5, 7, true);
        assign_(free.weight_g, add(rand({7, 1}, RngKey{5, 1}), 0.5));
        const Tensor x = randn({3, 5}, RngKey{5, 2});
        const Tensor vhat = l2_normalize(free.weight_v.detach());
        Tensor ref = matmul(x, vhat, false, true);
        expect_close(free.forward(x), mul(ref, free.weight_g.detach().reshape({7})), {1e-6, 1e-5}, "trainable g");
        expect_close(frozen.forward(x), matmul(x, l2_normalize(frozen.weight_v.detach()), false, true), {1e-6, 1e-5},
                     "frozen g");
        sum(free.forward(x)).backward();
        REQUIRE(free.weight_g.grad().defined());
        expect_close(free.weight_g.grad().reshape({7}), sum(ref, 0), {1e-6, 1e-5}, "dL/dg");
        CHECK(free.weight_v.grad().defined());
    }

    TEST_CASE("SPEC defaults: head shapes, queue, parameter groups") {
        MethodConfig c;
        c.backbone = "resnet18";
        c.method = "dino";
        auto dino = make(c);
        auto sd = dino->state_dict();
        CHECK(sd.at("student.head.mlp.0.weight").shape() == Shape{2048, 512});
        CHECK(sd.at("student.head.mlp.1.weight").shape() == Shape{2048});  // BN in the CNN head
        CHECK(sd.at("student.head.mlp.6.weight").shape() == Shape{256, 2048});
        CHECK(sd.at("student.head.last_layer.weight_v").shape() == Shape{4096, 256});
        CHECK(sd.at("student.head.last_layer.weight_g").shape() == Shape{4096, 1});
        CHECK(sd.at("teacher.head.last_layer.weight_v").shape() == Shape{4096, 256});
        CHECK(sd.at("center").shape() == Shape{4096});
        size_t n_group_params = 0;
        for (auto& g : dino->param_groups(0.1, 1e-6)) {
            n_group_params += g.params.size();
            CHECK(g.lr == 0.1);
            if (g.name == "no_decay") CHECK((g.weight_decay == 0 && !g.lars_adapt));
            if (g.name == "regularized") CHECK(g.weight_decay == 1e-6);
        }
        auto& d = static_cast<Dino&>(*dino);
        CHECK(n_group_params == d.student->parameters(true).size());
        CHECK(n_group_params + 1 == d.student->parameters().size());  // weight_g frozen
        c.method = "swav";
        auto swav = make(c);
        CHECK(swav->state_dict().at("prototypes.weight").shape() == Shape{3000, 128});
        CHECK(swav->state_dict().at("projection_head.1.running_mean").shape() == Shape{4096});
        CHECK(static_cast<Swav&>(*swav).queue_length(1024) == 3072);
        c.method = "moco";
        auto moco = make(c);
        CHECK(moco->state_dict().at("queue").shape() == Shape{65536, 128});
        CHECK(moco->state_dict().at("encoder_q.head.2.weight").shape() == Shape{128, 2048});
        c.method = "byol";
        CHECK_THROWS_AS(make_method(c), ConfigError);
    }
}

TEST_SUITE("gpu") {
    TEST_CASE("one DINO step on CUDA matches the CPU (f32)") {
        const Device gpu = Device::cuda(0);
        auto cpu_m = make(small_config("dino")), gpu_m = make(small_config("dino"));
        gpu_m->to(gpu);
        const Views vc = views(2, 18), vg = views(2, 18, gpu);
        auto opt_c = optim::SGD(cpu_m->param_groups(0.05, 0), 0.9);
        auto opt_g = optim::SGD(gpu_m->param_groups(0.05, 0), 0.9);
        const double lc = train_step(*cpu_m, opt_c, vc, ctx_at(1));
        const double lg = train_step(*gpu_m, opt_g, vg, ctx_at(1));
        CHECK(lg == doctest::Approx(lc).epsilon(1e-4));
        auto sc = cpu_m->state_dict(), sg = gpu_m->state_dict();
        for (const char* k : {"student.head.last_layer.weight_v", "teacher.head.mlp.0.weight", "center",
                              "student.backbone.conv1.weight"})
            expect_close(sg.at(k).to(Device::cpu()), sc.at(k), tol_gpu_f32(), k);
    }
}
