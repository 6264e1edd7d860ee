// The linear probe (apps/linear.h): frozen backbone, cached or per-batch features, one trained Linear layer.
// Gradients reach the classifier only (the backbone's parameters are frozen and its forward runs under no-grad).
#include "apps/linear.h"
#include "apps/plot.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "engine/autograd.h"
#include "engine/check.h"
#include "engine/io/safetensors.h"
#include "engine/nn/layers.h"
#include "engine/ops/softmax.h"
#include "engine/optim/optimizer.h"
#include "engine/optim/schedule.h"
#include "engine/random.h"

namespace sslight::apps {
namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kFeatureFormat = "sslight-features-1";

void say(const LinearOptions& o, const std::string& line) {
    if (o.log) *o.log << line << std::endl;
}

// FNV-1a over every parameter and buffer of the backbone (names and bytes): the disk cache's key.
std::string weights_hash(models::Backbone& b) {
    uint64_t h = 1469598103934665603ull;
    auto mix = [&](const void* p, size_t n) {
        const auto* c = static_cast<const unsigned char*>(p);
        for (size_t i = 0; i < n; ++i) h = (h ^ c[i]) * 1099511628211ull;
    };
    for (auto& [name, t] : b.state_dict()) {
        mix(name.data(), name.size());
        const Tensor c = t.to(Device::cpu());
        mix(c.raw_data(), c.nbytes());
    }
    char buf[17];
    std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
    return buf;
}

// Rows `idx` of a CPU [N, D] f32 matrix as a [B, D] tensor on `device`.
Tensor gather_rows(const Tensor& m, const std::vector<int64_t>& idx, Device device) {
    const int64_t D = m.size(1);
    const float* src = m.data<float>();
    std::vector<float> out(idx.size() * size_t(D));
    for (size_t r = 0; r < idx.size(); ++r) std::copy_n(src + idx[r] * D, D, out.data() + r * size_t(D));
    return from_vector(out, {static_cast<int64_t>(idx.size()), D}).to(device);
}

struct FeatureCache {
    Tensor train, val;  // CPU f32 [N, D]; undefined when not cached
    bool from_disk = false;
};

io::Metadata cache_metadata(const LinearOptions& o, models::Backbone& b, const SupervisedData& d, const CropSizes& s) {
    return {{"format", kFeatureFormat}, {"backbone", o.config.method.backbone}, {"weights_hash", weights_hash(b)},
            {"data", d.description}, {"crop", str(s.crop)}, {"resize", str(s.resize)},
            {"train_count", str(d.train.count())}, {"val_count", str(d.val.count())}};
}

// Features computed once: val always (the backbone is frozen and the val transform fixed); train too when
// augmentation is off. With disk_cache, <out>/features.safetensors is reused when its metadata matches.
FeatureCache build_cache(const LinearOptions& o, models::Backbone& b, const SupervisedData& d, const CropSizes& s,
                         Device dev, const std::string& out) {
    FeatureCache c;
    const bool train_too = !o.augment;
    const std::string path = out + "/features.safetensors";
    io::Metadata want;
    if (o.disk_cache) {
        want = cache_metadata(o, b, d, s);
        std::FILE* f = std::fopen(path.c_str(), "rb");
        if (f) {
            std::fclose(f);
            io::Metadata got;
            io::TensorMap t = io::load_safetensors(path, &got);
            if (got == want && t.count("train") && t.count("val")) {
                c.train = t.at("train"), c.val = t.at("val"), c.from_disk = true;
                say(o, "features: read from " + path);
                return c;
            }
            say(o, "features: " + path + " belongs to another backbone, data set or crop size; recomputing it");
        }
    }
    c.val = split_features(b, d.val, s, dev, o.batch);
    if (train_too) c.train = split_features(b, d.train, s, dev, o.batch);
    if (o.disk_cache) {
        io::save_safetensors(path, {{"train", c.train}, {"val", c.val}}, want);
        say(o, "features: written to " + path);
    }
    return c;
}

std::unique_ptr<optim::Optimizer> make_probe_optimizer(const std::string& name, nn::Linear& fc) {
    optim::ParamGroup w, bias;
    w.params = {&fc.weight}, w.name = "weight";
    bias.params = {&fc.bias}, bias.name = "bias", bias.lars_adapt = false;
    if (name == "lars") return std::make_unique<optim::LARS>(std::vector<optim::ParamGroup>{w, bias}, 0.9, 0.001);
    SSL_CHECK_T(ConfigError, name == "sgd", "linear: unknown optimizer '", name, "' (expected sgd or lars)");
    return std::make_unique<optim::SGD>(std::vector<optim::ParamGroup>{w, bias}, 0.9);
}

// The last epoch's accuracy and the trained classifier into `res` and <out>/linear_classifier.safetensors.
void finish(const LinearOptions& o, const std::string& source, nn::Linear& fc, LinearResult& res) {
    res.top1 = res.loop.epochs.back().top1, res.top5 = res.loop.epochs.back().top5;
    res.weight = fc.weight.detach().to(Device::cpu()), res.bias = fc.bias.detach().to(Device::cpu());
    io::save_safetensors(res.out_dir + "/linear_classifier.safetensors", {{"weight", res.weight}, {"bias", res.bias}},
                         {{"source", source}, {"feature_dim", str(res.feature_dim)}, {"epochs", str(o.epochs)}});
}

void check_options(const LinearOptions& o) {
    SSL_CHECK_T(ConfigError, o.epochs >= 1, "linear: --epochs must be >= 1, got ", o.epochs);
    SSL_CHECK_T(ConfigError, o.batch >= 1, "linear: --batch must be >= 1, got ", o.batch);
    SSL_CHECK_T(ConfigError, o.lr > 0 && std::isfinite(o.lr), "linear: --lr must be > 0, got ", o.lr);
    SSL_CHECK_T(ConfigError, !o.disk_cache || !o.augment,
                "linear: --cache-features needs --no-augment (augmented training features change every epoch)");
}

}  // namespace

