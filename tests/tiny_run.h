// The tiny pre-training run the app tests share: DINO on a MobileNetV2 x0.25 at 16/8-px crops of a generated
// 10-class set (fast enough for many runs per test), with extra `--set` pieces applied last.
#pragma once
#include <string>
#include <vector>

#include "apps/config.h"
#include "apps/embedded_data.h"
#include "apps/pretrain.h"
#include "doctest/doctest.h"
#include "engine/io/safetensors.h"

namespace sslight::test {

// A tiny DINO run: MobileNetV2 x0.25 on 16/8-px crops of a generated 10-class set, 24 images, batch 4 (6 steps/epoch).
inline apps::PretrainConfig tiny_config(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> sets = {"run.epochs=2",
                                     "run.batch_size=4",
                                     "run.log_every=2",
                                     "data.global_size=16",
                                     "data.local_size=8",
                                     "data.n_local=2",
                                     "data.max_train_samples=24",
                                     "method.dino_out_dim=16",
                                     "method.dino_hidden_dim=16",
                                     "method.dino_bottleneck_dim=8",
                                     "optim.warmup_epochs=1",
                                     "eval.knn_at_end=false",
                                     "checkpoint.keep=2",
                                     "model.backbone=mobilenet_v2",
                                     "model.width_mult=0.25"};
    sets.insert(sets.end(), extra.begin(), extra.end());
    return apps::parse_config(apps::builtin_demo_config(), "tiny.toml", sets);
}

inline const apps::EmbeddedData& tiny_data() {
    static const apps::EmbeddedData d = apps::generated_digits(16, 4, 7);
    return d;
}

inline apps::PretrainResult run_tiny(const apps::PretrainConfig& c, const std::string& out, bool resume) {
    apps::PretrainOptions o;
    o.config = c;
    o.out_dir = out;
    o.resume = resume;
    o.data = &tiny_data();
    o.progress = 0;
    return apps::run_pretrain(o);
}

// Two checkpoints hold the same tensors and every f32 one is bit-identical (doctest CHECKs, naming the key);
// returns the f32 keys compared.
inline std::vector<std::string> check_same_checkpoint(const std::string& path_a, const std::string& path_b) {
    io::TensorMap a = io::load_safetensors(path_a);
    io::TensorMap b = io::load_safetensors(path_b);
    REQUIRE(a.size() == b.size());
    std::vector<std::string> compared;
    for (auto& [k, v] : a) {
        INFO(k);
        REQUIRE(b.count(k) == 1);
        if (v.dtype() != DType::f32) continue;
        CHECK(v.to_vector<float>() == b.at(k).to_vector<float>());
        compared.push_back(k);
    }
    return compared;
}

}  // namespace sslight::test
