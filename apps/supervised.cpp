// The supervised-evaluation helpers (apps/supervised.h): splits over in-memory images or files, the two transforms
// built from data/'s RandomResizedCrop sampling, PIL-exact bicubic resampling and the photometric kernel (flip and
// normalisation only), top-k counting, backbone loading, metrics.jsonl and the shared epoch loop.
#include "apps/supervised.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "apps/checkpoint.h"
#include "apps/pretrain.h"
#include "data/augment_params.h"
#include "data/crop.h"
#include "data/decode.h"
#include "data/loader.h"
#include "engine/check.h"
#include "engine/device.h"
#include "engine/io/json.h"
#include "engine/nn/layers.h"
#include "models/vit.h"
#include "models/weights.h"

namespace sslight::apps {
namespace {

using Clock = std::chrono::steady_clock;

bool is_dir(const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// One TurboJPEG decoder per thread (data::Decoder is not thread-safe).
data::Decoder& thread_decoder() {
    static thread_local data::Decoder dec;
    return dec;
}

// Runs f(b) for b in [0, n) over the OpenMP threads; the first exception is rethrown on the calling thread.
template <class F>
void parallel_samples(int64_t n, const F& f) {
    std::exception_ptr first;
#pragma omp parallel for schedule(dynamic)
    for (int64_t b = 0; b < n; ++b) {
        try {
            f(b);
        } catch (...) {
#pragma omp critical(sslight_supervised_error)
            if (!first) first = std::current_exception();
        }
    }
    if (first) std::rethrow_exception(first);
}

// A split of an ImageFolder root or a list file.
std::shared_ptr<const data::Dataset> open_split(const std::string& path, const char* role) {
    if (is_dir(path)) return std::make_shared<const data::Dataset>(data::Dataset::image_folder(path));
    if (is_file(path)) return std::make_shared<const data::Dataset>(data::Dataset::list_file(path));
    throw IoError(str("the ", role, " split '", path, "' does not exist (expected an ImageFolder root or a list file ",
                      "of '<path> <label>' lines)"));
}

}  // namespace

// ---- LabeledSplit ---------------------------------------------------------------------------------------------

LabeledSplit LabeledSplit::of_images(std::shared_ptr<const ImageSet> images, const std::string& tag) {
    LabeledSplit s;
    s.images_ = std::move(images);
    s.tag_ = tag;
    s.rows_ = index_range(0, s.images_->count());
    return s;
}

LabeledSplit LabeledSplit::of_files(std::shared_ptr<const data::Dataset> files) {
    LabeledSplit s;
    s.files_ = std::move(files);
    s.rows_ = index_range(0, s.files_->size());
    return s;
}

int64_t LabeledSplit::label(int64_t i) const {
    const int64_t r = key(i);
    return images_ ? images_->labels.at(static_cast<size_t>(r)) : files_->label(r);
}

std::vector<int64_t> LabeledSplit::labels() const {
    std::vector<int64_t> out(rows_.size());
    for (int64_t i = 0; i < count(); ++i) out[static_cast<size_t>(i)] = label(i);
    return out;
}

std::string LabeledSplit::relative_path(int64_t i) const {
    const int64_t r = key(i);
    if (images_) {
        char b[32];
        std::snprintf(b, sizeof(b), "_%05lld.png", static_cast<long long>(r));
        return tag_ + b;
    }
    const std::string p = files_->path(r), root = files_->root();
    return !root.empty() && p.rfind(root, 0) == 0 ? p.substr(root.size()) : p;
}

std::string LabeledSplit::name(int64_t i) const {
    const std::string p = relative_path(i);
    const size_t slash = p.rfind('/');
    return slash == std::string::npos ? p : p.substr(slash + 1);
}

LabeledSplit LabeledSplit::subset(const std::vector<int64_t>& positions) const {
    LabeledSplit s = *this;
    s.rows_.clear();
    for (int64_t p : positions) {
        SSL_CHECK(p >= 0 && p < count(), "LabeledSplit::subset: position ", p, " outside [0, ", count(), ")");
        s.rows_.push_back(key(p));
    }
    return s;
}

void LabeledSplit::train_crop(int64_t i, int out, uint64_t seed, int64_t epoch, uint8_t* dst) const {
    const int64_t r = key(i);
    data::Rng rng = data::Rng::for_view(seed, epoch, r, 0);
    if (images_) {
        const int s = images_->size;
        const data::CropBox box = data::random_resized_crop_box(s, s, 0.08, 1.0, 3.0 / 4, 4.0 / 3, rng);
        data::resize_bicubic_aa(images_->image(r), s, s, s * 3, box, dst, out, out);
        return;
    }
    const std::string path = files_->path(r);
    try {
        const std::vector<uint8_t> bytes = data::read_file_bytes(path);
        data::Decoder& dec = thread_decoder();
        const data::ImageInfo info = dec.probe(bytes.data(), bytes.size());
        const data::CropBox box = data::random_resized_crop_box(info.width, info.height, 0.08, 1.0, 3.0 / 4, 4.0 / 3,
                                                                rng);
        const data::CropSource src = dec.decode_for_crop(bytes.data(), bytes.size(), box, out);
        data::resize_bicubic_aa(src.image.rgb.data(), src.image.width, src.image.height, src.image.stride(),
                                src.boxes.at(0), dst, out, out);
    } catch (const data::DecodeError& e) {
        throw IoError(str(path, ": cannot decode the image: ", e.what()));
    }
}

void LabeledSplit::eval_crop(int64_t i, int resize, int crop, uint8_t* dst) const {
    const int64_t r = key(i);
    if (images_) {
        const int s = images_->size;
        data::resize_center_crop(images_->image(r), s, s, s * 3, resize, crop, dst);
        return;
    }
    const std::string path = files_->path(r);
    try {
        const std::vector<uint8_t> bytes = data::read_file_bytes(path);
        const data::Image img = thread_decoder().decode(bytes.data(), bytes.size(), resize);
        data::resize_center_crop(img.rgb.data(), img.width, img.height, img.stride(), resize, crop, dst);
    } catch (const data::DecodeError& e) {
        throw IoError(str(path, ": cannot decode the image: ", e.what()));
    }
}

// ---- data sets ------------------------------------------------------------------------------------------------

SupervisedData load_supervised_data(const std::string& data, const std::string& val, int embedded_size,
                                    const EmbeddedData* embedded) {
    SupervisedData d;
    if (data.empty()) {
        SSL_CHECK_T(ConfigError, val.empty(), "--val needs --data (the embedded digits bring their own val split)");
        std::shared_ptr<const EmbeddedData> owner;
        if (embedded)
            owner = std::shared_ptr<const EmbeddedData>(std::shared_ptr<const EmbeddedData>(), embedded);
        else
            owner = std::make_shared<const EmbeddedData>(load_embedded_data(embedded_size));
        d.train = LabeledSplit::of_images(std::shared_ptr<const ImageSet>(owner, &owner->train), "digits_train");
        d.val = LabeledSplit::of_images(std::shared_ptr<const ImageSet>(owner, &owner->val), "digits_val");
        d.num_classes = owner->num_classes;
        d.description = owner->description;
        return d;
    }
    std::string train_path = data, val_path = val;
    if (val.empty()) {
        if (!is_dir(data + "/train") || !is_dir(data + "/val"))
            throw IoError(str("--data '", data, "': expected a folder with train/ and val/ ImageFolders (<split>/",
                              "<class>/*.jpg), or give the val split with --val"));
        train_path = data + "/train", val_path = data + "/val";
    }
    std::shared_ptr<const data::Dataset> tr = open_split(train_path, "train"), va = open_split(val_path, "val");
    if (!tr->classes().empty() && !va->classes().empty() && tr->classes() != va->classes()) {
        throw IoError(str("the train split '", train_path, "' has ", tr->classes().size(), " class folders and the ",
                          "val split '", val_path, "' ", va->classes().size(), " different ones: both need the same ",
                          "class folder names"));
    }
    d.train = LabeledSplit::of_files(tr);
    d.val = LabeledSplit::of_files(va);
    d.num_classes = std::max(tr->num_classes(), va->num_classes());
    d.description = str(train_path, " (", tr->size(), " images) / ", val_path, " (", va->size(), " images), ",
                        d.num_classes, " classes");
    return d;
}

// ---- transforms -----------------------------------------------------------------------------------------------

CropSizes crop_sizes(int crop) {
    SSL_CHECK_T(ConfigError, crop >= 8 && crop <= 4096, "crop size must be in [8, 4096], got ", crop);
    CropSizes s;
    s.crop = crop;
    s.resize = static_cast<int>(std::lround(crop * 256.0 / 224.0));
    return s;
}

int eval_crop_size(const PretrainConfig& config, int requested) {
    if (requested > 0) return requested;
    return config.global_size > 0 ? config.global_size : 224;
}

std::vector<int64_t> index_range(int64_t begin, int64_t end) {
    std::vector<int64_t> v;
    for (int64_t i = begin; i < end; ++i) v.push_back(i);
    return v;
}

Tensor train_batch(const LabeledSplit& split, const std::vector<int64_t>& idx, int crop, uint64_t seed, int64_t epoch,
                   Device device) {
    const int64_t B = static_cast<int64_t>(idx.size()), px = int64_t(crop) * crop * 3;
    Tensor u8 = empty({B, crop, crop, 3}, DType::u8);
    uint8_t* out = u8.data<uint8_t>();
    parallel_samples(B, [&](int64_t b) { split.train_crop(idx[size_t(b)], crop, seed, epoch, out + b * px); });
    data::ViewSpec flip_only;  // flip p 0.5; every photometric op off
    flip_only.size = crop, flip_only.jitter_p = 0, flip_only.gray_p = 0, flip_only.blur_p = 0;
    std::vector<data::AugmentParams> params(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b)
        params[size_t(b)] = data::draw_augment(flip_only, seed, epoch, split.key(idx[size_t(b)]), 0);
    return data::augment_group(u8, params, device);
}

Tensor eval_batch(const LabeledSplit& split, const std::vector<int64_t>& idx, const CropSizes& s, Device device) {
    const int64_t B = static_cast<int64_t>(idx.size()), px = int64_t(s.crop) * s.crop * 3;
    Tensor u8 = empty({B, s.crop, s.crop, 3}, DType::u8);
    uint8_t* out = u8.data<uint8_t>();
    parallel_samples(B, [&](int64_t b) { split.eval_crop(idx[size_t(b)], s.resize, s.crop, out + b * px); });
    return data::augment_group(u8, std::vector<data::AugmentParams>(static_cast<size_t>(B)), device);
}

Tensor labels_of(const LabeledSplit& split, const std::vector<int64_t>& idx, Device device) {
    std::vector<int64_t> l;
    for (int64_t i : idx) l.push_back(split.label(i));
    return from_vector(l, {static_cast<int64_t>(l.size())}).to(device);
}

void count_topk(const Tensor& logits, const std::vector<int64_t>& labels, Accuracy& acc) {
    SSL_CHECK_SHAPE(logits.dim() == 2 && logits.size(0) == static_cast<int64_t>(labels.size()),
                    "count_topk: logits must be [B, C] with one label per row, got ", logits.str(), " and ",
                    labels.size(), " labels");
    const int64_t B = logits.size(0), C = logits.size(1);
    const std::vector<float> v = logits.to(Device::cpu()).to(DType::f32).to_vector<float>();
    for (int64_t r = 0; r < B; ++r) {
        const float* row = v.data() + r * C;
        const int64_t y = labels[size_t(r)];
        SSL_CHECK(y >= 0 && y < C, "count_topk: label ", y, " of row ", r, " outside [0, ", C, ")");
        int64_t above = 0;
        double mx = row[0];
        for (int64_t c = 0; c < C; ++c) {
            above += row[c] > row[y] || (row[c] == row[y] && c < y);
            mx = std::max(mx, double(row[c]));
        }
        double se = 0;
        for (int64_t c = 0; c < C; ++c) se += std::exp(double(row[c]) - mx);
        acc.loss_sum += mx + std::log(se) - row[y];
        acc.top1 += above < 1;
        acc.top5 += above < 5;
        ++acc.count;
    }
}

// ---- backbones ------------------------------------------------------------------------------------------------

LoadedBackbone load_eval_backbone(const PretrainConfig& cfg, const BackboneSource& src) {
    SSL_CHECK_T(ConfigError, src.checkpoint.empty() || src.weights.empty(),
                "give at most one of --checkpoint and --weights");
    nn::init_generator() = Generator(cfg.seed);
    LoadedBackbone lb;
    if (!src.checkpoint.empty()) {
        lb.method = ssl::make_method(method_config_of(cfg));
        load_checkpoint(src.checkpoint, *lb.method, nullptr, cfg);
        lb.backbone = std::shared_ptr<models::Backbone>(lb.method, &lb.method->student_backbone());
        lb.description = str("the student ", cfg.method.backbone, " of checkpoint ", src.checkpoint);
        return lb;
    }
    lb.backbone = models::make_backbone(cfg.method.backbone, cfg.method.backbone_options);
    if (!src.weights.empty()) {
        models::load_backbone(src.weights, *lb.backbone);
        lb.description = str(cfg.method.backbone, " weights ", src.weights);
    } else {
        lb.description = str(cfg.method.backbone, " at random init (seed ", cfg.seed, ")");
    }
    return lb;
}

int64_t probe_feature_dim(models::Backbone& backbone) {
    if (dynamic_cast<models::VisionTransformer*>(&backbone)) return 4 * backbone.feature_dim();
    return backbone.feature_dim();
}

Tensor probe_features(models::Backbone& backbone, const Tensor& x) {
    if (auto* vit = dynamic_cast<models::VisionTransformer*>(&backbone)) return vit->linear_probe_features(x, 4);
    return backbone.forward_features(x);
}

Device resolve_eval_device(const std::string& device) {
    return device == "auto" ? runtime::default_device() : Device::parse(device);
}

void make_output_dir(const std::string& path) {
    std::string cur;
    std::istringstream is(path);
    if (!path.empty() && path[0] == '/') cur = "/";
    for (std::string part; std::getline(is, part, '/');) {
        if (part.empty()) continue;
        cur += part + "/";
        ::mkdir(cur.c_str(), 0755);
    }
    if (!is_dir(path)) throw IoError(str(path, ": cannot create the output folder"));
}

// ---- metrics and the epoch loop -------------------------------------------------------------------------------

MetricsFile::MetricsFile(const std::string& path, bool append)
    : f_(path, append ? std::ios::app : std::ios::trunc) {
    if (!f_) throw IoError(str(path, ": cannot open for writing"));
}

void MetricsFile::write(const std::string& type, const std::vector<std::pair<std::string, double>>& fields) {
    json::Value v = json::Value::make_object();
    v.set("type", json::Value::make_string(type));
    for (const auto& [k, x] : fields) {
        std::ostringstream os;
        os.precision(9);
        os << x;
        v.set(k, std::isfinite(x) ? json::Value::make_number(os.str()) : json::Value());
    }
    f_ << v.dump() << "\n";
    f_.flush();
}

int64_t steps_per_epoch(int64_t train_count, int64_t batch) {
    SSL_CHECK_T(ConfigError, batch >= 1 && train_count >= batch, "the batch size ", batch, " exceeds the ",
                train_count, " training images (one full batch per step is needed)");
    return train_count / batch;
}

namespace {

std::string fmt_time(double s) {
    char b[32];
    const long t = static_cast<long>(s + 0.5);
    std::snprintf(b, sizeof(b), "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    return b;
}

struct LoopState {
    const EpochLoopSettings& s;
    int64_t ipe, total;
    bool live;
    Clock::time_point t0 = Clock::now();
    double seconds() const { return std::chrono::duration<double>(Clock::now() - t0).count(); }
    void say(const std::string& line) const {
        if (!s.log) return;
        if (live) *s.log << "\r\033[K";
        *s.log << line << std::endl;
    }
};

void step_report(const LoopState& st, int64_t epoch, int64_t step, int64_t it, double loss) {
    const EpochLoopSettings& s = st.s;
    const double secs = st.seconds(), lr = s.lr[size_t(it - 1)];
    if (s.metrics && it % s.log_every == 0)
        s.metrics->write("step", {{"iteration", double(it)}, {"epoch", double(epoch + 1)}, {"loss", loss},
                                  {"lr", lr}, {"elapsed_s", secs}});
    if (!s.log || (!st.live && it % s.log_every != 0)) return;
    std::ostringstream line;
    line << s.name << " epoch " << epoch + 1 << "/" << s.epochs << "  step " << step << "/" << st.ipe << "  "
         << std::fixed << std::setprecision(1) << double(it) * double(s.batch) / std::max(secs, 1e-9)
         << " img/s  loss " << std::setprecision(4) << loss << "  lr " << std::scientific << std::setprecision(3)
         << lr << "  ETA " << fmt_time(secs / double(it) * double(st.total - it));
    if (st.live)
        *s.log << "\r" << line.str() << "\033[K" << std::flush;
    else
        *s.log << line.str() << std::endl;
}

}  // namespace

EpochLoopResult run_epoch_loop(const EpochLoopSettings& s,
                               const std::function<double(int64_t, int64_t, const std::vector<int64_t>&)>& train_step,
                               const std::function<Accuracy(int64_t)>& evaluate) {
    SSL_CHECK_T(ConfigError, s.epochs >= 1, s.name, ": epochs must be >= 1, got ", s.epochs);
    const int64_t ipe = steps_per_epoch(s.train_count, s.batch);
    SSL_CHECK(static_cast<int64_t>(s.lr.size()) == ipe * s.epochs, s.name, ": ", s.lr.size(),
              " learning rates for ", ipe * s.epochs, " steps");
    const bool live = s.log && (s.progress == 1 || (s.progress == -1 && s.log == &std::cout && isatty(STDOUT_FILENO)));
    LoopState st{s, ipe, ipe * s.epochs, live};
    const data::Sampler sampler(s.train_count, 0, 1, s.seed, true);
    EpochLoopResult res;
    res.steps_per_epoch = ipe;
    int64_t it = 0;
    for (int64_t epoch = 0; epoch < s.epochs; ++epoch) {
        const std::vector<int64_t> perm = sampler.epoch_indices(epoch);
        double loss_sum = 0;
        for (int64_t step = 0; step < ipe; ++step) {
            const std::vector<int64_t> idx(perm.begin() + step * s.batch, perm.begin() + (step + 1) * s.batch);
            const double loss = train_step(it, epoch, idx);
            if (!std::isfinite(loss))
                throw Error(str(s.name, ": the loss is ", loss, " at epoch ", epoch + 1, " step ", step + 1,
                                "; stopping (try a smaller --lr)"));
            loss_sum += loss;
            step_report(st, epoch, step + 1, ++it, loss);
        }
        const Accuracy acc = evaluate(epoch);
        EpochRecord rec;
        rec.epoch = static_cast<int>(epoch + 1);
        rec.train_loss = loss_sum / double(ipe);
        rec.val_loss = acc.mean_loss(), rec.top1 = acc.top1_fraction(), rec.top5 = acc.top5_fraction();
        rec.seconds = st.seconds();
        res.epochs.push_back(rec);
        if (res.best_epoch == 0 || rec.top1 > res.best_top1)
            res.best_epoch = rec.epoch, res.best_top1 = rec.top1, res.best_top5 = rec.top5;
        if (s.metrics)
            s.metrics->write("epoch", {{"epoch", double(rec.epoch)}, {"iteration", double(it)},
                                       {"loss_mean", rec.train_loss}, {"val_loss", rec.val_loss},
                                       {"top1", rec.top1}, {"top5", rec.top5}, {"lr", s.lr[size_t(it - 1)]},
                                       {"elapsed_s", rec.seconds}});
        std::ostringstream line;
        line << s.name << " epoch " << rec.epoch << "/" << s.epochs << ": train loss " << std::fixed
             << std::setprecision(4) << rec.train_loss << "  val loss " << rec.val_loss << std::setprecision(2)
             << "  top-1 " << 100 * rec.top1 << "%  top-5 " << 100 * rec.top5 << "%  (best top-1 "
             << 100 * res.best_top1 << "% at epoch " << res.best_epoch << ", " << acc.count << " val images)";
        st.say(line.str());
    }
    if (s.metrics)
        s.metrics->write("best", {{"epoch", double(res.best_epoch)}, {"top1", res.best_top1},
                                  {"top5", res.best_top5}, {"elapsed_s", st.seconds()}});
    return res;
}

// ---- command line ---------------------------------------------------------------------------------------------

const char* const kEvalCommonUsage =
    "  --config FILE       TOML config defining the model (configs/*.toml; a checkpoint needs its run's config);\n"
    "                      default configs/demo.toml when present, else the built-in demo config\n"
    "  --set key=value     override one config key (repeatable), e.g. --set model.backbone=mobilenet_v2\n"
    "  --checkpoint FILE | --weights FILE | --random-init\n"
    "                      the backbone: a pre-training checkpoint (its student), exported weights\n"
    "                      (sslight export, backbone.safetensors) or the config's backbone at random init\n"
    "  --data PATH         a folder with train/ and val/ ImageFolders (<split>/<class>/*.jpg); with --val, PATH is\n"
    "                      the train split itself (an ImageFolder root or a '<path> <label>' list file);\n"
    "                      default: the embedded handwritten digits (4000 train / 1000 val)\n"
    "  --val PATH          the val split (ImageFolder root or list file)\n"
    "  --crop N            training crop and val centre crop in px; val resizes the short side to\n"
    "                      round(N * 256 / 224) first (ImageNet's 256 / 224). Default: the config's data.global_size\n"
    "                      (32 for configs/demo.toml), else 224\n"
    "  --progress MODE     auto (a live line on a terminal), live or plain\n";

std::string option_value(const std::string& cmd, const std::string& flag, int& i, int argc, char** argv) {
    if (i + 1 >= argc) throw ConfigError(str(cmd, ": option ", flag, " needs a value (see sslight ", cmd, " --help)"));
    return argv[++i];
}

long parse_long_option(const std::string& flag, const std::string& v, long lo, long hi) {
    char* end = nullptr;
    const long x = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end || x < lo || x > hi)
        throw ConfigError(str(flag, " expects an integer in [", lo, ", ", hi, "], got '", v, "'"));
    return x;
}

double parse_double_option(const std::string& flag, const std::string& v, double lo, double hi) {
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end || !(x > lo && x <= hi))
        throw ConfigError(str(flag, " expects a number in (", lo, ", ", hi, "], got '", v, "'"));
    return x;
}

bool parse_common_option(const std::string& cmd, EvalCommandLine& c, int& i, int argc, char** argv) {
    const std::string a = argv[i];
    if (a == "--random-init") return c.random_init = true, true;
    std::string* text = a == "--config" ? &c.config_path : a == "--checkpoint" ? &c.source.checkpoint
                        : a == "--weights" ? &c.source.weights : a == "--data" ? &c.data
                        : a == "--val" ? &c.val : a == "--out" ? &c.out : nullptr;
    if (text) return *text = option_value(cmd, a, i, argc, argv), true;
    if (a == "--set") return c.sets.push_back(option_value(cmd, a, i, argc, argv)), true;
    auto int_option = [&](int& slot, long lo, long hi) {
        slot = static_cast<int>(parse_long_option(a, option_value(cmd, a, i, argc, argv), lo, hi));
        return true;
    };
    if (a == "--epochs") return int_option(c.epochs, 1, 100000);
    if (a == "--batch") return int_option(c.batch, 1, 1 << 20);
    if (a == "--crop") return int_option(c.crop, 8, 4096);
    if (a == "--lr") return c.lr = parse_double_option(a, option_value(cmd, a, i, argc, argv), 0.0, 100.0), true;
    if (a == "--progress") {
        const std::string v = option_value(cmd, a, i, argc, argv);
        if (v != "auto" && v != "live" && v != "plain")
            throw ConfigError(str("--progress expects auto, live or plain, got '", v, "'"));
        c.progress = v == "auto" ? -1 : v == "live" ? 1 : 0;
        return true;
    }
    return false;
}

PretrainConfig load_command_config(const std::string& cmd, const EvalCommandLine& c) {
    const int given = int(!c.source.checkpoint.empty()) + int(!c.source.weights.empty()) + int(c.random_init);
    if (given != 1)
        throw ConfigError(str(cmd, ": give exactly one of --checkpoint FILE, --weights FILE, --random-init (see ",
                              "sslight ", cmd, " --help)"));
    if (!c.config_path.empty()) return load_config(c.config_path, c.sets);
    if (is_file("configs/demo.toml")) return load_config("configs/demo.toml", c.sets);
    return parse_config(builtin_demo_config(), "built-in demo config", c.sets);
}

}  // namespace sslight::apps
