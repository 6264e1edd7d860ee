// `sslight bench` (apps/bench_cmd.h). Phases are timed with the wall clock and a device synchronisation at every
// phase boundary (bench mode only): pretrain's own step already synchronises after the forward (it reads the loss)
// and after backward (the gradient check reads every gradient's sum), so the extra waits cost little and each phase
// gets the GPU time it really takes. The steps run at epoch 20 of the config's schedule (past DINO's and SwAV's
// epoch-0 gradient dropping and SwAV's queue start), 1000 iterations per epoch.
#include "apps/bench_cmd.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "apps/config.h"
#include "apps/pretrain.h"
#include "data/augment_params.h"
#include "data/loader.h"
#include "engine/check.h"
#include "engine/device.h"
#include "engine/dist/communicator.h"
#include "engine/io/json.h"
#include "engine/optim/clip.h"
#include "models/backbone.h"
#include "ssl/distributed.h"

namespace sslight::apps {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kItersPerEpoch = 1000;
constexpr int kBenchEpoch = 20;
constexpr uint64_t kPixelSeed = 0x5eed'b0b0'0009ull;

enum Phase { kData, kForward, kComm, kBackward, kGradCheck, kOptimizer, kMethod, kNumPhases };
constexpr const char* kPhaseNames[kNumPhases] = {"data",       "forward",   "communication", "backward",
                                                 "grad_check", "optimizer", "method_update"};

constexpr const char* kUsage =
    "usage: sslight bench --method dino|swav|moco --model NAME [--batch N] [--dtype f32|bf16] [--steps K]\n"
    "                     [--warmup W] [--recipe sslight|baseline] [--device cpu|cuda|cuda:N] [--global-size S]\n"
    "                     [--local-size s] [--n-local N] [--json FILE] [--configs DIR]\n"
    "  Times the pre-training step of configs/<method>_<model>_<recipe>.toml (the SPEC rows: dino with resnet18,\n"
    "  resnet34, mobilenet_v2, vit_tiny; swav and moco with mobilenet_v2; also resnet50 / vit_small for dino),\n"
    "  built as sslight pretrain builds it, on synthetic views: random u8 crops at the recipe's sizes, per-step\n"
    "  photometric augmentation and normalisation on the device (the loader's path). Prints samples/s, ms per step\n"
    "  and per phase (data, forward, communication, backward, grad_check, optimizer, method_update; wall clock with\n"
    "  a device synchronisation at each phase boundary) and peak memory (device allocator, host tensors, peak RSS).\n"
    "  Defaults: batch 128 per GPU / 16 on the CPU, 20 steps after 3 warm-up, SSLight recipe at the config's crop\n"
    "  sizes, device cuda:0 when a GPU is usable. --global-size / --local-size / --n-local change the crops;\n"
    "  --json writes the numbers as one JSON object; --configs DIR: where the configs are (default ./configs).\n"
    "  Under mpirun / srun every rank runs --batch images (data parallel); rank 0 prints its own timings.\n"
    "  --dtype bf16 (mixed precision) is not implemented yet: it is refused with exit code 2.\n"
    "  Exit codes: 0 done, 1 runtime error, 2 bad command line or config.\n";

long parse_int(const std::string& flag, const std::string& v, long lo, long hi) {
    char* end = nullptr;
    const long x = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end || x < lo || x > hi)
        throw ConfigError(str("bench: ", flag, " expects an integer in [", lo, ", ", hi, "], got '", v, "'"));
    return x;
}

Device resolve_device(const std::string& d) { return d == "auto" ? runtime::default_device() : Device::parse(d); }

void check_choices(const BenchOptions& o) {
    if (o.method.empty() || o.model.empty())
        throw ConfigError("bench: --method and --model are required (e.g. --method dino --model resnet18)");
    if (o.method != "dino" && o.method != "swav" && o.method != "moco")
        throw ConfigError(str("bench: unknown method '", o.method, "': expected dino, swav or moco"));
    const std::vector<std::string> names = models::backbone_names();
    if (std::find(names.begin(), names.end(), o.model) == names.end()) {
        std::string known;
        for (const std::string& n : names) known += (known.empty() ? "" : ", ") + n;
        throw ConfigError(str("bench: unknown model '", o.model, "': expected one of ", known));
    }
    if (o.recipe != "sslight" && o.recipe != "baseline")
        throw ConfigError(str("bench: --recipe expects sslight or baseline, got '", o.recipe, "'"));
    if (o.dtype == "bf16")
        throw ConfigError("bench: --dtype bf16: mixed-precision training is not implemented yet (the engine has bf16 "
                          "kernels but no autocast path: f32 master weights cast to bf16 per op, bf16 activations, "
                          "losses in f32); use --dtype f32");
    if (o.dtype != "f32") throw ConfigError(str("bench: --dtype expects f32 or bf16, got '", o.dtype, "'"));
}

