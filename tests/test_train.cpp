// End to end: the demo MLP trains through the engine's ops and autograd for a few hundred steps on the
// built-in spiral and must reach a stated loss and accuracy (CPU here; the same run on the GPU there).
#include <doctest/doctest.h>

#include <sstream>

#include "apps/demo.h"

using namespace sslight;

namespace {
apps::DemoConfig small_config(Device d) {
    apps::DemoConfig cfg;
    cfg.points_per_class = 300;
    cfg.hidden = 48;
    cfg.steps = 400;
    cfg.batch = 128;
    cfg.device = d;
    cfg.log_every = 100;
    return cfg;
}
}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("MLP on the spiral reaches loss < 0.25 and accuracy > 90% in 400 steps") {
        std::ostringstream log;
        apps::DemoResult r = apps::run_mlp_demo(small_config(Device::cpu()), &log);
        MESSAGE("loss ", r.first_loss, " -> ", r.final_loss, ", accuracy ", r.accuracy, ", ", r.seconds, " s");
        CHECK(r.first_loss > 0.8);  // an untrained 3-class model starts near ln 3 = 1.10
        CHECK(r.final_loss < 0.25);
        CHECK(r.accuracy > 0.90);
        CHECK(log.str().find("samples/s") != std::string::npos);
    }

    TEST_CASE("the demo is deterministic for a seed") {
        apps::DemoConfig cfg = small_config(Device::cpu());
        cfg.steps = 30;
        apps::DemoResult a = apps::run_mlp_demo(cfg, nullptr), b = apps::run_mlp_demo(cfg, nullptr);
        CHECK(a.final_loss == b.final_loss);
    }
}

TEST_SUITE("gpu") {
    TEST_CASE("MLP on the spiral trains on the GPU too") {
        apps::DemoResult r = apps::run_mlp_demo(small_config(Device::cuda(0)), nullptr);
        CHECK(r.final_loss < 0.25);
        CHECK(r.accuracy > 0.90);
    }
}
