// `sslight pretrain` (issue 8): self-supervised pre-training of one config (apps/config.h) on the embedded
// digits (apps/embedded_data.h) or an ImageFolder: multi-crop views (SPEC.md §1-2) built per step, the method's
// loss (ssl/method.h), backward, optional per-parameter clipping, the SPEC.md §5 optimizer with per-iteration
// lr / weight-decay schedules, the method's post-step updates; a progress line, metrics.jsonl, checkpoints
// (apps/checkpoint.h) with exact resume, SIGTERM/SIGUSR1 handling, a stop at the first non-finite loss, and
// at the end weighted kNN of the trained backbone vs the same backbone at random init (embedded data).
#pragma once
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "apps/config.h"
#include "apps/embedded_data.h"
#include "apps/knn.h"
#include "data/recipe.h"
#include "ssl/method.h"

namespace sslight::apps {

struct PretrainOptions {
    PretrainConfig config;
    std::string data_dir;                // non-empty: an ImageFolder instead of config.dataset
    std::string out_dir;                 // empty: runs/<config.name>
    bool resume = false;                 // continue from the newest checkpoint in out_dir (none: start fresh)
    const EmbeddedData* data = nullptr;  // the embedded set to use (tests); null: load_embedded_data
    std::ostream* log = nullptr;         // progress and messages; null: silent
    int progress = -1;                   // -1: a live line on a terminal, plain lines otherwise; 0: plain; 1: live
    std::function<void(int64_t)> on_step;  // called after each optimizer step with the iteration count (tests)
};

struct PretrainResult {
    int64_t iterations = 0;      // optimizer steps done in total (resumed ones included)
    double last_loss = 0;
    bool interrupted = false;    // stopped by a signal (a checkpoint was written)
    bool knn_done = false;
    KnnResult knn_trained, knn_random;
    std::string out_dir, last_checkpoint;
    double seconds = 0;
};

PretrainResult run_pretrain(const PretrainOptions& options);

// The view recipe of a config: SPEC's make_recipe for its method / backbone family / sslight flag, with the
// config's sizes, number of locals and scale ranges applied.
data::ViewRecipe recipe_of(const PretrainConfig& c);
// The method config with the run's epochs filled in.
ssl::MethodConfig method_config_of(const PretrainConfig& c);

// Views of the samples `indices` of an in-memory set: crops by Rng::for_view(seed, epoch, sample, view), the
// photometric parameters by draw_views, normalised on `device` (exactly what the threaded loader produces).
ssl::Views embedded_views(const ImageSet& set, const data::ViewRecipe& r, const std::vector<int64_t>& indices,
                          uint64_t seed, int64_t epoch, Device device);

// Set by SIGTERM / SIGUSR1 while run_pretrain runs (checked once per step); tests may set it directly.
void request_stop();

}  // namespace sslight::apps
