// Semi-supervised fine-tuning (apps/finetune.h): label subsets (drawn, written, read), the 3-layer head and its
// DINO initialisation, and the training run. Gradients reach every parameter of backbone and head.
#include "apps/finetune.h"
#include "apps/plot.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <unordered_map>

#include "data/crop.h"
#include "engine/autograd.h"
#include "engine/check.h"
#include "engine/ops/softmax.h"
#include "engine/optim/optimizer.h"
#include "engine/optim/schedule.h"
#include "engine/random.h"
#include "models/weights.h"
#include "ssl/dino.h"

namespace sslight::apps {
namespace {

using Clock = std::chrono::steady_clock;

void say(const FinetuneOptions& o, const std::string& line) {
    if (o.log) *o.log << line << std::endl;
}

std::string trim(const std::string& s) {
    const size_t a = s.find_first_not_of(" \t\r\n");
    if (a == std::string::npos) return "";
    return s.substr(a, s.find_last_not_of(" \t\r\n") - a + 1);
}

// How often each file name occurs in the split (names that repeat are written as relative paths).
std::unordered_map<std::string, int64_t> name_counts(const LabeledSplit& s) {
    std::unordered_map<std::string, int64_t> n;
    for (int64_t i = 0; i < s.count(); ++i) ++n[s.name(i)];
    return n;
}

void check_options(const FinetuneOptions& o) {
    SSL_CHECK_T(ConfigError, o.labels_fraction >= 0 && o.labels_fraction <= 1,
                "finetune: --labels-fraction must be in (0, 1], got ", o.labels_fraction);
    SSL_CHECK_T(ConfigError, o.labels_fraction == 0 || o.subset_file.empty(),
                "finetune: give --labels-fraction or --subset, not both");
    SSL_CHECK_T(ConfigError, o.epochs >= 0, "finetune: --epochs must be >= 1, got ", o.epochs);
    SSL_CHECK_T(ConfigError, o.batch >= 2, "finetune: --batch must be >= 2 (the head's BatchNorms), got ", o.batch);
    SSL_CHECK_T(ConfigError, o.lr > 0 && std::isfinite(o.lr), "finetune: --lr must be > 0, got ", o.lr);
    SSL_CHECK_T(ConfigError, o.final_lr >= 0 && o.final_lr <= o.lr, "finetune: the final lr must be in [0, lr]");
}

// The labelled training positions and, when a subset is used, the file it was written to or read from.
std::vector<int64_t> select_labels(const FinetuneOptions& o, const LabeledSplit& train, const std::string& out,
                                   std::string& path) {
    if (o.labels_fraction > 0) {
        const std::vector<int64_t> pos = draw_label_subset(train, o.labels_fraction, o.subset_seed);
        path = out + "/" + subset_file_name(o.labels_fraction, o.subset_seed);
        write_subset_file(path, train, pos,
                          str("sslight label subset: ", 100 * o.labels_fraction, "% of the labels per class, seed ",
                              o.subset_seed, ": ", pos.size(), " of ", train.count(), " training images"));
        say(o, str("labels: drew ", pos.size(), " of ", train.count(), " training images (", 100 * o.labels_fraction,
                   "% per class, seed ", o.subset_seed, "), written to ", path));
        return pos;
    }
    if (!o.subset_file.empty()) {
        path = o.subset_file;
        const std::vector<int64_t> pos = read_subset_file(path, train);
        say(o, str("labels: ", pos.size(), " of ", train.count(), " training images from ", path));
        return pos;
    }
    path.clear();
    return index_range(0, train.count());
}

// The backbone under the 3-layer head, on `dev` in train mode; says where the head came from (res.head_note).
std::unique_ptr<FinetuneModel> build_model(const FinetuneOptions& o, const LoadedBackbone& lb, int64_t classes,
                                           Device dev, FinetuneResult& res) {
    const int64_t hidden = o.config.method.dino_hidden_dim;
    auto model = std::make_unique<FinetuneModel>(lb.backbone, hidden, classes);
    res.head_from_dino = init_head_from_dino(*model, lb.method.get());
    res.head_note = res.head_from_dino
                        ? str("head: layers 1-2 (Linear + BN, ", hidden, " wide) copied from the DINO student head of ",
                              o.source.checkpoint, "; the last Linear(", hidden, ", ", classes, ") is fresh")
                        : str("head: no DINO head in ", lb.description, ": started a fresh head Linear(",
                              lb.backbone->feature_dim(), ", ", hidden, ") BN GELU, Linear(", hidden, ", ", hidden,
                              ") BN GELU, Linear(", hidden, ", ", classes, ")");
    say(o, res.head_note);
    model->to(dev);
    model->train();
    return model;
}

}  // namespace

// ---- the model ------------------------------------------------------------------------------------------------

FinetuneModel::FinetuneModel(std::shared_ptr<models::Backbone> b, int64_t hidden, int64_t classes)
    : Module("FinetuneModel") {
    SSL_CHECK_T(ConfigError, hidden >= 1 && classes >= 1, "FinetuneModel: hidden and classes must be >= 1, got ",
                hidden, ", ", classes);
    const int64_t d = b->feature_dim();
    backbone = register_module("backbone", std::move(b));
    head = std::make_shared<nn::Sequential>();
    head->push_back(std::make_shared<nn::Linear>(d, hidden));
    head->push_back(std::make_shared<nn::BatchNorm>(hidden, false));
    head->push_back(std::make_shared<nn::GELU>());
    head->push_back(std::make_shared<nn::Linear>(hidden, hidden));
    head->push_back(std::make_shared<nn::BatchNorm>(hidden, false));
    head->push_back(std::make_shared<nn::GELU>());
    head->push_back(std::make_shared<nn::Linear>(hidden, classes));
    register_module("head", head);
}

Tensor FinetuneModel::forward(const Tensor& x) {
    return head->forward(backbone->forward_features(x));
}

bool init_head_from_dino(FinetuneModel& model, ssl::Method* method) {
    auto* dino = dynamic_cast<ssl::Dino*>(method);
    if (!dino) return false;
    nn::Sequential& src = *dino->student_head().mlp;
    // CNN DINO heads: 0 Linear, 1 BN, 2 GELU, 3 Linear, 4 BN, ...; ViT heads (no BN): 0 Linear, 1 GELU, 2 Linear, ...
    const bool bn = src.size() > 1 && dynamic_cast<nn::BatchNorm*>(&src[1]) != nullptr;
    const std::vector<std::pair<size_t, size_t>> pairs =
        bn ? std::vector<std::pair<size_t, size_t>>{{0, 0}, {1, 1}, {3, 3}, {4, 4}}
           : std::vector<std::pair<size_t, size_t>>{{0, 0}, {2, 3}};
    for (const auto& [from, to] : pairs) {
        try {
            (*model.head)[to].load_state_dict(src[from].state_dict());
        } catch (const IoError& e) {
            throw IoError(str("finetune: the DINO head's layer mlp.", from, " does not fit head.", to,
                              " (method.dino_hidden_dim must be the checkpoint's): ", e.what()));
        }
    }
    return true;
}

// ---- label subsets --------------------------------------------------------------------------------------------

std::vector<int64_t> draw_label_subset(const LabeledSplit& train, double fraction, uint64_t seed) {
    SSL_CHECK_T(ConfigError, fraction > 0 && fraction <= 1, "labels fraction must be in (0, 1], got ", fraction);
    std::map<int64_t, std::vector<int64_t>> by_class;
    for (int64_t i = 0; i < train.count(); ++i) by_class[train.label(i)].push_back(i);
    std::vector<int64_t> out;
    for (auto& [c, items] : by_class) {
        const int64_t n = static_cast<int64_t>(items.size());
        const int64_t k = std::clamp<int64_t>(std::llround(fraction * double(n)), 1, n);
        data::Rng rng(derive(seed, {0x4c4142454c53ull /* "LABELS" */, static_cast<uint64_t>(c)}));
        for (int64_t j = 0; j < k; ++j) std::swap(items[size_t(j)], items[size_t(j + rng.randint(0, n - j))]);
        out.insert(out.end(), items.begin(), items.begin() + k);
    }
    std::sort(out.begin(), out.end());
    return out;
}

void write_subset_file(const std::string& path, const LabeledSplit& train, const std::vector<int64_t>& positions,
                       const std::string& comment) {
    const std::unordered_map<std::string, int64_t> counts = name_counts(train);
    std::string text = comment.empty() ? "" : "# " + comment + "\n";
    for (int64_t p : positions) {
        SSL_CHECK(p >= 0 && p < train.count(), "write_subset_file: position ", p, " outside the split");
        const std::string name = train.name(p);
        text += (counts.at(name) > 1 ? train.relative_path(p) : name) + "\n";
    }
    io::write_file_atomic(path, text);
}

std::vector<int64_t> read_subset_file(const std::string& path, const LabeledSplit& train) {
    std::ifstream in(path);
    if (!in) throw IoError(str("cannot read the subset file '", path, "'"));
    std::unordered_map<std::string, int64_t> by_name, by_path;  // by_name: -1 marks a name that repeats
    for (int64_t i = 0; i < train.count(); ++i) {
        auto [it, fresh] = by_name.emplace(train.name(i), i);
        if (!fresh) it->second = -1;
        by_path.emplace(train.relative_path(i), i);
    }
    std::unordered_map<int64_t, int64_t> line_of;  // position -> the line that listed it
    std::vector<int64_t> out;
    std::string line;
    for (int64_t lineno = 1; std::getline(in, line); ++lineno) {
        const std::string name = trim(line);
        if (name.empty() || name[0] == '#') continue;
        auto p = by_path.find(name);
        int64_t pos = p != by_path.end() ? p->second : -2;
        if (pos == -2) {
            auto n = by_name.find(name);
            if (n == by_name.end())
                throw IoError(str("subset file '", path, "' line ", lineno, ": '", name, "' is not an image of the ",
                                  "training split (expected one file name per line, e.g. n01440764_10026.JPEG, or a ",
                                  "path relative to the split root)"));
            if (n->second < 0)
                throw IoError(str("subset file '", path, "' line ", lineno, ": several training images are named '",
                                  name, "'; give the path relative to the split root instead"));
            pos = n->second;
        }
        auto [it, fresh] = line_of.emplace(pos, lineno);
        if (!fresh)
            throw IoError(str("subset file '", path, "' line ", lineno, ": '", name, "' was already listed on line ",
                              it->second));
        out.push_back(pos);
    }
    if (in.bad()) throw IoError(str("error while reading the subset file '", path, "'"));
    if (out.empty()) throw IoError(str("the subset file '", path, "' lists no image"));
    std::sort(out.begin(), out.end());
    return out;
}

std::string subset_file_name(double fraction, uint64_t seed) {
    return str("subset_", 100 * fraction, "pct_seed", seed, ".txt");
}

int default_finetune_epochs(double fraction_used) {
    return fraction_used <= 0.01 + 1e-9 ? 60 : 30;
}

// ---- the run --------------------------------------------------------------------------------------------------

FinetuneResult run_finetune(const FinetuneOptions& o) {
    const auto t0 = Clock::now();
    check_options(o);
    const PretrainConfig& cfg = o.config;
    const Device dev = resolve_eval_device(cfg.device);
    const CropSizes sizes = crop_sizes(eval_crop_size(cfg, o.crop));
    const SupervisedData d = load_supervised_data(o.data, o.val, embedded_size_for(sizes.crop), o.embedded);
    FinetuneResult res;
    res.out_dir = o.out_dir.empty() ? "runs/" + cfg.name + "/finetune" : o.out_dir;
    make_output_dir(res.out_dir);
    say(o, "data: " + d.description);
    const LabeledSplit train = d.train.subset(select_labels(o, d.train, res.out_dir, res.subset_path));
    res.train_count = d.train.count(), res.subset_count = train.count();
    SSL_CHECK_T(ConfigError, train.count() >= 2, "finetune: ", train.count(), " labelled image(s); the head's ",
                "BatchNorms need batches of at least 2");
    res.batch = static_cast<int>(std::min<int64_t>(o.batch, train.count()));
    res.epochs = o.epochs > 0 ? o.epochs : default_finetune_epochs(double(train.count()) / double(d.train.count()));
    if (res.batch < o.batch) say(o, str("batch: ", o.batch, " exceeds the ", train.count(), " labelled images; using ",
                                        res.batch));

    LoadedBackbone lb = load_eval_backbone(cfg, o.source);
    std::unique_ptr<FinetuneModel> mp = build_model(o, lb, d.num_classes, dev, res);
    FinetuneModel& model = *mp;
    optim::ParamGroup all;
    all.params = model.parameters(true), all.name = "all";
    optim::SGD opt({all}, 0.9, /*nesterov=*/true);

    MetricsFile metrics(res.out_dir + "/metrics.jsonl");
    metrics.write("setup", {{"train_images", double(res.train_count)}, {"labelled_images", double(res.subset_count)},
                            {"epochs", double(res.epochs)}, {"batch", double(res.batch)},
                            {"head_from_dino", double(res.head_from_dino)}});
    EpochLoopSettings ls;
    ls.epochs = res.epochs, ls.train_count = train.count(), ls.batch = res.batch, ls.seed = cfg.seed;
    ls.lr = optim::cosine_schedule(optim::linear_scaled_lr(o.lr, res.batch), o.final_lr, res.epochs,
                                   steps_per_epoch(train.count(), res.batch));
    ls.log_every = cfg.log_every, ls.name = "finetune", ls.log = o.log, ls.progress = o.progress;
    ls.metrics = &metrics;
    say(o, str("finetune ", lb.description, " on ", dev.str(), ": ", res.subset_count, " labelled images, ",
               res.epochs, " epochs, batch ", res.batch, ", SGD Nesterov lr ", o.lr, " per 256 (cosine to ", o.final_lr,
               "), RandomResizedCrop + flip at ", sizes.crop, " px, val resize ", sizes.resize, " / centre ",
               sizes.crop, "; output ", res.out_dir));

    auto train_step = [&](int64_t it, int64_t epoch, const std::vector<int64_t>& idx) {
        const Tensor x = train_batch(train, idx, sizes.crop, cfg.seed, epoch, dev);
        for (auto& g : opt.groups()) g.lr = ls.lr[size_t(it)];
        Tensor loss = cross_entropy(model.forward(x), labels_of(train, idx, dev));
        loss.backward();
        opt.step();
        opt.zero_grad();
        return loss.item();
    };
    auto evaluate = [&](int64_t) {
        NoGradGuard ng;
        model.eval();
        Accuracy acc;
        for (int64_t b0 = 0; b0 < d.val.count(); b0 += o.batch) {
            const std::vector<int64_t> idx = index_range(b0, std::min<int64_t>(b0 + o.batch, d.val.count()));
            std::vector<int64_t> labels;
            for (int64_t i : idx) labels.push_back(d.val.label(i));
            count_topk(model.forward(eval_batch(d.val, idx, sizes, dev)), labels, acc);
        }
        model.train();
        return acc;
    };
    res.loop = run_epoch_loop(ls, train_step, evaluate);
    models::save_backbone(res.out_dir + "/finetuned.safetensors", model);
    res.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    const EpochRecord& last = res.loop.epochs.back();
    char line[256];
    std::snprintf(line, sizeof(line), "finetune: best top-1 %.2f%% (top-5 %.2f%%) at epoch %d of %d; last epoch top-1 "
                  "%.2f%% top-5 %.2f%%; %.1f s", 100 * res.loop.best_top1, 100 * res.loop.best_top5,
                  res.loop.best_epoch, res.epochs, 100 * last.top1, 100 * last.top5, res.seconds);
    say(o, line);
    say(o, plot_after_run(res.out_dir));  // the loss, lr and top-1/top-5 curves, when a plotter is there
    return res;
}

const char* finetune_usage() {
    static const std::string text = std::string(
        "usage: sslight finetune (--checkpoint FILE | --weights FILE | --random-init) [--config FILE] [--set k=v ...]\n"
        "                        [--data PATH [--val PATH]] [--labels-fraction F [--seed N] | --subset FILE]\n"
        "                        [--epochs N] [--batch N] [--lr X] [--crop N] [--out DIR] [--progress MODE]\n"
        "  Semi-supervised fine-tuning (the paper's 1% / 10% labels): backbone and a 3-layer head Linear(d, h) BN\n"
        "  GELU, Linear(h, h) BN GELU, Linear(h, classes) (h = method.dino_hidden_dim) all train; the first two head\n"
        "  layers start from the DINO student head when the checkpoint has one, else fresh (said so). Cross-entropy,\n"
        "  SGD Nesterov momentum 0.9, no weight decay, RandomResizedCrop + flip; top-1 / top-5 per epoch, the\n"
        "  best epoch.\n") +
        kEvalCommonUsage +
        "  --labels-fraction F draw F (in (0, 1], e.g. 0.01 or 0.1) of the training images per class with --seed and\n"
        "                      write their names to OUT/subset_<100F>pct_seed<N>.txt\n"
        "  --seed N            the draw's seed (default run.seed)\n"
        "  --subset FILE       train on the images a file names, one per line (a file name or a path relative to\n"
        "                      the split root; ImageNet's 1% / 10% split files work as they are); default: all labels\n"
        "  --epochs N          default 60 when at most 1% of the labels are used, else 30\n"
        "  --batch N           default 128 (clamped to the number of labelled images)\n"
        "  --lr X              per 256 images, peak = X * batch / 256, cosine to 1e-6 per iteration; default 0.03\n"
        "  --out DIR           metrics.jsonl (setup / step / epoch / best records), the subset file,\n"
        "                      finetuned.safetensors; default runs/<run name>/finetune\n";
    return text.c_str();
}

int finetune_command(int argc, char** argv) {
    EvalCommandLine c;
    FinetuneOptions o;
    bool seed_given = false;
    for (int i = 0; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--help" || a == "-h") return std::cout << finetune_usage(), 0;
        if (parse_common_option("finetune", c, i, argc, argv)) continue;
        if (a == "--labels-fraction") {
            o.labels_fraction = parse_double_option(a, option_value("finetune", a, i, argc, argv), 0.0, 1.0);
        } else if (a == "--subset") {
            o.subset_file = option_value("finetune", a, i, argc, argv);
        } else if (a == "--seed") {
            o.subset_seed = uint64_t(parse_long_option(a, option_value("finetune", a, i, argc, argv), 0, 1L << 62));
            seed_given = true;
        } else {
            throw ConfigError(str("finetune: unknown option '", a, "' (see sslight finetune --help)"));
        }
    }
    SSL_CHECK_T(ConfigError, !seed_given || o.labels_fraction > 0, "finetune: --seed applies to --labels-fraction");
    o.config = load_command_config("finetune", c);
    if (!seed_given) o.subset_seed = o.config.seed;
    o.source = c.source, o.data = c.data, o.val = c.val, o.out_dir = c.out, o.crop = c.crop, o.progress = c.progress;
    o.epochs = c.epochs;
    if (c.batch) o.batch = c.batch;
    if (c.lr > 0) o.lr = c.lr;
    o.log = &std::cout;
    run_finetune(o);
    return 0;
}

}  // namespace sslight::apps
