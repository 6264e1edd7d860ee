// libFuzzer target: apps/checkpoint.h load_checkpoint on arbitrary bytes written to a temporary file, into a small
// method (real nn::Linear / nn::BatchNorm layers, a host buffer like MoCo's queue pointer) and a real AdamW. Every
// input either loads or throws IoError / ConfigError. A loaded checkpoint must give a sane position and step counts,
// save and load back to the same state, and let the optimizer take a step. With SSLIGHT_FUZZ_WRITE_SEEDS=DIR the binary
// writes its seed checkpoints there with save_checkpoint and exits (fuzz/make_corpus.sh calls it that way).
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "apps/checkpoint.h"
#include "apps/config.h"
#include "engine/check.h"
#include "engine/nn/layers.h"
#include "engine/optim/optimizer.h"

using namespace sslight;

namespace {

// The load path only sees names, shapes and dtypes, so a method this small reaches all of it; a real backbone's
// checkpoint is ~1 MB of tensor bytes that mutations would mostly land in.
class TinyMethod : public ssl::Method {
public:
    TinyMethod() : Method("FuzzTiny") {
        nn::init_generator() = Generator(7);
        student = register_module("student", net());
        teacher = register_module("teacher", net());
        register_buffer("center", &center, zeros({1, 4}));
        register_buffer("queue_ptr", &queue_ptr, zeros({}, DType::i64), /*host=*/true);
    }
    Tensor forward_loss(const ssl::Views&, const ssl::StepContext&) override { throw Error("fuzz: not used"); }
    void after_optimizer_step(const ssl::StepContext&) override {}
    std::vector<optim::ParamGroup> param_groups(double lr, double wd) override {
        return optim::ssl_param_groups(*student, lr, wd);
    }
    models::Backbone& student_backbone() override { throw Error("fuzz: not used"); }

    std::shared_ptr<nn::Sequential> student, teacher;
    Tensor center, queue_ptr;

private:
    static std::shared_ptr<nn::Sequential> net() {
        return std::make_shared<nn::Sequential>(std::vector<std::shared_ptr<nn::Module>>{
            std::make_shared<nn::Linear>(3, 4), std::make_shared<nn::BatchNorm>(4, false)});
    }
};

struct Run {
    std::unique_ptr<TinyMethod> method = std::make_unique<TinyMethod>();
    std::unique_ptr<optim::AdamW> opt;
    Run() { opt = std::make_unique<optim::AdamW>(method->param_groups(1e-3, 0.04), 0.9, 0.999, 1e-8); }
    void step() {
        for (Tensor* p : method->student->parameters()) p->set_grad(full(p->shape(), 0.5, p->dtype()));
        opt->step();
    }
};

apps::PretrainConfig config(const std::vector<std::string>& sets = {}) {
    std::vector<std::string> all = {"optim.optimizer=adamw"};
    all.insert(all.end(), sets.begin(), sets.end());
    return apps::parse_config(apps::builtin_demo_config(), "fuzz.toml", all);
}

std::string scratch(const char* what) {
    const char* dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    return std::string(dir) + "/sslight_fuzz_checkpoint_" + what + "_" + std::to_string(getpid());
}

bool same_bytes(nn::StateDict a, nn::StateDict b) {
    if (a.size() != b.size()) return false;
    for (auto& [k, t] : a) {
        auto it = b.find(k);
        if (it == b.end() || it->second.shape() != t.shape() || it->second.dtype() != t.dtype()) return false;
        if (t.nbytes() && std::memcmp(t.raw_data(), it->second.raw_data(), t.nbytes()) != 0) return false;
    }
    return true;
}

// SSLIGHT_FUZZ_WRITE_SEEDS: a fresh run (no optimizer state), one after a step, one of another config (refused
// with the differences), all through the real writer.
void write_seeds(const std::string& dir) {
    mkdir(dir.c_str(), 0755);
    Run fresh;
    std::rename(apps::save_checkpoint(dir, *fresh.method, *fresh.opt, config(), {0, 0, 0, 3}, 9).c_str(),
                (dir + "/fresh.safetensors").c_str());
    Run stepped;
    stepped.step();
    std::rename(apps::save_checkpoint(dir, *stepped.method, *stepped.opt, config(), {7, 1, 2, 99}, 9).c_str(),
                (dir + "/stepped.safetensors").c_str());
    const apps::PretrainConfig other = config({"method.student_temp=0.2", "model.backbone=mobilenet_v2"});
    std::rename(apps::save_checkpoint(dir, *stepped.method, *stepped.opt, other, {1, 0, 1, 5}, 9).c_str(),
                (dir + "/other_config.safetensors").c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    if (const char* dir = std::getenv("SSLIGHT_FUZZ_WRITE_SEEDS")) {
        write_seeds(dir);
        std::exit(0);
    }
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const apps::PretrainConfig cfg = config();
    static const std::string path = scratch("in") + ".safetensors", dir = scratch("dir");
    static const int cleanup = std::atexit([] {
        std::error_code ec;
        std::filesystem::remove(path, ec);
        std::filesystem::remove_all(dir, ec);
    });
    (void)cleanup;
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return 0;
    if (size) std::fwrite(data, 1, size, f);
    std::fclose(f);
    Run run;
    apps::TrainPosition pos;
    try {
        pos = apps::load_checkpoint(path, *run.method, run.opt.get(), cfg);
    } catch (const IoError&) {
        return 0;
    } catch (const ConfigError&) {
        return 0;
    }
    if (pos.iteration < 0 || pos.epoch < 0 || pos.step < 0 || pos.epoch > pos.iteration || pos.step > pos.iteration ||
        pos.epoch > cfg.epochs)
        __builtin_trap();
    for (const auto& [key, t] : run.opt->state_dict())  // AdamW's bias correction needs step counts >= 0
        if (key.size() > 5 && key.compare(key.size() - 5, 5, ".step") == 0 && t.item() < 0) __builtin_trap();
    // What loaded saves and loads back to the same bytes, and the optimizer can step from it.
    mkdir(dir.c_str(), 0755);
    const std::string again = apps::save_checkpoint(dir, *run.method, *run.opt, cfg, pos, 1);
    Run reload;
    const apps::TrainPosition pos2 = apps::load_checkpoint(again, *reload.method, reload.opt.get(), cfg);
    if (pos2.iteration != pos.iteration || pos2.epoch != pos.epoch || pos2.step != pos.step ||
        pos2.init_counter != pos.init_counter)
        __builtin_trap();
    if (!same_bytes(run.method->state_dict(), reload.method->state_dict())) __builtin_trap();
    if (!same_bytes(run.opt->state_dict(), reload.opt->state_dict())) __builtin_trap();
    run.step();
    std::remove(again.c_str());
    return 0;
}