Tensor split_features(models::Backbone& backbone, const LabeledSplit& split, const CropSizes& sizes, Device device,
                      int batch) {
    NoGradGuard ng;
    const bool was_training = backbone.is_training();
    backbone.eval();
    std::vector<float> out;
    int64_t dim = 0;
    for (int64_t b0 = 0; b0 < split.count(); b0 += batch) {
        const std::vector<int64_t> idx = index_range(b0, std::min<int64_t>(b0 + batch, split.count()));
        const Tensor f = probe_features(backbone, eval_batch(split, idx, sizes, device)).to(Device::cpu());
        dim = f.size(1);
        const std::vector<float> v = f.to(DType::f32).to_vector<float>();
        out.insert(out.end(), v.begin(), v.end());
    }
    backbone.train(was_training);
    return from_vector(out, {split.count(), dim});
}

LinearResult run_linear(const LinearOptions& o) {
    const auto t0 = Clock::now();
    check_options(o);
    const PretrainConfig& cfg = o.config;
    const Device dev = resolve_eval_device(cfg.device);
    const CropSizes sizes = crop_sizes(eval_crop_size(cfg, o.crop));
    const SupervisedData d = load_supervised_data(o.data, o.val, embedded_size_for(sizes.crop), o.embedded);
    LinearResult res;
    res.out_dir = o.out_dir.empty() ? "runs/" + cfg.name + "/linear" : o.out_dir;
    make_output_dir(res.out_dir);
    LoadedBackbone lb = load_eval_backbone(cfg, o.source);
    models::Backbone& bb = *lb.backbone;
    bb.to(dev);
    bb.eval();
    bb.set_requires_grad(false);
    res.feature_dim = probe_feature_dim(bb);
    res.train_count = d.train.count(), res.val_count = d.val.count();
    nn::Linear fc(res.feature_dim, d.num_classes);
    normal_(fc.weight, 0.0, 0.01, nn::init_generator().next());  // SPEC.md §6: N(0, 0.01), bias 0
    constant_(fc.bias, 0.0);
    fc.to(dev);
    say(o, "data: " + d.description);
    say(o, str("linear probe of ", lb.description, " (feature ", res.feature_dim, "-d, ", d.num_classes,
               " classes) on ", dev.str(), ": ", o.epochs, " epochs, batch ", o.batch, ", ", o.optimizer, " lr ", o.lr,
               " per 256, ", o.augment ? "RandomResizedCrop + flip" : "no augmentation", " at ", sizes.crop,
               " px, val resize ", sizes.resize, " / centre ", sizes.crop, "; output ", res.out_dir));
    const auto tf = Clock::now();
    FeatureCache cache;
    if (o.cache_features) cache = build_cache(o, bb, d, sizes, dev, res.out_dir);
    res.features_from_disk = cache.from_disk;
    res.feature_seconds = std::chrono::duration<double>(Clock::now() - tf).count();

    std::unique_ptr<optim::Optimizer> opt = make_probe_optimizer(o.optimizer, fc);
    MetricsFile metrics(res.out_dir + "/metrics.jsonl");
    EpochLoopSettings ls;
    ls.epochs = o.epochs, ls.train_count = d.train.count(), ls.batch = o.batch, ls.seed = cfg.seed;
    ls.lr = optim::cosine_schedule(optim::linear_scaled_lr(o.lr, o.batch), 0.0, o.epochs,
                                   steps_per_epoch(d.train.count(), o.batch));
    ls.log_every = cfg.log_every, ls.name = "linear", ls.log = o.log, ls.progress = o.progress, ls.metrics = &metrics;

    auto features = [&](const Tensor& cached, const LabeledSplit& split, const std::vector<int64_t>& idx, bool train,
                        int64_t epoch) {
        if (cached.defined()) return gather_rows(cached, idx, dev);
        NoGradGuard ng;
        const Tensor x = train && o.augment ? train_batch(split, idx, sizes.crop, cfg.seed, epoch, dev)
                                            : eval_batch(split, idx, sizes, dev);
        return probe_features(bb, x);
    };
    auto train_step = [&](int64_t it, int64_t epoch, const std::vector<int64_t>& idx) {
        const Tensor f = features(cache.train, d.train, idx, true, epoch);
        for (auto& g : opt->groups()) g.lr = ls.lr[size_t(it)];
        Tensor loss = cross_entropy(fc.forward(f), labels_of(d.train, idx, dev));
        loss.backward();
        opt->step();
        opt->zero_grad();
        return loss.item();
    };
    auto evaluate = [&](int64_t) {
        NoGradGuard ng;
        Accuracy acc;
        for (int64_t b0 = 0; b0 < d.val.count(); b0 += o.batch) {
            const std::vector<int64_t> idx = index_range(b0, std::min<int64_t>(b0 + o.batch, d.val.count()));
            std::vector<int64_t> labels;
            for (int64_t i : idx) labels.push_back(d.val.label(i));
            count_topk(fc.forward(features(cache.val, d.val, idx, false, 0)), labels, acc);
        }
        return acc;
    };
    res.loop = run_epoch_loop(ls, train_step, evaluate);
    finish(o, lb.description, fc, res);
    res.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    char line[256];
    std::snprintf(line, sizeof(line), "linear probe: top-1 %.2f%%  top-5 %.2f%% after %d epochs (best top-1 %.2f%% at "
                  "epoch %d), %.1f s", 100 * res.top1, 100 * res.top5, o.epochs, 100 * res.loop.best_top1,
                  res.loop.best_epoch, res.seconds);
    say(o, line);
    say(o, plot_after_run(res.out_dir));  // the loss, lr and top-1/top-5 curves, when a plotter is there
    return res;
}