std::string config_path(const BenchOptions& o) {
    namespace fs = std::filesystem;
    const std::string path = o.configs_dir + "/" + o.method + "_" + o.model + "_" + o.recipe + ".toml";
    if (fs::is_regular_file(path)) return path;
    std::string rows;
    std::error_code ec;
    std::vector<std::string> found;
    for (const auto& e : fs::directory_iterator(o.configs_dir, ec))
        if (e.path().extension() == ".toml" && e.path().stem() != "demo") found.push_back(e.path().stem().string());
    std::sort(found.begin(), found.end());
    for (const std::string& f : found) rows += (rows.empty() ? "" : ", ") + f;
    throw ConfigError(str("bench: no config ", path, " for ", o.method, " on ", o.model, " (", o.recipe,
                          " recipe); ", found.empty() ? "no configs found there: run from the repository root or "
                                                        "pass --configs DIR"
                                                      : "the configs there: " + rows));
}

// The row's config with the bench's batch (per rank × world), device and crop overrides applied through the same
// --set path as sslight pretrain, so every value is validated by the config table.
PretrainConfig bench_config(const BenchOptions& o, const std::string& path, int world, Device dev) {
    std::vector<std::string> sets = {str("run.batch_size=", o.batch * world), "run.device=" + dev.str()};
    if (o.global_size > 0) sets.push_back(str("data.global_size=", o.global_size));
    if (o.local_size > 0) sets.push_back(str("data.local_size=", o.local_size));
    if (o.n_local >= 0) sets.push_back(str("data.n_local=", o.n_local));
    return load_config(path, sets);
}

// Random u8 crops at the recipe's sizes, one tensor per resolution group (view-major rows, as the loader delivers
// them), made once; each step draws fresh photometric parameters per (step, sample, view) and runs augment_group
// on the device, which is what a step of pretrain does with a batch from the threaded loader.
class SyntheticViews {
public:
    SyntheticViews(const data::ViewRecipe& r, int64_t batch) : recipe_(r), groups_(data::view_groups(r)), B_(batch) {
        uint64_t state = kPixelSeed;
        for (const data::ViewGroup& g : groups_) {
            Tensor t = empty({B_ * int64_t(g.views.size()), g.size, g.size, 3}, DType::u8);
            uint8_t* p = t.data<uint8_t>();
            for (int64_t i = 0; i < t.numel(); i += 8) {  // splitmix64, 8 pixels per draw
                uint64_t z = (state += 0x9e3779b97f4a7c15ull);
                z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
                z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
                z ^= z >> 31;
                for (int64_t k = 0; k < 8 && i + k < t.numel(); ++k) p[i + k] = uint8_t(z >> (8 * k));
            }
            u8_.push_back(t);
        }
    }
    ssl::Views make(int64_t step, Device dev) const {
        ssl::Views v;
        v.batch = B_;
        v.n_global = static_cast<int>(recipe_.globals.size());
        v.n_local = static_cast<int>(recipe_.locals.size());
        for (size_t gi = 0; gi < groups_.size(); ++gi) {
            const data::ViewGroup& g = groups_[gi];
            std::vector<data::AugmentParams> params(g.views.size() * size_t(B_));
            for (size_t vi = 0; vi < g.views.size(); ++vi)
                for (int64_t b = 0; b < B_; ++b)
                    params[vi * size_t(B_) + size_t(b)] =
                        data::draw_augment(recipe_.view(g.views[vi]), kPixelSeed, step, b, g.views[vi]);
            v.groups.push_back(data::augment_group(u8_[gi], params, dev));
        }
        return v;
    }
    std::string describe() const {
        std::string s;
        for (const data::ViewGroup& g : groups_) s += str(s.empty() ? "" : " + ", g.views.size(), "x", g.size);
        return s;
    }

private:
    data::ViewRecipe recipe_;
    std::vector<data::ViewGroup> groups_;
    int64_t B_;
    std::vector<Tensor> u8_;
};

