// The sslight command: `pretrain` (self-supervised pre-training from a TOML config, apps/pretrain.h), `export`
// (backbone weights from a checkpoint in torchvision/timm names), `info` (build options, devices, models with
// parameters and FLOPs), `linear` / `finetune` (the linear probe and semi-supervised fine-tuning, apps/linear.h and
// apps/finetune.h), `bench` (the training step's throughput, apps/bench_cmd.h) and `demo` (the engine's MLP training
// demo). Exit codes: 0 success, 1 runtime error, 2 bad command line or config, 3 no plotter installed (`plot`).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <vector>
#include <iostream>
#include <string>

#include "apps/bench_cmd.h"
#include "apps/config.h"
#include "apps/checkpoint.h"
#include "apps/demo.h"
#include "apps/finetune.h"
#include "apps/linear.h"
#include "apps/plot.h"
#include "apps/pretrain.h"
#include "models/backbone.h"
#include "models/flops.h"
#include "models/weights.h"
#include "engine/io/safetensors.h"
#include "engine/nn/layers.h"
#include "engine/check.h"
#include "engine/device.h"

namespace {

constexpr const char* kUsage =
    "usage: sslight <command> [options]\n"
    "\n"
    "commands:\n"
    "  pretrain self-supervised pre-training (DINO / SwAV / MoCo-v2, baseline or SSLight) from a TOML config;\n"
    "           with no data set, the embedded handwritten digits, then a kNN report\n"
    "  knn      weighted kNN (k 20, T 0.07) of a checkpoint's or an exported backbone on the embedded digits\n"
    "  linear   linear probe of a frozen backbone (top-1 / top-5 per epoch) on the digits or an ImageFolder\n"
    "  finetune semi-supervised fine-tuning (1% / 10% labels) with a 3-layer head, the DINO head's when present\n"
    "  bench    samples/s, ms per phase and peak memory of one SPEC row's training step on synthetic views\n"
    "  plot     the loss, lr and kNN curves of a pre-training run (its metrics.jsonl) as a PNG\n"
    "  export   the backbone of a checkpoint as safetensors with torchvision/timm names\n"
    "  info     build options, the devices found, the models with parameters and FLOPs\n"
    "  demo     train a small MLP on a built-in 3-class spiral (the engine's end-to-end demo)\n"
    "\n"
    "Run `sslight <command> --help` for the options of a command.\n"
    "exit codes: 0 success (also after a SIGTERM/SIGUSR1 checkpoint), 1 runtime error (including a non-finite\n"
    "loss or gradient), 2 bad command line or config, 3 no plotter installed (sslight plot)\n";

constexpr const char* kPretrainUsage =
    "usage: sslight pretrain [--config FILE] [--set key=value ...] [--data DIR] [--out DIR] [--resume]\n"
    "                        [--progress auto|live|plain] [--profile]\n"
    "  --config FILE   TOML config (configs/*.toml); default configs/demo.toml when it exists, else built-in\n"
    "                  defaults sized like it\n"
    "  --set k=v       override one key with the TOML rules (strings may be bare words); repeatable\n"
    "  --data DIR      an ImageFolder (root/<class>/*.jpg|png) instead of the config's data.dataset; no kNN\n"
    "                  report at the end then (use sslight knn)\n"
    "  --out DIR       output folder (metrics.jsonl, checkpoints, backbone.safetensors); default runs/<name>\n"
    "  --resume        continue from the newest checkpoint in the output folder\n"
    "  --profile       per-op time table (wall clock on the CPU, CUDA events on the GPU) printed at the end and\n"
    "                  written to profile.txt, a Chrome trace of the first 10 steps (profile_trace.json) and NVTX\n"
    "                  ranges for Nsight\n"
    "  SIGTERM / SIGUSR1 write a checkpoint and exit 0; a non-finite loss, or a non-finite gradient while the loss\n"
    "  is finite, stops with exit code 1 naming the step (and the parameter), without a checkpoint of that step.\n"
    "  At the end the curves are drawn to metrics.png when gnuplot or python3-matplotlib is installed.\n"
    "  Under mpirun -np N or srun, N ranks train data parallel, each on batch_size / N images of the global batch;\n"
    "  rank 0 alone logs and writes (engine/dist/README.md).\n";

constexpr const char* kKnnUsage =
    "usage: sslight knn [--config FILE] [--set key=value ...] (--checkpoint FILE | --weights FILE | --random-init)\n"
    "                   [--k N] [--temperature T]\n"
    "  Weighted kNN (SPEC.md §6: L2-normalised pooled features, weights exp(sim / T)) of the backbone of a\n"
    "  pre-training checkpoint, of exported weights (sslight export / backbone.safetensors), or of the config's\n"
    "  backbone at random init, on the embedded digits: 4000 train / 1000 val. Prints top-1 and top-5.\n";

constexpr const char* kExportUsage =
    "usage: sslight export --checkpoint FILE --out FILE.safetensors [--config FILE] [--set key=value ...]\n"
    "  Writes the student backbone of a pre-training checkpoint with torchvision/timm parameter names.\n"
    "  The config (the run's own) defines the model; its keys must match the checkpoint's.\n";

constexpr const char* kDemoUsage =
    "usage: sslight demo [--steps N] [--batch N] [--hidden N] [--lr X] [--seed N] [--device cpu|cuda|cuda:N]\n"
    "  Trains an MLP (2 -> hidden -> hidden -> 3, ReLU) with SGD + momentum on a 3-class spiral and prints\n"
    "  progress, the final loss and the accuracy. Defaults: 600 steps, batch 256, hidden 64, lr 0.1, seed 0,\n"
    "  device = cuda:0 when a GPU is usable, else cpu.\n";

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

long parse_int(const std::string& flag, const char* v, long lo, long hi) {
    char* end = nullptr;
    long x = std::strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi)
        throw UsageError(sslight::str(flag, " expects an integer in [", lo, ", ", hi, "], got '", v, "'"));
    return x;
}

