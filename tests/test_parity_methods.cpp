// Parity of one DINO training step with a plain-PyTorch implementation (tests/parity/methods_parity.py: torchvision
// resnet18 + DINO's DINOHead / MultiCropWrapper / DINOLoss with λ-weighted gg and gl terms, DINO's schedules,
// SGD, EMA over parameters, centre update), from the same initial weights (exported by sslight), the same views
// and a non-zero centre, in f32, for the baseline and SSLight λ's: the loss, the schedules' values, gradients of
// backbone and head probes, the student and teacher after the step (and the teacher's change by the EMA), the
// teacher's BN statistics and the centre.
// Skipped (exit 77) where python3-torch is not importable.
#include <doctest/doctest.h>

#include <cstdlib>
#include <map>

#include <unistd.h>

#include "engine/io/safetensors.h"
#include "engine/nn/layers.h"
#include "engine/ops/elementwise.h"
#include "engine/optim/optimizer.h"
#include "engine/random.h"
#include "models/weights.h"
#include "ssl/dino.h"
#include "tests/compare.h"

using namespace sslight;
using namespace sslight::ssl;
using namespace sslight::test;

namespace {

const std::vector<std::string> kProbes = {"backbone.conv1.weight", "backbone.layer4.1.bn2.weight",
                                          "head.mlp.0.weight", "head.mlp.1.weight", "head.mlp.6.weight",
                                          "head.last_layer.weight_v"};

Tensor torch_layout(const Tensor& t) { return t.dim() == 4 ? models::ohwi_to_oihw(t) : t; }

Tensor find_param(nn::Module& m, const std::string& name) {
    for (auto& [n, t] : m.named_parameters())
        if (n == name) return *t;
    FAIL("no parameter ", name);
    return Tensor();
}

void expect_scaled(const Tensor& got, const Tensor& ref, double rel, const std::string& what) {
    double scale = 0;
    for (double v : ref.to(DType::f64).to_vector<double>()) scale = std::max(scale, std::fabs(v));
    REQUIRE_MESSAGE(scale > 0, what, ": all-zero reference");
    expect_close(got.to(DType::f64), ref.to(DType::f64), Tol{rel * scale, rel}, what);
}

void run_case(bool sslight) {
    MethodConfig c;
    c.method = "dino";
    c.backbone = "resnet18";
    c.sslight = sslight;
    c.total_epochs = 4;
    c.dino_out_dim = 64, c.dino_hidden_dim = 48, c.dino_bottleneck_dim = 24;
    nn::manual_seed(31);
    Dino dino(c);
    const int64_t B = 4;
    const int n_local = 3;
    Views v;
    v.batch = B, v.n_local = n_local;
    v.groups = {randn({2 * B, 32, 32, 3}, RngKey{41, 1}), randn({n_local * B, 16, 16, 3}, RngKey{41, 2})};
    assign_(dino.center, mul(randn({64}, RngKey{41, 3}), 0.5));
    const StepContext ctx{1 * 5 + 2, 1, 5, 4};
    const double lr = 0.05;
    const auto [lgg, lgl] = method_loss_weights(c, n_local);

    io::TensorMap in;
    for (auto& [k, t] : models::export_state_dict(*dino.student)) in["student." + k] = t;
    in["center"] = dino.center.clone();
    in["globals"] = v.groups[0];
    in["locals"] = v.groups[1];
    const std::pair<const char*, double> scalars[] = {{"lr", lr}, {"lambda_gg", lgg}, {"lambda_gl", lgl},
        {"epochs", 4}, {"iters_per_epoch", 5}, {"iteration", double(ctx.iteration)}, {"epoch", 1}, {"warmup", 4}};
    for (auto& [k, x] : scalars) in[std::string("scalar.") + k] = scalar_tensor(x, DType::f64);
    const std::string tag = "/tmp/sslight_methods_parity_" + std::to_string(::getpid());
    io::save_safetensors(tag + ".in.safetensors", in);
    const std::string cmd = std::string(SSLIGHT_PARITY_PYTHON) + " " SSLIGHT_SOURCE_DIR
                            "/tests/parity/methods_parity.py " + tag + ".in.safetensors " + tag + ".out.safetensors";
    REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, "failed: ", cmd);
    io::TensorMap ref = io::load_safetensors(tag + ".out.safetensors");
    std::remove((tag + ".in.safetensors").c_str());
    std::remove((tag + ".out.safetensors").c_str());

    CHECK(dino.teacher_temp(ctx.epoch) == doctest::Approx(ref.at("teacher_temp").item()).epsilon(1e-12));
    CHECK(dino.teacher_momentum(ctx) == doctest::Approx(ref.at("momentum").item()).epsilon(1e-12));
    auto opt = optim::SGD(dino.param_groups(lr, 0), 0.0);
    opt.zero_grad();
    Tensor loss = dino.forward_loss(v, ctx);
    loss.backward();
    CHECK(loss.item() == doctest::Approx(ref.at("loss").item()).epsilon(1e-5));
    for (const std::string& p : kProbes)
        expect_scaled(torch_layout(find_param(*dino.student, p).grad()), ref.at("grad." + p), 2e-3, "grad " + p);
    std::map<std::string, Tensor> teacher_before;
    for (const std::string& p : kProbes) teacher_before[p] = find_param(*dino.teacher, p).clone();
    dino.before_optimizer_step(ctx);
    opt.step();
    dino.after_optimizer_step(ctx);
    for (const std::string& p : kProbes) {
        expect_scaled(torch_layout(find_param(*dino.student, p)), ref.at("student." + p), 1e-4, "student " + p);
        expect_scaled(torch_layout(find_param(*dino.teacher, p)), ref.at("teacher." + p), 1e-4, "teacher " + p);
        const Tensor delta = sub(find_param(*dino.teacher, p).to(DType::f64), teacher_before[p].to(DType::f64));
        expect_scaled(torch_layout(delta), ref.at("teacher_delta." + p), 2e-2, "teacher change " + p);
    }
    expect_scaled(dino.teacher->state_dict().at("backbone.bn1.running_mean"),
                  ref.at("teacher.backbone.bn1.running_mean"), 1e-4, "teacher BN running mean");
    expect_scaled(dino.center, ref.at("center"), 1e-4, "centre");
}

}  // namespace

TEST_SUITE("parity") {
    TEST_CASE("one DINO step (ResNet18 + DINOHead, 2 + 3 crops) matches plain PyTorch: baseline and SSLight λ") {
        for (bool sslight : {false, true}) {
            INFO(std::string(sslight ? "sslight" : "baseline"));
            run_case(sslight);
        }
    }
}
