// The full self-supervised training step (SPEC.md §4-5) on synthetic views, timed per phase: forward of all
// views (the backbone once per resolution group) and the method's loss, backward, the SPEC optimizer step (LARS
// for CNNs, AdamW for the DINO ViT), and the method's own updates (gradient dropping, EMA teacher / key encoder,
// centre, queues); communication is 0 in one process. Prints samples/s, the median ms of each phase and the
// peak device memory. No gradient contract of its own: it drives Method::forward_loss and Tensor::backward.
// bench/train_step_torch.py runs the same step in PyTorch and prints the ratio against this program's --csv.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "data/recipe.h"
#include "engine/device.h"
#include "engine/nn/layers.h"
#include "engine/optim/optimizer.h"
#include "engine/optim/schedule.h"
#include "engine/random.h"
#include "ssl/method.h"

using namespace sslight;

namespace {

struct Options {
    std::string method, model, dtype = "f32", device = "cpu";
    int64_t batch = 0;  // 0: 4 on the CPU, 128 on the GPU
    int steps = 0, warmup = -1;
    bool sslight = true, csv = false;
};

struct Result {
    double step = 0, forward = 0, backward = 0, optimizer = 0, method_update = 0;  // median seconds
    double peak_mib = 0, loss = 0;
    std::string views, optimizer_name, error;
};

double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

data::Method data_method(const std::string& m) {
    return m == "dino" ? data::Method::dino : m == "swav" ? data::Method::swav : data::Method::moco;
}

// Random normalised NHWC views of the recipe's crop sizes, one tensor per resolution group.
ssl::Views synthetic_views(const data::ViewRecipe& r, int64_t batch, DType dt, Device dev, std::string& desc) {
    ssl::Views v;
    v.batch = batch;
    v.n_global = static_cast<int>(r.globals.size());
    v.n_local = static_cast<int>(r.locals.size());
    const int64_t gs = r.globals[0].size, ls = r.locals.empty() ? 0 : r.locals[0].size;
    v.groups.push_back(randn({v.n_global * batch, gs, gs, 3}, RngKey{11, 0}, DType::f32, dev).to(dt));
    desc = std::to_string(v.n_global) + "x" + std::to_string(gs);
    if (v.n_local > 0) {
        v.groups.push_back(randn({v.n_local * batch, ls, ls, 3}, RngKey{12, 0}, DType::f32, dev).to(dt));
        desc += " + " + std::to_string(v.n_local) + "x" + std::to_string(ls);
    }
    return v;
}

// SPEC.md §5: LARS (base lr 0.48 / 0.3 for SwAV per 256, wd 1e-6) for CNNs, AdamW (5e-4, wd 0.04) for DINO ViT.
std::unique_ptr<optim::Optimizer> spec_optimizer(ssl::Method& m, const Options& o, bool vit) {
    if (vit) return std::make_unique<optim::AdamW>(m.param_groups(optim::linear_scaled_lr(5e-4, o.batch), 0.04));
    const double base = o.method == "swav" ? 0.3 : 0.48;
    return std::make_unique<optim::LARS>(m.param_groups(optim::linear_scaled_lr(base, o.batch), 1e-6), 0.9, 0.001);
}

double seconds_since(std::chrono::steady_clock::time_point& t0, Device dev) {
    runtime::synchronize(dev);
    const auto t1 = std::chrono::steady_clock::now();
    const double s = std::chrono::duration<double>(t1 - t0).count();
    t0 = t1;
    return s;
}

Result run_row(const Options& o) {
    Result res;
    const Device dev = Device::parse(o.device);
    const DType dt = o.dtype == "bf16" ? DType::bf16 : DType::f32;
    const bool vit = ssl::is_vit(o.model);
    nn::manual_seed(0);
    ssl::MethodConfig mc;
    mc.method = o.method;
    mc.backbone = o.model;
    mc.sslight = o.sslight;
    auto method = ssl::make_method(mc);
    method->to(dev);
    method->train();
    auto opt = spec_optimizer(*method, o, vit);
    res.optimizer_name = opt->type_name();
    const data::ViewRecipe recipe = data::make_recipe(data_method(o.method), vit ? data::Arch::vit : data::Arch::cnn,
                                                      o.sslight);
    const ssl::Views views = synthetic_views(recipe, o.batch, dt, dev, res.views);
    std::vector<double> t_step, t_fwd, t_bwd, t_opt, t_upd;
    for (int it = 0; it < o.warmup + o.steps; ++it) {
        if (it == o.warmup) runtime::reset_peak(dev);
        // Epoch 20 of 200: past the epoch-0 gradient dropping and SwAV's queue start (epoch 15).
        ssl::StepContext ctx{20 * 1000 + it, 20, 1000, 200};
        runtime::synchronize(dev);
        auto t0 = std::chrono::steady_clock::now();
        const auto start = t0;
        Tensor loss = method->forward_loss(views, ctx);
        const double f = seconds_since(t0, dev);
        loss.backward();
        const double b = seconds_since(t0, dev);
        method->before_optimizer_step(ctx);
        double u = seconds_since(t0, dev);
        opt->step();
        opt->zero_grad();
        const double s = seconds_since(t0, dev);
        method->after_optimizer_step(ctx);
        u += seconds_since(t0, dev);
        const double total = std::chrono::duration<double>(t0 - start).count();
        res.loss = loss.item();
        if (it < o.warmup) continue;
        t_fwd.push_back(f), t_bwd.push_back(b), t_opt.push_back(s), t_upd.push_back(u), t_step.push_back(total);
    }
    res.step = median(t_step), res.forward = median(t_fwd), res.backward = median(t_bwd);
    res.optimizer = median(t_opt), res.method_update = median(t_upd);
    res.peak_mib = static_cast<double>(runtime::mem_stats(dev).peak) / (1024.0 * 1024.0);
    return res;
}

void print_header(bool csv) {
    if (csv) {
        std::printf("impl,method,model,recipe,device,dtype,batch,views,samples_s,step_ms,forward_ms,backward_ms,"
                    "optimizer_ms,method_ms,comm_ms,peak_mib,loss,note\n");
        return;
    }
    std::printf("%-8s %-6s %-13s %-8s %-5s %-5s %5s %-12s %10s %9s %9s %9s %9s %9s %7s %9s  %s\n", "impl", "method",
                "model", "recipe", "dev", "dtype", "batch", "views", "samples/s", "step ms", "fwd ms", "bwd ms",
                "optim ms", "method ms", "comm ms", "peak MiB", "note");
}

void print_row(const Options& o, const Result& r) {
    const char* recipe = o.sslight ? "sslight" : "baseline";
    const double sps = r.step > 0 ? static_cast<double>(o.batch) / r.step : 0;
    const std::string note = r.error.empty() ? r.optimizer_name : "error: " + r.error;
    if (o.csv) {
        std::string n = note;
        std::replace(n.begin(), n.end(), ',', ';');
        std::replace(n.begin(), n.end(), '\n', ' ');
        std::printf("sslight,%s,%s,%s,%s,%s,%lld,%s,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,0,%.1f,%.6g,%s\n", o.method.c_str(),
                    o.model.c_str(), recipe, o.device.c_str(), o.dtype.c_str(), static_cast<long long>(o.batch),
                    r.views.c_str(), sps, r.step * 1e3, r.forward * 1e3, r.backward * 1e3, r.optimizer * 1e3,
                    r.method_update * 1e3, r.peak_mib, r.loss, n.c_str());
    } else {
        std::printf("%-8s %-6s %-13s %-8s %-5s %-5s %5lld %-12s %10.2f %9.1f %9.1f %9.1f %9.1f %9.1f %7.1f %9.1f  %s\n",
                    "sslight", o.method.c_str(), o.model.c_str(), recipe, o.device.c_str(), o.dtype.c_str(),
                    static_cast<long long>(o.batch), r.views.c_str(), sps, r.step * 1e3, r.forward * 1e3,
                    r.backward * 1e3, r.optimizer * 1e3, r.method_update * 1e3, 0.0, r.peak_mib, note.c_str());
    }
    std::fflush(stdout);
}

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "%s\nusage: bench_train_step [--method dino|swav|moco --model resnet18|resnet34|mobilenet_v2|"
                 "vit_tiny] [--batch N] [--dtype f32|bf16] [--steps K] [--warmup W] [--sslight|--baseline] "
                 "[--device cpu|cuda] [--csv]\n(no --method/--model: the six SPEC §7 rows)\n",
                 why);
    std::exit(2);
}

