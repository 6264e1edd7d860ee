// Parity of one full SwAV and MoCo-v2 step with plain PyTorch (tests/parity/swav_moco_parity.py: mobilenet_v2, the
// methods' heads, SwAV's / MoCo's public step code with the SSLight λ's, one LARS step), same weights and views, in
// f64, baseline and SSLight λ's. SwAV: loss, Sinkhorn codes, gradients (prototypes' dropped in epoch 0, kept in 1),
// state after the step, prototypes re-normalised, the queue (starting empty; running). MoCo: key encoder after its
// momentum update as seen by the keys, keys, logits, loss, gradients, the step, queue and pointer after enqueue.
// Skipped (exit 77) where python3-torch is not importable.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <memory>

#include <unistd.h>

#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "engine/optim/optimizer.h"
#include "engine/random.h"
#include "models/weights.h"
#include "ssl/moco.h"
#include "ssl/swav.h"
#include "tests/compare.h"

using namespace sslight;
using namespace sslight::ssl;
using namespace sslight::test;

namespace {

constexpr int64_t kB = 4;
constexpr int kLocals = 2;
// LARS (η 0.001) moves an adapted tensor by lr·η·‖p‖: lr 2 makes that a visible step.
constexpr double kLr = 2.0, kWeightDecay = 1e-6;
// Both sides compute in f64 (the f32 state and views widened exactly): only summation orders differ, so values,
// gradients, codes and steps agree to kRel of the reference's scale. BN running statistics (and MoCo's queue) are
// f32 buffers on the C++ side. Not f32: at these crops the last BatchNorms normalise 4-8 values of a 1×1 map, and
// torch in f32 itself differs from torch in f64 by up to 4e-4 of the scale in MoCo's keys (measured), so an f32
// comparison could only bound errors loosely; the f32 kernels have their own parity suites.
constexpr double kRel = 1e-8, kRelF32Buffers = 1e-5;
const std::vector<std::string> kBackboneProbes = {"backbone.features.0.0.weight", "backbone.features.2.conv.1.0.weight",
                                                  "backbone.features.18.1.weight"};

Tensor torch_layout(const Tensor& t) { return t.dim() == 4 ? models::ohwi_to_oihw(t) : t; }

// Parameters to f64 (buffers stay f32), keeping which ones are trainable; views to f64.
void to_f64(nn::Module& m, Views& v) {
    NoGradGuard guard;
    for (Tensor* t : m.parameters()) *t = t->detach().to(DType::f64).requires_grad_(t->requires_grad());
    for (Tensor& g : v.groups) g = g.to(DType::f64);
}

Tensor find_param(nn::Module& m, const std::string& name) {
    for (auto& [n, t] : m.named_parameters())
        if (n == name) return *t;
    FAIL("no parameter ", name);
    return Tensor();
}

double max_abs(const Tensor& t) {
    double s = 0;
    for (double v : t.to(DType::f64).to_vector<double>()) s = std::max(s, std::fabs(v));
    return s;
}

// |got − ref| <= rel·(max |ref| + |ref|).
void expect_scaled(const Tensor& got, const Tensor& ref, double rel, const std::string& what) {
    const double scale = max_abs(ref);
    REQUIRE_MESSAGE(scale > 0, what, ": all-zero reference");
    expect_close(got.to(DType::f64), ref.to(DType::f64), Tol{rel * scale, rel}, what);
}

// A parameter after the step against the reference's, and its change in the step (from the same `before`).
void expect_step(const Tensor& after, const Tensor& before, const Tensor& ref_after, const std::string& what) {
    expect_scaled(torch_layout(after), ref_after, kRel, what + " after the step");
    const Tensor b = torch_layout(before).to(DType::f64);
    const Tensor ref_delta = sub(ref_after.to(DType::f64), b), delta = sub(torch_layout(after).to(DType::f64), b);
    if (max_abs(ref_delta) <= kRel * max_abs(b))  // unchanged up to the rounding of a re-normalisation
        CHECK_MESSAGE(max_abs(delta) <= kRel * max_abs(b), what, " must not change in the step");
    else
        expect_scaled(delta, ref_delta, 1e3 * kRel, what + " change in the step");
}

Views make_views(uint64_t seed) {
    Views v;
    v.batch = kB, v.n_local = kLocals;
    v.groups = {randn({2 * kB, 32, 32, 3}, RngKey{seed, 1}), randn({kLocals * kB, 16, 16, 3}, RngKey{seed, 2})};
    return v;
}

void add_inputs(io::TensorMap& in, const std::string& tag, nn::Module& m, const Views& v,
                const std::map<std::string, double>& scalars) {
    for (auto& [k, t] : models::export_state_dict(m)) in[tag + ".state." + k] = t;
    in[tag + ".globals"] = v.groups[0];
    in[tag + ".locals"] = v.groups[1];
    for (auto& [k, x] : scalars) in[tag + ".scalar." + k] = scalar_tensor(x, DType::f64);
}

io::TensorMap run_reference(const io::TensorMap& in) {
    const std::string tag = "/tmp/sslight_swav_moco_parity_" + std::to_string(::getpid());
    io::save_safetensors(tag + ".in.safetensors", in);
    const std::string cmd = std::string(SSLIGHT_PARITY_PYTHON) + " " SSLIGHT_SOURCE_DIR
                            "/tests/parity/swav_moco_parity.py " + tag + ".in.safetensors " + tag + ".out.safetensors";
    const int rc = std::system(cmd.c_str());
    std::remove((tag + ".in.safetensors").c_str());
    REQUIRE_MESSAGE(rc == 0, "failed: ", cmd);
    io::TensorMap ref = io::load_safetensors(tag + ".out.safetensors");
    std::remove((tag + ".out.safetensors").c_str());
    return ref;
}

optim::LARS make_lars(Method& m) { return optim::LARS(m.param_groups(kLr, kWeightDecay), 0.9, 0.001); }

// ---- SwAV -------------------------------------------------------------------------------------------------------

// queue: 0 none before the step (it starts, empty, at this epoch), 1 running (every row filled), 2 running for
// crop 2 only (crop 1's last rows still zero: SwAV's shared use_the_queue flag turns on at crop 2).
struct SwavCase {
    std::string tag;
    bool sslight;
    int epoch, queue;
    uint64_t seed;
    std::shared_ptr<Swav> m;
    Views v;
};

MethodConfig swav_config(bool sslight) {
    MethodConfig c;
    c.method = "swav";
    c.backbone = "mobilenet_v2";
    c.sslight = sslight;
    c.total_epochs = 4;
    c.swav_prototypes = 20, c.swav_hidden_dim = 32, c.swav_out_dim = 16;
    c.swav_queue_length = 3 * kB + 1;  // rounded down to 3 batches
    c.swav_queue_start_epoch = 0;
    return c;
}

void prepare_swav(SwavCase& s, io::TensorMap& in) {
    const MethodConfig c = swav_config(s.sslight);
    nn::manual_seed(s.seed);
    s.m = std::make_shared<Swav>(c);
    s.v = make_views(s.seed);
    if (s.queue) {
        const int64_t L = s.m->queue_length(kB), D = c.swav_out_dim;
        for (uint64_t i = 0; i < 2; ++i) {
            Tensor q = l2_normalize(randn({L, D}, RngKey{s.seed, 10 + i}));
            if (s.queue == 2 && i == 0) q = concat({q.slice(0, L - kB), zeros({kB, D})}, 0);
            s.m->queue.push_back(q);
        }
        in[s.tag + ".queue"] = concat(s.m->queue, 0).reshape({2, L, D});
    }
    add_inputs(in, s.tag, *s.m, s.v,
               {{"sslight", double(s.sslight)}, {"epoch", double(s.epoch)}, {"lr", kLr},
                {"weight_decay", kWeightDecay}, {"queue_length", double(c.swav_queue_length)},
                {"queue_start", double(c.swav_queue_start_epoch)}});
    to_f64(*s.m, s.v);
    for (Tensor& q : s.m->queue) q = q.to(DType::f64);
}

void check_swav(SwavCase& s, const io::TensorMap& ref) {
    Swav& m = *s.m;
    const std::string& t = s.tag;
    const StepContext ctx{s.epoch * 5 + 2, s.epoch, 5, 4};
    auto opt = make_lars(m);
    opt.zero_grad();
    Tensor loss = m.forward_loss(s.v, ctx);
    loss.backward();
    CHECK(loss.item() == doctest::Approx(ref.at(t + ".loss").item()).epsilon(kRel));
    REQUIRE(m.last_codes.size() == 2);
    for (int i = 0; i < 2; ++i)
        expect_scaled(m.last_codes[i], ref.at(t + ".codes." + std::to_string(i)), kRel, "Sinkhorn codes");
    CHECK(m.use_the_queue == (ref.at(t + ".use_the_queue").item() != 0));
    CHECK(m.use_the_queue == (s.queue != 0));
    std::vector<std::string> probes = kBackboneProbes;
    for (const char* p : {"projection_head.0.weight", "projection_head.1.weight", "projection_head.3.weight",
                          "projection_head.3.bias", "prototypes.weight"})
        probes.push_back(p);
    std::map<std::string, Tensor> before;
    for (const std::string& p : probes) {
        expect_scaled(torch_layout(find_param(m, p).grad()), ref.at(t + ".grad." + p), kRel, "grad " + p);
        before[p] = find_param(m, p).clone();
    }
    m.before_optimizer_step(ctx);
    CHECK_MESSAGE(m.prototypes->weight.grad().defined() == (s.epoch >= 1), "prototype gradients in epoch ", s.epoch);
    opt.step();
    m.after_optimizer_step(ctx);
    for (const std::string& p : probes) expect_step(find_param(m, p), before[p], ref.at(t + ".after." + p), p);
    expect_close(sum(mul(m.prototypes->weight, m.prototypes->weight), 1), ones({20}), {kRel, kRel},
                 "prototype rows re-normalised");
    const nn::StateDict sd = m.state_dict();
    for (const char* b : {"backbone.features.0.1.running_mean", "projection_head.1.running_var"})
        expect_scaled(sd.at(b), ref.at(t + ".after." + std::string(b)), kRelF32Buffers, b);
    REQUIRE(m.queue.size() == 2);
    const Tensor& rq = ref.at(t + ".queue");
    expect_scaled(concat(m.queue, 0).reshape(rq.shape()), rq, kRel, "queue after the step");
}

// ---- MoCo-v2 ----------------------------------------------------------------------------------------------------

struct MocoCase {
    std::string tag;
    bool sslight;
    int64_t ptr;  // the queue pointer before the step
    uint64_t seed;
    std::shared_ptr<MocoV2> m;
    Views v;
};

MethodConfig moco_config(bool sslight) {
    MethodConfig c;
    c.method = "moco";
    c.backbone = "mobilenet_v2";
    c.sslight = sslight;
    c.total_epochs = 4;
    c.moco_hidden_dim = 32, c.moco_dim = 16, c.moco_queue = 4 * kB;
    c.moco_momentum = 0.9;  // SPEC's 0.999 would hide whether the keys saw the update
    return c;
}

void prepare_moco(MocoCase& s, io::TensorMap& in) {
    const MethodConfig c = moco_config(s.sslight);
    nn::manual_seed(s.seed);
    s.m = std::make_shared<MocoV2>(c);
    nn::manual_seed(s.seed + 1);
    MocoV2 drifted(c);  // a key encoder that differs from the query encoder, as after some steps
    s.m->encoder_k->load_state_dict(drifted.encoder_q->state_dict());
    s.m->queue_ptr_.data<int64_t>()[0] = s.ptr;
    s.v = make_views(s.seed);
    add_inputs(in, s.tag, *s.m, s.v,
               {{"sslight", double(s.sslight)}, {"epoch", 1.0}, {"lr", kLr}, {"weight_decay", kWeightDecay},
                {"momentum", c.moco_momentum}, {"temperature", c.moco_temp}});
    to_f64(*s.m, s.v);
}

// The queries forward_loss will compute (same groups, so the same BN batch statistics), the running statistics
// restored afterwards so that the step sees the state the reference starts from.
Tensor queries_of(MocoV2& m, const Views& v) {
    NoGradGuard guard;
    nn::StateDict saved;
    for (auto& [k, t] : m.encoder_q->state_dict()) saved[k] = t.clone();
    Tensor q = concat({m.encode_query(v.groups[0].slice(kB, 2 * kB)), m.encode_query(v.groups[1])}, 0);
    m.encoder_q->load_state_dict(saved);
    return q;
}

// [q·k, q·queueᵀ] / temp per query row (query row r pairs with key r mod B), in f64.
Tensor moco_logits(const Tensor& q, const Tensor& k, const Tensor& queue, double temp) {
    const int64_t n = q.size(0), D = q.size(1), Kq = queue.size(0);
    const auto qv = q.to(DType::f64).to_vector<double>(), kv = k.to(DType::f64).to_vector<double>();
    const auto uv = queue.to(DType::f64).to_vector<double>();
    auto dot = [&](const std::vector<double>& a, int64_t i, const std::vector<double>& b, int64_t j) {
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += a[size_t(i * D + d)] * b[size_t(j * D + d)];
        return s / temp;
    };
    std::vector<double> out;
    for (int64_t r = 0; r < n; ++r) {
        out.push_back(dot(qv, r, kv, r % k.size(0)));
        for (int64_t j = 0; j < Kq; ++j) out.push_back(dot(qv, r, uv, j));
    }
    return from_vector(out, {n, 1 + Kq});
}

void check_moco(MocoCase& s, const io::TensorMap& ref) {
    MocoV2& m = *s.m;
    const std::string& t = s.tag;
    const StepContext ctx{7, 1, 5, 4};
    std::vector<std::string> probes = kBackboneProbes;
    for (const char* p : {"head.0.weight", "head.2.weight", "head.2.bias"}) probes.push_back(p);
    const Tensor q = queries_of(m, s.v), queue_before = m.queue.clone();
    std::map<std::string, Tensor> key_encoder_at_keys;
    m.on_keys = [&](MocoV2& self) {
        for (const std::string& p : probes) key_encoder_at_keys[p] = find_param(*self.encoder_k, p).clone();
    };
    auto opt = make_lars(m);
    opt.zero_grad();
    Tensor loss = m.forward_loss(s.v, ctx);
    loss.backward();
    REQUIRE(key_encoder_at_keys.size() == probes.size());
    for (const std::string& p : probes)
        expect_scaled(torch_layout(key_encoder_at_keys[p]), ref.at(t + ".after.encoder_k." + p), kRel,
                      "key encoder (momentum-updated) when the keys are computed: " + p);
    expect_scaled(m.last_keys, ref.at(t + ".keys"), kRel, "keys");
    expect_scaled(moco_logits(q, m.last_keys, queue_before, 0.2), ref.at(t + ".logits"), kRel, "logits");
    CHECK(loss.item() == doctest::Approx(ref.at(t + ".loss").item()).epsilon(kRel));
    std::map<std::string, Tensor> before;
    for (const std::string& p : probes) {
        Tensor w = find_param(*m.encoder_q, p);
        expect_scaled(torch_layout(w.grad()), ref.at(t + ".grad.encoder_q." + p), kRel, "grad encoder_q." + p);
        before[p] = w.clone();
    }
    m.before_optimizer_step(ctx);
    opt.step();
    m.after_optimizer_step(ctx);
    for (const std::string& p : probes) {
        expect_step(find_param(*m.encoder_q, p), before[p], ref.at(t + ".after.encoder_q." + p), "encoder_q." + p);
        expect_scaled(torch_layout(find_param(*m.encoder_k, p)), ref.at(t + ".after.encoder_k." + p), kRel,
                      "encoder_k." + p + " after the step");
    }
    const std::string bn = "backbone.features.0.1.running_mean";
    expect_scaled(m.encoder_k->state_dict().at(bn), ref.at(t + ".after.encoder_k." + bn), kRelF32Buffers,
                  "key encoder BN");
    expect_scaled(m.queue, ref.at(t + ".queue"), kRelF32Buffers, "queue after enqueue");
    CHECK(m.queue_ptr() == int64_t(ref.at(t + ".queue_ptr").item()));
    CHECK(m.queue_ptr() == (s.ptr + kB) % (4 * kB));
}

}  // namespace

