// Detection transfer (tools/convert_detection.py): sslight builds ResNet18/34/50 and MobileNetV2 with
// non-trivial BN parameters and running statistics, writes each with save_backbone (the `sslight export`
// format) plus an input and its forward_map, and tests/parity/detection_check.py converts them and checks that
// every backbone key loads into torchvision's detection models (and the Detectron2 pickle follows its naming)
// with bit-exact values, and that the converted body reproduces sslight's feature map. No gradients involved.
// ctest passes --require-torch: skipped (exit 77) only where torch is not importable.
#include <doctest/doctest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "models/backbone.h"
#include "models/weights.h"

using namespace sslight;

namespace {

bool ends_with(const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// BN affine parameters, running statistics and counters away from their trivial init (1, 0, 0, 1, 0), so an
// exact-value comparison means something; convolution weights keep their random kaiming init.
void perturb_batch_norms(nn::Module& m) {
    int t = 0;
    for (auto& [name, p] : m.named_parameters()) {
        ++t;
        if (p->dim() != 1) continue;
        float* d = p->data<float>();
        for (int64_t i = 0; i < p->numel(); ++i) {
            const double s = std::sin(0.37 * static_cast<double>(i) + 1.3 * t);
            d[i] = static_cast<float>(ends_with(name, "weight") ? 0.6 + 0.4 * s * s : 0.1 * s);
        }
    }
    for (auto& [name, b] : m.named_buffers()) {
        ++t;
        if (b->dtype() == DType::i64) {
            for (int64_t i = 0; i < b->numel(); ++i) b->data<int64_t>()[i] = 1000 + t;
            continue;
        }
        float* d = b->data<float>();
        for (int64_t i = 0; i < b->numel(); ++i) {
            const double s = std::sin(0.53 * static_cast<double>(i) + 0.7 * t);
            d[i] = static_cast<float>(ends_with(name, "running_var") ? 0.5 + 0.5 * s * s : 0.2 * s);
        }
    }
}

Tensor test_image(int64_t h, int64_t w) {
    std::vector<float> v(static_cast<size_t>(h * w * 3));
    for (size_t i = 0; i < v.size(); ++i)
        v[i] = static_cast<float>(std::sin(0.011 * static_cast<double>(i * i % 9973)));
    return from_vector(v, {1, h, w, 3});
}

// Writes DIR/<name>.safetensors (the export) and DIR/<name>.features.safetensors; returns the check's argument.
std::string export_backbone(const std::string& dir, const std::string& name, int64_t h, int64_t w) {
    auto m = models::make_backbone(name);
    perturb_batch_norms(*m);
    m->eval();
    NoGradGuard ng;
    const Tensor x = test_image(h, w);
    const Tensor map = m->forward_map(x);
    const std::string weights = dir + "/" + name + ".safetensors";
    const std::string features = dir + "/" + name + ".features.safetensors";
    models::save_backbone(weights, *m);
    io::save_safetensors(features, {{"x", x}, {"map", map}});
    return name + "=" + weights + "=" + features;
}

// A bf16 export (save_backbone with DType::bf16): the converter widens it to f32 exactly.
std::string export_bf16(const std::string& dir, const std::string& name) {
    auto m = models::make_backbone(name);
    perturb_batch_norms(*m);
    const std::string weights = dir + "/" + name + ".bf16.safetensors";
    models::save_backbone(weights, *m, DType::bf16);
    return name + "=" + weights;
}

struct TempDir {
    std::string path;
    TempDir() {
        std::string templ = "/tmp/sslight_detection_XXXXXX";
        REQUIRE(::mkdtemp(templ.data()) != nullptr);
        path = templ;
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};

// Runs detection_check.py; returns its exit status and stdout+stderr.
int run_check(const std::string& dir, const std::string& specs, std::string& output) {
    const std::string cmd = std::string(SSLIGHT_PARITY_PYTHON) + " " SSLIGHT_SOURCE_DIR
                            "/tests/parity/detection_check.py " + dir + " " + specs + " 2>&1";
    FILE* pipe = ::popen(cmd.c_str(), "r");
    REQUIRE_MESSAGE(pipe != nullptr, "cannot run ", cmd);
    std::array<char, 4096> buf{};
    while (std::fgets(buf.data(), buf.size(), pipe) != nullptr) output += buf.data();
    const int status = ::pclose(pipe);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

TEST_SUITE("parity") {
    TEST_CASE("converted ResNet18/34/50 and MobileNetV2 exports load into torchvision detection and Detectron2") {
        TempDir dir;
        std::string specs;
        specs += export_backbone(dir.path, "resnet18", 67, 61) + " ";
        specs += export_backbone(dir.path, "resnet34", 64, 64) + " ";
        specs += export_backbone(dir.path, "resnet50", 45, 53) + " ";
        specs += export_backbone(dir.path, "mobilenet_v2", 71, 64) + " ";
        specs += export_bf16(dir.path, "resnet18");
        std::string output;
        const int rc = run_check(dir.path, specs, output);
        MESSAGE("detection_check.py output:\n", output);
        CHECK(rc == 0);
        for (const char* arch : {"resnet18", "resnet34", "resnet50"})
            CHECK(output.find(std::string("detection_check: ") + arch + ": torchvision body") != std::string::npos);
        CHECK(output.find("detectron2 100 keys OK") != std::string::npos);   // ResNet18: 20 convs x 5 tensors
        CHECK(output.find("detection_check: mobilenet_v2: torchvision body 312/312") != std::string::npos);
        CHECK(output.find("detection_check: OK 5 backbones") != std::string::npos);
    }

    TEST_CASE("an export with a backbone tensor missing or misnamed is refused") {
        TempDir dir;
        auto m = models::make_backbone("resnet18");
        io::TensorMap state = models::export_state_dict(*m);
        state.erase("layer4.1.bn2.running_mean");
        state["layer4.1.bn2.running_avg"] = full({512}, 0.25);
        const std::string path = dir.path + "/broken.safetensors";
        io::save_safetensors(path, state, {{"format", "pt"}, {"layout", "OIHW"}});
        std::string output;
        const int rc = run_check(dir.path, "resnet18=" + path, output);
        INFO("detection_check.py output:\n", output);
        CHECK(rc != 0);
        CHECK(output.find("layer4.1.bn2.running_mean") != std::string::npos);
        CHECK(output.find("detection_check: OK") == std::string::npos);
    }
}
