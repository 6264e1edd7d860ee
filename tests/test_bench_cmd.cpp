// `sslight bench` (apps/bench_cmd.h, issue 9): tiny CPU runs of the training step built from the shipped configs
// (DINO ResNet18 with LARS, DINO ViT-Tiny with AdamW and clipping, MoCo MobileNetV2 on the baseline recipe) give
// positive samples/s, phases adding up to the step, the JSON report with every key (parsed with engine/io/json.h),
// and the bad command lines (unknown method or model, batch 0, --dtype fp8 or bf16, a row without a config) give
// clear errors and exit code 2. The gpu suite runs one tiny row on cuda:0 (device pool peak > 0).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "apps/bench_cmd.h"
#include "doctest/doctest.h"
#include "engine/check.h"
#include "engine/device.h"
#include "engine/io/json.h"
#include "tests/compare.h"

using namespace sslight;
using namespace sslight::apps;
using sslight::test::error_of;

namespace {

const std::string kConfigs = std::string(SSLIGHT_SOURCE_DIR) + "/configs";

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

int run_command(std::vector<std::string> args) {
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    return bench_command(int(argv.size()), argv.data());
}

BenchOptions parse(std::vector<std::string> args) {
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    return parse_bench_args(int(argv.size()), argv.data());
}

// A tiny row: 32 / 16 px crops, 2 locals, batch 4, 2 timed steps after 1 warm-up.
std::vector<std::string> tiny(const std::string& method, const std::string& model, const std::string& device) {
    return {"--method", method, "--model", model, "--batch", "4", "--steps", "2", "--warmup", "1",
            "--global-size", "32", "--local-size", "16", "--n-local", "2", "--device", device, "--configs", kConfigs};
}

std::string temp_json(const std::string& tag) {
    const std::string name = "sslight_bench_" + tag + "_" + std::to_string(getpid()) + ".json";
    return (std::filesystem::temp_directory_path() / name).string();
}

// The phases of a result add up to its mean step time (within 10%) and the throughput is batch / step time.
void check_consistent(const BenchResult& r) {
    REQUIRE(r.phases.size() == 7);
    double sum = 0;
    for (const BenchPhase& p : r.phases) {
        CHECK(p.ms >= 0);
        sum += p.ms;
    }
    CHECK(r.mean_step_ms > 0);
    CHECK(std::abs(sum - r.mean_step_ms) <= 0.1 * r.mean_step_ms);
    CHECK(r.samples_per_s == doctest::Approx(1e3 * double(r.batch) / r.mean_step_ms).epsilon(1e-9));
    CHECK(r.min_step_ms <= r.median_step_ms);
    CHECK(r.median_step_ms <= *std::max_element(r.step_ms.begin(), r.step_ms.end()));
    CHECK(std::isfinite(r.first_loss));
    CHECK(std::isfinite(r.last_loss));
}

}  // namespace