double parse_double(const std::string& flag, const char* v, double lo, double hi) {
    char* end = nullptr;
    double x = std::strtod(v, &end);
    if (!*v || *end || !(x > lo && x <= hi))
        throw UsageError(sslight::str(flag, " expects a number in (", lo, ", ", hi, "], got '", v, "'"));
    return x;
}

constexpr const char* kInfoUsage =
    "usage: sslight info [--model NAME]\n"
    "  Build options, the devices found, and every backbone with its parameters and forward FLOPs at the\n"
    "  global-crop size (224 px) and the local-crop sizes (128 and 96 px). --model NAME adds that backbone's\n"
    "  per-layer FLOP table at 224 and 96 px.\n";

int cmd_info(int argc, char** argv) {
    using namespace sslight;
    std::string only;
    for (int i = 0; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            std::cout << kInfoUsage;
            return 0;
        }
        if (a != "--model" || i + 1 >= argc)
            throw UsageError("info: unknown option '" + a + "' (see sslight info --help)");
        only = argv[++i];
    }
    const std::vector<std::string> names = models::backbone_names();
    if (!only.empty() && std::find(names.begin(), names.end(), only) == names.end())
        throw UsageError("info: unknown model '" + only +
                         "' (known: mobilenet_v2, resnet18, resnet34, resnet50, vit_tiny, vit_small)");
    std::cout << "sslight engine\n"
              << "  CUDA support: " << (runtime::cuda_built() ? "yes" : "no") << "\n"
              << "  CUDA devices: " << runtime::cuda_device_count();
    if (runtime::cuda_device_count() == 0) std::cout << " (" << runtime::cuda_unavailable_reason() << ")";
    std::cout << "\n  default device: " << runtime::default_device().str() << "\n\nmodels (FLOPs = 2 x MACs):\n";
    std::printf("  %-12s %11s %11s %11s %11s %8s\n", "name", "parameters", "FLOPs@224", "FLOPs@128", "FLOPs@96",
                "feature");
    for (const std::string& name : names) {
        if (!only.empty() && name != only) continue;
        std::shared_ptr<models::Backbone> b = models::make_backbone(name);
        auto flops = [&](int px) {
            return models::format_count(static_cast<double>(models::count_flops(*b, px, px).flops()));
        };
        std::printf("  %-12s %11s %11s %11s %11s %8lld\n", name.c_str(),
                    models::format_count(static_cast<double>(b->num_parameters())).c_str(), flops(224).c_str(),
                    flops(128).c_str(), flops(96).c_str(), static_cast<long long>(b->feature_dim()));
        if (!only.empty()) {
            for (int px : {224, 96})
                std::cout << "\nper layer at " << px << " px:\n" << models::flops_table(models::count_flops(*b, px, px));
        }
    }
    return 0;
}

