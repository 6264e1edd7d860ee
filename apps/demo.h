// The engine's end-to-end training demo: an MLP learns a built-in 3-class spiral problem with SGD +
// momentum. It stands in for the pre-training job until `sslight pretrain` exists, and doubles as the
// "a small network reaches a stated loss" test of the engine (tests/test_train.cpp).
#pragma once
#include <cstdint>
#include <iosfwd>

#include "engine/device.h"

namespace sslight::apps {

struct DemoConfig {
    int points_per_class = 1000;
    int hidden = 64;
    int steps = 600;
    int batch = 256;
    double lr = 0.1;
    double momentum = 0.9;
    uint64_t seed = 0;
    Device device = Device::cpu();
    int log_every = 50;  // progress lines; 0 = silent
};

struct DemoResult {
    double first_loss = 0, final_loss = 0;  // the first step's loss / the mean over the last 20 steps
    double accuracy = 0;                    // on all points, after training
    double seconds = 0, samples_per_second = 0;
};

DemoResult run_mlp_demo(const DemoConfig& cfg, std::ostream* log);

}  // namespace sslight::apps