// Wall-clock laps with a device synchronisation before each reading; lap(p) charges the time since the last
// reading to phase p (a phase may be charged several times per step).
class PhaseClock {
public:
    explicit PhaseClock(Device d) : dev_(d) {
        runtime::synchronize(dev_);
        start_ = last_ = Clock::now();
    }
    void lap(Phase p) {
        runtime::synchronize(dev_);
        const auto now = Clock::now();
        ms_[p] += std::chrono::duration<double, std::milli>(now - last_).count();
        last_ = now;
    }
    double total_ms() const { return std::chrono::duration<double, std::milli>(last_ - start_).count(); }
    double ms(int p) const { return ms_[p]; }

private:
    Device dev_;
    Clock::time_point start_, last_;
    double ms_[kNumPhases] = {};
};

struct Bench {
    PretrainConfig cfg;
    Device dev;
    TrainingSetup ts;
    std::unique_ptr<ssl::DataParallelTrainer> dp;
};

// One training step as pretrain's train_step runs it, timed per phase. Returns the loss.
double timed_step(Bench& b, const SyntheticViews& sv, int64_t step, PhaseClock& clock) {
    const int64_t iteration = kBenchEpoch * kItersPerEpoch + step;
    SSL_CHECK(iteration < int64_t(b.ts.lr.size()), "bench: step ", step, " is past the config's schedule");
    ssl::StepContext ctx;
    ctx.iteration = iteration, ctx.epoch = iteration / kItersPerEpoch, ctx.iters_per_epoch = kItersPerEpoch;
    ctx.total_epochs = b.cfg.epochs;
    const ssl::Views views = sv.make(step, b.dev);
    clock.lap(kData);
    Tensor loss = b.ts.method->forward_loss(views, ctx);
    clock.lap(kForward);
    const double lv = b.dp->step_consensus(loss.item(), false).first;
    clock.lap(kComm);
    SSL_CHECK(std::isfinite(lv), "bench: the loss is ", lv, " at step ", step);
    loss.backward();
    clock.lap(kBackward);
    b.dp->synchronize_gradients();
    clock.lap(kComm);
    const auto params = b.ts.method->named_parameters(true);
    std::vector<Tensor> grads;
    for (const auto& p : params) grads.push_back(p.second->grad());
    const std::vector<size_t> bad = nonfinite_gradients(grads);
    SSL_CHECK(bad.empty(), "bench: the gradient of ", bad.empty() ? "" : params[bad[0]].first,
              " is not finite at step ", step);
    clock.lap(kGradCheck);
    apply_schedule(*b.ts.opt, b.ts.decays, b.ts.lr[size_t(iteration)], b.ts.wd[size_t(iteration)]);
    if (b.cfg.clip_grad > 0) {
        std::vector<Tensor*> ps;
        for (const auto& g : b.ts.opt->groups()) ps.insert(ps.end(), g.params.begin(), g.params.end());
        optim::clip_grad_per_param(ps, b.cfg.clip_grad);
    }
    clock.lap(kOptimizer);
    b.ts.method->before_optimizer_step(ctx);
    clock.lap(kMethod);
    b.ts.opt->step();
    b.ts.opt->zero_grad();
    clock.lap(kOptimizer);
    b.ts.method->after_optimizer_step(ctx);
    clock.lap(kMethod);
    return lv;
}

double mib(size_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

void summarise(BenchResult& r, const double phase_sum[kNumPhases]) {
    const double n = static_cast<double>(r.step_ms.size());
    for (int p = 0; p < kNumPhases; ++p) r.phases.push_back({kPhaseNames[p], phase_sum[p] / n});
    std::vector<double> s = r.step_ms;
    std::sort(s.begin(), s.end());
    for (double x : s) r.mean_step_ms += x / n;
    r.median_step_ms = s.size() % 2 ? s[s.size() / 2] : 0.5 * (s[s.size() / 2 - 1] + s[s.size() / 2]);
    r.min_step_ms = s.front();
    r.samples_per_s = r.mean_step_ms > 0 ? 1e3 * static_cast<double>(r.batch) / r.mean_step_ms : 0;
}

}  // namespace

const char* bench_usage() { return kUsage; }

