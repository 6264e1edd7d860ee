// The pre-training loop (apps/pretrain.h). The data position of a step is (epoch, step in epoch): the sampler's
// permutation is keyed by (seed, epoch) and every crop and photometric draw by (seed, epoch, sample, view), so a
// resumed run rebuilds exactly the batches an uninterrupted one would have seen.
#include "apps/pretrain.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "apps/checkpoint.h"
#include "apps/plot.h"
#include "apps/supervised.h"
#include "data/augment_params.h"
#include "data/crop.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "engine/autograd.h"
#include "engine/check.h"
#include "engine/device.h"
#include "engine/nn/layers.h"
#include "engine/optim/clip.h"
#include "engine/optim/schedule.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape_ops.h"
#include "engine/profiler.h"
#include "models/weights.h"
#include "ssl/dino.h"
#include "ssl/distributed.h"
#include "ssl/online_probe.h"

namespace sslight::apps {
namespace {

volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_stop_signal(int) {
    g_stop = 1;
}

using Clock = std::chrono::steady_clock;

Device resolve_device(const std::string& d) {
    if (d == "auto") return runtime::default_device();
    return Device::parse(d);
}

std::unique_ptr<optim::Optimizer> make_optimizer(const std::string& name, std::vector<optim::ParamGroup> groups) {
    if (name == "lars") return std::make_unique<optim::LARS>(std::move(groups), 0.9, 0.001);
    if (name == "adamw") return std::make_unique<optim::AdamW>(std::move(groups), 0.9, 0.999, 1e-8);
    return std::make_unique<optim::SGD>(std::move(groups), 0.9);
}

struct Schedules {
    std::vector<double> lr, wd;
};

// Everything one run holds: data, method, optimizer, schedules, position.
struct Run {
    const PretrainOptions& o;
    PretrainConfig cfg;
    EmbeddedData owned;
    const EmbeddedData* data = nullptr;
    data::ViewRecipe recipe;
    Device device;
    std::shared_ptr<ssl::Method> method;
    std::unique_ptr<optim::Optimizer> opt;
    std::unique_ptr<optim::Optimizer> probe_opt;  // the online probe's (eval.online_probe with labelled data)
    double probe_top1 = std::nan("");             // the probe's top-1 on this step's global views, all ranks
    std::vector<bool> decays;  // per group: takes the weight-decay schedule
    Schedules sched;
    int64_t ipe = 0, total_iters = 0;
    TrainPosition pos;
    std::string out;
    std::unique_ptr<MetricsFile> metrics;
    bool live = false;
    // ImageFolder runs: the threaded loader and the (epoch, step) of the batch it delivers next.
    std::unique_ptr<data::Dataset> folder;
    std::unique_ptr<data::MultiCropLoader> loader;
    int64_t loader_epoch = -1, loader_step = 0;
    std::unique_ptr<ssl::DataParallelTrainer> dp;  // the ranks (one without mpirun / srun)
    bool rank0 = true;                             // rank 0 alone logs and writes files

