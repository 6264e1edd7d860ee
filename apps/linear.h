// `sslight linear` (issue 8, SPEC.md §6): the linear probe of a frozen backbone. The backbone runs in eval mode
// without gradients; its probe feature (CNN pooled, ViT the last 4 CLS tokens) feeds one Linear(D, classes) with
// weight ~ N(0, 0.01²) and bias 0, trained with cross-entropy by SGD (momentum 0.9, no weight decay) or LARS, lr
// peak·batch/256 with a per-iteration cosine to 0, on RandomResizedCrop + flip views; validation uses resize / centre
// crop, top-1 and top-5 per epoch. With augmentation off every feature is computed once and cached (in memory, and
// with disk_cache in <out>/features.safetensors, reused while backbone, data and crop size match).
#pragma once
#include <cstdint>
#include <iosfwd>
#include <string>

#include "apps/supervised.h"

namespace sslight::apps {

struct LinearOptions {
    PretrainConfig config;           // the model (model.*, method.* for checkpoints), run.seed, run.device
    BackboneSource source;           // neither set: random init
    std::string data, val;           // load_supervised_data; empty data: the embedded digits
    const EmbeddedData* embedded = nullptr;  // tests: the embedded set to use
    int epochs = 100;
    int batch = 256;
    double lr = 0.03;                // per 256 images (peak = lr · batch / 256)
    std::string optimizer = "sgd";   // sgd | lars (the SSLight code's own linear eval: LARS with lr 0.05)
    int crop = 0;                    // 0: data.global_size of the config when set, else 224
    bool augment = true;             // false: train on the evaluation transform
    bool cache_features = true;      // with augment off: compute the features once (false: every epoch)
    bool disk_cache = false;         // with augment off: also <out>/features.safetensors
    std::string out_dir;             // empty: runs/<config name>/linear
    std::ostream* log = nullptr;
    int progress = -1;               // -1 live on a terminal, 0 plain lines, 1 live
};

struct LinearResult {
    EpochLoopResult loop;
    double top1 = 0, top5 = 0;       // the last epoch
    int64_t feature_dim = 0, train_count = 0, val_count = 0;
    bool features_from_disk = false;
    Tensor weight, bias;             // the trained classifier, CPU f32
    std::string out_dir;
    double seconds = 0, feature_seconds = 0;
};

LinearResult run_linear(const LinearOptions& options);

// `sslight linear [options]` (argv holds the options only): parses, runs, prints to stdout; returns the exit code.
// Bad options throw ConfigError.
int linear_command(int argc, char** argv);
const char* linear_usage();

// The probe features of every sample of a split through the evaluation transform, in order: f32 CPU [N, D]
// (backbone in eval mode for the call, no gradients).
Tensor split_features(models::Backbone& backbone, const LabeledSplit& split, const CropSizes& sizes, Device device,
                      int batch);

}  // namespace sslight::apps
