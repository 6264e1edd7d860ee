// The sslight command. Today: `demo` (the engine's end-to-end training demo, the stand-in for the
// pre-training job until `pretrain` exists) and `info` (build options and devices). Exit codes:
// 0 success, 1 runtime error, 2 bad command line.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include "apps/demo.h"
#include "engine/check.h"
#include "engine/device.h"

namespace {

constexpr const char* kUsage =
    "usage: sslight <command> [options]\n"
    "\n"
    "commands:\n"
    "  demo     train a small MLP on a built-in 3-class spiral with the engine (CPU, or the GPU when one is\n"
    "           usable). A stand-in for self-supervised pre-training, which is not implemented yet.\n"
    "  info     build options and the devices found\n"
    "\n"
    "Run `sslight <command> --help` for the options of a command.\n"
    "exit codes: 0 success, 1 runtime error, 2 bad command line\n";

constexpr const char* kDemoUsage =
    "usage: sslight demo [--steps N] [--batch N] [--hidden N] [--lr X] [--seed N] [--device cpu|cuda|cuda:N]\n"
    "  Trains an MLP (2 -> hidden -> hidden -> 3, ReLU) with SGD + momentum on a 3-class spiral and prints\n"
    "  progress, the final loss and the accuracy. Defaults: 600 steps, batch 256, hidden 64, lr 0.1, seed 0,\n"
    "  device = cuda:0 when a GPU is usable, else cpu.\n";

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

long parse_int(const std::string& flag, const char* v, long lo, long hi) {
    char* end = nullptr;
    long x = std::strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi)
        throw UsageError(sslight::str(flag, " expects an integer in [", lo, ", ", hi, "], got '", v, "'"));
    return x;
}

double parse_double(const std::string& flag, const char* v, double lo, double hi) {
    char* end = nullptr;
    double x = std::strtod(v, &end);
    if (!*v || *end || !(x > lo && x <= hi))
        throw UsageError(sslight::str(flag, " expects a number in (", lo, ", ", hi, "], got '", v, "'"));
    return x;
}

int cmd_info() {
    using namespace sslight;
    std::cout << "sslight engine\n"
              << "  CUDA support: " << (runtime::cuda_built() ? "yes" : "no") << "\n"
              << "  CUDA devices: " << runtime::cuda_device_count();
    if (runtime::cuda_device_count() == 0) std::cout << " (" << runtime::cuda_unavailable_reason() << ")";
    std::cout << "\n  default device: " << runtime::default_device().str() << "\n";
    return 0;
}

int cmd_demo(int argc, char** argv) {
    using namespace sslight;
    apps::DemoConfig cfg;
    cfg.device = runtime::default_device();
    for (int i = 0; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            std::cout << kDemoUsage;
            return 0;
        }
        if (i + 1 >= argc) throw UsageError("demo: option " + a + " needs a value (see sslight demo --help)");
        const char* v = argv[++i];
        if (a == "--steps") cfg.steps = static_cast<int>(parse_int(a, v, 1, 10000000));
        else if (a == "--batch") cfg.batch = static_cast<int>(parse_int(a, v, 1, 1 << 20));
        else if (a == "--hidden") cfg.hidden = static_cast<int>(parse_int(a, v, 1, 1 << 16));
        else if (a == "--seed") cfg.seed = static_cast<uint64_t>(parse_int(a, v, 0, 1L << 62));
        else if (a == "--lr") cfg.lr = parse_double(a, v, 0.0, 100.0);
        else if (a == "--device") {
            try {
                cfg.device = Device::parse(v);
            } catch (const ConfigError& e) {
                throw UsageError(e.what());
            }
        } else {
            throw UsageError("demo: unknown option '" + a + "' (see sslight demo --help)");
        }
    }
    std::cout << "sslight demo: NOTE this is a stand-in for self-supervised pre-training (not implemented yet):\n"
              << "  an MLP learns a built-in 3-class spiral through the engine's ops and autograd on "
              << cfg.device.str() << ".\n";
    apps::DemoResult r = apps::run_mlp_demo(cfg, &std::cout);
    std::printf("done: loss %.4f -> %.4f, accuracy %.1f%% on %d points, %.1f s, %.0f samples/s\n", r.first_loss,
                r.final_loss, 100.0 * r.accuracy, 3 * cfg.points_per_class, r.seconds, r.samples_per_second);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
        std::cout << kUsage;
        return argc < 2 ? 2 : 0;
    }
    const std::string cmd = argv[1];
    try {
        if (cmd == "demo") return cmd_demo(argc - 2, argv + 2);
        if (cmd == "info") return cmd_info();
        throw UsageError("unknown command '" + cmd + "'");
    } catch (const UsageError& e) {
        std::cerr << "sslight: " << e.what() << "\n\n" << kUsage;
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "sslight: error: " << e.what() << "\n";
        return 1;
    }
}