Options parse(int argc, char** argv) {
    Options o;
    auto value = [&](int& i) -> std::string {
        if (i + 1 >= argc) usage((std::string(argv[i]) + " needs a value").c_str());
        return argv[++i];
    };
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--method") o.method = value(i);
        else if (a == "--model") o.model = value(i);
        else if (a == "--batch") o.batch = std::atoll(value(i).c_str());
        else if (a == "--dtype") o.dtype = value(i);
        else if (a == "--steps") o.steps = std::atoi(value(i).c_str());
        else if (a == "--warmup") o.warmup = std::atoi(value(i).c_str());
        else if (a == "--device") o.device = value(i);
        else if (a == "--sslight") o.sslight = true;
        else if (a == "--baseline") o.sslight = false;
        else if (a == "--csv") o.csv = true;
        else usage(("unknown argument " + a).c_str());
    }
    if (o.method.empty() != o.model.empty()) usage("--method and --model go together");
    if (!o.method.empty() && o.method != "dino" && o.method != "swav" && o.method != "moco") usage("bad --method");
    if (o.dtype != "f32" && o.dtype != "bf16") usage("bad --dtype");
    const bool gpu = o.device != "cpu";
    if (o.batch <= 0) o.batch = gpu ? 128 : 4;
    if (o.steps <= 0) o.steps = gpu ? 10 : 3;
    if (o.warmup < 0) o.warmup = gpu ? 3 : 1;
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    const Options base = parse(argc, argv);
    if (base.device != "cpu" && runtime::cuda_device_count() == 0) {
        std::printf("no GPU: %s\n", runtime::cuda_unavailable_reason().c_str());
        return 1;
    }
    std::vector<std::pair<std::string, std::string>> rows = {{"dino", "vit_tiny"},     {"dino", "resnet18"},
                                                             {"dino", "resnet34"},     {"dino", "mobilenet_v2"},
                                                             {"swav", "mobilenet_v2"}, {"moco", "mobilenet_v2"}};
    if (!base.method.empty()) rows = {{base.method, base.model}};
    if (!base.csv)
        std::printf("training step, synthetic views, %d steps after %d warm-up (median ms per phase)\n", base.steps,
                    base.warmup);
    print_header(base.csv);
    int failures = 0;
    for (const auto& [method, model] : rows) {
        Options o = base;
        o.method = method, o.model = model;
        Result r;
        try {
            r = run_row(o);
        } catch (const std::exception& e) {
            r = Result{};
            r.error = e.what();
            ++failures;
        }
        print_row(o, r);
    }
    return failures == static_cast<int>(rows.size()) ? 1 : 0;
}