// Options shared by pretrain and export: --config and --set.
struct ConfigArgs {
    std::string path;
    std::vector<std::string> sets;
    bool take(const std::string& a, int& i, int argc, char** argv) {
        if (a != "--config" && a != "--set") return false;
        if (i + 1 >= argc) throw UsageError(a + " needs a value");
        (a == "--config" ? path : (sets.emplace_back(), sets.back())) = argv[++i];
        return true;
    }
    sslight::apps::PretrainConfig load() const {
        using namespace sslight::apps;
        if (!path.empty()) return load_config(path, sets);
        std::ifstream probe("configs/demo.toml");
        if (probe) return load_config("configs/demo.toml", sets);
        return parse_config(builtin_demo_config(), "built-in demo config", sets);
    }
};

int cmd_pretrain(int argc, char** argv) {
    using namespace sslight;
    ConfigArgs ca;
    apps::PretrainOptions o;
    o.log = &std::cout;
    for (int i = 0; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") return std::cout << kPretrainUsage, 0;
        if (ca.take(a, i, argc, argv)) continue;
        if (a == "--resume") { o.resume = true; continue; }
        if (a == "--profile") { o.profile = true; continue; }
        if (i + 1 >= argc) throw UsageError("pretrain: option " + a + " needs a value (see sslight pretrain --help)");
        const std::string v = argv[++i];
        if (a == "--data") o.data_dir = v;
        else if (a == "--out") o.out_dir = v;
        else if (a == "--progress" && (v == "auto" || v == "live" || v == "plain"))
            o.progress = v == "auto" ? -1 : v == "live" ? 1 : 0;
        else throw UsageError("pretrain: unknown option '" + a + "' (see sslight pretrain --help)");
    }
    try {
        o.config = ca.load();
    } catch (const ConfigError& e) {
        std::cerr << "sslight: config error: " << e.what() << "\n";
        return 2;
    }
    apps::PretrainResult r = apps::run_pretrain(o);
    if (dist::launcher_rank() == 0)
        std::printf("%s after %lld steps in %.1f s; output in %s\n", r.interrupted ? "stopped" : "done",
                    static_cast<long long>(r.iterations), r.seconds, r.out_dir.c_str());
    return 0;
}

int cmd_knn(int argc, char** argv) {
    using namespace sslight;
    ConfigArgs ca;
    std::string ckpt, weights;
    bool random_init = false;
    int k = 0;
    double temp = 0;
    for (int i = 0; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") return std::cout << kKnnUsage, 0;
        if (ca.take(a, i, argc, argv)) continue;
        if (a == "--random-init") { random_init = true; continue; }
        if (i + 1 >= argc) throw UsageError("knn: option " + a + " needs a value (see sslight knn --help)");
        const char* v = argv[++i];
        if (a == "--checkpoint") ckpt = v;
        else if (a == "--weights") weights = v;
        else if (a == "--k") k = static_cast<int>(parse_int(a, v, 1, 100000));
        else if (a == "--temperature") temp = parse_double(a, v, 0.0, 100.0);
        else throw UsageError("knn: unknown option '" + a + "' (see sslight knn --help)");
    }
    if (static_cast<int>(!ckpt.empty()) + static_cast<int>(!weights.empty()) + static_cast<int>(random_init) != 1)
        throw UsageError("knn: give exactly one of --checkpoint, --weights, --random-init");
    apps::PretrainConfig cfg = ca.load();
    if (k) cfg.knn_k = k;
    if (temp > 0) cfg.knn_temperature = temp;
    nn::init_generator() = Generator(cfg.seed);
    std::shared_ptr<ssl::Method> method = ssl::make_method(apps::method_config_of(cfg));
    if (!ckpt.empty()) apps::load_checkpoint(ckpt, *method, nullptr, cfg);
    if (!weights.empty()) models::load_backbone(weights, method->student_backbone());
    const Device dev = cfg.device == "auto" ? runtime::default_device() : Device::parse(cfg.device);
    method->to(dev);
    const apps::EmbeddedData data = apps::load_embedded_data(32);
    std::cout << "data: " << data.description << "\n";
    const Tensor tr = apps::extract_features(method->student_backbone(), data.train, dev);
    const Tensor va = apps::extract_features(method->student_backbone(), data.val, dev);
    const apps::KnnResult r = apps::knn_classify(tr, data.train.labels, va, data.val.labels, data.num_classes,
                                                 cfg.knn_k, cfg.knn_temperature);
    std::printf("kNN (k %d, T %g) of %s: top-1 %.2f%%  top-5 %.2f%%  (%lld val images)\n", cfg.knn_k,
                cfg.knn_temperature, random_init ? "the random init" : (ckpt.empty() ? weights : ckpt).c_str(),
                100 * r.top1, 100 * r.top5, static_cast<long long>(r.count));
    return 0;
}

