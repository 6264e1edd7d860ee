// The typed pre-training config read from TOML (apps/toml.h) plus `--set key=value` overrides. Every key is
// declared once in a table (apps/config.cpp) with its type and valid range; an unknown key, a wrong type or an
// out-of-range value throws ConfigError naming the file (or "--set"), the key and what was expected, before
// anything runs. Defaults are the SPEC.md §4-5 values of DINO on ResNet18. No tensors, no gradients.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "ssl/method.h"

namespace sslight::apps {

struct PretrainConfig {
    std::string name;        // run.name; empty: the config file's stem
    uint64_t seed = 0;
    int epochs = 200;
    int batch_size = 64;     // per step
    int log_every = 10;      // steps between progress lines / metrics records
    std::string device = "auto";  // auto | cpu | cuda | cuda:N
    // method + model (ssl::MethodConfig holds method, backbone, width, head sizes, temperatures, queues)
    ssl::MethodConfig method;
    // data
    std::string dataset = "embedded";  // "embedded" or an ImageFolder root (--data overrides)
    int global_size = 0, local_size = 0;  // 0: the recipe's (224 / 96 or 128)
    int n_local = -1;                     // -1: the recipe's
    std::vector<double> global_scale, local_scale;  // empty: the recipe's; else [lo, hi]
    double flip_p = std::nan("");         // horizontal-flip probability of every view; nan: the recipe's (0.5)
    int num_threads = 0;
    int64_t max_train_samples = 0;        // 0: all (embedded: 4000)
    // optimisation (SPEC.md §5)
    std::string optimizer = "lars";       // lars | adamw | sgd
    double base_lr = 0.48;                // per 256 images
    double final_lr = 0.0048;
    int warmup_epochs = 10;
    double start_warmup_lr = 0;
    double weight_decay = 1e-6, weight_decay_end = 1e-6;
    double clip_grad = 0;                 // 0: off; else DINO's per-parameter clip
    int64_t max_steps = 0;                // stop after this many steps in total (0: all epochs)
    // checkpoints
    int64_t checkpoint_every = 0;         // steps; 0: epoch ends only
    int checkpoint_keep = 3;
    // kNN evaluation (SPEC.md §6)
    int knn_k = 20;
    double knn_temperature = 0.07;
    bool knn_at_end = true;
    // the online linear probe (ssl/online_probe.h): trained on detached features, needs labelled data
    bool online_probe = false;
    double online_probe_lr = 0.1;  // SGD momentum 0.9, constant, no weight decay
};

// Parses and validates a config file, then applies `sets` ("key=value", in order). Throws ConfigError.
PretrainConfig load_config(const std::string& path, const std::vector<std::string>& sets = {});
// The same from TOML text (tests); `source_name` stands for the file in messages.
PretrainConfig parse_config(const std::string& text, const std::string& source_name,
                            const std::vector<std::string>& sets = {});
// Checks relations between keys (sizes, scale ranges, method/backbone names); called by the loaders.
void validate(const PretrainConfig& c, const std::string& source_name);
// Every key as "key = value" lines, sorted (the config's canonical form, hashed into checkpoints).
std::string canonical_text(const PretrainConfig& c);
// hashed_only: only the keys that change the trained weights (the checkpoint compatibility hash).
std::string canonical_text(const PretrainConfig& c, bool hashed_only);
uint64_t config_hash(const PretrainConfig& c);  // FNV-1a of canonical_text without run.name / train length keys
std::vector<std::string> config_keys();          // every known key (help, tests)
// The text of configs/demo.toml, used when that file cannot be found (a test keeps the two equal).
const char* builtin_demo_config();

}  // namespace sslight::apps