const char* linear_usage() {
    static const std::string text = std::string(
        "usage: sslight linear (--checkpoint FILE | --weights FILE | --random-init) [--config FILE] [--set k=v ...]\n"
        "                      [--data PATH [--val PATH]] [--epochs N] [--batch N] [--lr X] [--optimizer sgd|lars]\n"
        "                      [--no-augment] [--cache-features] [--crop N] [--out DIR] [--progress MODE]\n"
        "  Linear probe (SPEC.md §6): the backbone frozen in eval mode; its feature (CNN: pooled; ViT: the last 4\n"
        "  blocks' CLS tokens) feeds Linear(D, classes), weight N(0, 0.01), bias 0, trained with cross-entropy on\n"
        "  RandomResizedCrop + flip views; val: resize + centre crop; top-1 / top-5 after every epoch.\n") +
        kEvalCommonUsage +
        "  --epochs N          default 100\n"
        "  --batch N           default 256\n"
        "  --lr X              per 256 images, peak = X * batch / 256, cosine to 0 per iteration; default 0.03 (sgd),\n"
        "                      0.05 (lars, the SSLight code's)\n"
        "  --optimizer NAME    sgd (momentum 0.9, the default) or lars (momentum 0.9, eta 0.001); no weight decay\n"
        "  --no-augment        train on the val transform; the features are then computed once and kept in memory\n"
        "  --cache-features    with --no-augment: also keep them in OUT/features.safetensors and reuse that file\n"
        "                      while backbone weights, data and crop size match\n"
        "  --out DIR           metrics.jsonl (step / epoch / best records), linear_classifier.safetensors;\n"
        "                      default runs/<run name>/linear\n";
    return text.c_str();
}

int linear_command(int argc, char** argv) {
    EvalCommandLine c;
    LinearOptions o;
    for (int i = 0; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") return std::cout << linear_usage(), 0;
        if (parse_common_option("linear", c, i, argc, argv)) continue;
        if (a == "--no-augment") {
            o.augment = false;
        } else if (a == "--cache-features") {
            o.disk_cache = true;
        } else if (a == "--optimizer") {
            o.optimizer = option_value("linear", a, i, argc, argv);
            SSL_CHECK_T(ConfigError, o.optimizer == "sgd" || o.optimizer == "lars",
                        "--optimizer expects sgd or lars, got '", o.optimizer, "'");
        } else {
            throw ConfigError(str("linear: unknown option '", a, "' (see sslight linear --help)"));
        }
    }
    o.config = load_command_config("linear", c);
    o.source = c.source, o.data = c.data, o.val = c.val, o.out_dir = c.out, o.crop = c.crop, o.progress = c.progress;
    if (c.epochs) o.epochs = c.epochs;
    if (c.batch) o.batch = c.batch;
    o.lr = c.lr > 0 ? c.lr : o.optimizer == "lars" ? 0.05 : o.lr;
    o.log = &std::cout;
    run_linear(o);
    return 0;
}

}  // namespace sslight::apps