    explicit Run(const PretrainOptions& opts) : o(opts), cfg(opts.config) {}
    bool root() const { return rank0; }
    void log(const std::string& line) const {
        if (o.log && root()) *o.log << line << std::endl;
    }
};

void setup(Run& r) {
    const std::shared_ptr<dist::Communicator> comm = r.o.comm ? r.o.comm : dist::make_communicator();
    r.rank0 = comm->rank() == 0;
    r.device = dist::rank_device(*comm, resolve_device(r.cfg.device));
    r.recipe = recipe_of(r.cfg);
    const std::string folder = r.o.data_dir.empty() ? r.cfg.dataset : r.o.data_dir;
    if (folder != "embedded") {
        r.folder = std::make_unique<data::Dataset>(data::Dataset::image_folder(folder));
        data::LoaderOptions lo;
        lo.batch_size = static_cast<int>(ssl::local_batch_of(r.cfg.batch_size, comm->world()));
        lo.num_threads = r.cfg.num_threads, lo.seed = r.cfg.seed, lo.rank = comm->rank(), lo.world = comm->world();
        r.loader = std::make_unique<data::MultiCropLoader>(*r.folder, r.recipe, lo);
        r.ipe = r.loader->batches_per_epoch();
        r.log(str("data: ImageFolder ", folder, ": ", r.folder->size(), " images, ", r.folder->num_classes(),
                  " classes, ", r.loader->num_threads(), " loader threads"));
    } else {
        if (r.o.data)
            r.data = r.o.data;
        else
            r.owned = load_embedded_data(32), r.data = &r.owned;
        r.log("data: " + r.data->description);
        int64_t n = r.data->train.count();
        if (r.cfg.max_train_samples > 0) n = std::min(n, r.cfg.max_train_samples);
        r.ipe = n / r.cfg.batch_size;
        SSL_CHECK_T(ConfigError, r.ipe >= 1, "pretrain: run.batch_size ", r.cfg.batch_size, " exceeds the ", n,
                    " training images");
    }
    r.total_iters = r.ipe * r.cfg.epochs;
    const int64_t classes = r.folder ? r.folder->num_classes() : r.data->num_classes;
    TrainingSetup ts = make_training_setup(r.cfg, r.device, r.ipe, classes);
    r.method = ts.method, r.opt = std::move(ts.opt), r.decays = std::move(ts.decays);
    r.probe_opt = std::move(ts.probe_opt);
    r.sched.lr = std::move(ts.lr), r.sched.wd = std::move(ts.wd);
    r.dp = std::make_unique<ssl::DataParallelTrainer>(*r.method, comm, r.cfg.batch_size);
    if (comm->world() > 1)
        r.log(str("data parallel: ", comm->world(), " ranks (", comm->backend_name(), "), ", r.dp->local_batch(),
                  " of the batch of ", r.cfg.batch_size, " per rank, rank 0 on ", r.device.str()));
    r.out = r.o.out_dir.empty() ? "runs/" + r.cfg.name : r.o.out_dir;
    if (r.root()) make_output_dir(r.out);
}

void maybe_resume(Run& r) {
    const std::vector<std::string> cps = list_checkpoints(r.out);
    if (!r.o.resume || cps.empty()) {
        if (r.o.resume) r.log("resume: no checkpoint in " + r.out + ", starting from scratch");
        r.pos.init_counter = nn::init_generator().counter();
        return;
    }
    r.pos = load_checkpoint(cps.back(), *r.method, r.opt.get(), r.cfg, r.probe_opt.get());
    if (r.pos.step >= r.ipe || r.pos.iteration != r.pos.epoch * r.ipe + r.pos.step)
        throw IoError(str(cps.back(), ": its position (iteration ", r.pos.iteration, ", epoch ", r.pos.epoch, ", step ",
                          r.pos.step, ") does not fit this run's ", r.ipe, " steps per epoch"));
    nn::init_generator().set_counter(r.pos.init_counter);
    r.log(str("resume: ", cps.back(), " (iteration ", r.pos.iteration, ", epoch ", r.pos.epoch, ", step ", r.pos.step,
              ")"));
}

std::string checkpoint(Run& r) {
    r.pos.init_counter = nn::init_generator().counter();
    if (!r.root()) return "";
    return save_checkpoint(r.out, *r.method, *r.opt, r.cfg, r.pos, r.cfg.checkpoint_keep, r.probe_opt.get());
}

void set_schedule(Run& r, int64_t it) {
    apply_schedule(*r.opt, r.decays, r.sched.lr[static_cast<size_t>(it)], r.sched.wd[static_cast<size_t>(it)]);
}

std::string fmt_time(double s) {
    char b[32];
    const long t = static_cast<long>(s + 0.5);
    std::snprintf(b, sizeof(b), "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    return b;
}

void progress(Run& r, int64_t done_here, double secs, double loss, bool force) {
    const int64_t it = r.pos.iteration;
    if (!r.o.log || !r.root() || (!force && !r.live && it % r.cfg.log_every != 0)) return;
    const double sps = secs > 0 ? done_here * r.cfg.batch_size / secs : 0;
    const double eta = done_here > 0 ? secs / done_here * (r.total_iters - it) : 0;
    std::ostringstream line;
    line << "epoch " << r.pos.epoch + (r.pos.step == 0 && it > 0 ? 0 : 1) << "/" << r.cfg.epochs << "  step " << it
         << "/" << r.total_iters << "  " << std::fixed << std::setprecision(1) << sps << " samples/s  loss "
         << std::setprecision(4) << loss << "  lr " << std::scientific << std::setprecision(3)
         << r.sched.lr[static_cast<size_t>(std::min(it, r.total_iters) - 1)];
    if (r.probe_opt) line << "  probe " << std::fixed << std::setprecision(1) << 100 * r.probe_top1 << "%";
    line << "  ETA " << fmt_time(eta);
    if (r.live)
        *r.o.log << "\r" << line.str() << "\033[K" << std::flush;
    else
        *r.o.log << line.str() << std::endl;
}

}  // namespace

void request_stop() {
    g_stop = 1;
}

data::ViewRecipe recipe_of(const PretrainConfig& c) {
    const data::Method m = c.method.method == "dino"   ? data::Method::dino
                           : c.method.method == "swav" ? data::Method::swav
                                                       : data::Method::moco;
    data::ViewRecipe r =
        data::make_recipe(m, ssl::is_vit(c.method.backbone) ? data::Arch::vit : data::Arch::cnn, c.method.sslight);
    if (c.n_local >= 0) r.locals.resize(static_cast<size_t>(c.n_local), r.locals.empty() ? r.globals[0] : r.locals[0]);
    // The recipe's blur sigmas are pixels at its own crop sizes (224 / 96): a resized view keeps the blur's
    // strength relative to the crop (sigma 2 px on a 32-px digit would erase it), up to the largest sigma the blur
    // kernel takes (8/3 px, reached by views over 298 px for globals, 128 px for locals).
    const auto resize = [](data::ViewSpec& v, int size) {
        if (size <= 0 || size == v.size) return;
        const double f = double(size) / double(v.size), cap = kernels::kAugmentMaxBlurSigma;
        v.blur_sigma_lo = std::min(v.blur_sigma_lo * f, cap), v.blur_sigma_hi = std::min(v.blur_sigma_hi * f, cap);
        v.size = size;
    };
    for (auto& v : r.globals) {
        resize(v, c.global_size);
        if (!c.global_scale.empty()) v.scale_lo = c.global_scale[0], v.scale_hi = c.global_scale[1];
    }
    for (auto& v : r.locals) {
        resize(v, c.local_size);
        if (!c.local_scale.empty()) v.scale_lo = c.local_scale[0], v.scale_hi = c.local_scale[1];
    }
    // Horizontal flips teach invariance to mirroring: right for photographs, wrong for digits (a mirrored 2 or 3
    // is not a digit); data.flip_p = 0 turns them off for every view.
    if (!std::isnan(c.flip_p))
        for (auto* views : {&r.globals, &r.locals})
            for (auto& v : *views) v.flip_p = c.flip_p;
    if (std::isfinite(c.method.lambda_gg)) r.lambda_gg = c.method.lambda_gg;
    data::validate(r);
    return r;
}

ssl::MethodConfig method_config_of(const PretrainConfig& c) {
    ssl::MethodConfig m = c.method;
    m.total_epochs = c.epochs;
    if (std::isfinite(m.lambda_gg)) m.lambda_gl = 1 - m.lambda_gg;
    return m;
}

TrainingSetup make_training_setup(const PretrainConfig& c, Device device, int64_t iters_per_epoch,
                                  int64_t probe_classes) {
    TrainingSetup s;
    nn::init_generator() = Generator(c.seed);
    s.method = ssl::make_method(method_config_of(c));
    if (c.online_probe && probe_classes > 0) s.method->enable_online_probe(probe_classes);
    s.method->to(device);
    s.method->train();
    const double peak = optim::linear_scaled_lr(c.base_lr, c.batch_size);
    s.lr = optim::cosine_schedule(peak, c.final_lr, c.epochs, iters_per_epoch, c.warmup_epochs, c.start_warmup_lr);
    s.wd = optim::cosine_schedule(c.weight_decay, c.weight_decay_end, c.epochs, iters_per_epoch);
    std::vector<optim::ParamGroup> groups = s.method->param_groups(s.lr[0], c.weight_decay);
    for (const auto& g : groups) s.decays.push_back(g.weight_decay > 0);
    s.opt = make_optimizer(c.optimizer, std::move(groups));
    if (s.method->online_probe) {
        optim::ParamGroup g{s.method->online_probe->parameters(), c.online_probe_lr, 0.0, false, "online_probe"};
        s.probe_opt = std::make_unique<optim::SGD>(std::vector<optim::ParamGroup>{std::move(g)}, 0.9);
    }
    return s;
}

void apply_schedule(optim::Optimizer& opt, const std::vector<bool>& decays, double lr, double weight_decay) {
    auto& groups = opt.groups();
    for (size_t g = 0; g < groups.size(); ++g) {
        groups[g].lr = lr;
        if (decays[g]) groups[g].weight_decay = weight_decay;
    }
}

ssl::Views embedded_views(const ImageSet& set, const data::ViewRecipe& r, const std::vector<int64_t>& indices,
                          uint64_t seed, int64_t epoch, Device device) {
    ssl::Views v;
    const int64_t B = static_cast<int64_t>(indices.size());
    v.batch = B;
    v.n_global = static_cast<int>(r.globals.size());
    v.n_local = static_cast<int>(r.locals.size());
    for (const data::ViewGroup& g : data::view_groups(r)) {
        const int64_t rows = B * static_cast<int64_t>(g.views.size()), S = g.size;
        Tensor u8 = empty({rows, S, S, 3}, DType::u8);
        std::vector<data::AugmentParams> params(static_cast<size_t>(rows));
        for (size_t vi = 0; vi < g.views.size(); ++vi) {
            const int view = g.views[vi];
            const data::ViewSpec& spec = r.view(view);
            for (int64_t b = 0; b < B; ++b) {
                const int64_t sample = indices[static_cast<size_t>(b)], row = static_cast<int64_t>(vi) * B + b;
                data::Rng rng = data::Rng::for_view(seed, epoch, sample, view);
                const data::CropBox box = data::random_resized_crop_box(
                    set.size, set.size, spec.scale_lo, spec.scale_hi, spec.ratio_lo, spec.ratio_hi, rng);
                data::resize_bicubic_aa(set.image(sample), set.size, set.size, set.size * 3, box,
                                        u8.data<uint8_t>() + row * S * S * 3, static_cast<int>(S), static_cast<int>(S));
                params[static_cast<size_t>(row)] = data::draw_augment(spec, seed, epoch, sample, view);
            }
        }
        v.groups.push_back(data::augment_group(u8, params, device));
    }
    return v;
}

namespace {

// The views of the batch at r.pos from the threaded loader (re-positioned after a resume by skipping batches).
ssl::Views loader_views(Run& r, Tensor& labels) {
    data::MultiCropBatch b;
    if (r.loader_epoch != r.pos.epoch || r.loader_step != r.pos.step) {
        r.loader->start_epoch(r.pos.epoch);
        for (int64_t s = 0; s < r.pos.step; ++s) r.loader->next(b);
        r.loader_epoch = r.pos.epoch, r.loader_step = r.pos.step;
    }
    SSL_CHECK(r.loader->next(b), "pretrain: the loader ended epoch ", r.pos.epoch, " early at step ", r.pos.step);
    ++r.loader_step;
    labels = b.labels;
    ssl::Views v;
    v.batch = b.batch_size();
    v.n_global = static_cast<int>(r.recipe.globals.size());
    v.n_local = static_cast<int>(r.recipe.locals.size());
    for (size_t g = 0; g < b.groups.size(); ++g)
        v.groups.push_back(data::augment_group(b.groups[g], b.params[g], r.device));
    return v;
}

// After backward: stops at the first trainable parameter (registration order) whose gradient holds a NaN or an
// Inf (nonfinite_gradients). Throws before the optimizer step, so no checkpoint of this step is written.
void check_gradients(Run& r, double loss) {
    const std::vector<std::pair<std::string, Tensor*>> params = r.method->named_parameters(true);
    std::vector<Tensor> grads;
    for (const auto& p : params) grads.push_back(p.second->grad());
    const std::vector<size_t> bad = nonfinite_gradients(grads);
    if (bad.empty()) return;
    const std::vector<std::string> cps = list_checkpoints(r.out);
    throw Error(str("pretrain: the gradient of ", params[bad[0]].first, " is not finite (NaN or Inf) at iteration ",
                    r.pos.iteration, " (epoch ", r.pos.epoch, ", step ", r.pos.step, ") while the loss is finite (",
                    loss, ")",
                    bad.size() > 1 ? str("; ", bad.size() - 1, " more parameters have non-finite gradients") : "",
                    ". Stopping before the optimizer step; the last good checkpoint is ",
                    cps.empty() ? std::string("(none)") : cps.back()));
}

// One optimizer step at r.pos; returns the loss. Throws Error naming the step on a non-finite loss or gradient.
double train_step(Run& r, const data::Sampler& sampler, std::vector<int64_t>& perm, int64_t& perm_epoch) {
    profiler::phase("data");
    ssl::Views views;
    Tensor labels;  // i64 [B], for the online probe
    if (r.loader) {
        views = loader_views(r, labels);
    } else {
        if (perm_epoch != r.pos.epoch) perm = sampler.epoch_indices(r.pos.epoch), perm_epoch = r.pos.epoch;
        const int64_t B = r.dp->local_batch();
        std::vector<int64_t> idx(perm.begin() + r.pos.step * B, perm.begin() + (r.pos.step + 1) * B);
        // data.max_train_samples keeps n of the N images spread evenly over the set (sample i -> image i·N/n): the
        // embedded digits are stored class by class, so its first n images would drop whole classes.
        const int64_t N = r.data->train.count();
        const int64_t n = r.cfg.max_train_samples > 0 ? std::min(N, r.cfg.max_train_samples) : N;
        for (int64_t& i : idx) i = i * N / n;
        views = embedded_views(r.data->train, r.recipe, idx, r.cfg.seed, r.pos.epoch, r.device);
        std::vector<int64_t> y;
        for (int64_t i : idx) y.push_back(r.data->train.labels[size_t(i)]);
        labels = from_vector(y, {int64_t(y.size())});
    }
    ssl::StepContext ctx;
    ctx.iteration = r.pos.iteration, ctx.epoch = r.pos.epoch, ctx.iters_per_epoch = r.ipe;
    ctx.total_epochs = r.cfg.epochs;
    set_schedule(r, r.pos.iteration);
    profiler::phase("forward");
    Tensor loss = r.method->forward_loss(views, ctx);
    const double lv = r.dp->global_loss(loss.item());  // the global-batch loss, the same on every rank
    if (!std::isfinite(lv)) {
        const std::vector<std::string> cps = list_checkpoints(r.out);
        throw Error(str("pretrain: the loss is ", lv, " at iteration ", r.pos.iteration, " (epoch ", r.pos.epoch,
                        ", step ", r.pos.step, "); stopping. The last good checkpoint is ",
                        cps.empty() ? std::string("(none)") : cps.back()));
    }
    if (r.probe_opt) {  // its loss joins the backward; its gradients stop at the detached features
        const ssl::OnlineProbe::Step ps = r.method->online_probe->forward_loss(r.method->probe_features, labels);
        r.probe_top1 = r.dp->global_loss(double(ps.correct) / double(ps.rows));
        loss = add(loss, ps.loss);
    }
    profiler::phase("backward");
    loss.backward();
    r.dp->synchronize_gradients();
    profiler::phase("grad_check");
    if (r.o.on_backward) r.o.on_backward(*r.method);
    check_gradients(r, lv);
    profiler::phase("optimizer");
    if (r.cfg.clip_grad > 0) {
        std::vector<Tensor*> ps;
        for (const auto& g : r.opt->groups()) ps.insert(ps.end(), g.params.begin(), g.params.end());
        optim::clip_grad_per_param(ps, r.cfg.clip_grad);
    }
    r.method->before_optimizer_step(ctx);
    r.opt->step();
    r.opt->zero_grad();
    if (r.probe_opt) r.probe_opt->step(), r.probe_opt->zero_grad();
    r.method->after_optimizer_step(ctx);
    ++r.pos.iteration;
    if (++r.pos.step == r.ipe) r.pos.step = 0, ++r.pos.epoch;
    return lv;
}

// Runs until the end, max_steps or a stop signal. Returns false when stopped by a signal.
bool train(Run& r, PretrainResult& res) {
    int64_t n = r.data ? r.data->train.count() : r.folder->size();
    if (r.cfg.max_train_samples > 0) n = std::min(n, r.cfg.max_train_samples);
    const data::Sampler sampler(n, r.dp->rank(), r.dp->world(), r.cfg.seed, true);
    std::vector<int64_t> perm;
    int64_t perm_epoch = -1, done_here = 0;
    double epoch_loss = 0, epoch_probe = 0;
    int64_t epoch_steps = 0;
    const auto t0 = Clock::now();
    const int64_t stop_at = r.cfg.max_steps > 0 ? std::min(r.cfg.max_steps, r.total_iters) : r.total_iters;
    while (r.pos.iteration < stop_at) {
        profiler::step_begin();
        const double loss = train_step(r, sampler, perm, perm_epoch);
        profiler::step_end();
        if (r.o.on_step) r.o.on_step(r.pos.iteration);
        ++done_here, ++epoch_steps, epoch_loss += loss;
        res.last_loss = loss;
        const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        if (r.probe_opt) epoch_probe += r.probe_top1;
        if (r.metrics && r.pos.iteration % r.cfg.log_every == 0) {
            std::vector<std::pair<std::string, double>> f = {{"iteration", double(r.pos.iteration)},
                                                             {"epoch", double(r.pos.epoch)},
                                                             {"loss", loss},
                                                             {"lr", r.sched.lr[size_t(r.pos.iteration - 1)]},
                                                             {"weight_decay", r.sched.wd[size_t(r.pos.iteration - 1)]},
                                                             {"samples_per_s", done_here * r.cfg.batch_size / secs},
                                                             {"elapsed_s", secs}};
            if (r.probe_opt) f.push_back({"probe_top1", r.probe_top1});
            r.metrics->write("step", f);
        }
        progress(r, done_here, secs, loss, false);
        const bool epoch_end = r.pos.step == 0;
        if (epoch_end && r.metrics) {
            std::vector<std::pair<std::string, double>> f = {{"epoch", double(r.pos.epoch - 1)},
                                                             {"iteration", double(r.pos.iteration)},
                                                             {"loss_mean", epoch_loss / epoch_steps},
                                                             {"elapsed_s", secs}};
            if (r.probe_opt) f.push_back({"probe_top1_mean", epoch_probe / epoch_steps});
            r.metrics->write("epoch", f);
        }
        if (epoch_end) epoch_loss = 0, epoch_probe = 0, epoch_steps = 0;
        if (epoch_end || (r.cfg.checkpoint_every > 0 && r.pos.iteration % r.cfg.checkpoint_every == 0) ||
            r.pos.iteration == stop_at)
            res.last_checkpoint = checkpoint(r);
        if (r.dp->any_rank(g_stop != 0)) {
            if (r.live && r.o.log) *r.o.log << "\n";
            res.last_checkpoint = checkpoint(r);
            r.log(str("stop requested by a signal: checkpoint ", res.last_checkpoint, " written, exiting"));
            return false;
        }
    }
    if (r.live && r.o.log) *r.o.log << "\n";
    return true;
}

// The set's features: each rank extracts its shard (dist::shard_range), the shards are gathered on every rank.
Tensor features_of(Run& r, models::Backbone& backbone, const ImageSet& set) {
    if (r.dp->world() == 1) return extract_features(backbone, set, r.device);
    const auto [lo, hi] = dist::shard_range(set.count(), r.dp->rank(), r.dp->world());
    const int64_t px = int64_t(set.size) * set.size * 3;
    const ImageSet part{set.size, {set.pixels.begin() + lo * px, set.pixels.begin() + hi * px},
                        {set.labels.begin() + lo, set.labels.begin() + hi}};
    return r.dp->gather_shards(extract_features(backbone, part, r.device), set.count());
}

KnnResult knn_of(Run& r, models::Backbone& backbone) {
    const Tensor tr = features_of(r, backbone, r.data->train);
    const Tensor va = features_of(r, backbone, r.data->val);
    return knn_classify(tr, r.data->train.labels, va, r.data->val.labels, r.data->num_classes, r.cfg.knn_k,
                        r.cfg.knn_temperature);
}

// kNN with the BatchNorm statistics re-estimated on the train images (the backbone's own are put back after).
// Every rank re-estimates from the whole train set, so the ranks stay identical without communication.
KnnResult knn_precise_bn(Run& r, models::Backbone& backbone) {
    const std::vector<Tensor> saved = recalibrate_batch_norm(backbone, r.data->train, r.device);
    const KnnResult k = knn_of(r, backbone);
    restore_batch_norm(backbone, saved);
    return k;
}

// kNN of the trained backbone (for DINO the EMA teacher's, as DINO's own kNN eval; the student is reported too)
// against the same backbone at random init.
void final_knn(Run& r, PretrainResult& res) {
    const auto t0 = Clock::now();
    auto* dino = dynamic_cast<ssl::Dino*>(r.method.get());
    res.knn_trained = knn_of(r, dino ? *dino->teacher->backbone : r.method->student_backbone());
    KnnResult student;
    if (dino) student = knn_of(r, r.method->student_backbone());
    // The same backbone at random init: the method rebuilt from the same seed draws the same initial weights.
    const Generator saved = nn::init_generator();
    nn::init_generator() = Generator(r.cfg.seed);
    std::shared_ptr<ssl::Method> fresh = ssl::make_method(method_config_of(r.cfg));
    nn::init_generator() = saved;
    fresh->to(r.device);
    res.knn_random = knn_of(r, fresh->student_backbone());
    res.knn_trained_pbn = knn_precise_bn(r, dino ? *dino->teacher->backbone : r.method->student_backbone());
    res.knn_random_pbn = knn_precise_bn(r, fresh->student_backbone());
    res.knn_done = true;
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    std::vector<std::pair<std::string, double>> fields = {{"iteration", double(r.pos.iteration)},
                                                          {"k", double(r.cfg.knn_k)},
                                                          {"temperature", r.cfg.knn_temperature},
                                                          {"top1", res.knn_trained.top1},
                                                          {"top5", res.knn_trained.top5}};
    if (dino) fields.insert(fields.end(), {{"student_top1", student.top1}, {"student_top5", student.top5}});
    fields.insert(fields.end(), {{"random_init_top1", res.knn_random.top1},
                                 {"random_init_top5", res.knn_random.top5},
                                 {"precise_bn_top1", res.knn_trained_pbn.top1},
                                 {"random_init_precise_bn_top1", res.knn_random_pbn.top1},
                                 {"elapsed_s", secs}});

    if (r.metrics) r.metrics->write("knn", fields);
    std::ostringstream os;
    os << "kNN (k " << r.cfg.knn_k << ", T " << r.cfg.knn_temperature << std::fixed << std::setprecision(1) << ", "
       << r.data->train.count() << " train / " << r.data->val.count() << " val): trained " << (dino ? "teacher " : "")
       << "top-1 " << 100 * res.knn_trained.top1 << "% top-5 " << 100 * res.knn_trained.top5 << "%";
    if (dino) os << " (student top-1 " << 100 * student.top1 << "% top-5 " << 100 * student.top5 << "%)";
    os << "  |  same backbone at random init top-1 " << 100 * res.knn_random.top1 << "% top-5 "
       << 100 * res.knn_random.top5 << "%\n"
       << "kNN with BatchNorm statistics re-estimated on the train images (precise BN, the weights alone): trained "
       << (dino ? "teacher " : "") << "top-1 " << 100 * res.knn_trained_pbn.top1 << "%  |  random init top-1 "
       << 100 * res.knn_random_pbn.top1 << "%";
    r.log(os.str());
}

// The online probe on the student's eval-mode features of the clean val images ("probe" record).
void final_probe(Run& r, PretrainResult& res) {
    ssl::OnlineProbe& probe = *r.method->online_probe;
    const Tensor va = features_of(r, r.method->student_backbone(), r.data->val);
    probe.eval();
    Tensor logits;
    {
        NoGradGuard guard;
        logits = probe.forward(va.to(r.device));
    }
    probe.train();
    const Tensor y = from_vector(r.data->val.labels, {r.data->val.count()});
    res.probe_val_top1 = double(ssl::count_top1(logits, y)) / double(r.data->val.count());
    if (r.metrics) r.metrics->write("probe", {{"iteration", double(r.pos.iteration)}, {"val_top1", res.probe_val_top1}});
    r.log(str("online linear probe (trained on the augmented views; student backbone, clean val images): top-1 ",
              std::round(1000 * res.probe_val_top1) / 10, "%"));
}

}  // namespace

PretrainResult run_pretrain(const PretrainOptions& options) {
    const auto t0 = Clock::now();
    Run r(options);
    setup(r);
    maybe_resume(r);
    r.live = options.progress == 1 || (options.progress == -1 && isatty(STDOUT_FILENO));
    r.dp->check_agree(r.pos.iteration, "the resumed iteration");
    r.dp->broadcast_state();
    if (r.root()) {
        r.metrics = std::make_unique<MetricsFile>(r.out + "/metrics.jsonl", options.resume);
        std::ofstream cf(r.out + "/config.resolved.toml");
        cf << canonical_text(r.cfg);
    }
    r.log(str("pretrain ", r.cfg.name, ": ", r.cfg.method.method, (r.cfg.method.sslight ? " (SSLight)" : " (baseline)"),
              " on ", r.cfg.method.backbone, ", ", r.recipe.globals.size(), "x", r.recipe.globals[0].size, " + ",
              r.recipe.locals.size(), "x", r.recipe.locals.empty() ? 0 : r.recipe.locals[0].size, " px views, batch ",
              r.cfg.batch_size, ", ", r.cfg.epochs, " epochs x ", r.ipe, " steps, ", r.device.str(), ", output ",
              r.out));
    const int64_t images = r.ipe * r.cfg.batch_size;  // per epoch
    if (r.cfg.method.method == "moco" && r.cfg.method.moco_queue * 4 > images)
        r.log(str("warning: method.moco_queue (", r.cfg.method.moco_queue, ") is over a quarter of the ", images,
                  " images of an epoch: its negatives include keys of the query's own image from earlier epochs "
                  "(ImageNet: 65536 of 1.28 M); consider at most ", images / 4));
    g_stop = 0;
    auto old_term = std::signal(SIGTERM, on_stop_signal);
    auto old_usr1 = std::signal(SIGUSR1, on_stop_signal);
    PretrainResult res;
    res.out_dir = r.out;
    profiler::Session prof(options.profile && r.root(), {r.out + "/profile_trace.json", 10, r.device});
    bool finished = false;
    try {
        finished = train(r, res);
    } catch (...) {
        std::signal(SIGTERM, old_term), std::signal(SIGUSR1, old_usr1);
        throw;
    }
    std::signal(SIGTERM, old_term), std::signal(SIGUSR1, old_usr1);
    if (options.profile && r.root()) r.log(prof.finish(r.out + "/profile.txt"));
    res.interrupted = !finished;
    res.iterations = r.pos.iteration;
    if (finished && r.root()) models::save_backbone(r.out + "/backbone.safetensors", r.method->student_backbone());
    if (finished && r.pos.iteration == r.total_iters && r.cfg.knn_at_end) {
        if (r.data)
            final_knn(r, res);
        else
            r.log("kNN: skipped (no labelled train/val split for an ImageFolder run; use sslight knn)");
    }
    if (finished && r.pos.iteration == r.total_iters && r.data && r.method->online_probe) final_probe(r, res);
    if (finished && r.root()) r.log(plot_after_run(r.out));
    res.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return res;
}

}  // namespace sslight::apps
