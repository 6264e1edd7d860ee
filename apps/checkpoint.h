// Training checkpoints (issue 8): one safetensors file per checkpoint holding the method's state_dict
// ("model.*": student, teacher / key encoder, DINO centre, queues, BatchNorm statistics) and the optimizer's
// ("optim.*"), with metadata naming the format, config hash, model, method, position (iteration, epoch, step
// in epoch) and generator counter. Written atomically (temporary file, fsync, rename); the last `keep` are kept.
// Loading refuses a checkpoint of another model, method or config with a message listing what differs.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "apps/config.h"
#include "engine/optim/optimizer.h"
#include "ssl/method.h"

namespace sslight::apps {

struct TrainPosition {
    int64_t iteration = 0;     // optimizer steps done
    int64_t epoch = 0;         // the epoch the next step belongs to
    int64_t step = 0;          // its step within that epoch
    uint64_t init_counter = 0; // nn::init_generator()'s counter
};

// Writes <dir>/checkpoint_<iteration, 9 digits>.safetensors, then deletes all but the newest `keep`.
// probe_opt: the online probe's optimizer (its state is saved as "probe_optim.*"), when the run has a probe.
std::string save_checkpoint(const std::string& dir, ssl::Method& method, optim::Optimizer& opt,
                            const PretrainConfig& cfg, const TrainPosition& pos, int keep,
                            optim::Optimizer* probe_opt = nullptr);
// The checkpoints in `dir`, oldest first (by iteration).
std::vector<std::string> list_checkpoints(const std::string& dir);
// Loads `path` into the method and (when given) the optimizer after checking that it belongs to this model,
// method and config (ConfigError listing every difference otherwise). A method without an online probe ignores
// the checkpoint's probe tensors (export).
TrainPosition load_checkpoint(const std::string& path, ssl::Method& method, optim::Optimizer* opt,
                              const PretrainConfig& cfg, optim::Optimizer* probe_opt = nullptr);
// The student backbone of a checkpoint written with `cfg`, saved with torchvision/timm names (models/weights.h).
std::string export_backbone(const std::string& checkpoint, const PretrainConfig& cfg, const std::string& out);

}  // namespace sslight::apps
