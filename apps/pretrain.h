// `sslight pretrain` (issue 8): self-supervised pre-training of one config (apps/config.h) on the embedded
// digits (apps/embedded_data.h) or an ImageFolder: multi-crop views (SPEC.md §1-2) built per step, the method's
// loss (ssl/method.h), backward, optional per-parameter clipping, the SPEC.md §5 optimizer with per-iteration
// lr / weight-decay schedules, the method's post-step updates; a progress line, metrics.jsonl, checkpoints
// (apps/checkpoint.h) with exact resume, SIGTERM/SIGUSR1 handling, a stop at the first non-finite loss or gradient,
// --profile (engine/profiler.h), and at the end weighted kNN of the trained backbone vs the same backbone at random
// init (embedded data) and the plot (apps/plot.h).
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "apps/config.h"
#include "apps/embedded_data.h"
#include "apps/knn.h"
#include "data/recipe.h"
#include "engine/dist/communicator.h"
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
    std::function<void(ssl::Method&)> on_backward;  // called after backward, before the gradient check (tests)
    bool profile = false;  // per-op table (printed, out_dir/profile.txt) and Chrome trace (engine/profiler.h)
    // Data parallel (engine/dist/README.md): null = dist::make_communicator(), one process unless launched by
    // mpirun / srun with several ranks. Each rank trains on batch_size / world images per step; rank 0 alone writes.
    std::shared_ptr<dist::Communicator> comm;
};

struct PretrainResult {
    int64_t iterations = 0;      // optimizer steps done in total (resumed ones included)
    double last_loss = 0;
    bool interrupted = false;    // stopped by a signal (a checkpoint was written)
    bool knn_done = false;
    KnnResult knn_trained, knn_random;
    KnnResult knn_trained_pbn, knn_random_pbn;  // both with BN statistics re-estimated on the train images
    double probe_val_top1 = std::nan("");       // the online probe on the val images (eval.online_probe)
    std::string out_dir, last_checkpoint;
    double seconds = 0;
};

PretrainResult run_pretrain(const PretrainOptions& options);

// The view recipe of a config: SPEC's make_recipe for its method / backbone family / sslight flag, with the
// config's sizes, number of locals and scale ranges applied.
data::ViewRecipe recipe_of(const PretrainConfig& c);
// The method config with the run's epochs filled in.
ssl::MethodConfig method_config_of(const PretrainConfig& c);

// What a run trains with, built from a config as pretrain builds it (sslight bench reuses it): the method seeded with
// run.seed, on `device`, in train mode; the config's optimizer over the method's SPEC §5 param groups; per iteration
// the lr (linearly scaled peak, warm-up, cosine) and weight decay (cosine) for iters_per_epoch steps per epoch.
// With probe_classes > 0 and eval.online_probe, the method gets its online probe and probe_opt (SGD, momentum 0.9,
// eval.online_probe_lr, no weight decay) over the probe's parameters.
struct TrainingSetup {
    std::shared_ptr<ssl::Method> method;
    std::unique_ptr<optim::Optimizer> opt;
    std::unique_ptr<optim::Optimizer> probe_opt;  // null without a probe
    std::vector<double> lr, wd;  // per iteration
    std::vector<bool> decays;    // per param group: follows the weight-decay schedule
};
TrainingSetup make_training_setup(const PretrainConfig& c, Device device, int64_t iters_per_epoch,
                                  int64_t probe_classes = 0);
// Sets every group's lr and, where decays[g], its weight decay: one iteration of the schedules.
void apply_schedule(optim::Optimizer& opt, const std::vector<bool>& decays, double lr, double weight_decay);

// Views of the samples `indices` of an in-memory set: crops by Rng::for_view(seed, epoch, sample, view), the
// photometric parameters by draw_views, normalised on `device` (exactly what the threaded loader produces).
ssl::Views embedded_views(const ImageSet& set, const data::ViewRecipe& r, const std::vector<int64_t>& indices,
                          uint64_t seed, int64_t epoch, Device device);

// Indices of the gradients holding a NaN or an Inf (undefined and empty ones are skipped). CPU: an exponent-bit test
// per element, one vectorised pass. GPU (or by_sums, which tests use on the CPU): one sum per gradient, gathered
// into one tensor and read with one host copy; a non-finite sum is confirmed element-wise on the host, so an
// overflowing sum of finite values is not reported.
std::vector<size_t> nonfinite_gradients(const std::vector<Tensor>& grads, bool by_sums = false);

// Set by SIGTERM / SIGUSR1 while run_pretrain runs (checked once per step); tests may set it directly.
void request_stop();

}  // namespace sslight::apps