TEST_SUITE("cpu") {
    TEST_CASE("bench: a tiny DINO ResNet18 row through the command, its report and its JSON") {
        const std::string path = temp_json("dino");
        std::vector<std::string> args = tiny("dino", "resnet18", "cpu");
        args.insert(args.end(), {"--json", path});
        REQUIRE(run_command(args) == 0);
        std::ifstream f(path);
        REQUIRE(f.good());
        const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        std::filesystem::remove(path);
        const json::Value v = json::parse(text, path);
        for (const char* key : {"method", "model", "recipe", "config", "device", "dtype", "views", "optimizer",
                                "batch", "world", "steps", "warmup", "samples_per_s", "step_ms", "step_ms_median",
                                "phases_ms", "step_ms_each", "memory_mib", "loss_first", "loss_last"})
            CHECK_MESSAGE(v.find(key) != nullptr, "missing key ", key);
        CHECK(v.find("method")->as_string("method") == "dino");
        CHECK(contains(v.find("config")->as_string("config"), "dino_resnet18_sslight.toml"));
        CHECK(v.find("views")->as_string("views") == "2x32 + 2x16");
        CHECK(v.find("optimizer")->as_string("optimizer") == "LARS");
        CHECK(v.find("batch")->as_int("batch") == 4);
        CHECK(v.find("steps")->as_int("steps") == 2);
        CHECK(v.find("step_ms_each")->as_array("step_ms_each").size() == 2);
        const double sps = v.find("samples_per_s")->as_double("samples_per_s");
        const double step = v.find("step_ms")->as_double("step_ms");
        CHECK(sps > 0);
        CHECK(sps == doctest::Approx(4e3 / step).epsilon(1e-4));
        double sum = 0;
        const auto& phases = v.find("phases_ms")->as_object("phases_ms");
        CHECK(phases.size() == 7);
        for (const char* name : {"data", "forward", "communication", "backward", "grad_check", "optimizer",
                                 "method_update"}) {
            const json::Value* p = v.find("phases_ms")->find(name);
            REQUIRE_MESSAGE(p != nullptr, "missing phase ", name);
            CHECK(p->as_double(name) >= 0);
            sum += p->as_double(name);
        }
        CHECK(v.find("phases_ms")->find("forward")->as_double("forward") > 0);
        CHECK(v.find("phases_ms")->find("backward")->as_double("backward") > 0);
        CHECK(std::abs(sum - step) <= 0.1 * step);
        const json::Value* mem = v.find("memory_mib");
        CHECK(mem->find("device_peak")->as_double("device_peak") > 0);
        CHECK(mem->find("host_peak_rss")->as_double("host_peak_rss") > 0);
    }

    TEST_CASE("bench: DINO ViT-Tiny (AdamW, clipping) and MoCo MobileNetV2 on the baseline recipe") {
        BenchOptions o = parse(tiny("dino", "vit_tiny", "cpu"));
        const auto t0 = std::chrono::steady_clock::now();
        BenchResult r = run_bench(o);
        const double wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        check_consistent(r);
        double timed_ms = 0;
        for (double s : r.step_ms) timed_ms += s;
        CHECK(r.setup_s * 1e3 + timed_ms <= wall_ms);  // the timed steps and the setup lie inside the call
        CHECK(r.optimizer == "AdamW");
        CHECK(r.views == "2x32 + 2x16");
        CHECK(r.lr > 0);
        CHECK(r.step_ms.size() == 2);
        std::vector<std::string> args = tiny("moco", "mobilenet_v2", "cpu");
        args.erase(args.begin() + 14, args.begin() + 16);  // the recipe's number of locals (baseline CNN: 6)
        args.insert(args.end(), {"--recipe", "baseline", "--steps", "1"});
        o = parse(args);
        CHECK(o.n_local == -1);
        r = run_bench(o);
        check_consistent(r);
        CHECK(contains(r.config_path, "moco_mobilenet_v2_baseline.toml"));
        CHECK(r.views == "2x32 + 6x16");
        CHECK(r.optimizer == "LARS");
        CHECK(r.step_ms.size() == 1);
        CHECK(r.device_peak_mib > 0);
        const std::string text = format_bench(o, r);
        for (const char* part : {"samples/s", "step ms", "forward", "backward", "optimizer", "method_update",
                                 "communication", "peak memory"})
            CHECK_MESSAGE(contains(text, part), "the report lacks ", part);
    }

    TEST_CASE("bench: bad command lines are clear errors with exit code 2") {
        auto args_with = [](std::vector<std::string> extra) {
            std::vector<std::string> a = {"--configs", kConfigs, "--device", "cpu"};
            a.insert(a.end(), extra.begin(), extra.end());
            return a;
        };
        // Each bad command line exits with 2 from the command, and parsing it names the problem.
        auto refused = [&](std::vector<std::string> extra, const std::string& message) {
            CHECK(run_command(args_with(extra)) == 2);
            const std::string e = error_of([&] { parse(args_with(extra)); });
            CHECK_MESSAGE(contains(e, message), "got: ", e);
        };
        refused({"--method", "simclr", "--model", "resnet18"}, "unknown method 'simclr': expected dino, swav or moco");
        refused({"--method", "dino", "--model", "resnet9"}, "unknown model 'resnet9': expected one of");
        refused({"--method", "dino", "--model", "resnet18", "--batch", "0"}, "--batch expects an integer in [2, ");
        refused({"--method", "dino", "--model", "resnet18", "--dtype", "fp8"},
                "--dtype expects f32 or bf16, got 'fp8'");
        refused({"--method", "dino", "--model", "resnet18", "--dtype", "bf16"},
                "mixed-precision training is not implemented yet");
        refused({"--method", "dino", "--model", "resnet18", "--recipe", "fast"},
                "--recipe expects sslight or baseline");
        CHECK(run_command(args_with({"--method", "dino"})) == 2);  // --model missing
        CHECK(run_command(args_with({"--method", "dino", "--model", "resnet18", "--steps", "x"})) == 2);
        CHECK(run_command(args_with({"--method", "dino", "--model", "resnet18", "--frobnicate", "1"})) == 2);
        CHECK(run_command(args_with({"--method", "dino", "--model", "resnet18", "--steps"})) == 2);
        // A method / backbone pair without a shipped config names the file it looked for and lists the rows.
        CHECK(run_command(args_with({"--method", "swav", "--model", "resnet18", "--batch", "4"})) == 2);
        const std::string missing = error_of([&] { run_bench(parse(args_with({"--method", "swav", "--model",
                                                                               "resnet18", "--batch", "4"}))); });
        CHECK(contains(missing, "swav_resnet18_sslight.toml"));
        CHECK(contains(missing, "swav_mobilenet_v2_sslight"));
        // MoCo's queue must be a multiple of the batch: the config table's own message.
        CHECK(run_command(args_with({"--method", "moco", "--model", "mobilenet_v2", "--batch", "3"})) == 2);
        CHECK(contains(error_of([&] { run_bench(parse(args_with({"--method", "moco", "--model", "mobilenet_v2",
                                                                 "--batch", "3"}))); }),
                       "method.moco_queue (65536) must be a multiple of run.batch_size (3)"));
        CHECK(run_command({"--help"}) == 0);
        CHECK(parse(args_with({"--method", "dino", "--model", "resnet18"})).batch == 16);  // the CPU default
    }
}

TEST_SUITE("gpu") {
    TEST_CASE("bench: a tiny DINO ResNet18 row on cuda:0") {
        const BenchResult r = run_bench(parse(tiny("dino", "resnet18", "cuda:0")));
        check_consistent(r);
        CHECK(r.device == "cuda:0");
        CHECK(r.device_peak_mib > 0);
        CHECK(parse({"--method", "dino", "--model", "resnet18", "--device", "cuda:0"}).batch == 128);
    }
}