BenchOptions parse_bench_args(int argc, char** argv) {
    BenchOptions o;
    for (int i = 0; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            o.help = true;
            return o;
        }
        if (i + 1 >= argc) throw ConfigError(str("bench: option ", a, " needs a value (see sslight bench --help)"));
        const std::string v = argv[++i];
        if (a == "--method") o.method = v;
        else if (a == "--model") o.model = v;
        else if (a == "--recipe") o.recipe = v;
        else if (a == "--dtype") o.dtype = v;
        else if (a == "--device") o.device = v;
        else if (a == "--json") o.json_path = v;
        else if (a == "--configs") o.configs_dir = v;
        else if (a == "--batch") o.batch = parse_int(a, v, 2, 1 << 20);
        else if (a == "--steps") o.steps = static_cast<int>(parse_int(a, v, 1, 10000));
        else if (a == "--warmup") o.warmup = static_cast<int>(parse_int(a, v, 0, 1000));
        else if (a == "--global-size") o.global_size = static_cast<int>(parse_int(a, v, 16, 4096));
        else if (a == "--local-size") o.local_size = static_cast<int>(parse_int(a, v, 16, 4096));
        else if (a == "--n-local") o.n_local = static_cast<int>(parse_int(a, v, 0, 64));
        else throw ConfigError(str("bench: unknown option '", a, "' (see sslight bench --help)"));
    }
    check_choices(o);
    if (o.batch == 0) o.batch = resolve_device(o.device).is_cuda() ? 128 : 16;
    return o;
}

BenchResult run_bench(const BenchOptions& options, std::ostream* progress) {
    const auto t0 = Clock::now();
    check_choices(options);
    BenchResult r;
    const std::shared_ptr<dist::Communicator> comm = dist::make_communicator();
    Bench b;
    b.dev = dist::rank_device(*comm, resolve_device(options.device));
    if (b.dev.is_cuda() && runtime::cuda_device_count() == 0)
        throw Error(str("bench: --device ", options.device, " but no GPU is usable: ",
                        runtime::cuda_unavailable_reason()));
    BenchOptions o = options;
    if (o.batch == 0) o.batch = b.dev.is_cuda() ? 128 : 16;
    r.config_path = config_path(o);
    b.cfg = bench_config(o, r.config_path, comm->world(), b.dev);
    const SyntheticViews sv(recipe_of(b.cfg), o.batch);
    b.ts = make_training_setup(b.cfg, b.dev, kItersPerEpoch);
    b.dp = std::make_unique<ssl::DataParallelTrainer>(*b.ts.method, comm, b.cfg.batch_size);
    b.dp->broadcast_state();
    r.device = b.dev.str(), r.optimizer = b.ts.opt->type_name(), r.views = sv.describe();
    r.world = comm->world(), r.root = b.dp->is_root(), r.batch = o.batch, r.global_batch = b.cfg.batch_size;
    r.parameters = b.ts.method->num_parameters(true), r.epoch = kBenchEpoch;
    r.lr = b.ts.lr[size_t(kBenchEpoch * kItersPerEpoch)];
    r.setup_s = std::chrono::duration<double>(Clock::now() - t0).count();
    double phase_sum[kNumPhases] = {};
    for (int step = 0; step < o.warmup + o.steps; ++step) {
        const bool timed = step >= o.warmup;
        if (step == o.warmup) runtime::reset_peak(b.dev), runtime::reset_peak(Device::cpu());
        PhaseClock clock(b.dev);
        const double loss = timed_step(b, sv, step, clock);
        if (step == 0) r.first_loss = loss;
        r.last_loss = loss;
        if (timed) {
            r.step_ms.push_back(clock.total_ms());
            for (int p = 0; p < kNumPhases; ++p) phase_sum[p] += clock.ms(p);
        }
        if (progress && r.root)
            *progress << str("bench: step ", step + 1, "/", o.warmup + o.steps, timed ? "" : " (warm-up)", " ",
                             clock.total_ms(), " ms, loss ", loss)
                      << std::endl;
    }
    summarise(r, phase_sum);
    r.device_peak_mib = mib(runtime::mem_stats(b.dev).peak);
    r.host_tensor_peak_mib = mib(runtime::mem_stats(Device::cpu()).peak);
    struct rusage ru {};
    getrusage(RUSAGE_SELF, &ru);
    r.peak_rss_mib = static_cast<double>(ru.ru_maxrss) / 1024.0;  // KiB on Linux
    return r;
}