TEST_SUITE("parity") {
    TEST_CASE("one SwAV step (MobileNetV2, 2 + 2 crops) matches plain PyTorch: baseline and SSLight λ, queue states") {
        std::vector<SwavCase> cases = {{"swav_base_e0", false, 0, 0, 61, nullptr, {}},
                                       {"swav_light_e0", true, 0, 0, 62, nullptr, {}},
                                       {"swav_base_queue", false, 1, 1, 63, nullptr, {}},
                                       {"swav_light_queue", true, 1, 2, 64, nullptr, {}}};
        io::TensorMap in;
        for (SwavCase& s : cases) prepare_swav(s, in);
        const io::TensorMap ref = run_reference(in);
        for (SwavCase& s : cases) {
            INFO(s.tag);
            check_swav(s, ref);
        }
    }

    TEST_CASE("one MoCo-v2 step (MobileNetV2, g1 key, g2 + 2 local queries) matches plain PyTorch: both recipes") {
        std::vector<MocoCase> cases = {{"moco_base", false, 3 * kB, 71, nullptr, {}},
                                       {"moco_light", true, kB, 72, nullptr, {}}};
        io::TensorMap in;
        for (MocoCase& s : cases) prepare_moco(s, in);
        const io::TensorMap ref = run_reference(in);
        for (MocoCase& s : cases) {
            INFO(s.tag);
            check_moco(s, ref);
        }
    }
}