int cmd_export(int argc, char** argv) {
    using namespace sslight;
    ConfigArgs ca;
    std::string ckpt, out;
    for (int i = 0; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") return std::cout << kExportUsage, 0;
        if (ca.take(a, i, argc, argv)) continue;
        if (i + 1 >= argc) throw UsageError("export: option " + a + " needs a value (see sslight export --help)");
        if (a == "--checkpoint") ckpt = argv[++i];
        else if (a == "--out") out = argv[++i];
        else throw UsageError("export: unknown option '" + a + "' (see sslight export --help)");
    }
    if (ckpt.empty() || out.empty()) throw UsageError("export: --checkpoint and --out are required");
    const apps::PretrainConfig cfg = ca.load();
    const std::string done = apps::export_backbone(ckpt, cfg, out);
    std::cout << "exported the " << cfg.method.backbone << " backbone of " << ckpt << " to " << done << "\n";
    return 0;
}

int cmd_demo(int argc, char** argv) {
    using namespace sslight;
    apps::DemoConfig cfg;
    cfg.device = runtime::default_device();
    for (int i = 0; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") {
            std::cout << kDemoUsage;
            return 0;
        }
        if (i + 1 >= argc) throw UsageError("demo: option " + a + " needs a value (see sslight demo --help)");
        const char* v = argv[++i];
        if (a == "--steps") cfg.steps = static_cast<int>(parse_int(a, v, 1, 10000000));
        else if (a == "--batch") cfg.batch = static_cast<int>(parse_int(a, v, 1, 1 << 20));
        else if (a == "--hidden") cfg.hidden = static_cast<int>(parse_int(a, v, 1, 1 << 16));
        else if (a == "--seed") cfg.seed = static_cast<uint64_t>(parse_int(a, v, 0, 1L << 62));
        else if (a == "--lr") cfg.lr = parse_double(a, v, 0.0, 100.0);
        else if (a == "--device") {
            try {
                cfg.device = Device::parse(v);
            } catch (const ConfigError& e) {
                throw UsageError(e.what());
            }
        } else {
            throw UsageError("demo: unknown option '" + a + "' (see sslight demo --help)");
        }
    }
    std::cout << "sslight demo: NOTE this is a stand-in for self-supervised pre-training (not implemented yet):\n"
              << "  an MLP learns a built-in 3-class spiral through the engine's ops and autograd on "
              << cfg.device.str() << ".\n";
    apps::DemoResult r = apps::run_mlp_demo(cfg, &std::cout);
    std::printf("done: loss %.4f -> %.4f, accuracy %.1f%% on %d points, %.1f s, %.0f samples/s\n", r.first_loss,
                r.final_loss, 100.0 * r.accuracy, 3 * cfg.points_per_class, r.seconds, r.samples_per_second);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
        std::cout << kUsage;
        return argc < 2 ? 2 : 0;
    }
    const std::string cmd = argv[1];
    try {
        if (cmd == "demo") return cmd_demo(argc - 2, argv + 2);
        if (cmd == "info") return cmd_info(argc - 2, argv + 2);
        if (cmd == "pretrain") return cmd_pretrain(argc - 2, argv + 2);
        if (cmd == "export") return cmd_export(argc - 2, argv + 2);
        if (cmd == "knn") return cmd_knn(argc - 2, argv + 2);
        if (cmd == "plot") return sslight::apps::plot_command(argc - 2, argv + 2);
        if (cmd == "linear") return sslight::apps::linear_command(argc - 2, argv + 2);
        if (cmd == "finetune") return sslight::apps::finetune_command(argc - 2, argv + 2);
        if (cmd == "bench") return sslight::apps::bench_command(argc - 2, argv + 2);
        throw UsageError("unknown command '" + cmd + "'");
    } catch (const UsageError& e) {
        std::cerr << "sslight: " << e.what() << "\n\n" << kUsage;
        return 2;
    } catch (const sslight::ConfigError& e) {
        std::cerr << "sslight: error: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "sslight: error: " << e.what() << "\n";
        return 1;
    }
}