std::string format_bench(const BenchOptions& o, const BenchResult& r) {
    std::ostringstream os;
    char line[160];
    os << "sslight bench: " << o.method << " on " << o.model << ", " << o.recipe << " recipe (" << r.config_path
       << "), " << r.device << ", " << o.dtype << "\n"
       << "  views: batch " << r.batch << " x (" << r.views << "), synthetic: random u8 crops, per-step photometric\n"
       << "         augmentation and normalisation on the device (the loader's path)\n"
       << "  " << r.optimizer << " at epoch " << r.epoch << " of the schedule (lr " << r.lr << "), "
       << r.parameters << " trainable parameters, " << r.world << (r.world == 1 ? " rank" : " ranks")
       << " (global batch " << r.global_batch << ")\n"
       << "  " << r.step_ms.size() << " steps after " << o.warmup
       << " warm-up; wall clock, device synchronised at each phase boundary\n";
    std::snprintf(line, sizeof(line), "  samples/s %.2f   step ms %.1f mean, %.1f median, %.1f min\n", r.samples_per_s,
                  r.mean_step_ms, r.median_step_ms, r.min_step_ms);
    os << line << "  phase            ms/step   % of step\n";
    for (const BenchPhase& p : r.phases) {
        std::snprintf(line, sizeof(line), "  %-14s %9.2f %10.1f\n", p.name.c_str(), p.ms,
                      r.mean_step_ms > 0 ? 100 * p.ms / r.mean_step_ms : 0.0);
        os << line;
    }
    std::snprintf(line, sizeof(line),
                  "  peak memory: %s allocator %.1f MiB, host tensors %.1f MiB, host peak RSS %.1f MiB\n",
                  r.device.c_str(), r.device_peak_mib, r.host_tensor_peak_mib, r.peak_rss_mib);
    os << line << "  loss " << r.first_loss << " (first step) -> " << r.last_loss << " (last); setup " << r.setup_s
       << " s\n";
    return os.str();
}

std::string bench_json(const BenchOptions& o, const BenchResult& r) {
    using json::Value;
    auto num = [](double x) {
        if (!std::isfinite(x)) return Value();
        char b[32];
        std::snprintf(b, sizeof(b), "%.6g", x);
        return Value::make_number(b);
    };
    auto text = [](const std::string& s) { return Value::make_string(s); };
    Value v = Value::make_object();
    for (const auto& [k, s] : std::vector<std::pair<const char*, std::string>>{
             {"method", o.method}, {"model", o.model}, {"recipe", o.recipe}, {"config", r.config_path},
             {"device", r.device}, {"dtype", o.dtype}, {"views", r.views}, {"optimizer", r.optimizer}})
        v.set(k, text(s));
    v.set("views_source", text("synthetic: random u8 crops, per-step photometric augmentation (augment_group)"));
    v.set("timing", text("wall clock, device synchronised at each phase boundary"));
    for (const auto& [k, n] : std::vector<std::pair<const char*, int64_t>>{
             {"batch", r.batch}, {"world", r.world}, {"global_batch", r.global_batch}, {"parameters", r.parameters},
             {"steps", int64_t(r.step_ms.size())}, {"warmup", o.warmup}, {"epoch", r.epoch}})
        v.set(k, Value::make_number(std::to_string(n)));
    for (const auto& [k, x] : std::vector<std::pair<const char*, double>>{
             {"lr", r.lr}, {"samples_per_s", r.samples_per_s}, {"step_ms", r.mean_step_ms},
             {"step_ms_median", r.median_step_ms}, {"step_ms_min", r.min_step_ms}, {"loss_first", r.first_loss},
             {"loss_last", r.last_loss}, {"setup_s", r.setup_s}})
        v.set(k, num(x));
    Value phases = Value::make_object(), steps = Value::make_array(), mem = Value::make_object();
    for (const BenchPhase& p : r.phases) phases.set(p.name, num(p.ms));
    for (double s : r.step_ms) steps.push(num(s));
    mem.set("device_peak", num(r.device_peak_mib));
    mem.set("host_tensors_peak", num(r.host_tensor_peak_mib));
    mem.set("host_peak_rss", num(r.peak_rss_mib));
    v.set("phases_ms", phases);
    v.set("step_ms_each", steps);
    v.set("memory_mib", mem);
    return v.dump();
}

int bench_command(int argc, char** argv) {
    BenchOptions o;
    BenchResult r;
    try {
        o = parse_bench_args(argc, argv);
        if (o.help) return std::cout << kUsage, 0;
        r = run_bench(o, &std::cerr);
    } catch (const ConfigError& e) {
        std::cerr << "sslight: " << e.what() << "\n";
        return 2;
    }
    if (!r.root) return 0;
    std::cout << format_bench(o, r) << std::flush;
    if (!o.json_path.empty()) {
        std::ofstream f(o.json_path, std::ios::trunc);
        f << bench_json(o, r) << "\n";
        if (!f) throw IoError(str("bench: cannot write ", o.json_path));
    }
    return 0;
}

}  // namespace sslight::apps
